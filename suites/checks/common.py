"""What the checks share: whether a variant runs on an example, and a divergent variant against its ceiling."""
from __future__ import annotations

import numpy as np

from layer_conformance.adapters import get_adapter
from layer_conformance.suites.catalog import Variant
from layer_conformance.suites.divergences import Divergence, ceiling_failure, divergence_for
from layer_conformance.suites.outcomes import Case, Comparison
from layer_conformance.suites.strategies import Dims


def why_not_run(variant: Variant, dims: Dims, x: np.ndarray, case: Case,
                check: str) -> tuple[str | None, Divergence | None]:
    """(why the variant is not run on this example, its documented divergence in this check).

    Not run: its framework refuses the drawn geometry, or its divergence here is not numeric (a crash, an
    exception), which is never run by the depth and batch checks.
    """
    _, dtype, device = case
    spec = variant.spec(dims)
    reason = get_adapter(variant.framework).supports(spec, dtype, device)
    if reason:
        return reason, None
    divergence = divergence_for(variant.framework, spec, dtype, check, variant.x_in(x, dims).shape, device=device)
    if divergence and divergence.kind != "numeric":
        return divergence.not_run_reason(), divergence
    return None, divergence


def beyond_ceiling(label: str, divergence: Divergence, y: np.ndarray, expected: np.ndarray,
                   ceiling_bound: np.ndarray, error: float, ratio: float,
                   where: str = "", magnitude: np.ndarray | None = None) -> tuple[Comparison, str | None]:
    """A divergent variant's comparison (its error and ratio against the normal bound, and against its
    ceiling); and the failure line if it is beyond the divergence's ceiling (`magnitude`: the reference's,
    for a ceiling that exempts unread elements)."""
    c_error, c_ratio, index = divergence.ceiling.judge(y, expected, ceiling_bound, magnitude)
    comparison = Comparison(label, error, ratio, divergence.id, c_ratio)
    if c_ratio <= 1.0:
        return comparison, None
    return comparison, ceiling_failure(divergence, label, c_error, c_ratio, f"{where} at index {index}")
