"""`conformance port MODEL`: port a model to other frameworks (or take your port) and check it layer by layer.

MODEL is a Python file and, after a colon, the name of the model in it: an object, or a function that
returns one when called with no arguments (a Flax linen model: the pair (module, variables)). The
file may set INPUT_SHAPE (one example's shape, batch left out); `--input-shape` overrides it.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

from layer_conformance.adapters.spec import SpecError
from layer_conformance.cli.arguments import ArgumentParser, check_output_folder, split_csv

TARGETS = ("torch", "keras", "flax.linen", "flax.nnx")
KERAS_BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT_NAMES = ("model", "build_model", "get_model")


def build_parser() -> argparse.ArgumentParser:
    from layer_conformance.mutation.porting import PLANTS

    parser = ArgumentParser(
        prog="conformance port",
        description="Check a model port layer by layer: every layer's bound ratio against the float64 reference of "
                    "the source, isolated (on the source's own values at its input) and propagated (end to end), "
                    "and the gradients; the first layer over its bound is named, with the porting mistake its "
                    "output is consistent with. Keras runs on the backend KERAS_BACKEND names.",
        epilog="exit status: 0 every port within its bounds, 1 a port failed or could not run, 2 bad input, "
               "3 nothing failed but some comparison had no finite bound (measured, not judged)")
    parser.add_argument("model", metavar="FILE.py[:NAME]",
                        help=f"the source model: a file and the name of a model or of a function returning one "
                             f"(default: the first of {', '.join(DEFAULT_NAMES)} the file defines)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", metavar="FRAMEWORKS", help=f"port it to these frameworks (comma list of "
                                                          f"{', '.join(TARGETS)}, or 'all'; keras:BACKEND for Keras "
                                                          f"on {', '.join(KERAS_BACKENDS)})")
    where.add_argument("--target", metavar="FILE.py[:NAME]", help="your own port of it, to check")
    parser.add_argument("--input-shape", metavar="N,N,...", help="one example's shape, batch left out, in the "
                        "source's layout (default: INPUT_SHAPE in the file; a built Keras model knows its own)")
    parser.add_argument("--examples", type=int, default=50, metavar="N", help="inputs drawn per port (default 50)")
    parser.add_argument("--batch", default="1,4", metavar="LOW,HIGH", help="range of batch sizes (default 1,4)")
    parser.add_argument("--inputs", metavar="FILE.npy|FILE.npz", help="your own inputs, (N, *input_shape) each, "
                        "checked before the drawn ones")
    parser.add_argument("--no-gradients", action="store_true", help="check the forward pass only")
    parser.add_argument("--plant", metavar="MISTAKE[:LAYER]",
                        help=f"make a porting mistake in the port made by --to (to see the check find it): one of "
                             f"{', '.join(PLANTS)}; LAYER (default 1) is where")
    parser.add_argument("--name", help="the model's name in the report (default: the NAME in MODEL)")
    parser.add_argument("--timeout", type=float, default=1800.0, metavar="SECONDS",
                        help="each port runs in its own process; one that runs longer is stopped and reported as an "
                             "error (hung), as is one that crashes, with the input it was on (default 1800)")
    parser.add_argument("--worker-result", type=Path, help=argparse.SUPPRESS)  # one port, in a child process
    parser.add_argument("--out", default="port-report", type=Path, metavar="DIR",
                        help="folder for report.json, report.md, report.html and counterexamples (default port-report)")
    return parser


def load_object(text: str, what: str) -> tuple[Any, str, Any]:
    """(the model, its name, the module) from FILE.py[:NAME]; ValueError naming the problem and the fix."""
    path_text, _, name = text.partition(":") if not (len(text) > 1 and text[1] == ":") else \
        (text[:2] + text[2:].partition(":")[0], ":", text[2:].partition(":")[2])
    path = Path(path_text)
    if not path.is_file():
        raise ValueError(f"{what} {path}: no such file; pass a Python file that defines the model")
    spec = importlib.util.spec_from_file_location(f"_conformance_port_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ValueError(f"{what} {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import does: dataclasses (a Flax module) look their module up there
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # the user's file: whatever it raises is theirs, said in one line
            sys.modules.pop(spec.name, None)
            raise ValueError(f"{what} {path}: importing it raised {type(exc).__name__}: {exc}") from None
        names = [name] if name else [n for n in DEFAULT_NAMES if hasattr(module, n)]
        if not names or not hasattr(module, names[0]):
            raise ValueError(f"{what} {path}: defines no {name or ' / '.join(DEFAULT_NAMES)}; name the model as "
                             f"{path}:NAME")
        obj = getattr(module, names[0])
        if callable(obj) and isinstance(obj, type(load_object)):
            try:
                obj = obj()
            except Exception as exc:  # the user's function: said in one line, as an import error is
                raise ValueError(f"{what} {path}: calling {names[0]}() raised {type(exc).__name__}: {exc}") from None
    finally:
        sys.path.pop(0)
    return obj, names[0], module


def _shape(text: str | None, module: Any) -> tuple[int, ...] | None:
    if text is not None:
        try:
            shape = tuple(int(v) for v in split_csv(text))
        except ValueError:
            shape = ()
        if not shape or min(shape) < 1:
            raise ValueError(f"--input-shape {text!r}: expected comma-separated positive ints, e.g. 3,1024")
        return shape
    shape = getattr(module, "INPUT_SHAPE", None)
    return None if shape is None else tuple(int(v) for v in shape)


def _split_model(obj: Any) -> tuple[Any, Any]:
    return (obj[0], obj[1]) if isinstance(obj, tuple) and len(obj) == 2 else (obj, None)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.examples < 0:
        parser.error("--examples must be 0 or more")
    if args.timeout <= 0:
        parser.error("--timeout must be positive")
    try:
        low, high = (int(v) for v in split_csv(args.batch))
        if not 1 <= low <= high:
            raise ValueError
    except ValueError:
        parser.error(f"--batch {args.batch!r}: expected LOW,HIGH with 1 <= LOW <= HIGH")
    targets: list[str] = []
    if args.to:
        targets = list(TARGETS) if args.to == "all" else split_csv(args.to)
        unknown = [t for t in targets if t not in TARGETS and not (
            t.startswith("keras:") and t.partition(":")[2] in KERAS_BACKENDS)]
        if unknown or not targets:
            parser.error(f"--to {args.to!r}: unknown framework {', '.join(unknown) or '(none)'}; expected a comma "
                         f"list of {', '.join(TARGETS)} (keras:{'|'.join(KERAS_BACKENDS)} for a Keras backend) or 'all'")
    check_output_folder(parser, args.out)
    try:
        source_obj, name, module = load_object(args.model, "MODEL")
        shape = _shape(args.input_shape, module)
        own_target = load_object(args.target, "--target")[0] if args.target else None
        from layer_conformance.suites.port.check import load_inputs

        inputs = load_inputs(args.inputs) if args.inputs else []
        if args.examples == 0 and not inputs:
            raise ValueError("--examples 0 and no input in --inputs: nothing would be compared; draw examples "
                             "(--examples N) or pass your own (--inputs)")
        plant = _parse_plant(args.plant) if args.plant else None
        if plant and not targets:
            raise ValueError("--plant makes its mistake in a port made by --to; use it with --to")
    except (ValueError, SpecError) as exc:
        print(f"conformance port: error: {exc}", file=sys.stderr)
        return 2
    argv = argv if argv is not None else sys.argv[1:]
    if args.worker_result is not None:
        return _run(args, source_obj, args.name or name, shape, own_target, targets, inputs, plant, (low, high), argv)
    return _supervise(args, source_obj, args.name or name, shape, targets, inputs, plant, argv)


def _parse_plant(text: str) -> tuple[str, int]:
    from layer_conformance.mutation.porting import PLANTS

    mistake, _, layer = text.partition(":")
    if mistake not in PLANTS:
        raise ValueError(f"--plant {text!r}: unknown mistake {mistake!r}; expected one of {', '.join(PLANTS)}")
    try:
        return mistake, int(layer or 1)
    except ValueError:
        raise ValueError(f"--plant {text!r}: LAYER must be a layer number (1 is the first)") from None


def _run(args: argparse.Namespace, source_obj: Any, name: str, shape: tuple[int, ...] | None, own_target: Any,
         targets: list[str], inputs: list, plant: tuple[str, int] | None, batch: tuple[int, int],
         argv: list[str]) -> int:
    from layer_conformance.adapters.graph import UnsupportedModel
    from layer_conformance.adapters.models import CHANNELS_FIRST, build_model
    from layer_conformance.reports.port import format_port_text
    from layer_conformance.reports.render import render
    from layer_conformance.reports.schema import write_json_atomic
    from layer_conformance.suites.port.check import check_port
    from layer_conformance.suites.port.record import port_entry, port_report, port_rows

    graph = _source_graph(source_obj, shape, inputs, plant)
    if graph is None:
        return 2
    results, errors = [], []
    jobs = [(t.partition(":")[0], None) for t in targets] if targets else [(None, own_target)]
    command = ["conformance", "port", *argv]
    for to, mine in jobs:
        label = to or "your port"
        try:
            if plant is not None and to is not None:
                from layer_conformance.mutation.porting import plant as make_mistake

                mine = build_model(make_mistake(graph, plant[0], plant[1], channels_first=to in CHANNELS_FIRST), to)
                to = None
            target, target_params = _split_model(mine) if mine is not None else (None, None)
            result = check_port(graph, target, to=to, target_params=target_params, examples=args.examples,
                                batch=batch, inputs=inputs, gradients=not args.no_gradients, name=name,
                                out=args.out / "counterexamples", on_example=_keep_example(args))
        except (UnsupportedModel, SpecError) as exc:
            print(f"conformance port: {name} -> {label}: error: {exc}", file=sys.stderr)
            if not targets:
                return 2
            errors.append(_error_row(name, graph.framework, label, str(exc)))
            continue
        results.append(result)
        if args.worker_result is None:
            # saved before it is shown: an interrupt after a port's table leaves that port in report.json
            write_json_atomic(args.out / "report.json", {**port_report(results, command, errors), "complete": False})
        print(format_port_text(port_entry(result)), flush=True)
    if args.worker_result is not None:  # a child of _supervise: hand the port over
        write_json_atomic(args.worker_result, {"entries": [port_entry(r) for r in results],
                                               "rows": [row for r in results for row in port_rows(r)] + errors})
        if errors and not targets:
            return 2
        statuses = [r.status for r in results] + ["error"] * len(errors)
        return 1 if any(s in ("failed", "error") for s in statuses) else 3 if "measured" in statuses else 0
    report = port_report(results, command, errors)
    write_json_atomic(args.out / "report.json", report)
    md, html = render(report, args.out)
    print(f"\nreport: {args.out / 'report.json'}, {md}, {html}")
    statuses = [r.status for r in results] + ["error"] * len(errors)
    if any(s in ("failed", "error") for s in statuses):
        return 1
    return 3 if any(s == "measured" for s in statuses) else 0


def _source_graph(source_obj: Any, shape: tuple[int, ...] | None, inputs: list,
                  plant: tuple[str, int] | None) -> Any:
    """The source model's graph, or None after one line on stderr naming what is wrong with the input."""
    from layer_conformance.adapters.graph import UnsupportedModel
    from layer_conformance.adapters.models import read_model

    source, source_params = _split_model(source_obj)
    try:
        graph = read_model(source, source_params, input_shape=shape)
    except (UnsupportedModel, SpecError) as exc:
        print(f"conformance port: error: {exc}", file=sys.stderr)
        return None
    bad = _bad_input(graph, inputs, plant)
    if bad:
        print(f"conformance port: error: {bad}", file=sys.stderr)
        return None
    return graph


