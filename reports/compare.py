"""What changed between a baseline report.json and a candidate one (`conformance compare`, its command
line in layer_conformance.cli.compare).

Used to gate framework upgrades in CI: exit 1 when anything got worse, 2 when a report cannot be read.

Rules (kept here so the Markdown and the exit code agree):

* A result is identified across runs by ``result_key``: its nodeid, plus the Keras backend for
  results that involve a Keras variant (one run per backend reuses the same nodeids).
* Regression (exit 1), per result:
  - now ``failed``/``error`` and not ``failed``/``error`` in the baseline (``skipped -> failed``
    included: the break is real, it was only unseen before);
  - ``passed`` or ``measured`` in the baseline and ``skipped`` now, unless the skip reason matches an
    ``--allow-skip`` pattern (a regular expression searched in the reason); an allowed skip is listed;
  - absent now and not skipped in the baseline, since a check disappearing can hide a break (a
    vanished skipped result is listed under skips only);
  - ``passed`` in the baseline and ``measured`` now with comparisons ``not_judged``: a verdict lost (a
    bound became infinite: measured, not judged);
  - still ``passed``/``measured``, but a variant measured in the baseline row is measured no more
    (compared by the ``per_variant`` and ``divergences`` labels, or by the ``variants`` names for
    rows that record no per-variant numbers); allowed like a skip when the variant's skip reason
    matches an ``--allow-skip`` pattern.
* Regression (exit 1), per run:
  - a framework installed and importable in the baseline environment is missing from the
    candidate's, or is listed in its ``environment.unavailable`` (installed but not importable);
  - either report is ``complete: false``, unless ``--allow-incomplete``: then results missing from
    the incomplete side are listed instead of counted as vanished;
  - a documented divergence is observed in the candidate and was not observed (or not listed) in the
    baseline, or exceeds its ceiling (``exceeded_ceiling`` true, or a row entry ``within_ceiling``
    false).
* Drift (exit 1): ``max_bound_ratio`` grew by more than ``factor``. Baseline ratios below
  ``DRIFT_FLOOR`` (zero included) count as ``DRIFT_FLOOR``: errors far inside the bound move by
  large relative amounts without meaning anything, and a zero baseline would give an infinite
  factor. A result already counted as a regression is not listed again as drift.
* Listed only: fixed results (``failed``/``error`` -> ``passed``), new results and claims (they come
  from a newer suite, not from the framework under test), other skip changes (a skip carries its
  reason in the report, so it is visible rather than silent), other status changes (for example
  ``failed <-> error`` or ``passed <-> xfailed``), and every documented divergence with its evidence
  and whether each run observed it.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple

from layer_conformance.reports.schema import summarize

DRIFT_FLOOR = 1e-3
DEFAULT_FACTOR = 2.0

# Worst first; merge keeps the worse of two conflicting statuses. `measured` is the speed check: a
# measurement, never a verdict.
STATUS_SEVERITY = {"error": 5, "failed": 4, "passed": 3, "measured": 2, "xfailed": 1, "skipped": 0}
BAD_STATUSES = ("failed", "error")
# A result in one of these measured something; losing the measurement is a regression.
MEASURED_STATUSES = ("passed", "measured")

# Distributions that provide the same framework: the candidate may install the other one.
_SAME_FRAMEWORK = {"tensorflow-cpu": "tensorflow", "tensorflow-gpu": "tensorflow", "jax[cpu]": "jax"}
_NOT_FRAMEWORKS = ("python",)
_SOME_EXAMPLES = " (some examples)"

_REASON_WIDTH = 200
_EVIDENCE_WIDTH = 1000


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


class Problem(NamedTuple):
    """A regression of the run as a whole rather than of one result."""

    kind: str  # framework | incomplete | divergence
    subject: str  # the framework, the report side or the divergence id
    text: str  # what got worse, and what to do about it


class Incomplete(NamedTuple):
    """A report marked ``complete: false``."""

    side: str  # baseline | candidate
    reason: str  # its incomplete.reason, and its incomplete shards
    missing: tuple[str, ...]  # its incomplete.missing: selected tests that produced no result


@dataclass(frozen=True)
class Change:
    """One listed difference; ``old_*`` fields are None for new results, ``new_*`` for vanished ones."""

    # regression | skipped | vanished | variant_dropped | drift | fixed | new | new_claim | skip |
    # variant_skip | allowed_skip | missing | status
    kind: str
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


@dataclass(frozen=True)
class DivergenceView:
    """One documented divergence as one report shows it (top-level entry and row entries together)."""

    entry: dict[str, Any]  # the report's top-level entry; {} when only rows mention the id
    listed: bool
    observed: bool | None  # None: not exercised in this run
    over_ceiling: tuple[str, ...]  # where it exceeded its ceiling


@dataclass(frozen=True)
class DivergenceRow:
    """A divergence in either report, for the listing."""

    id: str
    entry: dict[str, Any]  # the candidate's entry, or the baseline's when the candidate lacks it
    baseline: DivergenceView | None
    current: DivergenceView | None


@dataclass(frozen=True)
class Options:
    factor: float = DEFAULT_FACTOR
    allow_skip: tuple[re.Pattern[str], ...] = ()
    allow_incomplete: bool = False

    def allows(self, reason: str | None) -> bool:
        return bool(reason) and any(pattern.search(reason) for pattern in self.allow_skip)


@dataclass
class Comparison:
    version_changes: list = field(default_factory=list)
    regressions: list = field(default_factory=list)
    problems: list = field(default_factory=list)  # Problem: frameworks lost, incomplete reports, divergences
    drift: list = field(default_factory=list)
    new: list = field(default_factory=list)
    fixed: list = field(default_factory=list)
    skips_changed: list = field(default_factory=list)
    allowed_skips: list = field(default_factory=list)
    missing: list = field(default_factory=list)  # in one report only, the other being incomplete (allowed)
    incomplete: list = field(default_factory=list)  # Incomplete, one per report marked complete: false
    status_changes: list = field(default_factory=list)
    versions: list = field(default_factory=list)  # every framework, changed or not
    divergences: list = field(default_factory=list)  # DivergenceRow, every one in either report
    factor: float = DEFAULT_FACTOR
    allow_skip: tuple[str, ...] = ()
    allow_incomplete: bool = False
    baseline_summary: dict = field(default_factory=dict)
    current_summary: dict = field(default_factory=dict)
    baseline_complete: bool = True
    current_complete: bool = True

    @property
    def regressed(self) -> bool:
        return bool(self.regressions or self.drift or self.problems)

    @property
    def exit_code(self) -> int:
        return 1 if self.regressed else 0

    def to_markdown(self, baseline_name: str = "baseline", current_name: str = "current") -> str:
        return _render_markdown(self, baseline_name, current_name)


# ----------------------------------------------------------------------------- reading


def _as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _ratio(result: dict[str, Any] | None) -> float | None:
    if result is None:
        return None
    value = result.get("max_bound_ratio")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _index(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Results by key, in report order; a key seen twice keeps the worse status (conservative)."""
    index: dict[tuple[str, str], dict[str, Any]] = {}
    for result in results:
        key = result_key(result)
        if key not in index or severity(result.get("status")) > severity(index[key].get("status")):
            index[key] = result
    return index


