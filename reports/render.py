"""`conformance report`: render report.md and report.html from any report.json.

`conformance run` writes all three; a report made elsewhere (`conformance merge` in CI, a shard) has
only the JSON. This renders it with the same writers (`write_markdown`, `write_html`). Links to
counterexamples are relative to the output folder, as `run` writes them: render into the folder that
holds the `counterexamples/` folder to keep them working.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layer_conformance.reports.schema import ReportError, load_report


def _parser() -> argparse.ArgumentParser:
    from layer_conformance.reports.arguments import ArgumentParser

    parser = ArgumentParser(
        prog="conformance report",
        description="Render report.md and report.html from a report.json (for instance a merged one in CI) "
                    "with the writers `conformance run` uses.")
    parser.add_argument("report", metavar="REPORT.json", help="the report to render")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for report.md and report.html (created if missing; files there are replaced)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        report = load_report(args.report)
    except ReportError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    from layer_conformance.reports.arguments import check_output_folder

    out = Path(args.out)
    check_output_folder(parser, out)  # one line and exit 2 when it cannot be written
    from layer_conformance.reports.html import write_html
    from layer_conformance.reports.markdown import write_markdown

    written = []
    for name, write in (("report.md", write_markdown), ("report.html", write_html)):
        try:
            written.append(write(report, out / name))
        except OSError as exc:
            print(f"{parser.prog}: error: cannot write {out / name} ({exc.__class__.__name__}: "
                  f"{exc.strerror or exc}); choose a writable --out", file=sys.stderr)
            return 2
    results = len(report.get("results") or [])
    print(f"wrote {written[0]} and {written[1]} ({results} result{'s' if results != 1 else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
