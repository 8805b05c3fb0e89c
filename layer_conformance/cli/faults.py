"""`conformance faults`: inject framework faults, run the suites under each, print the mutation score."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from layer_conformance.cli.arguments import PROFILES



def build_parser() -> argparse.ArgumentParser:
    from layer_conformance.cli.arguments import ArgumentParser

    parser = ArgumentParser(
        prog="conformance faults",
        description="Monkeypatch the frameworks with each fault of layer_conformance.mutation.faults, run the suites that exercise "
                    "the patched op, and print the mutation score (caught faults / faults) and whether the benign "
                    "perturbations passed. Exit 0 when every fault is caught and every benign one passes.")
    parser.add_argument("--faults", default=None, metavar="ID,...", help="fault ids (default: all)")
    parser.add_argument("--profile", choices=PROFILES, default="ci",
                        help="hypothesis profile for the faults (default: %(default)s); benign ones run `thorough`")
    parser.add_argument("--out", default="conformance-faults", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument("--benign-examples", type=int, default=1000, metavar="N",
                        help="examples a benign perturbation must pass (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="hide the pytest output of each run")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.benign_examples < 0:
        parser.error(f"--benign-examples must be >= 0, got {args.benign_examples}")
    from layer_conformance.mutation.faults import FAULTS, FAULTS_BY_ID

    if args.faults is not None:
        wanted = [f.strip() for f in args.faults.split(",") if f.strip()]
        unknown = [f for f in wanted if f not in FAULTS_BY_ID]
        if unknown or not wanted:
            problem = f"unknown fault(s) {', '.join(unknown)}" if unknown else "--faults names no fault"
            print(f"conformance faults: error: {problem}; choose from {', '.join(FAULTS_BY_ID)}", file=sys.stderr)
            return 2
        faults = [FAULTS_BY_ID[f] for f in wanted]
    else:
        faults = list(FAULTS)
    out = Path(args.out)
    from layer_conformance.cli.arguments import check_output_folder
    from layer_conformance.mutation.score import score_faults

    check_output_folder(parser, out)  # before any suite runs: the results are written at the very end
    return score_faults(faults, out, profile=args.profile, benign_examples=args.benign_examples, quiet=args.quiet)
