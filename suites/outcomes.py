"""What one check produced: a row (Case: claim, dtype, device) and the outcome of one example on it.

The harness fills these; counterexamples are saved from them, so both import them from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from layer_conformance.adapters.spec import LayerSpec, Weights
from layer_conformance.suites.catalog import Claim
from layer_conformance.suites.strategies import Dims, describe_dims


class Case(NamedTuple):
    """One parametrization of a check: a claim in a dtype on a device."""

    claim: Claim
    dtype: str
    device: str

    @property
    def id(self) -> str:
        return f"{self.claim.id}-{self.dtype}-{self.device}"


@dataclass
class VariantOutcome:
    """One variant on one example; layer-level arrays are what a standalone reproduction needs."""

    label: str
    framework: str
    spec: LayerSpec
    layer_x: np.ndarray
    layer_w: Weights
    layer_y: np.ndarray  # the framework's output, float64, layer layout
    layer_reference: np.ndarray  # float64 reference of the same layer on the same values
    layer_bound: np.ndarray
    y: np.ndarray  # claim layout
    bound: np.ndarray  # claim layout
    error: float
    ratio: float
    failure: str | None = None
    divergence: str | None = None  # id of the documented divergence this variant showed
    ceiling_ratio: float = 0.0  # under a divergence: its error against the divergence's ceiling
    not_judged: str | None = None  # why its output was measured but not judged (an infinite bound)


@dataclass
class ExampleOutcome:
    case: Case
    dims: Dims
    x: np.ndarray
    weights: Weights
    variants: list[VariantOutcome] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    separation: float | None = None
    failures: list[str] = field(default_factory=list)
    device_agreement: dict[str, tuple[float, float]] = field(default_factory=dict)  # label -> (error, ratio)
    accumulation: dict[str, str | None] = field(default_factory=dict)  # label -> what its probe found (accumulator)

    def message(self, style: str | None = None) -> str:
        claim, dtype, device = self.case
        text = (f"claim {claim.id} [{dtype}, {device}] ({claim.relation}): {claim.title}\n  "
                + "\n  ".join(self.failures) + f"\n  dims={describe_dims(self.dims)}")
        return text + (f", data style={style}" if style else "")
