"""`conformance merge SHARD.json... -o OUT.json`: join shard reports into one
(the rules are `layer_conformance.reports.merge`'s)."""
from __future__ import annotations

import argparse
import sys

from layer_conformance.cli.arguments import ArgumentParser
from layer_conformance.reports.merge import merge_reports
from layer_conformance.reports.schema import ReportError, load_report, require_results, write_json_atomic


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="conformance merge",
        description="Merge shard report.json files (xdist workers, CI jobs, Keras backends) into one report.")
    parser.add_argument("inputs", nargs="+", metavar="REPORT.json", help="shard reports to merge")
    parser.add_argument("-o", "--output", required=True, metavar="OUT.json", help="merged report to write")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        named = [(path, require_results(load_report(path), path)) for path in args.inputs]
        merged = merge_reports(named)
    except ReportError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        write_json_atomic(args.output, merged)
    except OSError as exc:
        print(f"{parser.prog}: error: cannot write {args.output} ({exc.__class__.__name__}: "
              f"{exc.strerror or exc}); choose a writable -o path", file=sys.stderr)
        return 2
    except ValueError as exc:  # NaN/inf read from an input cannot be written as strict JSON
        print(f"{parser.prog}: error: cannot write {args.output}: {exc}; an input report holds a "
              f"non-finite number, re-run the shard that wrote it", file=sys.stderr)
        return 2
    counts = ", ".join(f"{status}={count}" for status, count in merged["summary"].items())
    print(f"merged {len(merged['results'])} results from {len(named)} reports into {args.output} ({counts})")
    return 0
