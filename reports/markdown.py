"""The Markdown summary (report.md) and the views of a report the HTML writer shares with it.

Every value comes from a report.json that anyone may hand over, and any field beyond the basic
twelve may be missing or malformed, so every read goes through a defensive getter and every
missing value is shown as "–".
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

from layer_conformance.reports.messages import headline, rest
from layer_conformance.reports.port import PORT_INTRO, port_views
from layer_conformance.reports.schema import write_text_atomic
from layer_conformance.reports.views import (
    MISSING, STATUS_ICON, as_dict, as_list, format_number, status_icon, status_of, text, to_float,
)

# Worst first: a matrix cell that gathers several results shows the worst of them; a skip only
# shows when nothing in the cell ran.
STATUS_SEVERITY = ("error", "failed", "xfailed", "passed", "measured", "skipped")
STATUS_ORDER = ("passed", "failed", "skipped", "error", "xfailed", "measured")
DTYPE_ORDER = ("float64", "float32", "float16", "bfloat16")
CHECK_ORDER = ("forward", "gradient", "depth", "init", "params", "speed")


def worst_status(statuses: Iterable[str]) -> str:
    found = list(statuses)
    for status in STATUS_SEVERITY:
        if status in found:
            return status
    return found[0] if found else "unknown"


def _rank(order: tuple[str, ...], value: str) -> tuple[int, str]:
    return (order.index(value), "") if value in order else (len(order), value)


# --------------------------------------------------------------------------- shared view model

def claim_order(report: dict[str, Any]) -> list[str]:
    """Claim ids: the declared ones first, in declaration order, then any only seen in results."""
    order = [str(claim) for claim in as_dict(report.get("claims"))]
    for result in results_of(report):
        claim = text(result.get("claim"))
        if claim not in order:
            order.append(claim)
    return order


def results_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [result for result in as_list(report.get("results")) if isinstance(result, dict)]


def relation_of(report: dict[str, Any], result: dict[str, Any]) -> str:
    relation = result.get("relation")
    if not isinstance(relation, str) or not relation:
        relation = as_dict(as_dict(report.get("claims")).get(text(result.get("claim")))).get("relation")
    return relation if isinstance(relation, str) and relation else MISSING


def summary_counts(report: dict[str, Any]) -> dict[str, int]:
    """The report's own summary when it has one, else counted from the results."""
    given = as_dict(report.get("summary"))
    counts: dict[str, int] = {}
    if given:
        for status, count in given.items():
            if isinstance(count, int) and not isinstance(count, bool):
                counts[str(status)] = count
    else:
        for result in results_of(report):
            status = status_of(result)
            counts[status] = counts.get(status, 0) + 1
    for status in ("passed", "failed", "skipped", "error"):
        counts.setdefault(status, 0)
    ordered = {status: counts[status] for status in STATUS_ORDER if status in counts}
    ordered.update({status: count for status, count in counts.items() if status not in ordered})
    return ordered


def variant_label(variant: str, result: dict[str, Any]) -> str:
    """Keras runs under several backends; the backend is part of what was tested."""
    backend = result.get("keras_backend")
    if isinstance(backend, str) and backend and variant.startswith("keras"):
        return f"{variant} [{backend}]"
    return variant


def _column_of(result: dict[str, Any], several_devices: bool) -> str:
    dtype = text(result.get("dtype"))
    return f"{dtype} · {text(result.get('device'))}" if several_devices else dtype


def _variant_ratio(result: dict[str, Any], variant: str) -> float | None:
    own = as_dict(as_dict(result.get("per_variant")).get(variant))
    if "max_bound_ratio" in own:
        return to_float(own.get("max_bound_ratio"))
    return to_float(result.get("max_bound_ratio"))