def _environments(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's environment and, for a merged report, each shard's."""
    shards = [_as_dict(_as_dict(shard).get("environment")) for shard in _as_list(report.get("shards"))]
    return [_as_dict(report.get("environment")), *shards]


def _framework_versions(report: dict[str, Any]) -> dict[str, str | None]:
    """Framework (and Python) versions of a report; a merged report whose shards disagree shows them all."""
    seen: dict[str, list[str]] = {}
    for environment in _environments(report):
        named = dict(_as_dict(environment.get("frameworks")))
        if "python" in environment:
            named["python"] = environment["python"]
        for name, version in named.items():
            bucket = seen.setdefault(str(name), [])
            if version is not None and str(version) not in bucket:
                bucket.append(str(version))
    return {name: " / ".join(sorted(bucket)) or None for name, bucket in seen.items()}


def _unavailable(report: dict[str, Any]) -> dict[str, str]:
    """Frameworks installed but not importable (``environment.unavailable``), by framework name."""
    found: dict[str, str] = {}
    for environment in _environments(report):
        for name, reason in _as_dict(environment.get("unavailable")).items():
            found.setdefault(_framework_name(str(name)), str(reason or "no reason recorded"))
    return found


def _framework_name(package: str) -> str:
    return _SAME_FRAMEWORK.get(package.lower(), package.lower())


def _variant_skips(result: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in _as_dict(result.get("skipped_variants")).items()}


# ----------------------------------------------------------------------------- results


def _change(kind: str, old: dict | None, new: dict | None, **extra: Any) -> Change:
    ref = new if new is not None else old
    assert ref is not None
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
        variants=tuple(str(v) for v in ref.get("variants") or []),
        dtype=_text_or_none(ref.get("dtype")),
        device=_text_or_none(ref.get("device")),
        old_status=None if old is None else old.get("status"),
        new_status=None if new is None else new.get("status"),
        old_ratio=_ratio(old),
        new_ratio=_ratio(new),
        reason=reason,
        **extra,
    )


def _drift_factor(old: float | None, new: float | None) -> float | None:
    """Growth of the bound ratio, with small baselines floored at DRIFT_FLOOR; None if not comparable."""
    if old is None or new is None or math.isnan(old) or math.isnan(new) or old < 0 or math.isinf(old):
        return None
    return new / max(old, DRIFT_FLOOR)


def _judge_vanished(c: Comparison, old: dict[str, Any], options: Options) -> None:
    if old.get("status") == "skipped":
        c.skips_changed.append(_change("vanished", old, None))
    elif not c.current_complete and options.allow_incomplete:
        c.missing.append(_change("missing", old, None, reason="absent from the incomplete candidate report"))
    else:
        was = f" (was: {old['reason']})" if old.get("reason") else ""
        c.regressions.append(_change("vanished", old, None, reason=f"absent from the candidate report{was}"))


def _judge_status(c: Comparison, old: dict[str, Any], new: dict[str, Any], options: Options) -> bool:
    """File a status change; True when that settles the result (nothing more is said about it)."""
    old_status, new_status = old.get("status"), new.get("status")
    if new_status in BAD_STATUSES and old_status not in BAD_STATUSES:
        c.regressions.append(_change("regression", old, new))
        return True
    if old_status in MEASURED_STATUSES and new_status == "skipped":
        if options.allows(new.get("reason")):
            c.allowed_skips.append(_change("allowed_skip", old, new))
        else:
            c.regressions.append(_change("skipped", old, new))
        return True
    if old_status == "passed" and new_status == "measured" and new.get("not_judged"):  # a verdict lost
        c.regressions.append(_change("unjudged", old, new))
        return True
    if old_status in BAD_STATUSES and new_status == "passed":
        c.fixed.append(_change("fixed", old, new))
    elif old_status != new_status and "skipped" in (old_status, new_status):
        c.skips_changed.append(_change("skip", old, new))
    elif old_status != new_status:
        c.status_changes.append(_change("status", old, new))
    return False


def _judge_drift(c: Comparison, old: dict[str, Any], new: dict[str, Any]) -> None:
    growth = _drift_factor(_ratio(old), _ratio(new))
    if growth is not None and growth > c.factor:
        c.drift.append(_change("drift", old, new, factor=growth))


def _measured(old: dict[str, Any], new: dict[str, Any]) -> tuple[Counter, Counter]:
    """What each row measured: per-variant labels when the baseline recorded them, else variant names."""
    old_labels = _measured_labels(old)
    if old_labels and isinstance(new.get("per_variant"), dict):
        return old_labels, _measured_labels(new)
    return _names(old), _names(new)


def _names(row: dict[str, Any]) -> Counter:
    return Counter(str(name) for name in _as_list(row.get("variants")))


def _measured_labels(row: dict[str, Any]) -> Counter:
    """Labels with at least one example, in ``per_variant`` or under a documented divergence."""
    labels = Counter()
    for section in ("per_variant", "divergences"):
        for label, numbers in _as_dict(row.get(section)).items():
            if _as_dict(numbers).get("examples", 1) != 0:
                labels[str(label)] = 1
    return labels


def _skip_of(variant: str, skipped: dict[str, str]) -> tuple[str, str | None]:
    """The candidate's skip entry (key, reason) for a variant label or name; gradient labels carry a suffix."""
    for key, reason in skipped.items():
        base = key.removesuffix(_SOME_EXAMPLES)
        if variant == base or variant.startswith(base + " ") or base.startswith(variant + " "):
            return key, reason
    return "", None


def _judge_variants(c: Comparison, old: dict[str, Any], new: dict[str, Any], options: Options) -> set[str]:
    """Variants measured in the baseline row and no longer in the candidate row (both still measuring);
    returns the candidate's skip entries that explain them, so that they are not listed again."""
    if old.get("status") not in MEASURED_STATUSES or new.get("status") not in MEASURED_STATUSES:
        return set()
    before, after = _measured(old, new)
    skipped, used = _variant_skips(new), set()
    for variant in sorted(before - after):
        key, why = _skip_of(variant, skipped)
        used.add(key)
        reason = f"variant {variant} no longer measured: {why or 'absent from the row, no skip reason recorded'}"
        if options.allows(why):
            c.allowed_skips.append(_change("allowed_skip", old, new, reason=reason))
        else:
            c.regressions.append(_change("variant_dropped", old, new, reason=reason))
    return used


def _list_variant_skips(c: Comparison, old: dict[str, Any], new: dict[str, Any], judged: set[str]) -> None:
    old_skips, new_skips = _variant_skips(old), _variant_skips(new)
    for variant in sorted((set(old_skips) ^ set(new_skips)) - judged):
        if variant in new_skips:
            reason = f"variant {variant} now skipped: {new_skips[variant]}"
        else:
            reason = f"variant {variant} runs again"
        c.skips_changed.append(_change("variant_skip", old, new, reason=reason))


def _compare_results(c: Comparison, baseline: dict[str, Any], current: dict[str, Any], options: Options) -> None:
    old_index = _index(baseline.get("results") or [])
    new_index = _index(current.get("results") or [])
    for key, old in old_index.items():
        new = new_index.get(key)
        if new is None:
            _judge_vanished(c, old, options)
        elif not _judge_status(c, old, new, options):
            _judge_drift(c, old, new)
            _list_variant_skips(c, old, new, _judge_variants(c, old, new, options))
    for key, new in new_index.items():
        if key in old_index:
            continue
        if not c.baseline_complete and options.allow_incomplete:
            c.missing.append(_change("missing", None, new, reason="absent from the incomplete baseline report"))
        else:
            c.new.append(_change("new", None, new))


def _compare_claims(c: Comparison, baseline: dict[str, Any], current: dict[str, Any]) -> None:
    old_claims = _as_dict(baseline.get("claims"))
    for claim_id, claim in _as_dict(current.get("claims")).items():
        if claim_id in old_claims:
            continue
        claim = _as_dict(claim)
        c.new.append(Change(
            kind="new_claim", nodeid="", claim=str(claim_id),
            variants=tuple(str(v) for v in claim.get("variants") or []),
            check=claim.get("relation"), title=claim.get("title"), reason=claim.get("source")))


# ----------------------------------------------------------------------------- environments


def _compare_versions(c: Comparison, baseline: dict[str, Any], current: dict[str, Any]) -> None:
    old_versions, new_versions = _framework_versions(baseline), _framework_versions(current)
    for name in sorted(set(old_versions) | set(new_versions), key=lambda n: (n == "python", n)):
        row = VersionChange(name, old_versions.get(name), new_versions.get(name))
        c.versions.append(row)
        if row.old != row.new:
            c.version_changes.append(row)


def _importable(report: dict[str, Any]) -> dict[str, str]:
    """Framework name -> version, for frameworks installed and not marked unavailable."""
    unavailable = _unavailable(report)
    return {_framework_name(name): version for name, version in _framework_versions(report).items()
            if version and name not in _NOT_FRAMEWORKS and _framework_name(name) not in unavailable}


def _compare_frameworks(c: Comparison, baseline: dict[str, Any], current: dict[str, Any]) -> None:
    """A framework the baseline could import and the candidate cannot: every check with it is lost."""
    before, after, broken = _importable(baseline), _importable(current), _unavailable(current)
    for name, version in sorted(before.items()):
        if name in after:
            continue
        if name in broken:
            text = (f"framework {name} ({version} in the baseline) is installed in the candidate but cannot be "
                    f"imported there: {broken[name]}; fix the candidate environment, or the gate passes an upgrade "
                    f"that skips every {name} check")
        else:
            text = (f"framework {name} ({version} in the baseline) is missing from the candidate environment; "
                    f"install it there, or the gate passes an upgrade that skips every {name} check")
        c.problems.append(Problem("framework", name, text))


def _incompleteness(side: str, report: dict[str, Any]) -> Incomplete:
    """Why a report is incomplete: its ``incomplete`` section (reason, tests without a result), its shards."""
    section = _as_dict(report.get("incomplete"))
    shards = [str(_as_dict(shard).get("name")) for shard in _as_list(report.get("shards"))
              if _as_dict(shard).get("complete") is False]
    reason = str(section.get("reason") or "no reason recorded")
    if shards:
        reason += f"; incomplete shards: {', '.join(shards)}"
    return Incomplete(side, reason, tuple(str(nodeid) for nodeid in _as_list(section.get("missing"))))


def _incomplete_text(entry: Incomplete) -> str:
    missing = f", {_plural(len(entry.missing), 'test')} without a result" if entry.missing else ""
    return (f"the {entry.side} report is incomplete (complete: false: {entry.reason}{missing}): its missing results "
            f"are unknown, not passed; re-run it to completion, or pass --allow-incomplete to compare what is there")


def _compare_completeness(c: Comparison, baseline: dict[str, Any], current: dict[str, Any], options: Options) -> None:
    for side, report, complete in (("baseline", baseline, c.baseline_complete),
                                   ("candidate", current, c.current_complete)):
        if complete:
            continue
        entry = _incompleteness(side, report)
        c.incomplete.append(entry)
        if not options.allow_incomplete:
            c.problems.append(Problem("incomplete", side, _incomplete_text(entry)))


# ----------------------------------------------------------------------------- divergences


def _observed(*values: Any) -> bool | None:
    """True if any run saw it, False if exercised and never seen, None if never exercised."""
    if any(value is True for value in values):
        return True
    return False if any(value is False for value in values) else None


def _listed_divergences(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = (_as_dict(entry) for entry in _as_list(report.get("divergences")))
    return {str(entry["id"]): entry for entry in entries if entry.get("id")}


def _row_divergences(report: dict[str, Any]) -> Iterable[tuple[str, str, dict[str, Any]]]:
    """(nodeid, variant label, entry) of every row-level divergence entry."""
    for row in report.get("results") or []:
        for label, entry in _as_dict(row.get("divergences")).items():
            entry = _as_dict(entry)
            if entry.get("id"):
                yield str(row.get("nodeid", "")), str(label), entry


def _over_ceiling(nodeid: str, label: str, entry: dict[str, Any]) -> str | None:
    if entry.get("within_ceiling") is not False:
        return None
    return f"{nodeid} {label}: bound ratio {_fmt_ratio(_ratio(entry))}"


def _divergence_views(report: dict[str, Any]) -> dict[str, DivergenceView]:
    listed = _listed_divergences(report)
    seen: dict[str, list[Any]] = {key: [entry.get("observed")] for key, entry in listed.items()}
    over: dict[str, list[str]] = {key: ["its report entry says exceeded_ceiling"] for key, entry in listed.items()
                                  if entry.get("exceeded_ceiling") is True}
    for nodeid, label, entry in _row_divergences(report):
        key = str(entry["id"])
        seen.setdefault(key, []).append(entry.get("observed"))
        where = _over_ceiling(nodeid, label, entry)
        if where:
            over.setdefault(key, []).append(where)
    return {key: DivergenceView(listed.get(key, {}), key in listed, _observed(*values), tuple(over.get(key, ())))
            for key, values in seen.items()}


def _divergence_problems(row: DivergenceRow) -> list[Problem]:
    entry, old, new = row.entry, row.baseline, row.current
    name = f"documented divergence {row.id}" + (f" ({entry['framework']})" if entry.get("framework") else "")
    problems = []
    if new is not None and new.observed is True and (old is None or old.observed is not True):
        before = "not listed in" if old is None or not old.listed else "not observed in"
        summary = f": {entry['summary']}" if entry.get("summary") else ""
        problems.append(Problem("divergence", row.id, (
            f"{name} is observed in the candidate and was {before} the baseline{summary}; the upgrade "
            f"brought it: check it against the evidence before accepting the upgrade")))
    if new is not None and new.over_ceiling:
        ceiling = f" ({entry['ceiling']})" if entry.get("ceiling") else ""
        problems.append(Problem("divergence", row.id, (
            f"{name} exceeds its ceiling{ceiling} in the candidate ({'; '.join(new.over_ceiling[:5])}): the "
            f"framework is worse than documented, investigate it as a failure")))
    return problems


def _compare_divergences(c: Comparison, baseline: dict[str, Any], current: dict[str, Any]) -> None:
    before, after = _divergence_views(baseline), _divergence_views(current)
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        entry = new.entry if new is not None and new.listed else old.entry if old is not None else {}
        row = DivergenceRow(key, entry, old, new)
        c.divergences.append(row)
        c.problems += _divergence_problems(row)


# ----------------------------------------------------------------------------- comparing


def _check_factor(factor: Any) -> None:
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) \
            or factor <= 1:
        raise ValueError(f"drift factor must be a finite number greater than 1 (got {factor!r}); "
                         f"a ratio growing by more than this factor counts as a regression")


def _compile_patterns(patterns: Iterable[str | re.Pattern[str]]) -> tuple[re.Pattern[str], ...]:
    try:
        return tuple(p if isinstance(p, re.Pattern) else re.compile(p) for p in patterns)
    except re.error as exc:
        raise ValueError(f"allowed skip pattern is not a regular expression ({exc}); "
                         f"escape special characters, e.g. 'no GPU \\(cuda\\)'") from None


def compare_reports(baseline: dict[str, Any], current: dict[str, Any], *, factor: float = DEFAULT_FACTOR,
                    allow_skip: Iterable[str | re.Pattern[str]] = (), allow_incomplete: bool = False) -> Comparison:
    """Classify every difference between two loaded reports (see the module docstring for the rules)."""
    _check_factor(factor)
    options = Options(float(factor), _compile_patterns(allow_skip), bool(allow_incomplete))
    comparison = Comparison(
        factor=options.factor,
        allow_skip=tuple(p.pattern for p in options.allow_skip),
        allow_incomplete=options.allow_incomplete,
        baseline_summary=summarize(baseline.get("results") or []),
        current_summary=summarize(current.get("results") or []),
        baseline_complete=bool(baseline.get("complete", False)),
        current_complete=bool(current.get("complete", False)),
    )
    _compare_versions(comparison, baseline, current)
    _compare_frameworks(comparison, baseline, current)
    _compare_completeness(comparison, baseline, current, options)
    _compare_results(comparison, baseline, current, options)
    _compare_claims(comparison, baseline, current)
    _compare_divergences(comparison, baseline, current)
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


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


_REGRESSION_KINDS = (  # (Change.kind, what is counted, what happened to it)
    ("regression", "result", "now failing or erroring"),
    ("skipped", "result", "passed or measured before, skipped now (reason not allowed by --allow-skip)"),
    ("vanished", "result", "no longer in the report (no longer measured)"),
    ("variant_dropped", "variant", "no longer measured in a row that still passes"),
    ("unjudged", "result", "passed before, measured but not judged now (a bound became infinite)"),
)


def _headline(c: Comparison) -> list[str]:
    if not c.regressed:
        return [f"**No regression** (no new failures, no vanished or newly skipped checks, no variant, framework "
                f"or divergence got worse, no bound-ratio drift over ×{c.factor:g})"]
    kinds = Counter(change.kind for change in c.regressions)
    parts = [f"{_plural(kinds[kind], noun)} {text}" for kind, noun, text in _REGRESSION_KINDS if kinds[kind]]
    if c.drift:
        parts.append(f"{_plural(len(c.drift), 'result')} with bound-ratio drift over ×{c.factor:g}")
    parts += [problem.text for problem in c.problems]
    return [f"**REGRESSION: {_plural(len(parts), 'problem')}**", ""] + [f"- {_cell(part)}" for part in parts]


def _notes(c: Comparison) -> list[str]:
    lines = []
    if c.incomplete and c.allow_incomplete:
        lines += ["> Note: --allow-incomplete: results missing from an incomplete report are listed under "
                  "\"Missing from an incomplete report\", not judged.", ""]
    if c.allow_skip:
        patterns = ", ".join(f"`{_cell(p)}`" for p in c.allow_skip)
        lines += [f"> Allowed skips (--allow-skip): {patterns}.", ""]
    return lines


_MISSING_SHOWN = 20


def _incomplete_section(c: Comparison, baseline_name: str, current_name: str) -> list[str]:
    if not c.incomplete:
        return []
    lines = [f"## Incomplete reports ({len(c.incomplete)})", ""]
    for entry in c.incomplete:
        name = baseline_name if entry.side == "baseline" else current_name
        lines.append(f"- {entry.side} `{_cell(name)}`: {_cell(entry.reason)}")
        lines += [f"  - no result: `{_cell(nodeid)}`" for nodeid in entry.missing[:_MISSING_SHOWN]]
        if len(entry.missing) > _MISSING_SHOWN:
            lines.append(f"  - and {len(entry.missing) - _MISSING_SHOWN} more (the report's incomplete.missing)")
    return lines + [""]


def _summary_table(c: Comparison, baseline_name: str, current_name: str) -> list[str]:
    statuses = ["passed", "failed", "error", "skipped"]
    statuses += [s for s in ("measured", "xfailed") if c.baseline_summary.get(s) or c.current_summary.get(s)]
    lines = ["| Report | complete | " + " | ".join(statuses) + " |", "|---|---|" + "---|" * len(statuses)]
    for name, summary, complete in ((baseline_name, c.baseline_summary, c.baseline_complete),
                                    (current_name, c.current_summary, c.current_complete)):
        lines.append(f"| {_cell(name)} | {'yes' if complete else '**no**'} | "
                     + " | ".join(str(summary.get(s, 0)) for s in statuses) + " |")
    return lines + [""]


def _versions_table(c: Comparison, baseline_name: str, current_name: str) -> list[str]:
    if not c.versions:
        return []
    lines = ["## Framework versions", "",
             f"| Framework | {_cell(baseline_name)} | {_cell(current_name)} | |", "|---|---|---|---|"]
    lost = {p.subject for p in c.problems if p.kind == "framework"}
    for row in c.versions:
        mark = "**lost**" if row.name in lost else "changed" if row.old != row.new else ""
        lines.append(f"| {_cell(row.name)} | {_cell(row.old or '(absent)')} | "
                     f"{_cell(row.new or '(absent)')} | {mark} |")
    return lines + [""]


def _observed_cell(view: DivergenceView | None) -> str:
    if view is None:
        return "not listed"
    text = {True: "observed", False: "not observed", None: "not exercised"}[view.observed]
    return text + (" (**over ceiling**)" if view.over_ceiling else "")


def _divergence_table(c: Comparison, baseline_name: str, current_name: str) -> list[str]:
    if not c.divergences:
        return []
    lines = [f"## Documented divergences ({len(c.divergences)})", "",
             f"| Divergence | Framework | Versions | Kind | Ceiling | {_cell(baseline_name)} | {_cell(current_name)} "
             f"| Summary | Evidence |", "|---|---|---|---|---|---|---|---|---|"]
    for row in c.divergences:
        entry = row.entry
        versions = ", ".join(f"{k} {v}" for k, v in _as_dict(entry.get("versions")).items())
        lines.append("| " + " | ".join([
            _cell(f"`{row.id}`"), _cell(entry.get("framework")), _cell(versions), _cell(entry.get("kind")),
            _cell(entry.get("ceiling"), _REASON_WIDTH), _observed_cell(row.baseline), _observed_cell(row.current),
            _cell(entry.get("summary"), _EVIDENCE_WIDTH), _cell(entry.get("evidence"), _EVIDENCE_WIDTH)]) + " |")
    return lines + [""]


def _claims_table(new_claims: list[Change]) -> list[str]:
    if not new_claims:
        return []
    lines = [f"## New claims ({len(new_claims)})", "",
             "| Claim | Title | Relation | Variants | Source |", "|---|---|---|---|---|"]
    for ch in new_claims:
        lines.append(f"| {_cell(ch.claim)} | {_cell(ch.title)} | {_cell(ch.check)} | "
                     f"{_cell(', '.join(ch.variants))} | {_cell(ch.reason, _REASON_WIDTH)} |")
    return lines + [""]


def _result_sections(c: Comparison) -> list[str]:
    sections = [
        ("Regressions", "Now failing; passed before and skipped, absent or missing a variant now. A skip whose "
                        "reason is expected is allowed with --allow-skip PATTERN.", c.regressions),
        ("Bound-ratio drift", f"max_bound_ratio grew by more than ×{c.factor:g} "
                              f"(baselines below {DRIFT_FLOOR:g} count as {DRIFT_FLOOR:g}).", c.drift),
        ("Allowed skips", "Skipped now, with a reason matching --allow-skip; not a regression.", c.allowed_skips),
        ("Missing from an incomplete report", "In one report only, the other being incomplete "
                                              "(--allow-incomplete); not judged.", c.missing),
        ("Fixed", "Failing in the baseline, passing now.", c.fixed),
        ("Skips changed", "Skipped results and skipped variants that changed; not a regression.", c.skips_changed),
        ("Other status changes", "", c.status_changes),
        ("New results", "Not in the baseline; not a regression.", [ch for ch in c.new if ch.kind != "new_claim"]),
    ]
    lines: list[str] = []
    for title, blurb, changes in sections:
        if changes:
            lines += [f"## {title} ({len(changes)})", ""] + ([blurb, ""] if blurb else [])
            lines += _results_table(changes) + [""]
    return lines


def _render_markdown(c: Comparison, baseline_name: str, current_name: str) -> str:
    lines = [f"# Conformance comparison: {_cell(baseline_name)} → {_cell(current_name)}", ""]
    lines += _headline(c) + [""]
    lines += _notes(c)
    lines += _summary_table(c, baseline_name, current_name)
    lines += _incomplete_section(c, baseline_name, current_name)
    lines += _versions_table(c, baseline_name, current_name)
    lines += _result_sections(c)
    lines += _divergence_table(c, baseline_name, current_name)
    lines += _claims_table([ch for ch in c.new if ch.kind == "new_claim"])
    return "\n".join(lines).rstrip("\n") + "\n"
