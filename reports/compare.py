"""`conformance compare`: what changed between a baseline report.json and a current one.

Used to gate framework upgrades in CI: exit 1 when the current run is worse than the baseline.

Rules (kept here so the Markdown and the exit code agree):

* A result is identified across runs by ``result_key``: its nodeid, plus the Keras backend for
  results that involve a Keras variant (one run per backend reuses the same nodeids).
* Regression (exit 1): a result now ``failed``/``error`` that was not ``failed``/``error`` in the
  baseline (``skipped -> failed`` included: the break is real, it was only unseen before), and a
  baseline result that is absent from the current report unless it was skipped there, since a check
  disappearing can hide a break. A vanished skipped result is listed under skips only.
* Drift (exit 1): ``max_bound_ratio`` grew by more than ``factor``. Baseline ratios below
  ``DRIFT_FLOOR`` (zero included) count as ``DRIFT_FLOOR``: errors far inside the bound move by
  large relative amounts without meaning anything, and a zero baseline would give an infinite
  factor. A result already counted as a regression is not listed again as drift.
* Listed only: fixed results (``failed``/``error`` -> ``passed``), new results and claims (they come
  from a newer suite, not from the framework under test), skip changes (a skip carries its reason
  in the report, so it is visible rather than silent), and other status changes (for example
  ``failed <-> error`` or ``passed <-> xfailed``).
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from reports.schema import ReportError, load_report, require_results, summarize, write_text_atomic

DRIFT_FLOOR = 1e-3
DEFAULT_FACTOR = 2.0

# Worst first; merge keeps the worse of two conflicting statuses.
STATUS_SEVERITY = {"error": 4, "failed": 3, "passed": 2, "xfailed": 1, "skipped": 0}
BAD_STATUSES = ("failed", "error")

_REASON_WIDTH = 200


def result_key(result: dict[str, Any]) -> tuple[str, str]:
    """Identity of a result across runs and shards: (nodeid, Keras backend or "")."""
    variants = result.get("variants") or []
    backend = ""
    if any(isinstance(name, str) and name.startswith("keras.") for name in variants):
        backend = result.get("keras_backend") or ""
    return (str(result.get("nodeid", "")), str(backend))


def severity(status: str | None) -> int:
    return STATUS_SEVERITY.get(status or "", -1)


class VersionChange(NamedTuple):
    name: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class Change:
    """One listed difference; ``old_*`` fields are None for new results, ``new_*`` for vanished ones."""

    kind: str  # regression | vanished | drift | fixed | new | new_claim | skip | variant_skip | status
    nodeid: str
    claim: str
    keras_backend: str = ""
    check: str | None = None
    variants: tuple[str, ...] = ()
    dtype: str | None = None
    device: str | None = None
    old_status: str | None = None
    new_status: str | None = None
    old_ratio: float | None = None
    new_ratio: float | None = None
    factor: float | None = None
    reason: str | None = None
    title: str | None = None  # claims only


@dataclass
class Comparison:
    version_changes: list = field(default_factory=list)
    regressions: list = field(default_factory=list)
    drift: list = field(default_factory=list)
    new: list = field(default_factory=list)
    fixed: list = field(default_factory=list)
    skips_changed: list = field(default_factory=list)
    status_changes: list = field(default_factory=list)
    versions: list = field(default_factory=list)  # every framework, changed or not
    factor: float = DEFAULT_FACTOR
    baseline_summary: dict = field(default_factory=dict)
    current_summary: dict = field(default_factory=dict)
    baseline_complete: bool = True
    current_complete: bool = True

    @property
    def regressed(self) -> bool:
        return bool(self.regressions or self.drift)

    @property
    def exit_code(self) -> int:
        return 1 if self.regressed else 0

    def to_markdown(self, baseline_name: str = "baseline", current_name: str = "current") -> str:
        return _render_markdown(self, baseline_name, current_name)


# ----------------------------------------------------------------------------- comparing


def _ratio(result: dict[str, Any] | None) -> float | None:
    if result is None:
        return None
    value = result.get("max_bound_ratio")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _index(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Results by key, in report order; a key seen twice keeps the worse status (conservative)."""
    index: dict[tuple[str, str], dict[str, Any]] = {}
    for result in results:
        key = result_key(result)
        if key not in index or severity(result.get("status")) > severity(index[key].get("status")):
            index[key] = result
    return index


