"""What one check produced: a row (Case: claim, dtype, device) and the outcome of one example on it.

The checks (layer_conformance.suites.checks) return these; the harness keeps the books from them and
counterexamples are saved from them, so all of them import them from here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, NamedTuple, Protocol

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
    declared: dict[str, str] = field(default_factory=dict)  # label -> the declared precision mode it is judged under
    # `equal` rows: ((a, b), max |y_a - y_b|, that over bound_a + bound_b) for every pair of variants it judged
    pairwise: list[tuple[tuple[str, str], float, float]] = field(default_factory=list)

    @property
    def worst(self) -> tuple[float, float]:
        """(bound ratio, error) of the worst variant judged against the normal bound: the example's sample."""
        return worst_of(self.variants)

    @property
    def reduction_length(self) -> int:
        return self.case.claim.variants[0].spec(self.dims).reduction_length

    def message(self, style: str | None = None) -> str:
        claim, dtype, device = self.case
        text = (f"claim {claim.id} [{dtype}, {device}] ({claim.relation}): {claim.title}\n  "
                + "\n  ".join(self.failures) + f"\n  dims={describe_dims(self.dims)}")
        return text + (f", data style={style}" if style else "")


class Judged(Protocol):
    """What the books read of a comparison: VariantOutcome (forward) and Comparison (the other checks) alike."""

    label: str
    error: float | None
    ratio: float | None
    divergence: str | None
    ceiling_ratio: float
    not_judged: str | None


def worst_of(comparisons: Iterable[Judged | Raised]) -> tuple[float, float]:
    """The largest (ratio, error) among the comparisons judged against the normal bound (not under a divergence,
    not measured only), taken in order as a running max (a NaN ratio never displaces an earlier one)."""
    worst = (0.0, 0.0)
    for c in comparisons:
        if not isinstance(c, Raised) and not c.not_judged and not c.divergence:
            worst = max(worst, (c.ratio, c.error))
    return worst


@dataclass
class Comparison:
    """One variant (or one of its gradients) against the reference on one example, as the books note it."""

    label: str
    error: float | None = None  # max |y - y_ref|; None where nothing was measured
    ratio: float | None = None  # that against the normal bound
    divergence: str | None = None  # id of the documented divergence it is judged under (against its ceiling)
    ceiling_ratio: float = 0.0  # under a divergence: its error against the divergence's ceiling
    not_judged: str | None = None  # why it was measured but not judged (an infinite bound)


@dataclass
class Raised:
    """A variant run under an exception divergence: the error it raised (None: none), and the failure when
    that was not the documented one."""

    label: str
    divergence: str
    raised: str | None
    problem: str | None


@dataclass
class CheckOutcome:
    """One example of the gradient, depth or batch check (the forward check's is ExampleOutcome)."""

    case: Case
    what: str  # the check as its failure message names it: "gradient", "depth 5", "batch"
    dims: Dims
    reduction_length: int = 0  # the n of the example's sample (for the report's plots)
    compared: list[str] = field(default_factory=list)  # the variants compared with the reference
    # every comparison in the order it was made; an exception divergence's run (Raised) among them
    comparisons: list[Comparison | Raised] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # variants not run on this example: label -> why
    not_compared: dict[str, str] = field(default_factory=dict)  # skipped, and those whose documented error was asserted
    accumulation: dict[str, str | None] = field(default_factory=dict)  # label -> what its probe found (batch)
    declared: dict[str, str] = field(default_factory=dict)  # label -> the declared precision mode it is judged under
    depth_curve: dict[str, list[float]] = field(default_factory=dict)  # depth: label -> bound ratio per layer run
    failures: list[str] = field(default_factory=list)

    @property
    def worst(self) -> tuple[float, float]:
        return worst_of(self.comparisons)

    def message(self, style: str | None = None) -> str:
        """The AssertionError text of a failing example: the first failure on the first line."""
        claim, dtype, device = self.case
        example = describe_dims(self.dims) + (f", data style={style}" if style else "")
        more = f" (and {len(self.failures) - 1} more below)" if len(self.failures) > 1 else ""
        # first line: what failed, by how much, on which example; the report shows it above the full text
        return (f"{self.failures[0]}{more}; example: {example}\n"
                f"  claim {claim.id} [{dtype}, {device}] {self.what}: {claim.title}\n  " + "\n  ".join(self.failures)
                + f"\n  dims={example}")
