"""The init check: each variant's default initializers against the distributions its framework documents.

Per claim, every runnable variant at the claim's example sizes is built from its framework's own
defaults over seeds 0, 1, ... until the kernel has MIN_SAMPLES values (at most MAX_SEEDS seeds).
Each random tensor gets a one-sample KS test and a support check; each zeros tensor must be exactly
zero. The row's false-alarm rate is ALPHA: Bonferroni over its KS tests, each at ALPHA / m (the
support and zeros checks are exact and cannot false-alarm). The seeds are fixed, so a row's
verdict is reproducible.

MIN_SAMPLES is set by the smallest fault worth catching: torch's U(+-1/sqrt(fan_in)) against the
glorot U(+-sqrt(6/(fan_in+fan_out))) of the xfw-dense row (8 -> 32) differ by D = 0.044, which 2048
samples leave at p ~ 5e-4 (above the row's 2e-4) but 8192 push to ~ 1e-14.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from layer_conformance.adapters import get_adapter
from layer_conformance.adapters.spec import LayerSpec
from layer_conformance.suites.catalog import Claim, Variant
from layer_conformance.suites.stats import Dist, documented_init, ks_test, outside_support, point_mass_zero
from layer_conformance.suites.strategies import Dims

ALPHA = 1e-3  # per row
MIN_SAMPLES = 8192  # kernel values per variant
MAX_SEEDS = 64  # keeps tiny layers cheap; their KS test then runs on fewer values


@dataclass
class InitOutcome:
    claim: Claim
    dims: Dims  # the claim's example sizes
    results: dict[str, dict[str, dict[str, Any]]]  # label -> tensor -> distribution, n, seeds, source, KS, ...
    failures: list[str]
    differs: bool  # the variants start from different distributions
    note: str  # a sentence saying which
    alpha: float  # the row's false-alarm rate
    tests: int  # KS tests in the row
    threshold: float  # each test's level: alpha / tests
    samples: int  # values tested, all tensors together

    def message(self) -> str:
        return (f"claim {self.claim.id}: default initializers do not follow their documented distributions "
                f"(KS at alpha = {self.alpha:g} per row, Bonferroni over {self.tests} tests; support and zeros exact)"
                f"\n  " + "\n  ".join(self.failures))


def draw_defaults(framework: str, spec: LayerSpec, min_samples: int = MIN_SAMPLES,
                  max_seeds: int = MAX_SEEDS) -> tuple[dict[str, np.ndarray], int]:
    """Default weights over seeds 0..S-1, each tensor flattened and concatenated; and S."""
    seeds = min(max_seeds, max(1, math.ceil(min_samples / math.prod(spec.kernel_shape()))))
    adapter = get_adapter(framework)
    draws = [adapter.default_weights(spec, seed) for seed in range(seeds)]
    return {name: np.concatenate([np.asarray(d[name], dtype=np.float64).ravel() for d in draws])
            for name in draws[0]}, seeds


def check_init(claim: Claim, variants: Iterable[Variant], alpha: float = ALPHA) -> InitOutcome:
    """The init results of the claim's variants at its example sizes; a failure line per mismatch."""
    dims = claim.example
    documented = {v.label(dims): (v, documented_init(v.framework, v.spec(dims))) for v in variants}
    tests = sum(d.continuous for _, docs in documented.values() for d in docs.values())
    threshold = alpha / max(tests, 1)
    results: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    samples = 0
    for label, (variant, docs) in documented.items():
        drawn, seeds = draw_defaults(variant.framework, variant.spec(dims))
        results[label] = {}
        for name in sorted(set(drawn) | set(docs)):
            dist, values = docs.get(name), drawn.get(name)
            if dist is None or values is None:
                failures.append(f"{label} {name}: {'documented but not created' if values is None else 'created but not documented'}")
                continue
            samples += values.size
            entry: dict[str, Any] = {"distribution": dist.describe(), "n": int(values.size), "seeds": seeds,
                                     "source": dist.source}
            if dist.continuous:
                d, p = ks_test(values, dist.cdf())
                outside = outside_support(values, dist)
                entry.update(ks=d, p=p, outside_support=outside)
                if not p >= threshold or outside:
                    verdict = f"p = {p:.3g} {'<' if p < threshold else '>='} {threshold:.3g}"
                    beyond = (f"; {outside} values lie outside its support (largest |value| "
                              f"{np.max(np.abs(values)):.4g})") if outside else ""
                    failures.append(f"{label} {name}: documented {dist.describe()}, KS D = {d:.4g} over "
                                    f"{values.size} values ({seeds} seeds), {verdict}{beyond}")
            else:
                nonzero, largest = point_mass_zero(values)
                entry.update(ks=None, p=None, nonzero=nonzero, max_abs=largest)
                if nonzero:
                    failures.append(f"{label} {name}: documented {dist.describe()}, {nonzero} of {values.size} "
                                    f"values are non-zero (largest |value| {largest:.4g})")
            results[label][name] = entry
    differs, note = _compare(claim, {label: docs for label, (_, docs) in documented.items()})
    return InitOutcome(claim, dims, results, failures, differs, note, alpha, tests, threshold, samples)


def _compare(claim: Claim, documented: dict[str, dict[str, Dist]]) -> tuple[bool, str]:
    """Whether the variants start from different distributions, and a sentence saying which."""
    lines, differs = [], False
    for name in ("kernel", "bias"):
        groups: list[tuple[Dist | None, list[str]]] = []
        for label, docs in documented.items():
            dist = docs.get(name)
            for group in groups:
                if (group[0] is None and dist is None) or (group[0] is not None and dist is not None
                                                          and group[0].same_as(dist)):
                    group[1].append(label)
                    break
            else:
                groups.append((dist, [label]))
        differs |= len(groups) > 1
        lines.append(f"{name}: " + "; ".join(f"{', '.join(labels)} {'none' if d is None else d.describe()}"
                                             for d, labels in groups))
    if len(documented) < 2:
        return False, "one variant ran: " + "; ".join(lines)
    if not differs:
        return False, ("all variants start from the same distributions (" + "; ".join(lines) + "): left at their "
                       "defaults they begin training alike")
    why = ("equal weights give equal outputs, but left at its defaults each starts from a different distribution "
           "(the usual reason one 'trains differently' from the other)") if claim.relation == "equal" else \
        "the variants also start from different distributions"
    return True, "variants start from different distributions: " + " | ".join(lines) + f"; {why}"
