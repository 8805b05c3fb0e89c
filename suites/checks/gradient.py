"""The gradient check: the VJPs w.r.t. input, kernel and bias of every variant against the reference VJP.

The gradients of every variant are mapped back to the claim's layout (layer_conformance.suites.gradients)
and judged against the reference VJP of variants[0], each under its own sum bound.
"""
from __future__ import annotations

import numpy as np

from layer_conformance.adapters import get_adapter
from layer_conformance.adapters.spec import Weights
from layer_conformance.suites.bounds import vacuous
from layer_conformance.suites.catalog import Variant, evaluate_reference
from layer_conformance.suites.checks.common import beyond_ceiling
from layer_conformance.suites.divergences import divergence_for, expect_raise
from layer_conformance.suites.gradients import bound_in, compare, not_judged, variant_gradients
from layer_conformance.suites.numerics import declared_u_eff
from layer_conformance.suites.outcomes import Case, CheckOutcome, Comparison, Raised
from layer_conformance.suites.strategies import Dims, random_array


def check_gradient(case: Case, dims: Dims, x: np.ndarray, weights: Weights, cotangent_seed: int,
                   variants: list[Variant]) -> CheckOutcome:
    """Every variant's gradients on one example (the cotangent drawn from `cotangent_seed`), judged.

    A variant whose documented divergence crashes is not run; one whose divergence raises is run and its
    documented error asserted; a gradient under a numeric divergence is judged against its ceiling only.
    """
    claim, dtype, device = case
    out_shape = evaluate_reference(claim.variants[0], dims, x, weights).y.shape
    cotangent = random_array(np.random.default_rng(cotangent_seed), out_shape, "normal", dtype)
    outcome = CheckOutcome(case, "gradient", dims)
    expected = None
    terms = 0  # the longest sum among the gradients compared: the n of their bounds (recorded per example)
    for variant in variants:
        spec = variant.spec(dims)
        label = variant.label(dims)
        reason = get_adapter(variant.framework).supports(spec, dtype, device)
        known = divergence_for(variant.framework, spec, dtype, "gradient", variant.x_in(x, dims).shape, device=device)
        if known and known.kind == "crash":
            reason = known.not_run_reason()
        if reason:
            outcome.skipped[label] = outcome.not_compared[label] = reason
            continue
        if known and known.kind == "exception":  # run, and its documented error asserted
            raised, problem = expect_raise(known, label, lambda: variant_gradients(
                variant, dims, x, weights, cotangent, dtype, device))
            outcome.comparisons.append(Raised(label, known.id, raised, problem))
            outcome.failures.extend([problem] if problem else [])
            outcome.not_compared[label] = f"the gradient of {label} raises, documented divergence {known.id}"
            continue
        outcome.compared.append(label)
        mode = declared_u_eff(variant.framework, spec, dtype, device)[0]  # its gradient bounds use the mode's u
        if mode:
            outcome.declared[label] = mode
        grads = variant_gradients(variant, dims, x, weights, cotangent, dtype, device)
        terms = max(terms, *grads["terms"].values())
        expected = expected or grads["reference"]
        outcome.accumulation.update({f"{label} d{name}": found for name, found in grads["accumulation"].items()})
        for name, (error, ratio, index) in compare(grads, expected).items():
            gradient = f"{label} d{name}"
            divergence = divergence_for(variant.framework, spec, dtype, "gradient",
                                        variant.x_in(x, dims).shape, gradient=name, device=device)
            if divergence:  # judged against its ceiling only
                ceiling = bound_in(grads, name, divergence.ceiling.bound_dtype(dtype))
                comparison, beyond = beyond_ceiling(gradient, divergence, grads["framework"][name], expected[name],
                                                    ceiling, error, ratio, magnitude=grads["magnitude"][name])
                outcome.comparisons.append(comparison)
                outcome.failures.extend([beyond] if beyond else [])
                continue
            if vacuous(grads["bound"][name]):
                why = not_judged(grads, name, dtype)
                outcome.comparisons.append(Comparison(gradient, error, ratio, not_judged=why))
                continue
            outcome.comparisons.append(Comparison(gradient, error, ratio))
            if not ratio <= 1.0:
                outcome.failures.append(f"{gradient} exceeds the error bound: max error {error:.3g} is {ratio:.3g}x the "
                                        f"bound at index {index} (got {grads['framework'][name][index]:.9g}, reference "
                                        f"{expected[name][index]:.9g}); layer {spec.describe()}")
    outcome.reduction_length = terms or claim.variants[0].spec(dims).reduction_length
    return outcome