def _bad_input(graph: Any, inputs: list, plant: tuple[str, int] | None) -> str | None:
    """What is wrong with --inputs or --plant's LAYER for this model (whatever the target), or None."""
    for k, x in enumerate(inputs):
        if x.ndim != len(graph.input_shape) + 1 or x.shape[1:] != graph.input_shape or x.shape[0] < 1:
            return (f"--inputs: array {k} has shape {x.shape}; expected (N, {', '.join(map(str, graph.input_shape))})"
                    f" with N >= 1, in the source's layout")
    if plant is not None and not 1 <= plant[1] <= len(graph.layers()):
        return f"--plant {plant[0]}:{plant[1]}: the model has layers 1 to {len(graph.layers())}"
    return None


def _error_row(model: str, source: str, target: str, message: str) -> dict[str, Any]:
    return {"nodeid": f"port::{model}::{source}->{target}::port", "claim": f"port:{model}:{source}->{target}",
            "title": f"{model} ported from {source} to {target}", "relation": "equal", "check": "port-output",
            "variants": [target], "dtype": None, "device": "cpu", "status": "error", "examples": 0,
            "max_abs_error": None, "max_bound_ratio": None, "reason": message}


INFLIGHT = ".inflight.npy"  # the input of the example a port's process is on, in its counterexamples folder