def build_matrix(report: dict[str, Any]) -> dict[str, Any]:
    """Claim x check x variant rows, dtype (and device, when several) columns.

    Returns {"columns": [...], "rows": [{claim, check, relation, variant, cells: {column: cell}}]}
    where a cell is {status, ratio, nodeids}; several results landing in one cell (parametrised
    tests, merged shards) show the worst status and the largest bound ratio.
    """
    results = results_of(report)
    devices = {text(result.get("device")) for result in results}
    several_devices = len(devices) > 1
    columns: list[str] = []
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    claims = as_dict(report.get("claims"))
    for result in results:
        claim = text(result.get("claim"))
        check = text(result.get("check"))
        column = _column_of(result, several_devices)
        if column not in columns:
            columns.append(column)
        skipped = as_dict(result.get("skipped_variants"))
        variants = [str(v) for v in as_list(result.get("variants"))]
        variants += [str(v) for v in skipped if str(v) not in variants]
        entries: list[tuple[str, str, float | None]] = []
        for variant in variants:
            if variant in skipped:
                entries.append((variant, "skipped", None))
            else:
                entries.append((variant, status_of(result), _variant_ratio(result, variant)))
        if not entries:
            # Nothing ran (typically a whole-test skip): mark every variant the claim declares.
            declared = [str(v) for v in as_list(as_dict(claims.get(claim)).get("variants"))] or ["(all)"]
            entries = [(variant, status_of(result), to_float(result.get("max_bound_ratio"))) for variant in declared]
        for variant, status, ratio in entries:
            label = variant_label(variant, result)
            key = (claim, check, label)
            row = rows.setdefault(key, {
                "claim": claim, "check": check, "variant": label, "base_variant": variant,
                "relation": relation_of(report, result), "cells": {},
            })
            cell = row["cells"].setdefault(column, {"statuses": [], "ratio": None, "nodeids": []})
            cell["statuses"].append(status)
            if ratio is not None and (cell["ratio"] is None or ratio > cell["ratio"]):
                cell["ratio"] = ratio
            nodeid = text(result.get("nodeid"))
            if nodeid not in cell["nodeids"]:
                cell["nodeids"].append(nodeid)
    for row in rows.values():
        for cell in row["cells"].values():
            cell["status"] = worst_status(cell.pop("statuses"))
    claim_rank = {claim: index for index, claim in enumerate(claim_order(report))}

    def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
        declared = [str(v) for v in as_list(as_dict(claims.get(row["claim"])).get("variants"))]
        variant_rank = declared.index(row["base_variant"]) if row["base_variant"] in declared else len(declared)
        return (claim_rank.get(row["claim"], len(claim_rank)), _rank(CHECK_ORDER, row["check"]),
                variant_rank, row["variant"])

    def column_key(column: str) -> tuple[Any, ...]:
        dtype, _, device = column.partition(" · ")
        return (_rank(DTYPE_ORDER, dtype), device)

    return {"columns": sorted(columns, key=column_key), "rows": sorted(rows.values(), key=row_key),
            "coverage": coverage_tables(report)}


COVERAGE_CHECKS = ("forward", "gradient", "batch")  # the checks whose geometry coverage the report shows


