"""The forward check: every variant's output on one example against the float64 reference, under the derived bound.

`evaluate_example` is pure: it runs the variants and returns the ExampleOutcome (what each variant gave,
its bound, the failures), which the harness keeps the books from, a counterexample is saved from, and
`conformance repro` re-runs a saved example through.
"""
from __future__ import annotations

import itertools
from typing import NamedTuple

import numpy as np

from layer_conformance.adapters import get_adapter
from layer_conformance.adapters.spec import LayerSpec, Weights
from layer_conformance.suites.accumulation import accumulator, not_judged_reason
from layer_conformance.suites.bounds import (DECLARED_ROUNDOFF, ROUNDOFF_LABEL, bound_ratio, bound_ratios, error_bound,
                                            vacuous)
from layer_conformance.suites.numerics import declared_u_eff
from layer_conformance.suites.catalog import Reference, ReferenceMemo, Variant, evaluate_reference
from layer_conformance.suites.divergences import Divergence, ceiling_failure, divergence_for
from layer_conformance.suites.outcomes import Case, ExampleOutcome, VariantOutcome
from layer_conformance.suites.strategies import Dims


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
        mode, u_eff = declared_u_eff(variant.framework, spec, dtype, device)  # e.g. TF32 under default numerics
        if mode:
            outcome.declared[label] = mode
        layer_y = adapter.build(spec, layer_w, dtype, device).forward(layer_x).astype(np.float64)
        layer_bound = memo.error_bound(spec, ref.layer_magnitude, dtype, accumulation, u_eff)  # shared by variants alike
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
            v.failure = _failure_line(label, spec, dtype, y, want, bound, index, error, ratio,
                                      outcome.declared.get(label))
            outcome.failures.append(v.failure)
        outcome.failures.extend(later)
        outcome.variants.append(v)
    if claim.relation == "equal":
        outcome.pairwise = pairwise_ratios({v.label: (v.y, v.bound) for v in outcome.variants if not v.not_judged})
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


def _failure_line(label: str, spec: LayerSpec, dtype: str, y: np.ndarray, expected: np.ndarray,
                  bound: np.ndarray, index: tuple[int, ...], error: float, ratio: float, mode: str | None = None) -> str:
    at = f" at output index {index}: got {y[index]:.9g}, reference {expected[index]:.9g}" if index else ""
    u = f"{DECLARED_ROUNDOFF[mode]:.3g}, the declared {mode} mode" if mode else ROUNDOFF_LABEL[dtype]
    return (f"{label} exceeds the error bound: max |y - y_ref| = {error:.3g} is {ratio:.3g}x the bound "
            f"(gamma(K+1, u) * |W||x|+|b|, K={spec.reduction_length}, u={u}){at}, "
            f"bound there {bound[index] if index else float('nan'):.3g}; layer {spec.describe()}")
