"""`conformance report`: render report.md and report.html from any report.json.

`conformance run` writes all three; a report made elsewhere (`conformance merge` in CI, a shard) has
only the JSON. This renders it with the same writers (`layer_conformance.reports.render.render`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layer_conformance.cli.arguments import ArgumentParser, check_output_folder
from layer_conformance.reports.schema import ReportError, load_report


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="conformance report",
        description="Render report.md and report.html from a report.json (for instance a merged one in CI) "
                    "with the writers `conformance run` uses.")
    parser.add_argument("report", metavar="REPORT.json", help="the report to render")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for report.md and report.html (created if missing; files there are replaced)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        report = load_report(args.report)
    except ReportError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    check_output_folder(parser, out)  # one line and exit 2 when it cannot be written
    from layer_conformance.reports.render import render

    try:
        written = render(report, out)
    except OSError as exc:
        print(f"{parser.prog}: error: cannot write report.md and report.html into {out} "
              f"({exc.__class__.__name__}: {exc.strerror or exc}); choose a writable --out", file=sys.stderr)
        return 2
    results = len(report.get("results") or [])
    print(f"wrote {written[0]} and {written[1]} ({results} result{'s' if results != 1 else ''})")
    return 0
