"""Join shard reports (xdist workers, CI matrix jobs, Keras backends) into one (`conformance merge`, its
command line in layer_conformance.cli.merge).

Rules:

* Results are concatenated in input order; each keeps the ``shard`` it came from (set from the input
  name unless an earlier merge already set it).
* A result seen in two shards (same ``result_key``) is kept once. Equal statuses keep the first
  copy. Different statuses keep the worse one (error > failed > passed > measured > xfailed > skipped,
  `layer_conformance.reports.compare.STATUS_SEVERITY`), so a
  failure on any shard is never hidden, and ``merge_conflicts`` lists ``{shard, status, reason}``
  for each status seen, from the first shard that reported it.
* ``shards`` lists the leaf shards; already-merged inputs contribute their own ``shards`` so that
  ``merge(merge(a, b), c)`` and ``merge(a, b, c)`` give the same results, conflicts and shard list.
* ``environment`` is the shared one when all leaf shards agree; otherwise only the fields (and
  framework versions) on which they all agree, the rest stays in ``shards[].environment``.
"""
from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any

from layer_conformance.reports.compare import result_key, severity
from layer_conformance.reports.schema import SCHEMA, summarize, validate_report


def _leaf_shards(name: str, report: dict[str, Any]) -> list[dict[str, Any]]:
    nested = report.get("shards")
    if isinstance(nested, list) and nested:
        return [copy.deepcopy(shard) for shard in nested if isinstance(shard, dict)]
    return [{"name": name, "environment": copy.deepcopy(report.get("environment") or {}),
             "complete": bool(report.get("complete", False))}]


def _common_environment(environments: list[dict[str, Any]]) -> dict[str, Any]:
    first = environments[0]
    if all(env == first for env in environments[1:]):
        return copy.deepcopy(first)
    common: dict[str, Any] = {}
    for key, value in first.items():
        if key == "frameworks" and isinstance(value, dict):
            frameworks = {name: version for name, version in value.items()
                          if all(isinstance(env.get("frameworks"), dict) and name in env["frameworks"]
                                 and env["frameworks"][name] == version for env in environments)}
            common["frameworks"] = copy.deepcopy(frameworks)
        elif all(key in env and env[key] == value for env in environments):
            common[key] = copy.deepcopy(value)
    return common


def _conflict_entries(result: dict[str, Any]) -> list[dict[str, Any]]:
    existing = result.get("merge_conflicts")
    if isinstance(existing, list) and existing:
        return [dict(entry) for entry in existing if isinstance(entry, dict)]
    return [{"shard": result.get("shard"), "status": result.get("status"), "reason": result.get("reason")}]


def _union_conflicts(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # One entry per status, from the first shard (in input order) that reported it: keeping only
    # the first makes the list independent of how merges are nested.
    merged: list[dict[str, Any]] = []
    seen: set[Any] = set()
    for entry in a + b:
        if entry.get("status") not in seen:
            seen.add(entry.get("status"))
            merged.append(entry)
    return merged


def _merged_divergences(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per documented divergence id: observed if any shard observed it (False if exercised and
    never seen, None if never exercised), exceeded_ceiling if any shard exceeded it."""
    merged: dict[str, dict[str, Any]] = {}
    for report in reports:
        for entry in report.get("divergences") or []:
            if not isinstance(entry, dict) or not entry.get("id"):
                continue
            kept = merged.setdefault(str(entry["id"]), copy.deepcopy(entry))
            seen = (kept.get("observed"), entry.get("observed"))
            kept["observed"] = True if True in seen else False if False in seen else None
            kept["exceeded_ceiling"] = bool(kept.get("exceeded_ceiling") or entry.get("exceeded_ceiling"))
    return list(merged.values())


def merge_reports(named: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Merge loaded reports, each with a shard name, into one valid v1 report. Inputs are not modified."""
    if not named:
        raise ValueError("merge_reports needs at least one report")
    for name, report in named:
        validate_report(report, name)

    results: list[dict[str, Any]] = []
    position: dict[tuple[str, str], int] = {}
    claims: dict[str, Any] = {}
    shards: list[dict[str, Any]] = []
    for name, report in named:
        shards += _leaf_shards(name, report)
        for claim_id, claim in (report.get("claims") or {}).items():
            claims.setdefault(claim_id, copy.deepcopy(claim))
        for original in report["results"]:
            result = copy.deepcopy(original)
            result.setdefault("shard", name)
            key = result_key(result)
            if key not in position:
                position[key] = len(results)
                results.append(result)
                continue
            kept = results[position[key]]
            has_history = "merge_conflicts" in kept or "merge_conflicts" in result
            if kept.get("status") == result.get("status") and not has_history:
                continue
            conflicts = _union_conflicts(_conflict_entries(kept), _conflict_entries(result))
            winner = result if severity(result.get("status")) > severity(kept.get("status")) else kept
            if len({entry.get("status") for entry in conflicts}) > 1:
                winner["merge_conflicts"] = conflicts
            results[position[key]] = winner

    merged = {
        "schema": SCHEMA,
        "complete": all(bool(shard.get("complete", False)) for shard in shards),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "environment": _common_environment([shard.get("environment") or {} for shard in shards]),
        "claims": claims,
        "summary": summarize(results),
        "results": results,
        "shards": shards,
    }
    if any("divergences" in report for _, report in named):
        merged["divergences"] = _merged_divergences([report for _, report in named])
    ports = [copy.deepcopy(entry) for _, report in named for entry in (report.get("port") or [])
             if isinstance(entry, dict)]
    if ports:  # model ports (`conformance port`), e.g. one shard per Keras backend: every entry kept
        merged["port"] = ports
    return validate_report(merged, "merged report")
