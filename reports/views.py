"""The view helpers every report writer shares: defensive getters for report.json values and their display
strings (a report may come from anyone: any field beyond the basic twelve may be missing or malformed)."""
from __future__ import annotations

import json
import math
from typing import Any

MISSING = "–"

STATUS_ICON = {
    "passed": "✅",
    "failed": "❌",
    "skipped": "⏭",
    "error": "💥",
    "xfailed": "❎",
    "measured": "⏱",  # a measurement (speed), not a verdict
}

def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def text(value: Any) -> str:
    """A display string for any JSON value; None becomes "–"."""
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value if value else MISSING
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return format_number(value)
    try:
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def to_float(value: Any) -> float | None:
    """A finite-or-infinite float, or None for missing, NaN and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return None if math.isnan(number) else number


def format_number(value: Any) -> str:
    """Short human form: 0.031, 4.2, 1.2e-07; "–" for missing; non-numbers shown as text."""
    if value is None:
        return MISSING
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    return f"{value:.3g}"


def format_duration(value: Any) -> str:
    seconds = to_float(value)
    if seconds is None:
        return MISSING
    return f"{seconds:.2f} s" if seconds < 100 else f"{seconds:.0f} s"


def status_of(result: dict[str, Any]) -> str:
    status = result.get("status")
    return status if isinstance(status, str) and status else "unknown"


def status_icon(status: str) -> str:
    return STATUS_ICON.get(status, "❔")
