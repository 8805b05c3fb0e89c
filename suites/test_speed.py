"""Speed: every runnable variant's forward timed on the same input, per claim and grid point.

A benchmark, not a check: it records figures (median, spread, time relative to the claim's
fastest variant, peak memory), and its result is `measured` whatever they are, never `passed`.
`CONFORMANCE_SPEED=0` skips it.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from layer_conformance.adapters import get_adapter
from layer_conformance.adapters.base import calls_unobserved
from layer_conformance.suites import speed
from layer_conformance.suites.harness import ClaimRunner
from layer_conformance.suites.strategies import random_array


def test_speed(runner: ClaimRunner) -> None:
    runner.record["measurement"] = True  # the report plugin makes a passing measurement `measured`, never passed
    on, reason = speed.enabled()
    if not on:
        pytest.skip(reason)
    claim, dtype, device = runner.case
    rows, points = [], 0
    for point, dims in speed.grid(claim.id, claim.example):
        rng = np.random.default_rng(0)
        base = claim.variants[0].spec(dims)
        x = random_array(rng, claim.input_shape(dims), "normal", dtype)
        weights = {"kernel": random_array(rng, base.kernel_shape(), "normal", dtype)}
        if base.bias:
            weights["bias"] = random_array(rng, (base.out_features,), "normal", dtype)
        measured = []
        for variant in runner.runnable:
            spec = variant.spec(dims)
            adapter = get_adapter(variant.framework)
            label = variant.label(dims)
            why = adapter.supports(spec, dtype, device)
            if why:
                runner.skipped[f"{label} (speed, {point})"] = why
                continue
            layer = adapter.build(spec, variant.w_map(weights, dims), dtype, device)
            layer_x = variant.x_in(x, dims)
            layer.forward(layer_x)  # seen by the flight recorder; the timed calls below are not
            with calls_unobserved():
                timing = speed.measure(lambda: layer.forward(layer_x))
                memory = speed.peak_memory(lambda: layer.forward(layer_x), variant.framework, device)
            measured.append({"variant": label, "point": point, "shape": speed.describe_shape(x.shape),
                             "median_s": timing.median_s, "iqr_s": timing.iqr_s, "min_s": timing.min_s,
                             "max_s": timing.max_s, "repeats": timing.repeats, **memory})
        if measured:
            points += 1
            ratios = speed.relative({row["variant"]: row["median_s"] for row in measured})
            rows += [{**row, "relative": ratios[row["variant"]]} for row in measured]
    runner.record.update({"speed": rows, "examples": points, "max_bound_ratio": None, "max_abs_error": None,
                          "duration": round(time.perf_counter() - runner.started, 3)})
    if not rows:  # a measurement of nothing is no result
        pytest.skip("no variant could be timed: "
                    + "; ".join(f"{label}: {why}" for label, why in runner.skipped.items()))


test_speed.check = "speed"  # type: ignore[attr-defined]
test_speed.relation = "equal"  # type: ignore[attr-defined]
test_speed.dtypes = ("float32",)  # type: ignore[attr-defined]
