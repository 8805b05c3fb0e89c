"""The depth check: stacks of up to MAX_DEPTH layers per variant, each depth under the composed bound.

The stack itself (stackable sizes, weights, the reference stack and its composed bounds, a framework's
stack) is layer_conformance.suites.depth; this module judges one drawn stack.
"""
from __future__ import annotations

import numpy as np

from layer_conformance.suites.accumulation import not_judged_reason
from layer_conformance.suites.bounds import bound_ratio, vacuous
from layer_conformance.suites.catalog import Variant
from layer_conformance.suites.checks.common import beyond_ceiling, why_not_run
from layer_conformance.suites.depth import framework_stack, layer_weights, reference_stack
from layer_conformance.suites.numerics import declared_u_eff
from layer_conformance.suites.outcomes import Case, CheckOutcome, Comparison
from layer_conformance.suites.strategies import Dims, random_array


def check_depth(case: Case, dims: Dims, depth: int, seed: int, variants: list[Variant]) -> CheckOutcome:
    """A stack of `depth` layers (sizes `dims`, already stackable; input and weights drawn from `seed`) run by
    every variant; error against depth under the composed bound. A variant stops at its first failing depth,
    and at the first depth whose bound is infinite (measured, not judged: every deeper bound is infinite too)."""
    claim, dtype, device = case
    rng = np.random.default_rng(seed)
    base = claim.variants[0]
    spec = base.spec(dims)
    x = random_array(rng, claim.input_shape(dims), "normal", dtype)
    stack = [layer_weights(rng, spec, dtype) for _ in range(depth)]
    activations, bounds = reference_stack(base, dims, x, stack, dtype)
    outcome = CheckOutcome(case, f"depth {depth}", dims, reduction_length=spec.reduction_length)
    for variant in variants:
        label = variant.label(dims)
        reason, divergence = why_not_run(variant, dims, x, case, "depth")
        if reason:
            outcome.skipped[label] = outcome.not_compared[label] = reason
            continue
        outcome.compared.append(label)
        mode, u_eff = declared_u_eff(variant.framework, variant.spec(dims), dtype, device)  # e.g. TF32
        own = reference_stack(base, dims, x, stack, dtype, u_eff)[1] if mode else bounds
        if mode:
            outcome.declared[label] = mode
        ceilings = reference_stack(base, dims, x, stack, divergence.ceiling.bound_dtype(dtype))[1] \
            if divergence else own
        outputs = framework_stack(variant, dims, x, stack, dtype, device)
        curve = outcome.depth_curve[label] = []  # the bound ratio at each depth run
        for level, (y, ref, bound) in enumerate(zip(outputs, activations, own)):
            error, ratio, index = bound_ratio(y, ref, bound)
            curve.append(ratio)
            if divergence:  # judged against its ceiling only
                comparison, beyond = beyond_ceiling(label, divergence, y, ref, ceilings[level], error, ratio,
                                                    f" at depth {level + 1}")
                outcome.comparisons.append(comparison)
                if beyond:
                    outcome.failures.append(beyond)
                    break
                continue
            if vacuous(bound):  # composed through the layers: every deeper bound is infinite too
                outcome.comparisons.append(Comparison(label, error, ratio, not_judged=not_judged_reason(
                    spec.reduction_length + 1, dtype, None,
                    f"the depth check composes the worst-case bound; infinite from depth {level + 1}")))
                break
            outcome.comparisons.append(Comparison(label, error, ratio))
            if not ratio <= 1.0:
                outcome.failures.append(f"{label} at depth {level + 1} exceeds the composed bound: error {error:.3g} "
                                        f"is {ratio:.3g}x the bound at index {index}; layer {spec.describe()}")
                break
    return outcome
