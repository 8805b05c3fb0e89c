"""`conformance compare BASELINE CURRENT`: the upgrade gate's command line.

The rules (what is a regression, what is drift, what is only listed) are
`layer_conformance.reports.compare`'s; this prints its Markdown, writes it with `--output`, and exits
with its code: 0 nothing got worse, 1 something did, 2 a report cannot be read or the output written.
"""
from __future__ import annotations

import argparse
import math
import re
import sys

from layer_conformance.cli.arguments import ArgumentParser
from layer_conformance.reports.compare import DEFAULT_FACTOR, compare_reports
from layer_conformance.reports.schema import ReportError, load_report, require_results, write_text_atomic


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


def _skip_pattern(text: str) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a regular expression ({exc}); escape special "
                                         f"characters with a backslash") from None


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="conformance compare",
        description="Compare a candidate report.json with a baseline; exit 1 when anything got worse (a new "
                    "failure, a result or variant no longer measured, a skip not allowed, a framework gone, an "
                    "incomplete report, a divergence new or over its ceiling, bound-ratio drift), 2 on unusable "
                    "input.")
    parser.add_argument("baseline", help="report.json of the accepted run")
    parser.add_argument("current", help="report.json of the run to check (the candidate)")
    parser.add_argument("--factor", type=_positive_factor, default=DEFAULT_FACTOR,
                        help=f"max_bound_ratio growth that counts as drift (default {DEFAULT_FACTOR:g})")
    parser.add_argument("--allow-skip", action="append", default=[], type=_skip_pattern, metavar="PATTERN",
                        help="a result or variant that passed and is skipped now is no regression when its skip "
                             "reason matches this regular expression (searched, e.g. 'gpu'); repeatable")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="compare even if a report is complete: false; the results it lacks are listed, "
                             "not judged")
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
    comparison = compare_reports(baseline, current, factor=args.factor, allow_skip=args.allow_skip,
                                 allow_incomplete=args.allow_incomplete)
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
