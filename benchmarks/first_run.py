"""How long README command 1 (`conformance run --out conformance-out`) takes for a new user.

Runs `conformance run` from a fresh clone of this repository's committed HEAD with cold caches (an
empty JAX compilation cache, no hypothesis database), in the current environment, and prints the
wall time, the exit status, the result counts, whether the report is complete, and the peak resident
memory of the whole process tree. Nothing is asserted: the README's target (at most 10 minutes on a
2-core machine) is read off the printed figure.

    python benchmarks/first_run.py                      # the README's command, defaults and all
    python benchmarks/first_run.py -- --keras-backends jax   # arguments after -- go to `conformance run`
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from layer_conformance.reports.cores import usable_cores

ROOT = Path(__file__).resolve().parent.parent


def fresh_clone(into: Path) -> Path:
    clone = into / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    return clone


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--in-place", action="store_true",
                        help="run in this checkout instead of a fresh clone (uncommitted changes included)")
    parser.add_argument("--keep", metavar="DIR", help="copy the run's output folder (reports, logs) to DIR")
    parser.add_argument("run_args", nargs=argparse.REMAINDER, help="arguments for `conformance run` after --")
    args = parser.parse_args(argv)
    extra = args.run_args[1:] if args.run_args[:1] == ["--"] else args.run_args
    with tempfile.TemporaryDirectory(prefix="conformance-first-run-") as scratch:
        where = ROOT if args.in_place else fresh_clone(Path(scratch))
        out = Path(scratch) / "conformance-out"
        env = dict(os.environ, CONFORMANCE_JAX_CACHE=str(Path(scratch) / "jax-cache"),
                   CONFORMANCE_HYPOTHESIS_DB="none", PYTHONPATH=str(where))
        env.pop("CONFORMANCE_PROFILE", None)
        command = [sys.executable, "-m", "layer_conformance", "run", "--out", str(out), *extra]
        print(f"first run: {' '.join(command[1:])} in {'this checkout' if args.in_place else 'a fresh clone'}, "
              f"cold caches, {os.cpu_count()} CPUs", flush=True)
        started = time.monotonic()
        code = subprocess.run(command, cwd=where, env=env).returncode
        seconds = time.monotonic() - started
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak = usage.ru_maxrss / 1024
        cpu = usage.ru_utime + usage.ru_stime
        report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else {}
        if args.keep:
            shutil.copytree(out, args.keep, dirs_exist_ok=True)
    minutes, secs = divmod(int(seconds), 60)
    counts = ", ".join(f"{n} {k}" for k, n in report.get("summary", {}).items() if n) or "no report"
    print(f"first run: {minutes}:{secs:02d} wall ({seconds:.0f} s), exit status {code}, {counts}, "
          f"complete={report.get('complete')}, largest process peak RSS {peak:.0f} MiB")
    cores = usable_cores()
    print(f"first run: {cpu:.0f} CPU seconds over {cores} cores, {cpu / (seconds * cores):.0%} busy "
          f"(the rest is time when a core had nothing to run)")
    print_breakdown(report)
    return 0


def print_breakdown(report: dict) -> None:
    """Test time (summed over both workers) per part and check: where a run's time goes."""
    totals: dict[tuple[str, str], list[float]] = {}
    for row in report.get("results", []):
        part = f"keras-{row.get('keras_backend') or '-'}"
        entry = totals.setdefault((part, str(row.get("check"))), [0.0, 0])
        entry[0] += float(row.get("duration") or 0.0)
        entry[1] += 1
    print("test time by part and check (seconds summed over workers; tests):")
    for (part, check), (seconds, tests) in sorted(totals.items(), key=lambda kv: -kv[1][0]):
        print(f"  {part:<18} {check:<9} {seconds:8.1f} s  {tests:4d} tests")


if __name__ == "__main__":
    sys.exit(main())