def _change(kind: str, old: dict | None, new: dict | None, **extra: Any) -> Change:
    ref = new if new is not None else old
    assert ref is not None
    variants = ref.get("variants") or []
    reason = extra.pop("reason", None)
    if reason is None and new is not None:
        reason = new.get("reason")
        if not reason and old is not None and old.get("reason"):
            reason = f"was: {old['reason']}"
    elif reason is None and old is not None:
        reason = old.get("reason")
    return Change(
        kind=kind,
        nodeid=str(ref.get("nodeid", "")),
        claim=str(ref.get("claim", "")),
        keras_backend=result_key(ref)[1],
        check=ref.get("check"),
        variants=tuple(str(v) for v in variants),
        dtype=_text_or_none(ref.get("dtype")),
        device=_text_or_none(ref.get("device")),
        old_status=None if old is None else old.get("status"),
        new_status=None if new is None else new.get("status"),
        old_ratio=_ratio(old),
        new_ratio=_ratio(new),
        reason=reason,
        **extra,
    )


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _drift_factor(old: float | None, new: float | None) -> float | None:
    """Growth of the bound ratio, with small baselines floored at DRIFT_FLOOR; None if not comparable."""
    if old is None or new is None or math.isnan(old) or math.isnan(new) or old < 0 or math.isinf(old):
        return None
    return new / max(old, DRIFT_FLOOR)


def _framework_versions(report: dict[str, Any]) -> dict[str, str | None]:
    """Framework (and Python) versions of a report; a merged report whose shards disagree shows them all."""
    environments = [report.get("environment") or {}]
    environments += [(shard or {}).get("environment") or {} for shard in report.get("shards") or []]
    seen: dict[str, list[str]] = {}
    for environment in environments:
        named = dict(environment.get("frameworks") or {})
        if "python" in environment:
            named["python"] = environment["python"]
        for name, version in named.items():
            bucket = seen.setdefault(str(name), [])
            if version is not None and str(version) not in bucket:
                bucket.append(str(version))
    return {name: " / ".join(sorted(bucket)) or None for name, bucket in seen.items()}


def _variant_skips(result: dict[str, Any]) -> dict[str, str]:
    skipped = result.get("skipped_variants")
    return {str(k): str(v) for k, v in skipped.items()} if isinstance(skipped, dict) else {}


def compare_reports(baseline: dict[str, Any], current: dict[str, Any], *,
                    factor: float = DEFAULT_FACTOR) -> Comparison:
    """Classify every difference between two loaded reports (see the module docstring for the rules)."""
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) \
            or factor <= 1:
        raise ValueError(f"drift factor must be a finite number greater than 1 (got {factor!r}); "
                         f"a ratio growing by more than this factor counts as a regression")
    base_results = baseline.get("results") or []
    cur_results = current.get("results") or []
    comparison = Comparison(
        factor=float(factor),
        baseline_summary=summarize(base_results),
        current_summary=summarize(cur_results),
        baseline_complete=bool(baseline.get("complete", False)),
        current_complete=bool(current.get("complete", False)),
    )

    old_versions = _framework_versions(baseline)
    new_versions = _framework_versions(current)
    for name in sorted(set(old_versions) | set(new_versions), key=lambda n: (n == "python", n)):
        row = VersionChange(name, old_versions.get(name), new_versions.get(name))
        comparison.versions.append(row)
        if row.old != row.new:
            comparison.version_changes.append(row)

    old_index = _index(base_results)
    new_index = _index(cur_results)

    for key, old in old_index.items():
        new = new_index.get(key)
        old_status = old.get("status")
        if new is None:
            if old_status == "skipped":
                comparison.skips_changed.append(_change("vanished", old, None))
            else:
                comparison.regressions.append(_change("vanished", old, None))
            continue
        new_status = new.get("status")
        if new_status in BAD_STATUSES and old_status not in BAD_STATUSES:
            comparison.regressions.append(_change("regression", old, new))
            continue
        if old_status in BAD_STATUSES and new_status == "passed":
            comparison.fixed.append(_change("fixed", old, new))
        elif old_status != new_status and "skipped" in (old_status, new_status):
            comparison.skips_changed.append(_change("skip", old, new))
        elif old_status != new_status:
            comparison.status_changes.append(_change("status", old, new))

        growth = _drift_factor(_ratio(old), _ratio(new))
        if growth is not None and growth > factor:
            comparison.drift.append(_change("drift", old, new, factor=growth))

        old_skips, new_skips = _variant_skips(old), _variant_skips(new)
        for variant in sorted(set(old_skips) ^ set(new_skips)):
            if variant in new_skips:
                comparison.skips_changed.append(_change(
                    "variant_skip", old, new, reason=f"variant {variant} now skipped: {new_skips[variant]}"))
            else:
                comparison.skips_changed.append(_change(
                    "variant_skip", old, new, reason=f"variant {variant} runs again"))

    for key, new in new_index.items():
        if key not in old_index:
            comparison.new.append(_change("new", None, new))

    old_claims = baseline.get("claims") or {}
    for claim_id, claim in (current.get("claims") or {}).items():
        if claim_id not in old_claims:
            claim = claim if isinstance(claim, dict) else {}
            comparison.new.append(Change(
                kind="new_claim", nodeid="", claim=str(claim_id),
                variants=tuple(str(v) for v in claim.get("variants") or []),
                check=claim.get("relation"), title=claim.get("title"), reason=claim.get("source")))
    return comparison


