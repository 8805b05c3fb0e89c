"""The batch check: a batch's output against each of its samples run alone, and determinism.

Each sample alone must agree with its row of the batched output within twice the error bound, and two
runs of the same batch must be bitwise identical.
"""
from __future__ import annotations

import numpy as np

from layer_conformance.adapters import get_adapter, reference
from layer_conformance.adapters.spec import Weights
from layer_conformance.suites.accumulation import accumulator, not_judged_reason
from layer_conformance.suites.bounds import bound_ratio, error_bound, layer_error_bound, vacuous
from layer_conformance.suites.catalog import Variant
from layer_conformance.suites.checks.common import beyond_ceiling, why_not_run
from layer_conformance.suites.numerics import declared_u_eff
from layer_conformance.suites.outcomes import Case, CheckOutcome, Comparison
from layer_conformance.suites.strategies import Dims


def check_batch(case: Case, dims: Dims, x: np.ndarray, weights: Weights, variants: list[Variant]) -> CheckOutcome:
    """Batched output == per-sample outputs (within both bounds); a repeated run is bitwise identical.
    A variant stops at its first sample that differs."""
    claim, dtype, device = case
    batch = x.shape[0]
    single = _single_sample(dims)
    outcome = CheckOutcome(case, "batch", dims, reduction_length=claim.variants[0].spec(dims).reduction_length)
    for variant in variants:
        spec = variant.spec(dims)
        label = variant.label(dims)
        reason, divergence = why_not_run(variant, dims, x, case, "batch")
        if reason:
            outcome.skipped[label] = outcome.not_compared[label] = reason
            continue
        outcome.compared.append(label)
        layer_x, layer_w = variant.x_in(x, dims), variant.w_map(weights, dims)
        one_x = variant.x_in(x[:1], single)
        found = {accumulator(variant.framework, spec, dtype, device, sample) for sample in (layer_x, one_x)}
        accumulation = found.pop() if len(found) == 1 else None  # the batch and the one-sample program alike
        outcome.accumulation[label] = accumulation
        mode, u_eff = declared_u_eff(variant.framework, spec, dtype, device)  # e.g. TF32 under default numerics
        if mode:
            outcome.declared[label] = mode
        layer = get_adapter(variant.framework).build(spec, layer_w, dtype, device)
        expected, magnitude = reference.forward_and_magnitude(spec, layer_x, layer_w)
        bias = np.abs(layer_w["bias"].astype(np.float64)) if "bias" in layer_w else 0.0
        bound = variant.y_out(layer_error_bound(spec.reduction_length, magnitude, expected, bias, dtype,
                                                accumulation, u_eff), dims)
        ceiling = variant.y_out(error_bound(spec.reduction_length, magnitude, divergence.ceiling.bound_dtype(
            dtype)), dims) if divergence else bound
        full = variant.y_out(layer.forward(layer_x), dims)
        again = variant.y_out(layer.forward(layer_x), dims)
        if not np.array_equal(full, again, equal_nan=True):
            outcome.failures.append(f"{label} is not deterministic: two runs on the same input differ by "
                                    f"{np.max(np.abs(full.astype(np.float64) - again.astype(np.float64))):.3g}")
        if vacuous(bound) and not divergence:
            outcome.comparisons.append(Comparison(label, not_judged=not_judged_reason(spec.reduction_length + 1, dtype,
                                                                                      accumulation)))
            continue
        for i in range(batch):
            one = variant.y_out(layer.forward(variant.x_in(x[i:i + 1], single)), single)
            error, ratio, index = bound_ratio(one[0], full[i], 2 * bound[i])
            if divergence:  # judged against its ceiling only
                comparison, beyond = beyond_ceiling(label, divergence, one[0], full[i], 2 * ceiling[i], error, ratio,
                                                    f" (sample {i} alone against the batch of {batch}, twice the bound)")
                outcome.comparisons.append(comparison)
                if beyond:
                    outcome.failures.append(beyond)
                    break
                continue
            outcome.comparisons.append(Comparison(label, error, ratio))
            if not ratio <= 1.0:
                outcome.failures.append(f"{label}: sample {i} alone differs from the batched result by {error:.3g}, "
                                        f"{ratio:.3g}x twice the error bound (batch of {batch})")
                break
    return outcome


def _single_sample(dims: Dims) -> Dims:
    """The same sizes for a batch of one (claims name the batch B, or carry it in `shape`)."""
    single = dict(dims)
    if "B" in single:
        single["B"] = 1
    if "shape" in single:
        single["shape"] = (1, *single["shape"][1:])
    return single
