"""The books of one result row: what the checks' outcomes showed, kept across a test's examples.

`Books` turns each example's outcome (layer_conformance.suites.outcomes) into the report record's statistics:
per-variant and pairwise maxima, the divergences seen, the comparisons measured but not judged, the
accumulators found, the samples for the plots. The runner (layer_conformance.suites.harness.ClaimRunner)
owns one per test.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from layer_conformance.reports.recorder import NOT_JUDGED_PREFIX
from layer_conformance.suites.depth import MAX_DEPTH
from layer_conformance.suites.divergences import by_id
from layer_conformance.suites.outcomes import Case, ExampleOutcome, Judged, Raised

MAX_SAMPLES = 400  # per result, for the report's plots


@dataclass
class VariantStats:
    max_abs_error: float = 0.0
    max_bound_ratio: float = 0.0
    examples: int = 0


@dataclass
class Books:
    """The statistics of one row (a claim in a dtype on a device), and the record they are written into."""

    case: Case
    record: dict[str, Any]
    stats: dict[str, VariantStats] = field(default_factory=dict)
    pairwise: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # the record's skipped_variants
    separation: float = float("inf")
    divergences: dict[str, dict[str, Any]] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    # ---- one outcome --------------------------------------------------------------------------
    def note_example(self, outcome: ExampleOutcome) -> None:
        """Everything a forward example showed, the sample included."""
        self.note_skipped(outcome.skipped)
        self.note_accumulation(outcome.accumulation)
        self.note_declared(outcome.declared)
        self.note_comparisons(outcome.variants)
        if outcome.separation is not None:
            self.separation = min(self.separation, outcome.separation)
        for (a, b), error, ratio in outcome.pairwise:
            self.note_pair(a, b, error, ratio)
        for label, (error, ratio) in outcome.device_agreement.items():
            self.note_pair(f"{label} [{self.case.device}]", f"{label} [cpu]", error, ratio)
        self.note_sample(outcome.worst, outcome.reduction_length)

    def note_skipped(self, skipped: dict[str, str]) -> None:
        """Variants not run on one example (label -> why)."""
        for label, reason in skipped.items():
            self.skipped[f"{label} (some examples)"] = reason

    def note_comparisons(self, comparisons: Iterable[Judged | Raised]) -> None:
        """An example's comparisons, in the order they were made."""
        for c in comparisons:
            if isinstance(c, Raised):
                self.note_raised(c.label, c.divergence, c.raised, c.problem)
            elif c.not_judged:
                self.not_judged(c.label, c.not_judged)
            else:
                self.note(c.label, c.error, c.ratio, c.divergence, c.ceiling_ratio)

    def note_depth_curve(self, curve: dict[str, list[float]]) -> None:
        """record["depth_curve"]: per variant, the largest bound ratio seen at each depth (null: never run)."""
        kept = self.record.setdefault("depth_curve", {})
        for label, levels in curve.items():
            ratios = kept.setdefault(label, [None] * MAX_DEPTH)
            for level, ratio in enumerate(levels):
                ratios[level] = _finite(max(ratio, ratios[level] or 0.0))

    # ---- the statistics -----------------------------------------------------------------------
    def note(self, label: str, error: float, ratio: float, divergence: str | None = None,
             ceiling_ratio: float = 0.0) -> None:
        if divergence:  # observed: beyond the normal bound; within_ceiling: never beyond what the divergence allows
            seen = self.divergences.setdefault(label, {"id": divergence, "kind": "numeric", "max_bound_ratio": 0.0,
                                                       "examples": 0, "max_abs_error": 0.0, "max_ceiling_ratio": 0.0})
            seen["max_bound_ratio"] = max(seen["max_bound_ratio"], _not_nan(ratio))
            seen["max_abs_error"] = max(seen["max_abs_error"], _not_nan(error))
            seen["max_ceiling_ratio"] = max(seen["max_ceiling_ratio"], _not_nan(ceiling_ratio))
            seen["examples"] += 1
            seen["observed"] = seen["max_bound_ratio"] > 1.0
            seen["within_ceiling"] = seen["max_ceiling_ratio"] <= 1.0
            return
        stats = self.stats.setdefault(label, VariantStats())
        stats.examples += 1
        stats.max_abs_error = max(stats.max_abs_error, error)
        stats.max_bound_ratio = max(stats.max_bound_ratio, ratio)

    def not_judged(self, label: str, reason: str) -> None:
        """A comparison whose bound is infinite: measured, never passed. The result becomes `measured` (the
        report plugin), with the reasons in record["not_judged"] and its reason line."""
        seen = self.record.setdefault("not_judged", {})
        if label not in seen:
            seen[label] = reason
            self.record["reason"] = NOT_JUDGED_PREFIX + "; ".join(f"{k}: {v}" for k, v in seen.items())

    def note_declared(self, declared: dict[str, str]) -> None:
        """record["declared_roundoff"]: per variant, the declared precision modes (TF32, ...) it was judged under
        (layer_conformance.suites.numerics); absent when every variant computes in its dtype."""
        for label, mode in declared.items():
            modes = self.record.setdefault("declared_roundoff", {}).setdefault(label, [])
            if mode not in modes:
                modes.append(mode)

    def note_accumulation(self, found: dict[str, str | None]) -> None:
        """record["accumulation"]: per variant, the accumulators its probes found (layer_conformance.suites.accumulation)."""
        for label, accumulation in found.items():
            if accumulation is not None:  # None: no probe applies (not half precision, too few terms)
                kinds = self.record.setdefault("accumulation", {}).setdefault(label, [])
                if accumulation not in kinds:
                    kinds.append(accumulation)

    def note_raised(self, label: str, divergence: str, raised: str | None, problem: str | None) -> None:
        """An exception divergence ran: observed when it raised; within its ceiling while always as documented."""
        seen = self.divergences.setdefault(label, {"id": divergence, "kind": "exception", "max_bound_ratio": None,
                                                   "examples": 0, "max_abs_error": None, "raised": 0,
                                                   "within_ceiling": True})
        seen["examples"] += 1
        seen["raised"] += raised is not None
        seen["observed"] = seen["raised"] > 0
        seen["error"] = raised or seen.get("error")
        if problem:
            seen["within_ceiling"] = False
            seen.setdefault("problem", problem)
        self.publish_divergences()

    def publish_divergences(self) -> None:
        self.record["divergences"] = {label: _divergence_entry(seen) for label, seen in self.divergences.items()}

    def note_pair(self, a: str, b: str, error: float, ratio: float) -> None:
        old = self.pairwise.setdefault((a, b), [0.0, 0.0])
        old[0], old[1] = max(old[0], error), max(old[1], ratio)

    def note_sample(self, worst: tuple[float, float], reduction_length: int) -> None:
        """One example counted: its sample for the plots, and the row's statistics so far into the record."""
        record = self.record
        record["examples"] += 1
        samples = record["samples"]
        if len(samples["bound_ratio"]) < MAX_SAMPLES:
            samples["bound_ratio"].append(_finite(worst[0]))
            samples["abs_error"].append(_finite(worst[1]))
            samples["reduction_length"].append(int(reduction_length))
        if self.stats:
            record["max_abs_error"] = _finite(max(s.max_abs_error for s in self.stats.values()))
            record["max_bound_ratio"] = _finite(max(s.max_bound_ratio for s in self.stats.values()))
        record["per_variant"] = {k: {"max_abs_error": _finite(s.max_abs_error),
                                     "max_bound_ratio": _finite(s.max_bound_ratio), "examples": s.examples}
                                 for k, s in self.stats.items()}
        record["pairwise"] = [{"a": a, "b": b, "max_abs_error": _finite(e), "max_bound_ratio": _finite(r)}
                              for (a, b), (e, r) in self.pairwise.items()]
        self.publish_divergences()
        record["separation"] = None if self.separation == float("inf") else _finite(self.separation)
        record["duration"] = round(time.perf_counter() - self.started, 3)


def _divergence_entry(seen: dict[str, Any]) -> dict[str, Any]:
    """A row's `divergences` entry: what the variant showed, JSON-safe (non-finite numbers are null)."""
    numbers = {k: _finite(seen[k]) for k in ("max_bound_ratio", "max_abs_error", "max_ceiling_ratio")
               if seen.get(k) is not None}
    return {**seen, **numbers, "summary": by_id(seen["id"]).summary}


def _not_nan(value: float) -> float:
    """A NaN ratio or error (inf against an inf bound) counts as infinitely far off."""
    return float("inf") if value != value else value


def _finite(value: float) -> float | None:
    """JSON has no inf/nan: the report stores null for a non-finite number."""
    return float(value) if np.isfinite(value) else None