def _keep_example(args: argparse.Namespace) -> Any:
    """In a child process: keep the input of each example on disk before it runs, so that a crash names it."""
    if args.worker_result is None:
        return None
    import os

    import numpy as np

    path = args.worker_result.with_name(args.worker_result.name + INFLIGHT)

    def keep(x: Any, number: int) -> None:
        partial = path.with_name(path.name + ".tmp")
        with open(partial, "wb") as handle:  # the process may die, not the machine: no fsync needed
            np.save(handle, np.asarray(x).astype(np.float64), allow_pickle=False)
        os.replace(partial, path)

    return keep


def _child_argv(args: argparse.Namespace, name: str, job: str | None, result: Path) -> list[str]:
    argv = [args.model, *(["--to", job] if job else ["--target", args.target]), "--name", name,
            "--examples", str(args.examples), "--batch", args.batch, "--out", str(args.out),
            "--worker-result", str(result)]
    for option, value in (("--input-shape", args.input_shape), ("--inputs", args.inputs), ("--plant", args.plant)):
        if value:
            argv += [option, value]
    return argv + (["--no-gradients"] if args.no_gradients else [])


def _supervise(args: argparse.Namespace, source_obj: Any, name: str, shape: tuple[int, ...] | None,
               targets: list[str], inputs: list, plant: tuple[str, int] | None, argv: list[str]) -> int:
    """Check every port in its own process: a framework that crashes or hangs costs that port, which is
    reported as an error with the input it was on; the others run on and the report is written."""
    import os
    import signal
    import subprocess
    import tempfile

    from layer_conformance.reports.render import render
    from layer_conformance.reports.schema import write_json_atomic
    from layer_conformance.suites.port.record import assemble_report

    graph = _source_graph(source_obj, shape, inputs, plant)  # bad input is found here, before any child starts
    if graph is None:
        return 2
    command = ["conformance", "port", *argv]
    entries: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    codes: list[int] = []
    with tempfile.TemporaryDirectory(prefix="conformance-port-") as work:
        for number, job in enumerate(targets or [None]):
            label = job or "your port"
            result = Path(work) / f"port{number}.json"
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            if job and job.startswith("keras:"):
                env["KERAS_BACKEND"] = job.partition(":")[2]
            child = [sys.executable, "-m", "layer_conformance", "port", *_child_argv(args, name, job, result)]
            process = subprocess.Popen(child, env=env)
            try:
                code = process.wait(timeout=args.timeout)
                why = None if result.exists() else _died(code, signal)
            except subprocess.TimeoutExpired:
                _stop(process, 0)
                code, why = 1, f"hung: no result after {args.timeout:g} s (--timeout), stopped"
            except KeyboardInterrupt:  # keep what is done: a port that finished as the interrupt came included
                _stop(process, INTERRUPT_GRACE)
                if result.exists():
                    handed = __import__("json").loads(result.read_text())
                    entries += handed["entries"]
                    rows += handed["rows"]
                write_json_atomic(args.out / "report.json", assemble_report(entries, rows, command, complete=False))
                raise
            if why is None:
                handed = __import__("json").loads(result.read_text())
                entries += handed["entries"]
                rows += handed["rows"]
            else:
                rows.append(_error_row(name, graph.framework, label,
                                       _crash_text(args, name, label, why, result.with_name(result.name + INFLIGHT))))
                print(f"conformance port: {name} -> {label}: error: {rows[-1]['reason']}", file=sys.stderr)
            codes.append(code)
            write_json_atomic(args.out / "report.json", assemble_report(entries, rows, command, complete=False))
    if not targets and codes and codes[0] == 2:
        return 2  # your port could not be read: bad input, said on stderr by the child
    report = assemble_report(entries, rows, command)
    write_json_atomic(args.out / "report.json", report)
    md, html = render(report, args.out)
    print(f"\nreport: {args.out / 'report.json'}, {md}, {html}")
    statuses = [row["status"] for row in rows]
    if any(s in ("failed", "error") for s in statuses):
        return 1
    return 3 if "measured" in statuses else 0


INTERRUPT_GRACE = 10.0  # seconds a port's process may take to finish after the run is interrupted


def _stop(process: Any, grace: float) -> None:
    """Let a child process end within `grace` seconds, then kill it."""
    import subprocess

    try:
        process.wait(timeout=grace) if grace else None
    except subprocess.TimeoutExpired:
        pass
    if process.poll() is None:
        process.kill()
        process.wait()


def _died(code: int, signal: Any) -> str:
    if code < 0:
        try:
            return f"crashed: killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"crashed: killed by signal {-code}"
    return f"its process ended with status {code} and no result"


def _crash_text(args: argparse.Namespace, name: str, label: str, why: str, inflight: Path) -> str:
    """The error of a port whose process died, with the input it was on and the command that repeats it."""
    if not inflight.exists():
        return f"{why} before its first example"
    keep = args.out / "counterexamples" / f"port-{name}-{label.replace(':', '-')}-crash.npy"
    keep.parent.mkdir(parents=True, exist_ok=True)
    inflight.replace(keep)
    target = f"--to {label}" if label != "your port" else f"--target {args.target}"
    return (f"{why} on the input saved in {keep}; reproduce: conformance port {args.model} {target} "
            f"--inputs {keep} --examples 0")