# ----------------------------------------------------------------------------- Markdown


def _cell(value: Any, width: int | None = None) -> str:
    text = "" if value is None else str(value)
    text = " ".join(text.split())
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text.replace("|", "\\|")


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _result_name(change: Change) -> str:
    name = f"`{change.nodeid}`"
    if change.keras_backend:
        name += f" (Keras backend {change.keras_backend})"
    return name


def _status_cell(change: Change) -> str:
    if change.old_status is None:
        return change.new_status or ""
    old = change.old_status
    new = change.new_status or "(absent)"
    return old if old == new else f"{old} → {new}"


def _ratio_cell(change: Change) -> str:
    if change.old_status is None:
        return _fmt_ratio(change.new_ratio)
    if change.new_status is None:
        return _fmt_ratio(change.old_ratio)
    text = f"{_fmt_ratio(change.old_ratio)} → {_fmt_ratio(change.new_ratio)}"
    growth = change.factor if change.factor is not None else _drift_factor(change.old_ratio, change.new_ratio)
    if growth is not None and change.old_ratio is not None and change.new_ratio is not None:
        text += f" (×{growth:.3g})"
    return text


def _results_table(changes: list[Change]) -> list[str]:
    lines = ["| Result | Claim | Check | Variants | dtype | device | Status | Bound ratio | Reason |",
             "|---|---|---|---|---|---|---|---|---|"]
    for change in changes:
        lines.append("| " + " | ".join([
            _cell(_result_name(change)), _cell(change.claim), _cell(change.check),
            _cell(", ".join(change.variants)), _cell(change.dtype), _cell(change.device),
            _cell(_status_cell(change)), _cell(_ratio_cell(change)), _cell(change.reason, _REASON_WIDTH),
        ]) + " |")
    return lines


