"""Runs one claim on one hypothesis example: every runnable variant against the float64 reference.

The test functions stay thin: they draw, call `ClaimRunner.forward_example`, and the runner keeps
the statistics that the report plugin turns into a result row.
"""
from __future__ import annotations

import itertools
import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

import numpy as np
import pytest
from hypothesis import strategies as st

from layer_conformance.adapters import get_adapter, keras_backend, reference
from layer_conformance.adapters.spec import LayerSpec, Weights
from layer_conformance.suites.accumulation import accumulator, not_judged_reason
from layer_conformance.suites.bounds import ROUNDOFF_LABEL, bound_ratio, bound_ratios, error_bound, layer_error_bound, vacuous
from layer_conformance.suites.catalog import Reference, ReferenceMemo, Variant, evaluate_reference
from layer_conformance.suites.divergences import Divergence, by_id, ceiling_failure, divergence_for, expect_raise
from layer_conformance.reports.recorder import NOT_JUDGED_PREFIX
from layer_conformance.suites.outcomes import Case, ExampleOutcome, VariantOutcome
from layer_conformance.suites.strategies import (SEEDS, STYLES, Dims, cached_integers, data_source, describe_dims, geometry_key, pool_strategy,
                               random_array)

MAX_SAMPLES = 400  # per result, for the report's plots
DRAWING_CHECKS = ("forward", "gradient", "depth", "batch")  # the checks whose examples draw a geometry
_FROZEN_FRAMEWORKS: set[str] = set()


def freeze_imports() -> None:
    """Once the frameworks a test needs are imported: move everything alive to gc's permanent generation.

    TensorFlow, Keras, jax and torch leave over half a million long-lived objects at import, and every
    full collection walks them all. Hypothesis allocates enough per example to trigger collections in
    the middle of framework calls: a Keras Dense build took 3.85 ms (median) inside @given and 2.71 ms
    in a plain loop, and 2.81 ms inside @given after gc.freeze(). Garbage is collected first, so
    nothing collectable is frozen; later objects are collected as usual. Runs again only when more
    frameworks were imported since (by a later test): at most once per framework and process.
    """
    import gc
    import sys

    imported = {name for name in ("torch", "tensorflow", "keras", "jax", "flax") if name in sys.modules}
    if imported - _FROZEN_FRAMEWORKS:
        gc.collect()
        gc.freeze()
        _FROZEN_FRAMEWORKS.update(imported)


@dataclass
class VariantStats:
    max_abs_error: float = 0.0
    max_bound_ratio: float = 0.0
    examples: int = 0


