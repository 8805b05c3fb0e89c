"""The per-claim result table printed by pytest and by `conformance run`."""
from __future__ import annotations

from typing import Any, Iterable

_MARK = {"passed": "ok", "failed": "FAIL", "error": "ERROR", "skipped": "skip", "xfailed": "xfail",
         "measured": "measured"}  # a measurement (speed), not a verdict: never shown as ok


def _ratio(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}"


def format_table(results: Iterable[dict[str, Any]]) -> str:
    """One line per result: claim, check, dtype, device, status, examples, max bound ratio, variants."""
    rows = [("claim", "rel", "check", "dtype", "device", "status", "n", "max ratio", "sep", "variants")]
    for r in sorted(results, key=lambda r: (r.get("claim", ""), r.get("check", ""), r.get("dtype", ""),
                                            r.get("device", ""), r.get("keras_backend") or "")):
        variants = ", ".join(r.get("variants") or [])
        if r.get("keras_backend"):
            variants += f" (keras on {r['keras_backend']})"
        if r.get("status") == "skipped":
            variants = f"skipped: {r.get('reason') or ''}"[:90]
        rows.append((r.get("claim", ""), r.get("relation") or "", r.get("check") or "", r.get("dtype") or "",
                     r.get("device") or "", _MARK.get(r.get("status", ""), r.get("status", "")),
                     str(r.get("examples") or 0), _ratio(r.get("max_bound_ratio")), _ratio(r.get("separation")),
                     variants))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in rows]
    lines.insert(1, "-" * min(160, max(len(line) for line in lines)))
    return "\n".join(lines)
