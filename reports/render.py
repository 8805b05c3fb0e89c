"""report.md and report.html from a report: what `conformance run` writes beside report.json, and what
`conformance report` writes for a report made elsewhere (`conformance merge` in CI, a shard).

Links to counterexamples are relative to the output folder, as `run` writes them: render into the
folder that holds the `counterexamples/` folder to keep them working.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from layer_conformance.reports.html import write_html
from layer_conformance.reports.markdown import write_markdown


def render(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """Write report.md and report.html into the folder `out` (created if missing), replacing
    them; the paths written.

    Each file is written atomically (OSError when it cannot be).
    """
    return write_markdown(report, out / "report.md"), write_html(report, out / "report.html")