def coverage_tables(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per claim: how many examples of its forward, gradient and batch checks exercised each geometry feature
    (a result's `features`, suites/features.py), per dtype (and device, when several).

    Returns [{"claim", "checks": [the checks shown], "columns": [...], "rows": [{"feature", "cells": {column:
    {"counts": [a count or None per check], "text", "zero"}}}]}]; several results in one cell (Keras
    backends, merged shards) add up. A 0 is a corner that the check never met.
    """
    results = results_of(report)
    several_devices = len({text(result.get("device")) for result in results}) > 1
    claims: dict[str, dict[str, Any]] = {}
    for result in results:
        check = result.get("check")
        features = as_dict(result.get("features"))
        if check not in COVERAGE_CHECKS or not features:
            continue
        table = claims.setdefault(text(result.get("claim")), {"checks": set(), "columns": [], "counts": {}})
        table["checks"].add(check)
        column = _column_of(result, several_devices)
        if column not in table["columns"]:
            table["columns"].append(column)
        for feature, count in features.items():
            if isinstance(count, int) and not isinstance(count, bool):
                cell = table["counts"].setdefault(str(feature), {}).setdefault(column, {})
                cell[check] = cell.get(check, 0) + count

    def column_key(column: str) -> tuple[Any, ...]:
        dtype, _, device = column.partition(" · ")
        return (_rank(DTYPE_ORDER, dtype), device)

    claim_rank = {claim: index for index, claim in enumerate(claim_order(report))}
    tables = []
    for claim in sorted(claims, key=lambda c: claim_rank.get(c, len(claim_rank))):
        table = claims[claim]
        checks = [check for check in COVERAGE_CHECKS if check in table["checks"]]
        columns = sorted(table["columns"], key=column_key)
        rows = []
        for feature, by_column in table["counts"].items():
            cells = {}
            for column in columns:
                counts = [by_column.get(column, {}).get(check) for check in checks]
                cells[column] = {"counts": counts, "zero": 0 in counts,
                                 "text": " / ".join(MISSING if n is None else str(n) for n in counts)}
            rows.append({"feature": feature, "cells": cells})
        tables.append({"claim": claim, "checks": checks, "columns": columns, "rows": rows})
    return tables


def skipped_entries(report: dict[str, Any]) -> list[dict[str, str]]:
    """Every skip: whole skipped results and single skipped variants, with their reasons."""
    entries = []
    for result in results_of(report):
        nodeid = text(result.get("nodeid"))
        if status_of(result) == "skipped":
            entries.append({"nodeid": nodeid, "claim": text(result.get("claim")), "variant": "(whole test)",
                            "reason": text(result.get("reason"))})
        for variant, reason in as_dict(result.get("skipped_variants")).items():
            entries.append({"nodeid": nodeid, "claim": text(result.get("claim")),
                            "variant": variant_label(str(variant), result), "reason": text(reason)})
    return entries


def divergence_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """The report's documented divergences as display strings: scope, what this run saw, crash re-checks."""
    rows = []
    for entry in as_list(report.get("divergences")):
        entry = as_dict(entry)
        observed = entry.get("observed")
        rows.append({
            "id": text(entry.get("id")), "framework": text(entry.get("framework")), "kind": text(entry.get("kind")),
            "versions": ", ".join(f"{package} {spec}" for package, spec in as_dict(entry.get("versions")).items())
                        or MISSING,
            "in_scope": {True: "yes", False: "no: judged normally"}.get(entry.get("in_scope"), MISSING),
            "this_run": {True: "observed", False: "not observed (fixed?)"}.get(observed, "not exercised")
                        + ("; ❌ beyond its ceiling" if entry.get("exceeded_ceiling") else ""),
            "exceeded": "yes" if entry.get("exceeded_ceiling") else "",
            "ceiling": text(entry.get("ceiling")),
            "recheck": text(entry.get("recheck")) if entry.get("kind") == "crash" else "",
            "summary": text(entry.get("summary")), "evidence": text(entry.get("evidence")),
        })
    return rows


HALF_PRECISION_BOUNDS = (
    "Half-precision results (bfloat16, float16 and the mixed policies) are judged by the float32-accumulator "
    "bound where a probe of the variant's own compiled layer shows that it sums products in float32: "
    "|y - y_ref| <= acc + u(1 + u)(2|y_ref| + |b| + 3 acc) + 2u tiny, acc = (gamma(n, 2^-24) + "
    "gamma(n, 2^-53)) |W||x| + n tiny_32 (exact half-precision products, float32 sums in any order, at most "
    "two roundings to the dtype). Otherwise by the worst-case bound gamma(n, u) |W||x|, which is infinite "
    "once n u >= 1: such comparisons are measured, not judged, and their result is never passed.")


def accumulation_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """Per variant of the half-precision results: the accumulators its probes found, and what was not judged."""
    found: dict[tuple[str, str], set[str]] = {}
    for result in results_of(report):
        dtype = text(result.get("dtype"))
        for variant, kinds in as_dict(result.get("accumulation")).items():
            found.setdefault((variant_label(str(variant), result), dtype), set()).update(map(str, as_list(kinds)))
    rows = [{"variant": variant, "dtype": dtype, "accumulator": ", ".join(sorted(kinds)), "nodeid": "", "reason": ""}
            for (variant, dtype), kinds in sorted(found.items())]
    for result in results_of(report):
        for variant, reason in as_dict(result.get("not_judged")).items():
            rows.append({"variant": variant_label(str(variant), result), "dtype": text(result.get("dtype")),
                         "accumulator": "", "nodeid": text(result.get("nodeid")), "reason": text(reason)})
    return rows


DECLARED_MODES = (
    "Under --conformance-numerics default, frameworks keep their own settings, and a float32 layer that one of "
    "them computes in a reduced-precision mode (TF32 on NVIDIA GPUs from Ampere on, read from the framework's "
    "own flags) is judged by the derived bound with that mode's declared unit roundoff u_eff instead of "
    "float32's: a difference TF32 explains passes, one beyond it still fails.")


def declared_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """Per variant and dtype: the declared precision modes it was judged under (rows with `declared_roundoff`)."""
    from layer_conformance.suites.bounds import DECLARED_ROUNDOFF

    found: dict[tuple[str, str, str], set[str]] = {}
    for result in results_of(report):
        key = (text(result.get("dtype")), text(result.get("device")))
        for variant, modes in as_dict(result.get("declared_roundoff")).items():
            found.setdefault((variant_label(str(variant), result), *key), set()).update(map(str, as_list(modes)))
    return [{"variant": variant, "dtype": dtype, "device": device,
             "mode": ", ".join(f"{m} (u = {DECLARED_ROUNDOFF[m]:.3g})" if m in DECLARED_ROUNDOFF else m
                               for m in sorted(modes))}
            for (variant, dtype, device), modes in sorted(found.items())]


def _declared_section(report: dict[str, Any]) -> list[str]:
    rows = declared_rows(report)
    if not rows:
        return []
    return ["## Declared precision modes", "", DECLARED_MODES, ""] + _table(
        ["Variant", "Dtype", "Device", "Judged under"],
        [[md_code(r["variant"]), md_escape(r["dtype"]), md_escape(r["device"]), md_escape(r["mode"])] for r in rows])


def _accumulation_section(report: dict[str, Any]) -> list[str]:
    rows = accumulation_rows(report)
    if not rows:
        return []
    lines = ["## Half-precision bounds", "", HALF_PRECISION_BOUNDS, ""]
    probed = [r for r in rows if r["accumulator"]]
    if probed:
        lines += _table(["Variant", "Dtype", "Sums in (probe)"],
                        [[md_code(r["variant"]), md_escape(r["dtype"]), md_escape(r["accumulator"])] for r in probed])
    unjudged = [r for r in rows if r["reason"]]
    if unjudged:
        lines += ["", "Measured, not judged:", ""]
        lines += _table(["Test", "Variant", "Why"],
                        [[md_code(r["nodeid"]), md_code(r["variant"]), md_escape(r["reason"])] for r in unjudged])
    return lines


def counterexample_of(result: dict[str, Any]) -> dict[str, str] | None:
    example = as_dict(result.get("counterexample"))
    if not example:
        return None
    return {key: value for key in ("npz", "script", "command")
            if isinstance(value := example.get(key), str) and value}


def environment_rows(environment: Any) -> dict[str, Any]:
    """The environment fingerprint as display strings, tolerant of any missing part."""
    env = as_dict(environment)
    frameworks = [(str(name), "not installed" if version is None else text(version))
                  for name, version in as_dict(env.get("frameworks")).items()]
    devices = [(str(name), ", ".join(text(d) for d in value) if isinstance(value, list) else text(value))
               for name, value in as_dict(env.get("devices")).items()]
    modes = [(str(name), text(value)) for name, value in as_dict(env.get("numeric_modes")).items()]
    known = {"python", "platform", "cpu", "frameworks", "keras_backend", "devices", "numeric_modes"}
    general = [("Python", text(env.get("python"))), ("Platform", text(env.get("platform"))),
               ("CPU", text(env.get("cpu"))), ("Keras backend", text(env.get("keras_backend")))]
    general += [(str(key), text(value)) for key, value in env.items() if key not in known]
    return {"general": general, "frameworks": frameworks, "devices": devices, "numeric_modes": modes,
            "empty": not env}


# --------------------------------------------------------------------------- markdown escaping

_MD_SPECIAL = set("\\`*_[]<>|~&#!")


def md_escape(value: Any) -> str:
    """Inline Markdown text: punctuation that could format, link or open HTML is backslash-escaped;
    newlines become spaces so a table row stays one row."""
    raw = " ".join(text(value).split())
    return "".join("\\" + char if char in _MD_SPECIAL else char for char in raw)


def md_code(value: Any, in_table: bool = True) -> str:
    """A code span that survives any content: the fence is longer than any backtick run inside."""
    raw = " ".join(text(value).split())
    if in_table:
        # GFM splits table cells on unescaped pipes even inside code spans.
        raw = raw.replace("|", "\\|")
    longest = run = 0
    for char in raw:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if raw.startswith("`") or raw.endswith("`") else ""
    return f"{fence}{pad}{raw}{pad}{fence}"


def md_block(value: Any) -> str:
    """A fenced block for multi-line text such as failure messages, kept verbatim."""
    raw = text(value)
    longest = run = 0
    for char in raw:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{raw.rstrip()}\n{fence}"


def md_reason(value: Any) -> list[str]:
    """A failure message: its first line in a block, the full text folded below it (GitHub renders
    <details> in Markdown; elsewhere it shows as plain text)."""
    reason = text(value)
    first, full = headline(reason), rest(reason)
    if not full:
        return [md_block(first)]
    return [md_block(first), "", "<details><summary>Full message</summary>", "", md_block(full), "", "</details>"]


def _table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> list[str]:
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# --------------------------------------------------------------------------- the document

def _headline(report: dict[str, Any]) -> list[str]:
    counts = summary_counts(report)
    complete = report.get("complete")
    total = sum(counts.values())
    parts = ", ".join(f"{status_icon(status)} {count} {md_escape(status)}" for status, count in counts.items())
    if complete is True:
        state = "**Complete run**"
    elif complete is False:
        why = (report.get("incomplete") or {}).get("reason")
        state = ("⚠️ **Incomplete run**: not every test produced a result"
                 + (f" ({why})" if why else "") + "; a missing result is no verdict, re-run to get it")
    else:
        state = "**Completeness unknown** (the report does not say)"
    verdict = ("**Some checks failed or crashed.**" if counts.get("failed") or counts.get("error")
               else "All checks that ran passed." if counts.get("passed")
               else "No check was judged: only measurements and skips." if total else "No results recorded.")
    lines = [state, "", f"{total} results: {parts}", "", verdict]
    created = report.get("created")
    if created is not None:
        lines += ["", f"Created {md_escape(created)}"]
    return lines


def _matrix_section(report: dict[str, Any]) -> list[str]:
    matrix = build_matrix(report)
    lines = ["## Matrix", ""]
    if not matrix["rows"]:
        return lines + ["No results recorded."]
    lines += ["Each cell: status and the largest bound ratio (max |y − y_ref| / derived bound; below 1 passes).", ""]
    header = ["Claim", "Check", "Variant"] + [md_escape(column) for column in matrix["columns"]]
    rows = []
    for row in matrix["rows"]:
        claim = md_code(row["claim"]) + (" (differ)" if row["relation"] == "differ" else "")
        cells = []
        for column in matrix["columns"]:
            cell = row["cells"].get(column)
            if cell is None:
                cells.append(" ")
                continue
            ratio = "" if cell["status"] in ("skipped", "measured") else " " + format_number(cell["ratio"])
            cells.append(status_icon(cell["status"]) + ratio)
        rows.append([claim, md_escape(row["check"]), md_code(row["variant"])] + cells)
    lines += _table(header, rows, ["---", "---", "---"] + [":---:"] * len(matrix["columns"]))
    legend = ", ".join(f"{icon} {status}" for status, icon in STATUS_ICON.items())
    return lines + ["", f"Legend: {legend}; an empty cell was not run."]


def _coverage_section(report: dict[str, Any]) -> list[str]:
    tables = coverage_tables(report)
    if not tables:
        return []
    lines = ["## Geometry coverage", "",
             "Examples that exercised each geometry feature (the corners of suites/features.py), per claim and "
             "dtype; each cell counts the checks named above the table, summed over the runs that ran the claim "
             "(one per Keras backend for claims with Keras variants). **0**: a corner the check never met.", ""]
    for table in tables:
        lines += [f"### {md_code(table['claim'], in_table=False)}: " + " / ".join(table["checks"]), ""]
        rows = [[md_code(row["feature"])] + [" / ".join(
            MISSING if n is None else f"**{n}**" if n == 0 else str(n) for n in row["cells"][column]["counts"])
            for column in table["columns"]] for row in table["rows"]]
        lines += _table(["Feature"] + [md_escape(column) for column in table["columns"]], rows,
                        ["---"] + [":---:"] * len(table["columns"]))
        lines.append("")
    return lines[:-1]


def _differ_section(report: dict[str, Any]) -> list[str]:
    differ = [result for result in results_of(report) if relation_of(report, result) == "differ"]
    if not differ:
        return []
    lines = ["## Claims that two computations differ", "",
             "Separation: over all examples, the smallest distance between the two computations in bound "
             "units; above 1 they really differ (the difference is not rounding noise).", ""]
    rows = []
    for result in differ:
        rows.append([md_code(result.get("nodeid")), md_code(result.get("claim")),
                     ", ".join(md_code(v) for v in as_list(result.get("variants"))) or MISSING,
                     md_escape(result.get("dtype")), md_escape(result.get("device")),
                     md_escape(result.get("keras_backend")),
                     f"{status_icon(status_of(result))} {md_escape(status_of(result))}",
                     md_escape(result.get("separation")), md_escape(result.get("max_bound_ratio"))])
    return lines + _table(["Test", "Claim", "Variants", "dtype", "Device", "Keras backend", "Status",
                           "Separation", "Max bound ratio"], rows)


def format_seconds(value: Any) -> str:
    seconds = to_float(value)
    if seconds is None:
        return MISSING
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(seconds) >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def format_bytes(value: Any) -> str:
    size = to_float(value)
    if size is None:
        return MISSING
    for unit, scale in (("GiB", 2.0 ** 30), ("MiB", 2.0 ** 20), ("KiB", 2.0 ** 10)):
        if abs(size) >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size:.0f} B"


def speed_rows(report: dict[str, Any]) -> list[dict[str, str]]:
    """Every row of every speed result, as display strings (the Markdown table, shareable with HTML)."""
    rows = []
    for result in results_of(report):
        if result.get("check") != "speed":
            continue
        for row in as_list(result.get("speed")):
            row = as_dict(row)
            relative = to_float(row.get("relative"))
            rows.append({
                "claim": text(result.get("claim")), "dtype": text(result.get("dtype")),
                "device": text(result.get("device")), "keras_backend": text(result.get("keras_backend")),
                "point": text(row.get("point")), "shape": text(row.get("shape")), "variant": text(row.get("variant")),
                "median": format_seconds(row.get("median_s")), "iqr": format_seconds(row.get("iqr_s")),
                "repeats": text(row.get("repeats")),
                "relative": MISSING if relative is None else f"{relative:.2f}×",
                "peak": format_bytes(row.get("peak_bytes")), "memory_method": text(row.get("memory_method")),
            })
    return rows


def _speed_section(report: dict[str, Any]) -> list[str]:
    rows = speed_rows(report)
    if not rows:
        return []
    lines = ["## Speed", "",
             "Benchmark, not a check: median wall time of each variant's forward on the same input (IQR over "
             "the repeats), relative to the fastest variant of the claim at the same grid point. Peak memory "
             "is measured by the named method (tracemalloc: Python-side and NumPy allocations only).", ""]
    table = [[md_code(r["claim"]), md_escape(r["point"]) + " " + md_code(r["shape"]), md_code(r["variant"]),
              md_escape(r["dtype"]), md_escape(r["device"]), md_escape(r["keras_backend"]),
              md_escape(r["median"]), md_escape(r["iqr"]), md_escape(r["repeats"]), md_escape(r["relative"]),
              md_escape(r["peak"]) + " (" + md_escape(r["memory_method"]) + ")"] for r in rows]
    return lines + _table(["Claim", "Grid point", "Variant", "dtype", "Device", "Keras backend", "Median", "IQR",
                           "Repeats", "Relative", "Peak memory"], table,
                          ["---", "---", "---", "---", "---", "---", "---:", "---:", "---:", "---:", "---:"])


def _failures_section(report: dict[str, Any]) -> list[str]:
    failed = [result for result in results_of(report) if status_of(result) in ("failed", "error")]
    if not failed:
        return []
    lines = ["## Failures", ""]
    for result in failed:
        lines += [f"### {status_icon(status_of(result))} {md_code(result.get('nodeid'), in_table=False)}", "",
                  f"- Claim: {md_code(result.get('claim'), in_table=False)}, check {md_escape(result.get('check'))}, "
                  f"{md_escape(result.get('dtype'))} on {md_escape(result.get('device'))}"
                  + (f", Keras backend {md_escape(result.get('keras_backend'))}"
                     if result.get("keras_backend") else ""),
                  f"- Max bound ratio {md_escape(result.get('max_bound_ratio'))}, "
                  f"max abs error {md_escape(result.get('max_abs_error'))}, "
                  f"examples {md_escape(result.get('examples'))}"]
        worst = [(variant, as_dict(values).get("max_bound_ratio"))
                 for variant, values in as_dict(result.get("per_variant")).items()]
        if worst:
            lines.append("- Per variant: " + ", ".join(
                f"{md_code(variant, in_table=False)} {md_escape(ratio)}" for variant, ratio in worst))
        example = counterexample_of(result)
        if example:
            if "command" in example:
                lines.append(f"- Reproduce: {md_code(example['command'], in_table=False)}")
            files = [md_code(example[key], in_table=False) for key in ("npz", "script") if key in example]
            if files:
                lines.append("- Counterexample files: " + ", ".join(files))
        lines += ["", *md_reason(result.get("reason")), ""]
    return lines[:-1]


def _port_ratio(cell: dict[str, Any]) -> str:
    return f"**{md_escape(cell['text'])}**" if cell["over"] else md_escape(cell["text"])


def _port_section(report: dict[str, Any]) -> list[str]:
    """The model ports (`conformance port`): per port its verdict, the ratio of every layer, and the first
    failing layer with the porting mistakes tried on it; [] for a report without ports."""

    views = port_views(report, with_plots=False)
    if not views:
        return []
    lines = ["## Model ports", "", PORT_INTRO + " A ratio in **bold** is at or above the bound.", ""]
    for view in views:
        lines += [f"### {view['icon']} {md_escape(view['title'])}", "",
                  f"**Verdict:** {view['icon']} {md_escape(view['verdict'])}", "",
                  f"- {md_escape(view['dtype'])} on {md_escape(view['device'])}, "
                  f"{md_escape(view['examples'])} examples",
                  f"- Source ({md_escape(view['source']['framework'])}): {md_escape(view['source']['description'])}",
                  f"- Target ({md_escape(view['target']['framework'])}): {md_escape(view['target']['description'])}"]
        lines += [f"- {md_escape(row['name'])}: bound ratio {_port_ratio(row)}, max abs error "
                  f"{md_escape(row['error'])}" for row in view["summary"]]
        lines.append("")
        if view["layers"]:
            rows = []
            for row in view["layers"]:
                name = md_code(row["name"]) + (f" → {md_code(row['target_name'])}" if row["target_name"] else "")
                gradient = ", ".join(f"{md_escape(g['parameter'])} {_port_ratio(g)}" for g in row["gradient"])
                rows.append([row["layer"] + (" ⬅ first failure" if row["first"] else ""), name,
                             md_escape(row["label"]), _port_ratio(row["isolated"]), _port_ratio(row["propagated"]),
                             gradient or MISSING, f"{row['icon']} {md_escape(row['status'])}"])
            lines += _table(["Layer", "Name", "Label", "Isolated", "Propagated", "Gradient", "Status"], rows,
                            ["---:", "---", "---", "---:", "---:", "---", "---"])
        else:
            lines.append("No layers recorded.")
        failure = view["failure"]
        if failure:
            lines += ["", f"**First failure:** layer {md_escape(failure['layer'])} {md_code(failure['name'], False)} "
                          f"({md_escape(failure['label'])}), {md_escape(failure['mode'])}, bound ratio "
                          f"{md_escape(failure['ratio'])}.", "",
                      f"**Diagnosis:** {md_escape(failure['diagnosis_text'])}."]
            if failure["hypotheses"]:
                lines += ["", "Porting mistakes tried on this layer, by the bound ratio of the port against the source with the mistake made:", ""]
                lines += _table(["Mistake", "Id", "Bound ratio", "Explains it"], [
                    [md_escape(h["title"]) + (" (diagnosis)" if h["diagnosis"] else ""), md_code(h["mistake"]),
                     md_escape(h["ratio"]), md_escape(h["explains"])] for h in failure["hypotheses"]],
                    ["---", "---", "---:", "---"])
            extra = []
            if failure["repro"]:
                extra.append(f"- Reproduce: {md_code(failure['repro'], in_table=False)}")
            if failure["counterexample"]:
                extra.append(f"- Counterexample file: {md_code(failure['counterexample'], in_table=False)}")
            if extra:
                lines += [""] + extra
        lines.append("")
    return lines[:-1]


def _divergences_section(report: dict[str, Any]) -> list[str]:
    rows = divergence_rows(report)
    if not rows:
        return []
    table = [[md_code(r["id"]), md_escape(r["framework"]), md_escape(r["kind"]), md_escape(r["versions"]),
              md_escape(r["in_scope"]), md_escape(r["this_run"]), md_escape(r["recheck"] or MISSING)] for r in rows]
    lines = ["## Documented divergences", ""]
    lines += _table(["Divergence", "Framework", "Kind", "Observed in", "In scope", "This run", "Crash re-check"], table)
    for r in rows:
        lines += ["", f"### {md_code(r['id'], in_table=False)}", "", f"- Summary: {md_escape(r['summary'])}",
                  f"- Ceiling: {md_escape(r['ceiling'])}", f"- Evidence: {md_escape(r['evidence'])}"]
    return lines


def _skips_section(report: dict[str, Any]) -> list[str]:
    entries = skipped_entries(report)
    if not entries:
        return []
    rows = [[md_code(e["nodeid"]), md_code(e["variant"]), md_escape(e["reason"])] for e in entries]
    return ["## Skips", ""] + _table(["Test", "Variant", "Reason"], rows)


def _environment_lines(environment: Any) -> list[str]:
    env = environment_rows(environment)
    if env["empty"]:
        return ["No environment recorded."]
    lines = [f"- {md_escape(name)}: {md_escape(value)}" for name, value in env["general"]]
    for title, key in (("Frameworks", "frameworks"), ("Devices", "devices"), ("Numeric modes", "numeric_modes")):
        if env[key]:
            lines += ["", f"{title}:", ""]
            lines += _table(["Name", "Value"], [[md_code(name), md_escape(value)] for name, value in env[key]])
    return lines


def _environment_section(report: dict[str, Any]) -> list[str]:
    lines = ["## Environment", ""] + _environment_lines(report.get("environment"))
    for shard in as_list(report.get("shards")):
        shard = as_dict(shard)
        lines += ["", f"### Shard {md_escape(shard.get('name'))}", ""]
        lines += _environment_lines(shard.get("environment"))
    return lines


def _claims_section(report: dict[str, Any]) -> list[str]:
    claims = as_dict(report.get("claims"))
    if not claims:
        return []
    rows = []
    for claim_id, claim in claims.items():
        claim = as_dict(claim)
        rows.append([md_code(claim_id), md_escape(claim.get("title")), md_escape(claim.get("relation")),
                     md_escape(claim.get("source")),
                     ", ".join(md_code(v) for v in as_list(claim.get("variants"))) or MISSING])
    return ["## Claims", ""] + _table(["Claim", "Title", "Relation", "Source", "Variants"], rows)


def render_markdown(report: dict[str, Any]) -> str:
    """report.md: what a reviewer reads in a pull request."""
    report = as_dict(report)
    sections = [["# Layer conformance report", ""] + _headline(report), _port_section(report), _matrix_section(report),
                _differ_section(report), _failures_section(report), _speed_section(report),
                _coverage_section(report), _accumulation_section(report), _declared_section(report),
                _divergences_section(report),
                _skips_section(report),
                _claims_section(report), _environment_section(report)]
    return "\n\n".join("\n".join(section) for section in sections if section) + "\n"


def write_markdown(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    return write_text_atomic(path, render_markdown(report))
