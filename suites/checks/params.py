"""The params check: every variant of an `equal` claim has the same number of parameters (example sizes)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from layer_conformance.adapters import get_adapter
from layer_conformance.suites.catalog import Claim, Variant
from layer_conformance.suites.outcomes import Case
from layer_conformance.suites.strategies import Dims, describe_dims


@dataclass
class ParamsOutcome:
    claim: Claim
    dims: Dims  # the claim's example sizes
    counts: dict[str, int]  # label -> the parameters its framework's layer has
    expected: int  # from variants[0]'s spec

    @property
    def wrong(self) -> dict[str, int]:
        """The variants whose count differs: label -> their count."""
        return {label: count for label, count in self.counts.items() if count != self.expected}

    def message(self) -> str:
        return (f"claim {self.claim.id}: parameter counts differ at {describe_dims(self.dims)}: expected "
                f"{self.expected} (from {self.claim.variants[0].label(self.dims)}), got {self.wrong}")


def check_params(case: Case, variants: list[Variant]) -> ParamsOutcome:
    """Each variant built at the claim's example sizes (zero weights) and its parameters counted."""
    claim, dtype, device = case
    dims = claim.example
    counts = {}
    for variant in variants:
        spec = variant.spec(dims)
        weights = {"kernel": np.zeros(spec.kernel_shape()), **({"bias": np.zeros(spec.out_features)} if spec.bias else {})}
        counts[variant.label(dims)] = get_adapter(variant.framework).build(spec, weights, dtype, device).param_count()
    return ParamsOutcome(claim, dims, counts, claim.variants[0].spec(dims).param_count())