def _render_markdown(comparison: Comparison, baseline_name: str, current_name: str) -> str:
    c = comparison
    lines = [f"# Conformance comparison: {_cell(baseline_name)} → {_cell(current_name)}", ""]
    if c.regressed:
        count = len(c.regressions) + len(c.drift)
        parts = []
        if c.regressions:
            parts.append(f"{len(c.regressions)} failing or vanished")
        if c.drift:
            parts.append(f"{len(c.drift)} with bound-ratio drift over ×{c.factor:g}")
        lines.append(f"**REGRESSION: {count} result{'s' if count != 1 else ''}** ({', '.join(parts)})")
    else:
        lines.append(f"**No regression** (no new failures, no vanished checks, no bound-ratio drift "
                     f"over ×{c.factor:g})")
    lines.append("")
    for name, complete in ((baseline_name, c.baseline_complete), (current_name, c.current_complete)):
        if not complete:
            lines.append(f"> Note: {_cell(name)} is marked incomplete (the run was interrupted); "
                         f"results missing from it are counted as vanished.")
            lines.append("")

    statuses = ["passed", "failed", "error", "skipped"]
    if c.baseline_summary.get("xfailed") or c.current_summary.get("xfailed"):
        statuses.append("xfailed")
    lines.append("| Report | " + " | ".join(statuses) + " |")
    lines.append("|---|" + "---|" * len(statuses))
    for name, summary in ((baseline_name, c.baseline_summary), (current_name, c.current_summary)):
        lines.append(f"| {_cell(name)} | " + " | ".join(str(summary.get(s, 0)) for s in statuses) + " |")
    lines.append("")

    if c.versions:
        lines += ["## Framework versions", "",
                  f"| Framework | {_cell(baseline_name)} | {_cell(current_name)} | |", "|---|---|---|---|"]
        for row in c.versions:
            mark = "changed" if row.old != row.new else ""
            lines.append(f"| {_cell(row.name)} | {_cell(row.old or '(absent)')} | "
                         f"{_cell(row.new or '(absent)')} | {mark} |")
        lines.append("")

    new_results = [ch for ch in c.new if ch.kind != "new_claim"]
    new_claims = [ch for ch in c.new if ch.kind == "new_claim"]
    sections = [
        ("Regressions", "Now failing, or present in the baseline and missing now.", c.regressions),
        ("Bound-ratio drift", f"max_bound_ratio grew by more than ×{c.factor:g} "
                              f"(baselines below {DRIFT_FLOOR:g} count as {DRIFT_FLOOR:g}).", c.drift),
        ("Fixed", "Failing in the baseline, passing now.", c.fixed),
        ("Skips changed", "Skipped results and skipped variants that changed; not a regression.",
         c.skips_changed),
        ("Other status changes", "", c.status_changes),
        ("New results", "Not in the baseline; not a regression.", new_results),
    ]
    for title, blurb, changes in sections:
        if not changes:
            continue
        lines += [f"## {title} ({len(changes)})", ""]
        if blurb:
            lines += [blurb, ""]
        lines += _results_table(changes)
        lines.append("")
    if new_claims:
        lines += [f"## New claims ({len(new_claims)})", "",
                  "| Claim | Title | Relation | Variants | Source |", "|---|---|---|---|---|"]
        for ch in new_claims:
            lines.append(f"| {_cell(ch.claim)} | {_cell(ch.title)} | {_cell(ch.check)} | "
                         f"{_cell(', '.join(ch.variants))} | {_cell(ch.reason, _REASON_WIDTH)} |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------- CLI


def _emit(text: str) -> None:
    """Print even on a console that cannot encode the arrows (e.g. a legacy Windows code page)."""
    try:
        sys.stdout.write(text)
    except UnicodeEncodeError:
        encoding = getattr(sys.stdout, "encoding", None) or "ascii"
        sys.stdout.write(text.encode(encoding, "replace").decode(encoding))
    sys.stdout.flush()


def _positive_factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 1:
        raise argparse.ArgumentTypeError(f"must be a finite number greater than 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from reports.cli import ArgumentParser

    parser = ArgumentParser(
        prog="conformance compare",
        description="Compare a current report.json with a baseline; exit 1 on regression, 2 on unusable input.")
    parser.add_argument("baseline", help="report.json of the accepted run")
    parser.add_argument("current", help="report.json of the run to check")
    parser.add_argument("--factor", type=_positive_factor, default=DEFAULT_FACTOR,
                        help=f"max_bound_ratio growth that counts as drift (default {DEFAULT_FACTOR:g})")
    parser.add_argument("--output", "-o", metavar="FILE.md", help="also write the Markdown summary here")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        baseline = require_results(load_report(args.baseline), args.baseline)
        current = require_results(load_report(args.current), args.current)
    except ReportError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    comparison = compare_reports(baseline, current, factor=args.factor)
    markdown = comparison.to_markdown(args.baseline, args.current)
    if args.output:
        try:
            write_text_atomic(args.output, markdown)
        except OSError as exc:
            print(f"{parser.prog}: error: cannot write {args.output} ({exc.__class__.__name__}: "
                  f"{exc.strerror or exc}); choose a writable --output path", file=sys.stderr)
            return 2
    _emit(markdown)
    return comparison.exit_code


if __name__ == "__main__":
    sys.exit(main())
