"""`conformance repro PATH`: re-run a saved failing example through the suite's own harness.

Exit 0: the failure no longer reproduces; 1: it does; 2: the file cannot be used (one-line error).
Frameworks are imported only once the file has been read and the claim found, so `--help` and bad
input stay fast. The pieces it is made of live where the suites use them too: reading the file
(`layer_conformance.suites.counterexamples.load_counterexample`), evaluating the example
(`layer_conformance.suites.checks.forward.evaluate_example`, the forward check) and re-running a saved crash
(`layer_conformance.reports.flight.repro_crash`).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
import textwrap
from typing import Any

from layer_conformance.cli.arguments import ArgumentParser, split_csv

PROG = "conformance repro"


class _Unusable(Exception):
    """Input that cannot be re-run; main prints the message as one line and exits 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Re-run a failing example saved by the suite (the .npz named in the failure message and in "
                    "the report) against the float64 reference, with the frameworks installed here. Exit status: "
                    "1 if the failure reproduces, 0 if it no longer does, 2 if the file cannot be used.")
    parser.add_argument("path", metavar="PATH", help="counterexample .npz")
    parser.add_argument("--frameworks", type=split_csv, default=None, metavar="LIST",
                        help="re-run only these frameworks' variants: torch,keras,flax.linen,flax.nnx (default: all)")
    return parser


def _format(value: Any, spec: str = ".3g") -> str:
    return "-" if value is None else format(value, spec)


def _print_header(saved: dict[str, Any]) -> None:
    from layer_conformance.suites.strategies import describe_dims

    meta = saved["meta"]
    print(f"counterexample {saved['path']}")
    print(f"  test:    {meta['nodeid']}")
    print(f"  claim:   {meta['claim']} ({meta.get('relation', '?')}): {meta.get('title', '')}")
    print(f"  dtype:   {meta['dtype']}    device: {meta['device']}"
          + (f"    keras backend: {meta['keras_backend']}" if meta.get("keras_backend") else ""))
    print(f"  dims:    {describe_dims(saved['dims'])}")
    print("  saved failure:")
    print(textwrap.indent(str(meta["message"]), "    "))


def _select(claim: Any, saved: dict[str, Any], frameworks: list[str] | None) -> tuple[list[Any], dict[str, str]]:
    """The claim's variants that can run here (and were asked for); the others with the reason."""
    from layer_conformance.adapters import get_adapter

    dims, dtype, device = saved["dims"], saved["meta"]["dtype"], saved["meta"]["device"]
    runnable, skipped = [], {}
    for variant in claim.variants:
        label = variant.label(dims)
        if frameworks is not None and variant.framework not in frameworks:
            skipped[label] = f"{variant.framework} not selected (--frameworks)"
            continue
        reason = get_adapter(variant.framework).supports(variant.spec(dims), dtype, device)
        if reason:
            skipped[label] = reason
        else:
            runnable.append(variant)
    return runnable, skipped


