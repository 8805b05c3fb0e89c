"""`conformance run`: run the suites once per Keras backend, merge the parts, write the reports.

Nothing here imports a framework at module level; pytest runs in child processes, one per Keras
backend, since Keras picks its backend once, at import. SIGINT/SIGTERM during `run` are passed on to
the pytest child, which stops in order and writes its report; `run` then writes the merged partial
report (`"complete": false`) and exits 128 + the signal number (130, 143).

`run` always runs the tests in pytest-xdist worker processes (`-n`, default: one per usable core): a
framework that crashes or hangs its process costs the one test it was in, which is reported as an
`error` (reports/flight.py), and a replacement worker goes on with the rest. Exit statuses of `run`:
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from layer_conformance.cli.arguments import PROFILES, ArgumentParser, check_output_folder, split_csv
from layer_conformance.reports.cores import usable_cores
from layer_conformance.reports.messages import headline
from layer_conformance.reports.schema import load_report, write_json_atomic

# exit statuses of `conformance run` (README: "Exit statuses"); 128 + N: interrupted by signal N
EXIT_OK = 0  # every selected test has a verdict; none failed or errored
EXIT_FAILED = 1  # the report is complete, and a test failed or errored (a crash or a hang included)
EXIT_USAGE = 2  # bad arguments, an unwritable output folder, or no report could be produced at all
EXIT_INCOMPLETE = 3  # a report was written but lacks results: a part (Keras backend) or a test produced none
SUMMARY_LINES = 5  # failures and crashes shown at the end; the rest are in the report files
# in the order the parts of a run are started: the first part runs every framework (see shard_frameworks), so
# with jax first Flax runs once, beside Keras-on-jax, instead of in two parts
KERAS_BACKENDS = ("jax", "tensorflow", "torch")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def available_backends() -> list[str]:
    """Keras backends whose framework is installed (checked without importing it)."""
    if not _installed("keras"):
        return []
    return [b for b in KERAS_BACKENDS if _installed(b)]


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="conformance run",
        description="Run the conformance suites (once per Keras backend), merge the results and write "
                    "report.json (plus report.md and report.html) into the output folder. Arguments after "
                    "`--` go to pytest unchanged.")
    parser.add_argument("--out", default="conformance-out", metavar="DIR", help="output folder (default: %(default)s)")
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="hypothesis profile (default: $CONFORMANCE_PROFILE, else ci: 50 derandomized "
                             "examples per test, the same every run)")
    parser.add_argument("--frameworks", type=split_csv, default=None, metavar="LIST",
                        help="frameworks to run: torch,keras,flax.linen,flax.nnx (default: all)")
    parser.add_argument("--dtypes", type=split_csv, default=None, metavar="LIST",
                        help="dtypes: float64,float32,float16,bfloat16 (default: all)")
    parser.add_argument("--devices", type=split_csv, default=None, metavar="LIST", help="devices: cpu,gpu (default: both)")
    parser.add_argument("--keras-backends", type=split_csv, default=None, metavar="LIST",
                        help=f"Keras backends to run, each in its own process (default: the installed ones of "
                             f"{','.join(KERAS_BACKENDS)})")
    parser.add_argument("--claims", type=split_csv, default=None, metavar="MODULES",
                        help="your own claims: modules importable from the current folder, or .py files, that call "
                             "layer_conformance.register_claims([...]) or define CLAIMS = [...]; they run under "
                             "every check beside the catalog (installed `layer_conformance.claims` entry points "
                             "always do)")
    parser.add_argument("--no-speed", action="store_true",
                        help="skip the speed check (timings of every variant; sets CONFORMANCE_SPEED=0)")
    parser.add_argument("-n", "--workers", default=None, metavar="N",
                        help="pytest-xdist worker processes per run (a positive number or auto; default: one "
                             "per usable core). Tests always run in workers, so a crash costs only its test")
    parser.add_argument("--timeout", default=None, metavar="SECONDS",
                        help="per-test limit: a test still running after it is reported as an error (hung) "
                             "and the run goes on; 0 or off: none (default: $CONFORMANCE_TIMEOUT, else 900)")
    parser.add_argument("--table", action="store_true",
                        help="print the full per-claim result table at the end (it is always in the reports)")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="extra pytest arguments after --")
    return parser


# the frameworks Keras on a backend is compared with in the same examples when that backend is a later part:
# the one it runs on (Flax for jax, torch for torch), and torch (cheap) for tensorflow, which has no layer
# framework of its own here, so that every part's cross-framework claims keep a pair
NATIVE = {"tensorflow": ("torch",), "jax": ("flax.linen", "flax.nnx"), "torch": ("torch",)}


def shard_frameworks(selected: list[str] | None, backend: str | None, first: bool) -> list[str] | None:
    """Frameworks of one backend's pytest run (None: all).

    The first backend runs everything. A later one re-runs the Keras variants, and beside them only
    its NATIVE frameworks, so that Keras-on-jax is compared with Flax and Keras-on-torch with torch
    in the same examples; the other frameworks' results would be the first run's over again.
    """
    if first or backend is None:
        return selected
    from layer_conformance.adapters import FRAMEWORKS

    wanted = ("keras", *NATIVE.get(backend, ()))
    return [f for f in (selected or FRAMEWORKS) if f in wanted]


def _pytest_command(args: argparse.Namespace, shard: Path, backend: str | None, first: bool) -> list[str]:
    from layer_conformance.suites import pytest_command

    cmd = [*pytest_command(), "--conformance-report", str(shard),
           # next to the merged report, so its relative links resolve from the output folder
           "--conformance-counterexamples", str(shard.parent.parent / "counterexamples")]
    if args.profile:
        cmd += ["--hypothesis-profile", args.profile]
    for option in ("dtypes", "devices"):
        value = getattr(args, option)
        if value:
            cmd += [f"--conformance-{option}", ",".join(value)]
    frameworks = shard_frameworks(args.frameworks, backend, first)
    if frameworks is not None:
        cmd += ["--conformance-frameworks", ",".join(frameworks)]
    if args.claims:
        cmd += ["--conformance-claims", ",".join(str(Path(c).resolve()) if c.endswith(".py") else c
                                                 for c in args.claims)]
    if not first:  # later backends only re-run the claims that involve Keras
        cmd += ["--conformance-require", "keras"]
    cmd += ["-n", str(args.workers or default_workers()),
            "--conformance-progress", str(progress_path(shard))]
    if args.timeout is not None:
        cmd += ["--conformance-timeout", args.timeout]
    extra = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    return cmd + extra


def default_workers() -> int:
    """One xdist worker per core this process may use."""
    return usable_cores()


def progress_path(shard: Path) -> Path:
    return shard.parent / f"{shard.stem}.progress.jsonl"


def log_path(shard: Path) -> Path:
    return shard.parent / f"{shard.stem}.pytest.log"


def _check_run_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Everything pytest would refuse later, refused now, in one line (adapters' names import no framework)."""
    from layer_conformance.adapters import FRAMEWORKS
    from layer_conformance.adapters.base import DEVICES
    from layer_conformance.adapters.spec import DTYPES

    for option, known in (("frameworks", FRAMEWORKS), ("dtypes", DTYPES), ("devices", DEVICES)):
        value = getattr(args, option)
        if value is not None and not value:
            parser.error(f"--{option} is empty; name at least one of {', '.join(known)}")
        unknown = [item for item in value or () if item not in known]
        if unknown:
            parser.error(f"--{option}: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    if args.workers is not None and args.workers not in ("auto", "logical") \
            and not (args.workers.isdigit() and int(args.workers) > 0):
        parser.error(f"-n/--workers: {args.workers!r} is not a number of workers; give a positive integer or auto")
    for name in args.claims or ():
        problem = _claims_problem(name)
        if problem:
            parser.error(f"--claims: {problem}")
    if args.timeout is not None:
        from layer_conformance.reports.flight import parse_timeout

        try:
            parse_timeout(args.timeout)
        except ValueError as error:
            parser.error(f"--timeout: {error}")


def _claims_problem(name: str) -> str | None:
    """Why a --claims entry cannot be imported by the suites (checked without importing it), or None."""
    if name.endswith(".py"):
        path = Path(name)
        return None if path.is_file() else f"no such file: {path.resolve()}; pass the path of a .py file " \
                                           f"that registers claims"
    sys.path.insert(0, os.getcwd())
    try:
        found = importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        found = False
    finally:
        sys.path.remove(os.getcwd())
    return None if found else (f"cannot find module {name} from {os.getcwd()}; run from the folder that holds it, "
                               f"or pass the path of its .py file")


class _Forwarder:
    """While `run` works: SIGINT/SIGTERM are noted and passed on to the running pytest child.

    The child (its conformance plugin) stops in order and writes its shard; `run` starts no further
    backend, merges what was written and reports the interruption. Handlers are set only in the main
    thread and restored on exit.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.child: subprocess.Popen[Any] | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_Forwarder":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received = signum
            print(f"conformance run: {signal.Signals(signum).name} received; stopping the suite, the report "
                  f"will be marked incomplete", file=sys.stderr, flush=True)
        self.forward(signum)

    def forward(self, signum: int) -> None:
        child = self.child
        if child is not None and child.poll() is None:
            try:
                child.send_signal(signum)
            except OSError:  # it ended meanwhile
                pass

    def call(self, cmd: list[str], **kwargs: Any) -> int:
        self.child = subprocess.Popen(cmd, **kwargs)
        try:
            if self.received is not None:  # arrived while the child was being started
                self.forward(self.received)
            return self.child.wait()
        finally:
            self.child = None


@contextlib.contextmanager
def _shared_pools() -> Iterator[None]:
    """One folder of geometry pools for every part of the run (layer_conformance.suites.strategies._shared_pool), so that
    a case's pool is drawn once per run rather than once per worker of each part."""
    import tempfile

    from layer_conformance.suites.strategies import POOL_DIR_ENV

    before = os.environ.get(POOL_DIR_ENV)
    with tempfile.TemporaryDirectory(prefix="conformance-pools-") as folder:
        os.environ[POOL_DIR_ENV] = folder
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(POOL_DIR_ENV, None)
            else:
                os.environ[POOL_DIR_ENV] = before


def _child_environment(backend: str | None, no_speed: bool, first: bool = True) -> dict[str, str]:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"))
    if not first:
        env["CONFORMANCE_CRASH_RECHECK"] = "off"  # the first part re-checks the known crashes; merge keeps it
    if backend:
        env["KERAS_BACKEND"] = backend
    if no_speed:
        env["CONFORMANCE_SPEED"] = "0"
    database = env.get("CONFORMANCE_HYPOTHESIS_DB", "")
    if database and database.lower() not in ("none", "off") and not os.path.isabs(database):
        env["CONFORMANCE_HYPOTHESIS_DB"] = os.path.abspath(database)  # pytest runs in the project folder
    return env


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_run_args(parser, args)
    out = Path(args.out)
    check_output_folder(parser, out)
    backends = args.keras_backends or available_backends() or [None]
    unknown = [b for b in backends if b is not None and b not in KERAS_BACKENDS]
    if unknown:
        parser.exit(2, f"{parser.prog}: error: unknown Keras backend(s) {', '.join(unknown)}; "
                       f"choose from {', '.join(KERAS_BACKENDS)}\n")
    if args.frameworks is not None and "keras" not in args.frameworks:
        backends = backends[:1]  # no Keras variant selected: one run covers everything
    if not args.profile and not os.environ.get("CONFORMANCE_PROFILE"):
        args.profile = "ci"  # the conformance job: derandomized, the same examples every run
    from layer_conformance.reports.progress import Progress

    progress = Progress()
    started = time.monotonic()
    with _Forwarder() as signals, _shared_pools():
        shards: list[tuple[str, Path]] = []
        problems: list[str] = []  # why the report is incomplete
        codes: list[int] = []
        for index, backend in enumerate(backends):
            if signals.received is not None:
                problems.append(f"keras-{backend or 'none'}: not run (interrupted)")
                continue
            name = f"keras-{backend or 'none'}"
            shard = out / "shards" / f"report-{name}.json"
            for stale in (shard, progress_path(shard), log_path(shard)):
                stale.unlink(missing_ok=True)
            shard.parent.mkdir(parents=True, exist_ok=True)
            title = f"KERAS_BACKEND={backend}" if backend else "keras not installed"
            with open(log_path(shard), "w", encoding="utf-8") as log, progress.follow(title, progress_path(shard)):
                code = signals.call(_pytest_command(args, shard, backend, index == 0),
                                    env=_child_environment(backend, args.no_speed, index == 0),
                                    stdout=log, stderr=subprocess.STDOUT)
            codes.append(code)
            if shard.is_file():
                shards.append((name, shard))
                if code not in (0, 1, 5) and signals.received is None:
                    problems.append(f"{name}: pytest exited with {_describe_code(code)}; see {log_path(shard)}")
            else:
                problems.append(f"{name}: wrote no report (pytest {_describe_code(code)}); see {log_path(shard)}")
                print(f"{parser.prog}: the run for {title} wrote no report (pytest {_describe_code(code)}); "
                      f"last lines of {log_path(shard)}:\n{_tail(log_path(shard))}", file=sys.stderr)
        interrupted = signals.received
        if not shards:
            if interrupted is not None:
                print(f"{parser.prog}: interrupted by {signal.Signals(interrupted).name} before any run wrote a "
                      f"report; nothing was written", file=sys.stderr)
                return 128 + interrupted
            print(f"{parser.prog}: error: no run produced a report; " + "; ".join(problems), file=sys.stderr)
            return EXIT_USAGE
        report = _merge(shards)
        _mark_incomplete(report, problems, interrupted)
        _write_outputs(report, out)
    if args.table:
        from layer_conformance.reports.table import format_table

        print(format_table(report["results"]))
    print(run_summary(report, out, time.monotonic() - started))
    return run_exit_code(report, interrupted)


def _describe_code(code: int) -> str:
    from layer_conformance.reports.flight import signal_name

    return f"killed by {signal_name(-code)}" if code < 0 else f"exit status {code}"


def _tail(path: Path, lines: int = 20) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "  (no log)"
    return "\n".join(f"  {line}" for line in text[-lines:])


def _mark_incomplete(report: dict, problems: list[str], interrupted: int | None) -> None:
    """The merged report is complete only if every part ran, wrote its report and lost no test."""
    reasons = list(problems)
    if interrupted is not None:
        reasons.insert(0, f"interrupted by {signal.Signals(interrupted).name}")
    section = report.get("incomplete") or {}
    if section.get("reason"):
        reasons.append(section["reason"])
    if reasons or not report.get("complete", True):
        report["complete"] = False
        report["incomplete"] = {**section, "reason": "; ".join(reasons) or "a part of the run was incomplete"}


def run_exit_code(report: dict, interrupted: int | None) -> int:
    """EXIT_* above: interrupted beats incomplete, incomplete beats failed."""
    if interrupted is not None:
        return 128 + interrupted
    if not report.get("complete"):
        return EXIT_INCOMPLETE
    if not report.get("results"):
        return EXIT_USAGE  # nothing matched the selection: no verdict at all
    summary = report.get("summary", {})
    return EXIT_FAILED if summary.get("failed") or summary.get("error") else EXIT_OK


def run_summary(report: dict, out: Path, seconds: float) -> str:
    """What a person reads at the end: counts, the first failures and crashes, what is missing, where it all is."""
    summary = report.get("summary", {})
    counts = ", ".join(f"{n} {status}" for status, n in summary.items() if n)
    minutes, secs = divmod(int(seconds), 60)
    lines = [f"\nconformance run: {counts or 'no results'} in {minutes}:{secs:02d}"
             f"{'' if report.get('complete') else '; INCOMPLETE'}"]
    bad = [r for r in report.get("results", []) if r.get("status") in ("error", "failed")]
    bad.sort(key=lambda r: r.get("status") != "error")  # crashes first
    if bad:
        lines.append(f"failures and crashes (the first {min(len(bad), SUMMARY_LINES)} of {len(bad)}):")
    for row in bad[:SUMMARY_LINES]:
        backend = f" [keras {row['keras_backend']}]" if row.get("keras_backend") else ""
        lines.append(f"  {row['status'].upper()} {row.get('nodeid')}{backend}")
        lines.append(f"    {headline(str(row.get('reason') or ''))}")
        command = (row.get("counterexample") or {}).get("command")
        if command:
            lines.append(f"    reproduce: {command}")
    incomplete = report.get("incomplete")
    if incomplete:
        missing = incomplete.get("missing") or []
        lines.append(f"incomplete: {incomplete.get('reason')}"
                     + (f" ({len(missing)} test(s) without a result, listed in report.json)" if missing else ""))
    lines.append(f"reports: {out / 'report.json'}, {out / 'report.md'}, {out / 'report.html'} "
                 f"(pytest logs: {out / 'shards'}); the full table: --table or report.md")
    return "\n".join(lines)


def _merge(shards: list[tuple[str, Path]]) -> dict:
    """One report from the parts; a part's own incompleteness (tests without a result) is kept, named."""
    from layer_conformance.reports.merge import merge_reports

    loaded = [(name, load_report(path)) for name, path in shards]
    report = loaded[0][1] if len(loaded) == 1 else merge_reports(loaded)
    reasons, missing = [], []
    for name, part in loaded:
        section = part.get("incomplete") or {}
        if not part.get("complete", False):
            reasons.append(f"{name}: {section.get('reason') or 'incomplete'}")
        missing += [f"{name}: {nodeid}" for nodeid in section.get("missing", [])]
    if reasons:
        report["complete"] = False
        report["incomplete"] = {"reason": "; ".join(reasons), "missing": missing}
    return report


def _write_outputs(report: dict, out: Path) -> None:
    write_json_atomic(out / "report.json", report)
    from layer_conformance.reports.render import render

    render(report, out)