@dataclass
class ClaimRunner:
    case: Case
    record: dict[str, Any]
    check: str = "forward"
    frameworks: set[str] | None = None  # None: all
    counterexamples: Path | None = None  # folder for failing examples (.npz + scripts); None: not saved
    geometries: int | None = None  # draw geometries from a pool of this many (layer_conformance.suites.strategies.geometry_pool)
    stats: dict[str, VariantStats] = field(default_factory=dict)
    pairwise: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    separation: float = float("inf")
    divergences: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def __repr__(self) -> str:  # hypothesis prints it in every falsifying example
        return f"ClaimRunner({self.case.id}, check={self.check})"

    def __post_init__(self) -> None:
        claim, dtype, device = self.case
        example = claim.example
        self.record.update({
            "claim": claim.id, "title": claim.title, "relation": claim.relation, "source": claim.source,
            "check": self.check, "variants": [], "skipped_variants": self.skipped, "dtype": dtype,
            "device": device, "examples": 0, "max_abs_error": None, "max_bound_ratio": None, "reason": None,
            "per_variant": {}, "pairwise": [], "separation": None,
            "samples": {"bound_ratio": [], "abs_error": [], "reduction_length": []},
        })
        if dtype not in claim.dtypes:
            pytest.skip(f"{claim.id} is not run in {dtype}: {claim.dtype_note}")
        for variant in claim.variants:
            if self.frameworks is not None and variant.framework not in self.frameworks:
                self.skipped[variant.label(example)] = f"{variant.framework} not selected (--conformance-frameworks)"
                continue
            reason = get_adapter(variant.framework).supports(variant.spec(example), dtype, device)
            if reason:
                self.skipped[variant.label(example)] = reason
        self.runnable = [v for v in claim.variants if v.label(example) not in self.skipped]
        self.record["variants"] = [v.name(example) for v in self.runnable]
        self.record["keras_backend"] = keras_backend() if any(v.framework == "keras" for v in self.runnable) else None
        if not self.runnable:
            pytest.skip("; ".join(sorted(set(self.skipped.values()))))
        self.dims: st.SearchStrategy[Dims] = claim.dims
        if self.geometries and self.check in DRAWING_CHECKS:  # built here: a pool drawn inside @given would nest it
            # one pool per case, shared by its checks: the forward and batch checks then run the same
            # compiled programs (one compile per geometry, not one per check) on the same corners
            self.dims = pool_strategy(claim.dims, self.geometries, self.case.id)
        self._geometries_seen: set[tuple[tuple[str, Any], ...]] = set()

    def _draw_dims(self, data: st.DataObject) -> Dims:
        dims = data.draw(self.dims, label="dims")
        self._geometries_seen.add(geometry_key(dims))
        self.record["geometries"] = len(self._geometries_seen)  # distinct geometries this test ran
        self.record["geometry_pool"] = self.geometries  # None: each example drew its own
        self._count_features(dims)
        return dims

    def _count_features(self, dims: Dims) -> None:
        """record["features"]: for every feature the claim can exercise (layer_conformance.suites.features: those its dims strategy
        can produce, else those of its example's kind, and permuted-layout from its variants), the examples that
        exercised it; zeros included, so that a corner never met shows."""
        from layer_conformance.suites.features import FEATURE_NAMES, claim_features, example_features, features_for, layout_features
        from layer_conformance.suites.strategies import strategy_features

        claim = self.case.claim
        counts = self.record.get("features")
        if counts is None:
            produced = strategy_features(claim.dims)
            if produced is None:
                produced = frozenset(f.name for f in features_for(claim.example))
            names = produced | claim_features(claim)
            counts = self.record["features"] = dict.fromkeys((name for name in FEATURE_NAMES if name in names), 0)
        for name in example_features(dims) | layout_features(self.runnable, dims, claim.input_shape(dims)):
            counts[name] = counts.get(name, 0) + 1

    # ---- one example --------------------------------------------------------------------------
    def draw(self, data: st.DataObject) -> tuple[Dims, np.ndarray, Weights, str]:
        claim, dtype = self.case.claim, self.case.dtype
        dims = self._draw_dims(data)
        style, seed = data.draw(data_source(styles=claim.data_styles or STYLES), label="data (style, seed)")
        rng = np.random.default_rng(seed)
        base = claim.variants[0].spec(dims)
        x = random_array(rng, claim.input_shape(dims), style, dtype)
        weights = {"kernel": random_array(rng, base.kernel_shape(), style, dtype)}
        if base.bias:
            weights["bias"] = random_array(rng, (base.out_features,), style, dtype)
        return dims, x, weights, style

    def forward_example(self, data: st.DataObject) -> None:
        __tracebackhide__ = True
        dims, x, weights, style = self.draw(data)
        outcome = evaluate_example(self.case, dims, x, weights, self.runnable)
        for label, reason in outcome.skipped.items():
            self.skipped[f"{label} (some examples)"] = reason
        worst = (0.0, 0.0)
        self._note_accumulation(outcome.accumulation)
        for v in outcome.variants:
            if v.not_judged:
                self._not_judged(v.label, v.not_judged)
                continue
            self._note(v.label, v.error, v.ratio, v.divergence, v.ceiling_ratio)
            if not v.divergence:
                worst = max(worst, (v.ratio, v.error))
        if outcome.separation is not None:
            self.separation = min(self.separation, outcome.separation)
        self._note_pairs({v.label: (v.y, v.bound) for v in outcome.variants if not v.not_judged})
        for label, (error, ratio) in outcome.device_agreement.items():
            self._note_pair(f"{label} [{self.case.device}]", f"{label} [cpu]", error, ratio)
        self._note_sample(worst, self.case.claim.variants[0].spec(dims).reduction_length)
        if outcome.failures:
            message = outcome.message(style)
            if self.counterexamples is not None:
                from layer_conformance.suites.counterexamples import save_counterexample

                self.record["counterexample"] = save_counterexample(
                    self.counterexamples, nodeid=self.record.get("nodeid") or self.case.id, case=self.case,
                    outcome=outcome, message=message)
                message += f"\n  reproduce: {self.record['counterexample']['command']}"
            raise AssertionError(message)

    def gradient_example(self, data: st.DataObject) -> None:
        """VJPs w.r.t. input, kernel and bias of every variant against the reference of variants[0]."""
        __tracebackhide__ = True
        from layer_conformance.suites.gradients import compare, not_judged, variant_gradients

        claim, dtype, device = self.case
        dims, x, weights, style = self.draw(data)
        out_shape = evaluate_reference(claim.variants[0], dims, x, weights).y.shape
        seed = data.draw(SEEDS, label="cotangent seed")
        cotangent = random_array(np.random.default_rng(seed), out_shape, "normal", dtype)
        expected = None
        failures, worst, compared, reasons = [], (0.0, 0.0), 0, []
        terms = 0  # the longest sum among the gradients compared: the n of their bounds (recorded per example)
        for variant in self.runnable:
            spec = variant.spec(dims)
            reason = get_adapter(variant.framework).supports(spec, dtype, device)
            known = divergence_for(variant.framework, spec, dtype, "gradient", variant.x_in(x, dims).shape, device=device)
            if known and known.kind == "crash":
                reason = known.not_run_reason()
            if reason:
                self.skipped[f"{variant.label(dims)} (some examples)"] = reason
                reasons.append(reason)
                continue
            if known and known.kind == "exception":  # run, and its documented error asserted
                problem = self._expect_raise(variant.label(dims), known, lambda: variant_gradients(
                    variant, dims, x, weights, cotangent, dtype, device))
                failures.extend([problem] if problem else [])
                reasons.append(f"the gradient of {variant.label(dims)} raises, documented divergence {known.id}")
                continue
            compared += 1
            grads = variant_gradients(variant, dims, x, weights, cotangent, dtype, device)
            terms = max(terms, *grads["terms"].values())
            expected = expected or grads["reference"]
            self._note_accumulation({f"{variant.label(dims)} d{name}": found
                                     for name, found in grads["accumulation"].items()})
            for name, (error, ratio, index) in compare(grads, expected).items():
                label = f"{variant.label(dims)} d{name}"
                divergence = divergence_for(variant.framework, spec, dtype, "gradient",
                                            variant.x_in(x, dims).shape, gradient=name, device=device)
                if divergence:  # judged against its ceiling only
                    failures.extend(self._gradient_ceiling(label, divergence, grads, expected, name, error, ratio))
                    continue
                if vacuous(grads["bound"][name]):
                    self._not_judged(label, not_judged(grads, name, dtype))
                    continue
                self._note(label, error, ratio)
                worst = max(worst, (ratio, error))
                if not ratio <= 1.0:
                    failures.append(f"{label} exceeds the error bound: max error {error:.3g} is {ratio:.3g}x the "
                                    f"bound at index {index} (got {grads['framework'][name][index]:.9g}, reference "
                                    f"{expected[name][index]:.9g}); layer {spec.describe()}")
        if not compared and not failures and self.record["examples"] == 0:  # nothing here can be differentiated
            self._publish_divergences()
            pytest.skip("; ".join(sorted(set(reasons))))
        self._note_sample(worst, terms or claim.variants[0].spec(dims).reduction_length)
        if failures:
            self._fail("gradient", failures, dims, style)

    def depth_example(self, data: st.DataObject) -> None:
        """Stacks of up to MAX_DEPTH layers per variant; error against depth under the composed bound."""
        __tracebackhide__ = True
        from layer_conformance.suites.depth import MAX_DEPTH, framework_stack, layer_weights, reference_stack, stackable

        claim, dtype, device = self.case
        dims = stackable(self._draw_dims(data))
        depth = data.draw(cached_integers(2, MAX_DEPTH), label="depth")
        rng = np.random.default_rng(data.draw(SEEDS, label="seed"))
        base = claim.variants[0]
        spec = base.spec(dims)
        x = random_array(rng, claim.input_shape(dims), "normal", dtype)
        stack = [layer_weights(rng, spec, dtype) for _ in range(depth)]
        activations, bounds = reference_stack(base, dims, x, stack, dtype)
        curve = self.record.setdefault("depth_curve", {})
        failures, worst = [], (0.0, 0.0)
        for variant in self.runnable:
            if get_adapter(variant.framework).supports(variant.spec(dims), dtype, device):
                continue
            divergence = self._diverges(variant, variant.spec(dims), x, dims)
            if divergence and divergence.kind != "numeric":
                continue
            ceilings = reference_stack(base, dims, x, stack, divergence.ceiling.bound_dtype(dtype))[1] \
                if divergence else bounds
            label = variant.label(dims)
            outputs = framework_stack(variant, dims, x, stack, dtype, device)
            ratios = curve.setdefault(label, [None] * MAX_DEPTH)
            for level, (y, ref, bound) in enumerate(zip(outputs, activations, bounds)):
                error, ratio, index = bound_ratio(y, ref, bound)
                ratios[level] = _finite(max(ratio, ratios[level] or 0.0))
                if divergence:  # judged against its ceiling only
                    beyond = self._beyond_ceiling(label, divergence, y, ref, ceilings[level], error, ratio,
                                                  f" at depth {level + 1}")
                    if beyond:
                        failures.append(beyond)
                        break
                    continue
                if vacuous(bound):  # composed through the layers: every deeper bound is infinite too
                    self._not_judged(label, not_judged_reason(spec.reduction_length + 1, dtype, None,
                                                              f"the depth check composes the worst-case bound; "
                                                              f"infinite from depth {level + 1}"))
                    break
                self._note(label, error, ratio)
                worst = max(worst, (ratio, error))
                if not ratio <= 1.0:
                    failures.append(f"{label} at depth {level + 1} exceeds the composed bound: error {error:.3g} is "
                                    f"{ratio:.3g}x the bound at index {index}; layer {spec.describe()}")
                    break
        if self._nothing_compared(dims, x):
            return
        self._note_sample(worst, spec.reduction_length)
        if failures:
            self._fail(f"depth {depth}", failures, dims)

    def batch_example(self, data: st.DataObject) -> None:
        """Batched output == per-sample outputs (within both bounds); a repeated run is bitwise identical."""
        __tracebackhide__ = True
        claim, dtype, device = self.case
        dims, x, weights, style = self.draw(data)
        batch = x.shape[0]
        single = _single_sample(dims)
        failures, worst = [], (0.0, 0.0)
        for variant in self.runnable:
            spec = variant.spec(dims)
            if get_adapter(variant.framework).supports(spec, dtype, device):
                continue
            divergence = self._diverges(variant, spec, x, dims)
            if divergence and divergence.kind != "numeric":
                continue
            label = variant.label(dims)
            layer_x, layer_w = variant.x_in(x, dims), variant.w_map(weights, dims)
            one_x = variant.x_in(x[:1], single)
            found = {accumulator(variant.framework, spec, dtype, device, sample) for sample in (layer_x, one_x)}
            accumulation = found.pop() if len(found) == 1 else None  # the batch and the one-sample program alike
            self._note_accumulation({label: accumulation})
            layer = get_adapter(variant.framework).build(spec, layer_w, dtype, device)
            expected, magnitude = reference.forward_and_magnitude(spec, layer_x, layer_w)
            bias = np.abs(layer_w["bias"].astype(np.float64)) if "bias" in layer_w else 0.0
            bound = variant.y_out(layer_error_bound(spec.reduction_length, magnitude, expected, bias, dtype,
                                                    accumulation), dims)
            ceiling = variant.y_out(error_bound(spec.reduction_length, magnitude, divergence.ceiling.bound_dtype(
                dtype)), dims) if divergence else bound
            full = variant.y_out(layer.forward(layer_x), dims)
            again = variant.y_out(layer.forward(layer_x), dims)
            if not np.array_equal(full, again, equal_nan=True):
                failures.append(f"{label} is not deterministic: two runs on the same input differ by "
                                f"{np.max(np.abs(full.astype(np.float64) - again.astype(np.float64))):.3g}")
            if vacuous(bound) and not divergence:
                self._not_judged(label, not_judged_reason(spec.reduction_length + 1, dtype, accumulation))
                continue
            for i in range(batch):
                one = variant.y_out(layer.forward(variant.x_in(x[i:i + 1], single)), single)
                error, ratio, index = bound_ratio(one[0], full[i], 2 * bound[i])
                if divergence:  # judged against its ceiling only
                    beyond = self._beyond_ceiling(label, divergence, one[0], full[i], 2 * ceiling[i], error, ratio,
                                                  f" (sample {i} alone against the batch of {batch}, twice the bound)")
                    if beyond:
                        failures.append(beyond)
                        break
                    continue
                self._note(label, error, ratio)
                worst = max(worst, (ratio, error))
                if not ratio <= 1.0:
                    failures.append(f"{label}: sample {i} alone differs from the batched result by {error:.3g}, "
                                    f"{ratio:.3g}x twice the error bound (batch of {batch})")
                    break
        if self._nothing_compared(dims, x):
            return
        self._note_sample(worst, claim.variants[0].spec(dims).reduction_length)
        if failures:
            self._fail("batch", failures, dims, style)

    def _nothing_compared(self, dims: Dims, x: np.ndarray) -> bool:
        """After a depth or batch example: True when no variant was compared on it (the example does not count).

        The variants left out (a geometry the framework does not support, a divergence that is not run: the
        same tests as the loops above) go to skipped_variants with the reason. A result that has compared no
        variant in any example is skipped with those reasons, never passed.
        """
        _, dtype, device = self.case
        missed: dict[str, str] = {}
        for variant in self.runnable:
            spec = variant.spec(dims)
            reason = get_adapter(variant.framework).supports(spec, dtype, device)
            divergence = None if reason else self._diverges(variant, spec, x, dims)
            reason = reason or (divergence.not_run_reason() if divergence and divergence.kind != "numeric" else None)
            if reason:
                missed[variant.label(dims)] = reason
                self.skipped[f"{variant.label(dims)} (some examples)"] = reason
        if len(missed) < len(self.runnable):
            return False
        if not self.stats and not self.divergences:  # no earlier example compared one either
            pytest.skip(f"no variant was compared in the {self.check} check: "
                        + "; ".join(f"{label}: {reason}" for label, reason in missed.items()))
        return True

    def _expect_raise(self, label: str, divergence: Divergence, call: Callable[[], Any]) -> str | None:
        """Runs a call that an exception divergence says raises; the failure message if it did not, as documented."""
        raised, problem = expect_raise(divergence, label, call)
        self._note_raised(label, divergence.id, raised, problem)
        return problem

    def _gradient_ceiling(self, label: str, divergence: Divergence, grads: dict[str, Any],
                          expected: dict[str, np.ndarray], name: str, error: float, ratio: float) -> list[str]:
        """A divergent gradient against its ceiling; the failure, if it is beyond it."""
        from layer_conformance.suites.gradients import bound_in

        bound = bound_in(grads, name, divergence.ceiling.bound_dtype(self.case.dtype))
        beyond = self._beyond_ceiling(label, divergence, grads["framework"][name], expected[name], bound, error, ratio)
        return [beyond] if beyond else []

    def _beyond_ceiling(self, label: str, divergence: Divergence, y: np.ndarray, expected: np.ndarray,
                        ceiling_bound: np.ndarray, error: float, ratio: float, where: str = "") -> str | None:
        """Notes a divergent variant's comparison (error and ratio against the normal bound); the failure
        line if it is beyond the divergence's ceiling."""
        c_error, c_ratio, index = divergence.ceiling.judge(y, expected, ceiling_bound)
        self._note(label, error, ratio, divergence.id, c_ratio)
        if c_ratio <= 1.0:
            return None
        return ceiling_failure(divergence, label, c_error, c_ratio, f"{where} at index {index}")

    def _fail(self, what: str, failures: list[str], dims: Dims, style: str | None = None) -> None:
        __tracebackhide__ = True
        claim, dtype, device = self.case
        example = describe_dims(dims) + (f", data style={style}" if style else "")
        more = f" (and {len(failures) - 1} more below)" if len(failures) > 1 else ""
        # first line: what failed, by how much, on which example; the report shows it above the full text
        raise AssertionError(f"{failures[0]}{more}; example: {example}\n"
                             f"  claim {claim.id} [{dtype}, {device}] {what}: {claim.title}\n  " + "\n  ".join(failures)
                             + f"\n  dims={example}")

    def _diverges(self, variant: Variant, spec: LayerSpec, x: np.ndarray, dims: Dims) -> Divergence | None:
        """The documented divergence of this variant in this check; one that is not numeric (a crash) means
        the variant is not run: skipped, with the reason."""
        divergence = divergence_for(variant.framework, spec, self.case.dtype, self.check, variant.x_in(x, dims).shape,
                                    device=self.case.device)
        if divergence and divergence.kind != "numeric":
            self.skipped[f"{variant.label(dims)} (some examples)"] = divergence.not_run_reason()
        return divergence

    def frameworks_used(self) -> set[str]:
        return {v.framework for v in self.runnable}

    def check_params(self) -> None:
        """Every variant of an `equal` claim has the same number of parameters (example sizes)."""
        __tracebackhide__ = True
        claim, dtype, device = self.case
        dims = claim.example
        counts = {}
        for variant in self.runnable:
            spec = variant.spec(dims)
            weights = {"kernel": np.zeros(spec.kernel_shape()), **({"bias": np.zeros(spec.out_features)} if spec.bias else {})}
            counts[variant.label(dims)] = get_adapter(variant.framework).build(spec, weights, dtype, device).param_count()
        expected = claim.variants[0].spec(dims).param_count()
        self.record.update({"examples": 1, "params": counts, "expected_params": expected,
                            "max_abs_error": float(max(abs(c - expected) for c in counts.values())),
                            "max_bound_ratio": None, "dims": describe_dims(dims)})
        wrong = {label: count for label, count in counts.items() if count != expected}
        assert not wrong, (f"claim {claim.id}: parameter counts differ at {describe_dims(dims)}: expected {expected} "
                           f"(from {claim.variants[0].label(dims)}), got {wrong}")

    # ---- bookkeeping --------------------------------------------------------------------------
    def _note(self, label: str, error: float, ratio: float, divergence: str | None = None,
              ceiling_ratio: float = 0.0) -> None:
        if divergence:  # observed: beyond the normal bound; within_ceiling: never beyond what the divergence allows
            seen = self.divergences.setdefault(label, {"id": divergence, "kind": "numeric", "max_bound_ratio": 0.0,
                                                       "examples": 0, "max_abs_error": 0.0, "max_ceiling_ratio": 0.0})
            seen["max_bound_ratio"] = max(seen["max_bound_ratio"], _not_nan(ratio))
            seen["max_abs_error"] = max(seen["max_abs_error"], _not_nan(error))
            seen["max_ceiling_ratio"] = max(seen["max_ceiling_ratio"], _not_nan(ceiling_ratio))
            seen["examples"] += 1
            seen["observed"] = seen["max_bound_ratio"] > 1.0
            seen["within_ceiling"] = seen["max_ceiling_ratio"] <= 1.0
            return
        stats = self.stats.setdefault(label, VariantStats())
        stats.examples += 1
        stats.max_abs_error = max(stats.max_abs_error, error)
        stats.max_bound_ratio = max(stats.max_bound_ratio, ratio)

    def _not_judged(self, label: str, reason: str) -> None:
        """A comparison whose bound is infinite: measured, never passed. The result becomes `measured` (the
        report plugin), with the reasons in record["not_judged"] and its reason line."""
        seen = self.record.setdefault("not_judged", {})
        if label not in seen:
            seen[label] = reason
            self.record["reason"] = NOT_JUDGED_PREFIX + "; ".join(f"{k}: {v}" for k, v in seen.items())

    def _note_accumulation(self, found: dict[str, str | None]) -> None:
        """record["accumulation"]: per variant, the accumulators its probes found (layer_conformance.suites.accumulation)."""
        for label, accumulation in found.items():
            if accumulation is not None:  # None: no probe applies (not half precision, too few terms)
                kinds = self.record.setdefault("accumulation", {}).setdefault(label, [])
                if accumulation not in kinds:
                    kinds.append(accumulation)

    def _note_raised(self, label: str, divergence: str, raised: str | None, problem: str | None) -> None:
        """An exception divergence ran: observed when it raised; within its ceiling while always as documented."""
        seen = self.divergences.setdefault(label, {"id": divergence, "kind": "exception", "max_bound_ratio": None,
                                                   "examples": 0, "max_abs_error": None, "raised": 0,
                                                   "within_ceiling": True})
        seen["examples"] += 1
        seen["raised"] += raised is not None
        seen["observed"] = seen["raised"] > 0
        seen["error"] = raised or seen.get("error")
        if problem:
            seen["within_ceiling"] = False
            seen.setdefault("problem", problem)
        self._publish_divergences()

    def _publish_divergences(self) -> None:
        self.record["divergences"] = {label: _divergence_entry(seen) for label, seen in self.divergences.items()}

    def _note_pairs(self, results: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        if self.case.claim.relation != "equal":
            return
        for (a, b), error, ratio in pairwise_ratios(results):
            self._note_pair(a, b, error, ratio)

    def _note_pair(self, a: str, b: str, error: float, ratio: float) -> None:
        old = self.pairwise.setdefault((a, b), [0.0, 0.0])
        old[0], old[1] = max(old[0], error), max(old[1], ratio)

    def _note_sample(self, worst: tuple[float, float], reduction_length: int) -> None:
        record = self.record
        record["examples"] += 1
        samples = record["samples"]
        if len(samples["bound_ratio"]) < MAX_SAMPLES:
            samples["bound_ratio"].append(_finite(worst[0]))
            samples["abs_error"].append(_finite(worst[1]))
            samples["reduction_length"].append(int(reduction_length))
        if self.stats:
            record["max_abs_error"] = _finite(max(s.max_abs_error for s in self.stats.values()))
            record["max_bound_ratio"] = _finite(max(s.max_bound_ratio for s in self.stats.values()))
        record["per_variant"] = {k: {"max_abs_error": _finite(s.max_abs_error),
                                     "max_bound_ratio": _finite(s.max_bound_ratio), "examples": s.examples}
                                 for k, s in self.stats.items()}
        record["pairwise"] = [{"a": a, "b": b, "max_abs_error": _finite(e), "max_bound_ratio": _finite(r)}
                              for (a, b), (e, r) in self.pairwise.items()]
        self._publish_divergences()
        record["separation"] = None if self.separation == float("inf") else _finite(self.separation)
        record["duration"] = round(time.perf_counter() - self.started, 3)


class _Ran(NamedTuple):
    """A variant that ran on the example, before its output is judged against the bound."""

    variant: Variant
    label: str
    ref: Reference
    layer_y: np.ndarray
    layer_bound: np.ndarray
    y: np.ndarray
    bound: np.ndarray
    later: list[str]  # its failures listed after the bound check (device agreement, separation)


def evaluate_example(case: Case, dims: Dims, x: np.ndarray, weights: Weights,
                     variants: list[Variant]) -> ExampleOutcome:
    """Run every variant on one example and judge it against the float64 reference."""
    claim, dtype, device = case
    outcome = ExampleOutcome(case, dims, x, weights)
    memo = ReferenceMemo()  # one oracle evaluation per distinct layer, not per variant
    target = evaluate_reference(claim.variants[0], dims, x, weights, memo)
    ran: list[_Ran] = []
    for variant in variants:
        label = variant.label(dims)
        ref = target if variant is claim.variants[0] else evaluate_reference(variant, dims, x, weights, memo)
        spec, layer_x, layer_w = ref.spec, ref.layer_x, ref.layer_w
        adapter = get_adapter(variant.framework)
        reason = adapter.supports(spec, dtype, device)
        crash = divergence_for(variant.framework, spec, dtype, "forward", layer_x.shape, device=device)
        if crash and crash.kind == "crash":  # it would kill this process: not run in it
            reason = crash.not_run_reason()
        if reason:  # geometry drawn for this example only (e.g. Keras: stride and dilation together)
            outcome.skipped[label] = reason
            continue
        accumulation = accumulator(variant.framework, spec, dtype, device, layer_x)
        outcome.accumulation[label] = accumulation
        layer_y = adapter.build(spec, layer_w, dtype, device).forward(layer_x).astype(np.float64)
        layer_bound = memo.error_bound(spec, ref.layer_magnitude, dtype, accumulation)  # shared by variants alike
        y, bound = variant.y_out(layer_y, dims), variant.y_out(layer_bound, dims)
        later: list[str] = []  # this variant's failures after its bound check, in the order they are listed
        if device != "cpu" and not adapter.supports(spec, dtype, "cpu"):  # the same weights on the host
            on_cpu = variant.y_out(adapter.build(spec, layer_w, dtype, "cpu").forward(layer_x).astype(np.float64), dims)
            error, ratio, index = bound_ratio(y, on_cpu, 2 * bound)
            outcome.device_agreement[label] = (error, ratio)
            if not ratio <= 1.0:
                later.append(f"{label} on {device} and on cpu differ by {error:.3g} at {index}, {ratio:.3g}x "
                             f"twice the error bound (same weights, same input)")
        if claim.relation == "differ" and variant is not claim.variants[0]:
            gap = bound_ratio(ref.y, target.y, error_bound(spec.reduction_length, target.magnitude, dtype))[1]
            outcome.separation = gap if outcome.separation is None else min(outcome.separation, gap)
            if not gap > 1.0:
                later.append(f"{label} does not differ from {claim.variants[0].label(dims)} on this "
                             f"input: the gap is only {gap:.3g}x the {dtype} error bound")
        ran.append(_Ran(variant, label, ref, layer_y, layer_bound, y, bound, later))
    expected = [target.y if claim.relation == "equal" else r.ref.y for r in ran]
    judged = bound_ratios([r.y for r in ran], expected, [r.bound for r in ran])  # every variant in one pass
    for (variant, label, ref, layer_y, layer_bound, y, bound, later), want, judgement in zip(ran, expected, judged):
        spec, (error, ratio, index) = ref.spec, judgement
        v = VariantOutcome(label, variant.framework, spec, ref.layer_x, ref.layer_w, layer_y,
                           ref.layer_y, layer_bound, y, bound, error, ratio)
        divergence = divergence_for(variant.framework, spec, dtype, "forward", ref.layer_x.shape, device=device)
        if divergence:  # measured and reported; it fails the row only beyond its ceiling
            _judge_ceiling(v, divergence, memo.error_bound(spec, ref.layer_magnitude,
                                                           divergence.ceiling.bound_dtype(dtype)), want, variant, dims)
            outcome.failures.extend([v.failure] if v.failure else [])
        elif vacuous(bound):
            v.not_judged = not_judged_reason(spec.reduction_length + 1, dtype, outcome.accumulation.get(label))
        elif not ratio <= 1.0:
            v.failure = _failure_line(label, spec, dtype, y, want, bound, index, error, ratio)
            outcome.failures.append(v.failure)
        outcome.failures.extend(later)
        outcome.variants.append(v)
    return outcome


def _judge_ceiling(v: VariantOutcome, divergence: Divergence, layer_ceiling: np.ndarray, want: np.ndarray,
                   variant: Variant, dims: Dims) -> None:
    """A divergent variant's output against its ceiling (the ceiling dtype's bound, less what it exempts)."""
    v.divergence = divergence.id
    error, v.ceiling_ratio, index = divergence.ceiling.judge(v.y, want, variant.y_out(layer_ceiling, dims))
    if not v.ceiling_ratio <= 1.0:
        v.failure = ceiling_failure(divergence, v.label, error, v.ceiling_ratio,
                                    f" at output index {index}; layer {v.spec.describe()}")


def pairwise_ratios(results: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[tuple[tuple[str, str], float, float]]:
    """((a, b), max |y_a - y_b|, max |y_a - y_b| / (bound_a + bound_b)) for every pair of variants,
    all pairs in one pass (`layer_conformance.suites.bounds.bound_ratios`; xfw rows have 6 pairs)."""
    pairs = list(itertools.combinations(results, 2))
    judged = bound_ratios([results[a][0] for a, _ in pairs], [results[b][0] for _, b in pairs],
                          [results[a][1] + results[b][1] for a, b in pairs])
    return [(pair, error, ratio) for pair, (error, ratio, _) in zip(pairs, judged)]


def _divergence_entry(seen: dict[str, Any]) -> dict[str, Any]:
    """A row's `divergences` entry: what the variant showed, JSON-safe (non-finite numbers are null)."""
    numbers = {k: _finite(seen[k]) for k in ("max_bound_ratio", "max_abs_error", "max_ceiling_ratio")
               if seen.get(k) is not None}
    return {**seen, **numbers, "summary": by_id(seen["id"]).summary}


def _not_nan(value: float) -> float:
    """A NaN ratio or error (inf against an inf bound) counts as infinitely far off."""
    return float("inf") if value != value else value


def _single_sample(dims: Dims) -> Dims:
    """The same sizes for a batch of one (claims name the batch B, or carry it in `shape`)."""
    single = dict(dims)
    if "B" in single:
        single["B"] = 1
    if "shape" in single:
        single["shape"] = (1, *single["shape"][1:])
    return single


def _finite(value: float) -> float | None:
    """JSON has no inf/nan: the report stores null for a non-finite number."""
    return float(value) if np.isfinite(value) else None


def _failure_line(label: str, spec: LayerSpec, dtype: str, y: np.ndarray, expected: np.ndarray,
                  bound: np.ndarray, index: tuple[int, ...], error: float, ratio: float) -> str:
    at = f" at output index {index}: got {y[index]:.9g}, reference {expected[index]:.9g}" if index else ""
    return (f"{label} exceeds the error bound: max |y - y_ref| = {error:.3g} is {ratio:.3g}x the bound "
            f"(gamma(K+1, u) * |W||x|+|b|, K={spec.reduction_length}, u={ROUNDOFF_LABEL[dtype]}){at}, "
            f"bound there {bound[index] if index else float('nan'):.3g}; layer {spec.describe()}")