def _rerun(saved: dict[str, Any], frameworks: list[str] | None) -> int:
    from layer_conformance.adapters import FRAMEWORKS
    from layer_conformance.adapters.base import canonical
    from layer_conformance.adapters.spec import SpecError
    from layer_conformance.suites.catalog import CLAIMS_BY_ID

    meta = saved["meta"]
    unknown = sorted(set(frameworks or ()) - set(FRAMEWORKS))
    if unknown:
        raise _Unusable(f"unknown framework(s) {', '.join(unknown)} in --frameworks; choose from "
                        f"{', '.join(FRAMEWORKS)}")
    claim = CLAIMS_BY_ID.get(meta["claim"])
    if claim is None:
        raise _Unusable(f"claim {meta['claim']!r} is not in this catalog (renamed or removed since the example "
                        f"was saved); run the saved scripts next to the .npz instead")
    dims, dtype, device = saved["dims"], meta["dtype"], meta["device"]
    try:
        expected = tuple(claim.input_shape(dims))
        kernel_shape = claim.variants[0].spec(dims).kernel_shape()
    except (KeyError, TypeError, SpecError) as exc:
        raise _Unusable(f"the catalog's claim {claim.id} no longer fits the saved dims ({type(exc).__name__}: "
                        f"{exc}); the claim changed since the example was saved") from None
    kernel = saved["weights"].get("kernel")
    got = (tuple(saved["x"].shape), None if kernel is None else tuple(kernel.shape))
    if got != (expected, kernel_shape):
        raise _Unusable(f"the catalog's claim {claim.id} now expects input {expected} and kernel {kernel_shape}, "
                        f"the file holds {got[0]} and {got[1]}; the claim changed since the example was saved")
    if meta.get("keras_backend") and "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", meta["keras_backend"])  # the backend the failure was seen on

    from layer_conformance.suites.checks.forward import evaluate_example
    from layer_conformance.suites.outcomes import Case

    runnable, skipped = _select(claim, saved, frameworks)
    failed_before = [v["label"] for v in saved["variants"] if v.get("failed")]
    rerun_labels = {v.label(dims) for v in runnable}
    if not runnable:
        raise _Unusable("no variant of claim " + claim.id + " can run here: "
                        + "; ".join(f"{label}: {reason}" for label, reason in skipped.items()))
    if failed_before and not rerun_labels & set(failed_before):
        raise _Unusable(f"the failing variant(s) {', '.join(failed_before)} cannot be re-run here ("
                        + "; ".join(skipped.get(label, "not in the catalog's claim any more")
                                    for label in failed_before) + ")")

    x = canonical(saved["x"], dtype)
    weights = {name: canonical(value, dtype) for name, value in saved["weights"].items()}
    try:
        outcome = evaluate_example(Case(claim, dtype, device), dims, x, weights, runnable)
    except SpecError as exc:
        raise _Unusable(f"the saved example does not fit the catalog's claim {claim.id} any more ({exc})") from None
    _print_table(outcome, saved, {**skipped, **outcome.skipped})
    if meta.get("keras_backend") and any(v.framework == "keras" for v in outcome.variants):
        from layer_conformance.adapters.keras import BACKEND

        if BACKEND != meta["keras_backend"]:
            print(f"note: re-run on Keras backend {BACKEND}; the example was saved on {meta['keras_backend']}")
    if outcome.failures:
        print(f"\n{PROG}: the failure reproduces:")
        print(textwrap.indent("\n".join(outcome.failures), "  "))
        return 1
    print(f"\n{PROG}: the failure no longer reproduces: every re-run variant is within its bound"
          + (f" (not re-run: {', '.join(skipped)})" if skipped else ""))
    return 0


def _print_table(outcome: Any, saved: dict[str, Any], skipped: dict[str, str]) -> None:
    before = {v["label"]: v for v in saved["variants"]}
    rows = [("variant", "max abs error", "bound ratio", "saved ratio", "result")]
    for v in outcome.variants:
        rows.append((v.label, _format(v.error), _format(v.ratio), _format(before.get(v.label, {}).get("bound_ratio")),
                     "FAIL" if v.failure else "PASS"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"\nre-run with the frameworks installed here ({outcome.case.dtype}, {outcome.case.device}):")
    for index, row in enumerate(rows):
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
        if index == 0:
            print("  " + "  ".join("-" * width for width in widths))
    for label, reason in skipped.items():
        print(f"  skipped {label}: {reason}")


def _check_version(saved: dict[str, Any]) -> None:
    """The loader accepts any counterexample/vN document; only the version this code writes can be re-run."""
    from layer_conformance.suites.counterexamples import SCHEMA

    schema = str(saved["meta"].get("schema"))
    prefix, _, version = SCHEMA.rpartition("/v")
    found = schema.rpartition("/v")[2] if schema.startswith(prefix + "/v") else ""
    if schema != SCHEMA:
        if found.isdigit() and int(found) > int(version):
            raise _Unusable(f"{saved['path']}: written by a newer layer-conformance (schema {schema!r}, this one "
                            f"reads {SCHEMA!r}); upgrade layer-conformance to re-run it")
        raise _Unusable(f"{saved['path']}: unsupported counterexample schema {schema!r} (expected {SCHEMA!r}); "
                        f"re-run the failing test to save it again")
    if not saved["variants"]:
        raise _Unusable(f"{saved['path']}: records no variants, so there is nothing to re-run; re-run the failing "
                        f"test to save it again")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from layer_conformance.reports.flight import crash_meta, repro_crash
    from layer_conformance.suites.counterexamples import CounterexampleError, load_counterexample

    crash = crash_meta(args.path)
    if crash is not None:  # a call that killed its process: re-run it in a child process
        return repro_crash(Path(args.path), crash)
    try:
        saved = load_counterexample(args.path)
        _check_version(saved)
        _print_header(saved)
        sys.stdout.flush()
        return _rerun(saved, args.frameworks)
    except (CounterexampleError, _Unusable) as exc:
        sys.stdout.flush()
        text = " ".join(str(exc).split())
        if ";" not in text:  # every message names the fix
            text += "; pass the .npz named in the failure message (`reproduce: conformance repro PATH`)"
        print(f"{PROG}: error: {text}", file=sys.stderr)
        return 2

