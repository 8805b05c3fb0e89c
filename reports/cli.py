"""`conformance` command line: run the suites, compare and merge reports.

Start-up stays fast: nothing here imports a framework; `run` starts pytest in child processes
(one per Keras backend, since Keras picks its backend once, at import).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

from reports.schema import ReportError, load_report, write_json_atomic

ROOT = Path(__file__).resolve().parent.parent
KERAS_BACKENDS = ("tensorflow", "jax", "torch")
PROFILES = ("dev", "ci", "thorough", "debug")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available_backends() -> list[str]:
    """Keras backends whose framework is installed (checked without importing it)."""
    if not _installed("keras"):
        return []
    return [b for b in KERAS_BACKENDS if _installed(b)]


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="conformance run",
        description="Run the conformance suites (once per Keras backend), merge the results and write "
                    "report.json (plus report.md and report.html) into the output folder. Arguments after "
                    "`--` go to pytest unchanged.")
    parser.add_argument("--out", default="conformance-out", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="hypothesis profile (default: ci when $CI is set, else dev)")
    parser.add_argument("--frameworks", type=_csv, default=None, metavar="LIST",
                        help="frameworks to run: torch,keras,flax.linen,flax.nnx (default: all)")
    parser.add_argument("--dtypes", type=_csv, default=None, metavar="LIST",
                        help="dtypes: float64,float32,float16,bfloat16 (default: all)")
    parser.add_argument("--devices", type=_csv, default=None, metavar="LIST", help="devices: cpu,gpu (default: both)")
    parser.add_argument("--keras-backends", type=_csv, default=None, metavar="LIST",
                        help=f"Keras backends to run, each in its own process (default: the installed ones of "
                             f"{','.join(KERAS_BACKENDS)})")
    parser.add_argument("--no-speed", action="store_true",
                        help="skip the speed check (timings of every variant; sets CONFORMANCE_SPEED=0)")
    parser.add_argument("-n", "--workers", default=None, metavar="N",
                        help="pytest-xdist workers per run (e.g. 2 or auto; default: serial)")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="extra pytest arguments after --")
    return parser


def _pytest_command(args: argparse.Namespace, shard: Path, backend: str | None, first: bool) -> list[str]:
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "suites"), "--rootdir", str(ROOT), "-q",
           "--conformance-report", str(shard), "-p", "no:cacheprovider",
           # next to the merged report, so its relative links resolve from the output folder
           "--conformance-counterexamples", str(shard.parent.parent / "counterexamples")]
    if args.profile:
        cmd += ["--hypothesis-profile", args.profile]
    for option in ("frameworks", "dtypes", "devices"):
        value = getattr(args, option)
        if value:
            cmd += [f"--conformance-{option}", ",".join(value)]
    if not first:  # later backends only re-run the claims that involve Keras
        cmd += ["--conformance-require", "keras"]
    if args.workers:
        cmd += ["-n", str(args.workers)]
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    return cmd + extra


def run(argv: list[str]) -> int:
    parser = _run_parser()
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: error: cannot write to output folder {out} ({exc.strerror or exc}); "
                       f"choose a writable --out\n")
    if not (ROOT / "conftest.py").is_file() or not (ROOT / "suites").is_dir():
        parser.exit(2, f"{parser.prog}: error: the suites are not found next to the installed package ({ROOT}); "
                       f"install layer-conformance from a clone with `pip install -e .`\n")
    backends = args.keras_backends or available_backends() or [None]
    unknown = [b for b in backends if b is not None and b not in KERAS_BACKENDS]
    if unknown:
        parser.exit(2, f"{parser.prog}: error: unknown Keras backend(s) {', '.join(unknown)}; "
                       f"choose from {', '.join(KERAS_BACKENDS)}\n")
    shards: list[tuple[str, Path]] = []
    codes: list[int] = []
    for index, backend in enumerate(backends):
        shard = out / "shards" / f"report-keras-{backend or 'none'}.json"
        shard.unlink(missing_ok=True)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"))
        if backend:
            env["KERAS_BACKEND"] = backend
        if args.no_speed:
            env["CONFORMANCE_SPEED"] = "0"
        print(f"conformance run: suites with KERAS_BACKEND={backend or '(keras not installed)'}", flush=True)
        code = subprocess.call(_pytest_command(args, shard, backend, index == 0), env=env, cwd=str(ROOT))
        codes.append(code)
        if shard.is_file():
            shards.append((f"keras-{backend or 'none'}", shard))
        else:
            print(f"conformance run: the run for backend {backend} wrote no report (pytest exit code {code})",
                  file=sys.stderr)
    if not shards:
        print(f"{parser.prog}: error: no run produced a report; see the pytest output above", file=sys.stderr)
        return 2
    report = _merge(shards)
    _write_outputs(report, out)
    from reports.table import format_table

    print(format_table(report["results"]))
    summary = ", ".join(f"{v} {k}" for k, v in report["summary"].items())
    print(f"\nconformance run: {summary}; complete={report['complete']}; wrote {out / 'report.json'}")
    if report["summary"].get("failed") or report["summary"].get("error"):
        return 1
    return 0 if all(code in (0, 5) for code in codes) else max(codes)


def _merge(shards: list[tuple[str, Path]]) -> dict:
    from reports.merge import merge_reports

    loaded = [(name, load_report(path)) for name, path in shards]
    if len(loaded) == 1:
        return loaded[0][1]
    return merge_reports(loaded)


def _write_outputs(report: dict, out: Path) -> None:
    write_json_atomic(out / "report.json", report)
    from reports.html import write_html
    from reports.markdown import write_markdown

    write_markdown(report, out / "report.md")
    write_html(report, out / "report.html")


def _delegate(module: str) -> Callable[[list[str]], int]:
    def call(argv: list[str]) -> int:
        return importlib.import_module(module).main(argv)

    return call


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "run": (run, "run the suites (per Keras backend), merge, write report.json/.md/.html"),
    "compare": (_delegate("reports.compare"), "diff two reports; exit 1 on regression (upgrade gate)"),
    "merge": (_delegate("reports.merge"), "join shard reports into one"),
    "repro": (_delegate("reports.repro"), "re-run a saved failing example"),
    "faults": (_delegate("reports.faults"), "inject framework faults, run the suite under each, print the mutation score"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="conformance",
        description="layer-conformance: do weight-transferred layers agree across PyTorch, Keras and Flax?",
        epilog="commands:\n" + "\n".join(f"  {name:<9} {text}" for name, (_, text) in COMMANDS.items())
               + "\n\nRun `conformance COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    parsed = parser.parse_args(argv[:1])
    try:
        return COMMANDS[parsed.command][0](argv[1:])
    except ReportError as exc:
        print(f"conformance {parsed.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"conformance {parsed.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
