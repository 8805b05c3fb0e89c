"""`conformance explain`: is the difference between your output and a reference rounding?

Reads the arrays (.npy, weights as .npz), parses the layer spec and prints
`layer_conformance.reports.explain.bound_ratio`'s verdict; the bound and its reasoning are there.
"""
from __future__ import annotations

import argparse
import sys
import zipfile
from typing import Any

import numpy as np

from layer_conformance.adapters.spec import SpecError
from layer_conformance.cli.arguments import ArgumentParser
from layer_conformance.reports.explain import bound_ratio, parse_spec
from layer_conformance.suites.bounds import DECLARED_ROUNDOFF, UNIT_ROUNDOFF

SPEC_EXAMPLE = 'write e.g. conv(64, 128, 5, padding=same) or dense(512, 10), or a JSON object with "kind"'
SPEC_HELP = ("the layer: conv(IN, OUT, KERNEL, strides=, padding=valid|same|causal|N, dilation=, groups=, "
             "bias=true|false, padding_mode=zeros|reflect|replicate|circular) or dense(IN, OUT, bias=), "
             "e.g. 'conv(64, 128, 5, padding=same)', 'conv(3, 16, (3, 3), strides=2)', 'dense(512, 10)'; or "
             "a JSON object of the same keywords with \"kind\": \"conv\" or \"dense\" (a spec saved in a "
             "counterexample is one), inline or in a .json file")


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="conformance explain",
        description="Is this difference expected? Judge a layer output from your framework against a reference "
                    "(ideally float64) under the suite's derived rounding-error bound, and say why. Arrays are "
                    "channels-last, weights in the canonical layout (dense kernel (in, out), conv kernel "
                    "(*kernel, in/groups, out), bias (out,)).",
        epilog="exit status: 0 within the bound (rounding explains it), 1 exceeds it, 2 bad input, 3 no verdict "
               "(the worst-case bound is infinite for this many terms in this precision)")
    parser.add_argument("--output", required=True, metavar="OUT.npy", help="the output your framework gave")
    parser.add_argument("--reference", required=True, metavar="REF.npy", help="what to compare it with")
    parser.add_argument("--spec", required=True, metavar="SPEC", help=SPEC_HELP)
    parser.add_argument("--x", metavar="X.npy", help="the layer's input (for the magnitude |W||x| + |b|)")
    parser.add_argument("--weights", metavar="W.npz", help="the layer's weights: arrays 'kernel' and 'bias' "
                        "(a saved counterexample .npz has them)")
    parser.add_argument("--magnitude", metavar="M.npy", help="|W||x| + |b| itself, instead of --x and --weights")
    parser.add_argument("--dtype", choices=list(UNIT_ROUNDOFF), help="the dtype the layer computed in")
    parser.add_argument("--u-eff", metavar="MODE|NUMBER",
                        help=f"a declared precision mode ({', '.join(DECLARED_ROUNDOFF)}) or unit roundoff; "
                             f"with --dtype, u_eff sets u and the dtype only the subnormal term")
    return parser


def _load(path: str, option: str, archive: bool = False) -> Any:
    """An array (.npy) or a mapping of arrays (.npz); ValueError naming the option and the fix."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{option} {path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{option} {path}: is a directory; pass the file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{option} {path}: not a readable NumPy file ({' '.join(str(exc).split())}); save it "
                         f"with numpy.save{'z' if archive else ''}") from None
    if archive:
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError(f"{option} {path}: expected a .npz with arrays 'kernel' and 'bias'; save it with "
                             f"numpy.savez(path, kernel=..., bias=...)")
        with loaded:
            return {name: loaded[name] for name in ("kernel", "bias") if name in loaded.files}
    if isinstance(loaded, np.lib.npyio.NpzFile):
        loaded.close()
        raise ValueError(f"{option} {path}: is a .npz archive, expected one array; save it with numpy.save")
    return loaded


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    u_eff: float | str | None = args.u_eff
    if u_eff is not None and u_eff not in UNIT_ROUNDOFF and u_eff not in DECLARED_ROUNDOFF:
        try:
            u_eff = float(u_eff)
        except ValueError:
            parser.error(f"--u-eff {args.u_eff!r}: unknown; give a declared mode "
                         f"({', '.join(DECLARED_ROUNDOFF)}), a dtype or a number in (0, 1)")
    if args.dtype is None and u_eff is None:
        parser.error("give --dtype (the dtype the layer computed in) or --u-eff (a declared precision mode)")
    if args.magnitude is None and (args.x is None or args.weights is None):
        parser.error("the bound needs |W||x| + |b|: give --x and --weights, or --magnitude")
    if args.magnitude is not None and (args.x is not None or args.weights is not None):
        parser.error("give either --magnitude or --x and --weights, not both")
    try:
        spec = parse_spec(args.spec)
    except (SpecError, OSError, UnicodeDecodeError) as exc:
        parser.error(f"--spec: {exc}; {SPEC_EXAMPLE}")
    try:
        explanation = bound_ratio(
            _load(args.output, "--output"), _load(args.reference, "--reference"), spec, dtype=args.dtype,
            u_eff=u_eff, x=None if args.x is None else _load(args.x, "--x"),
            weights=None if args.weights is None else _load(args.weights, "--weights", archive=True),
            magnitude=None if args.magnitude is None else _load(args.magnitude, "--magnitude"))
    except ValueError as exc:  # SpecError included: the input or weights do not fit the spec
        print(f"{parser.prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(explanation)
    return explanation.exit_code
