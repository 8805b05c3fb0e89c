"""The `conformance` command line: one module per command, each with `build_parser()` and `main(argv)`.

Start-up stays fast: this module imports no framework and loads a command's module only when that
command runs (`run` starts pytest in child processes, one per Keras backend, since Keras picks its
backend once, at import). Bad input (unknown options, unusable files, unwritable output) gives one
line on stderr naming the problem and the fix, and exit status 2; Ctrl-C gives 130.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from layer_conformance.cli.arguments import ArgumentParser
from layer_conformance.reports.schema import ReportError

# name -> (the module holding its build_parser() and main(argv), one line for `conformance --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("layer_conformance.cli.run", "run the suites (per Keras backend), merge, write report.json/.md/.html"),
    "compare": ("layer_conformance.cli.compare", "diff two reports; exit 1 on regression (upgrade gate)"),
    "merge": ("layer_conformance.cli.merge", "join shard reports into one"),
    "repro": ("layer_conformance.cli.repro", "re-run a saved failing example"),
    "faults": ("layer_conformance.cli.faults",
               "inject framework faults, run the suite under each, print the mutation score"),
    "explain": ("layer_conformance.cli.explain",
                "is your output's difference from a reference rounding? judge it by the derived bound"),
    "port": ("layer_conformance.cli.port",
             "port a model (or take your port) and check it layer by layer, with the likely porting mistake"),
    "report": ("layer_conformance.cli.report",
               "render report.md and report.html from a report.json (e.g. a merged one)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = ArgumentParser(
        prog="conformance",
        description="layer-conformance: do weight-transferred layers agree across PyTorch, Keras and Flax?",
        epilog="commands:\n" + "\n".join(f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items())
               + "\n\nRun `conformance COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    if not argv:
        parser.error(f"no command given; use one of {', '.join(COMMANDS)}")
    parsed = parser.parse_args(argv[:1])
    try:
        return importlib.import_module(COMMANDS[parsed.command][0]).main(argv[1:])
    except ReportError as exc:
        print(f"conformance {parsed.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"conformance {parsed.command}: interrupted", file=sys.stderr)
        return 130
