"""The runner of one result row: it picks the variants that run, draws examples, and calls the checks.

The test functions stay thin: they call `ClaimRunner.forward_example` (or another check's method). The
runner draws the example from hypothesis, runs the check (layer_conformance.suites.checks: pure
functions that return outcomes), keeps the books from the outcome (layer_conformance.suites.books), and
does what pytest sees: a skip where nothing can be compared, a saved counterexample, the AssertionError.
"""
from __future__ import annotations

import time
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from hypothesis import strategies as st

from layer_conformance.adapters import get_adapter, keras_backend
from layer_conformance.adapters.spec import LayerSpec, Weights
from layer_conformance.suites.books import Books
from layer_conformance.suites.checks import init as init_check, params as params_check
from layer_conformance.suites.checks.batch import check_batch
from layer_conformance.suites.checks.depth import check_depth
from layer_conformance.suites.checks.forward import evaluate_example, pairwise_ratios
from layer_conformance.suites.checks.gradient import check_gradient
from layer_conformance.suites.depth import MAX_DEPTH, stackable
from layer_conformance.suites.outcomes import Case, CheckOutcome, ExampleOutcome, VariantOutcome
from layer_conformance.suites.strategies import (SEEDS, STYLES, Dims, cached_integers, data_source, describe_dims, geometry_key, pool_strategy,
                               random_array)

# Case, ExampleOutcome, VariantOutcome, evaluate_example and pairwise_ratios live in outcomes.py and
# checks/forward.py; imported from here too, as they always were
__all__ = ["ClaimRunner", "Case", "ExampleOutcome", "VariantOutcome", "evaluate_example", "pairwise_ratios",
           "freeze_imports", "DRAWING_CHECKS"]

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
class ClaimRunner:
    case: Case
    record: dict[str, Any]
    check: str = "forward"
    frameworks: set[str] | None = None  # None: all
    counterexamples: Path | None = None  # folder for failing examples (.npz + scripts); None: not saved
    geometries: int | None = None  # draw geometries from a pool of this many (layer_conformance.suites.strategies.geometry_pool)
    books: Books = field(init=False, repr=False)  # the row's statistics, kept from the checks' outcomes

    def __repr__(self) -> str:  # hypothesis prints it in every falsifying example
        return f"ClaimRunner({self.case.id}, check={self.check})"

    @property
    def skipped(self) -> dict[str, str]:
        """Variants left out, with the reason (the record's skipped_variants)."""
        return self.books.skipped

    @property
    def started(self) -> float:
        return self.books.started

    def __post_init__(self) -> None:
        self.books = Books(self.case, self.record)
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
        self.books.note_example(outcome)
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
        dims, x, weights, style = self.draw(data)
        seed = data.draw(SEEDS, label="cotangent seed")
        outcome = check_gradient(self.case, dims, x, weights, seed, self.runnable)
        self.books.note_skipped(outcome.skipped)
        self.books.note_declared(outcome.declared)
        self.books.note_accumulation(outcome.accumulation)
        self.books.note_comparisons(outcome.comparisons)
        if not outcome.compared and not outcome.failures and self.record["examples"] == 0:
            self.books.publish_divergences()  # nothing here can be differentiated
            pytest.skip("; ".join(sorted(set(outcome.not_compared.values()))))
        self.books.note_sample(outcome.worst, outcome.reduction_length)
        if outcome.failures:
            raise AssertionError(outcome.message(style))

    def depth_example(self, data: st.DataObject) -> None:
        """Stacks of up to MAX_DEPTH layers per variant; error against depth under the composed bound."""
        __tracebackhide__ = True
        dims = stackable(self._draw_dims(data))
        depth = data.draw(cached_integers(2, MAX_DEPTH), label="depth")
        seed = data.draw(SEEDS, label="seed")
        outcome = check_depth(self.case, dims, depth, seed, self.runnable)
        self.books.note_skipped(outcome.skipped)
        self.books.note_declared(outcome.declared)
        self.books.note_depth_curve(outcome.depth_curve)
        self.books.note_comparisons(outcome.comparisons)
        if self._nothing_compared(outcome):
            return
        self.books.note_sample(outcome.worst, outcome.reduction_length)
        if outcome.failures:
            raise AssertionError(outcome.message())

    def batch_example(self, data: st.DataObject) -> None:
        """Batched output == per-sample outputs (within both bounds); a repeated run is bitwise identical."""
        __tracebackhide__ = True
        dims, x, weights, style = self.draw(data)
        outcome = check_batch(self.case, dims, x, weights, self.runnable)
        self.books.note_skipped(outcome.skipped)
        self.books.note_declared(outcome.declared)
        self.books.note_accumulation(outcome.accumulation)
        self.books.note_comparisons(outcome.comparisons)
        if self._nothing_compared(outcome):
            return
        self.books.note_sample(outcome.worst, outcome.reduction_length)
        if outcome.failures:
            raise AssertionError(outcome.message(style))

    def _nothing_compared(self, outcome: CheckOutcome) -> bool:
        """After a depth or batch example: True when no variant was compared on it (the example does not count).

        The variants left out (a geometry the framework does not support, a divergence that is not run) are in
        skipped_variants with the reason already. A result that has compared no variant in any example is
        skipped with those reasons, never passed.
        """
        if outcome.compared:
            return False
        if not self.books.stats and not self.books.divergences:  # no earlier example compared one either
            pytest.skip(f"no variant was compared in the {self.check} check: "
                        + "; ".join(f"{label}: {reason}" for label, reason in outcome.not_compared.items()))
        return True

    def frameworks_used(self) -> set[str]:
        return {v.framework for v in self.runnable}

    def check_params(self) -> None:
        """Every variant of an `equal` claim has the same number of parameters (example sizes)."""
        __tracebackhide__ = True
        outcome = params_check.check_params(self.case, self.runnable)
        counts, expected = outcome.counts, outcome.expected
        self.record.update({"examples": 1, "params": counts, "expected_params": expected,
                            "max_abs_error": float(max(abs(c - expected) for c in counts.values())),
                            "max_bound_ratio": None, "dims": describe_dims(outcome.dims)})
        wrong = outcome.wrong
        assert not wrong, outcome.message()

    def check_init(self) -> None:
        """The variants' default initializers against their documented distributions (float32, cpu)."""
        __tracebackhide__ = True
        started = time.perf_counter()
        outcome = init_check.check_init(self.case.claim, self.runnable)
        dims = outcome.dims
        self.record.update({"check": "init", "examples": outcome.samples, "max_abs_error": None,
                            "max_bound_ratio": None, "init": outcome.results, "init_differs": outcome.differs,
                            "init_note": outcome.note, "init_alpha": outcome.alpha, "init_tests": outcome.tests,
                            "init_threshold": outcome.threshold,
                            "dims": ", ".join(f"{k}={v.describe() if isinstance(v, LayerSpec) else v}"
                                              for k, v in dims.items()),
                            "duration": round(time.perf_counter() - started, 3)})
        failures = outcome.failures
        assert not failures, outcome.message()
