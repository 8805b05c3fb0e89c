"""Crash containment: a framework call that kills its process costs exactly the test it was in.

A planted crash (tests/plants/sitecustomize.py: torch's `F.linear` ends its process on the first call in
one test) runs under `pytest -n 2` and under `conformance run`. Exactly that test is `error`, naming
the signal, the variant, the claim, dtype, device and geometry; every other selected test still has
its result; the exit status is non-zero; and `conformance repro` on the saved crash reproduces it.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from layer_conformance.reports.flight import cause, parse_timeout
from layer_conformance.reports.schema import load_report

ROOT = Path(__file__).resolve().parent.parent
PLANTS = Path(__file__).resolve().parent / "plants"
TARGET = "test_forward[xfw-dense-float32-cpu]"
SELECT = ["-k", "xfw-dense and float32 and not mixed and cpu"]
LIMIT_S = 900  # only a real hang of the harness reaches it


def _environment(tmp_path: Path, mode: str = "segv", plant: bool = True) -> dict[str, str]:
    env = dict(os.environ, CONFORMANCE_EXAMPLES="5", CONFORMANCE_SPEED="0", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(PLANTS), str(ROOT)]), PLANT_STATE=str(tmp_path / "plant-state"),
               PLANT_MODE=mode)
    env.pop("PYTEST_CURRENT_TEST", None)
    env.pop("PYTEST_XDIST_WORKER", None)
    if plant:
        env["PLANT_TEST"] = TARGET
    return env


def _collected(tmp_path: Path) -> set[str]:
    done = subprocess.run([sys.executable, "-m", "pytest", "suites", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "--conformance-frameworks", "torch", *SELECT], cwd=ROOT, capture_output=True, text=True,
                          env=_environment(tmp_path, plant=False), timeout=LIMIT_S)
    return {line for line in done.stdout.splitlines() if "::" in line}


def _check_crash_row(report: dict, signal_name: str, reason_words: tuple[str, ...]) -> dict:
    errors = [r for r in report["results"] if r["status"] == "error"]
    assert [r["nodeid"] for r in errors] == [f"suites/test_forward.py::{TARGET}"], errors
    row = errors[0]
    for words in (signal_name, "torch.Linear forward", "claim xfw-dense [float32, cpu]", "input shape (",
                  "layer dense(", *reason_words):
        assert words in row["reason"], row["reason"]
    assert row["crash"]["cause"] == signal_name and row["crash"]["variant"] == "torch.Linear"
    assert row["claim"] == "xfw-dense" and row["dtype"] == "float32" and row["device"] == "cpu"
    return row


def _repro(row: dict, report_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    npz = report_dir / row["counterexample"]["npz"]
    assert npz.is_file() and (report_dir / row["counterexample"]["script"]).is_file()
    return subprocess.run([sys.executable, "-m", "layer_conformance", "repro", str(npz)], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=LIMIT_S)


@pytest.mark.parametrize("mode, signal_name", [("segv", "SIGSEGV"), ("abort", "SIGABRT")])
def test_pytest_n2_reports_the_crashed_test_and_keeps_every_other(tmp_path, mode, signal_name):
    report_path = tmp_path / "out" / "report.json"
    env = _environment(tmp_path, mode)
    done = subprocess.run([sys.executable, "-m", "pytest", "suites", "-n", "2", "-q", "-p", "no:cacheprovider",
                           "--conformance-frameworks", "torch", "--conformance-report", str(report_path), *SELECT],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=LIMIT_S)
    output = done.stdout[-4000:] + done.stderr[-4000:]
    assert done.returncode == 1, output
    report = load_report(report_path)
    row = _check_crash_row(report, signal_name, ())
    assert report["complete"] is True, report.get("incomplete")
    assert {r["nodeid"] for r in report["results"]} == _collected(tmp_path), output
    again = _repro(row, report_path.parent, env)
    assert again.returncode == 1 and f"the crash reproduces: the call died with {signal_name}" in again.stdout, \
        again.stdout + again.stderr
    env.pop("PLANT_STATE")  # the framework "fixed": the same call completes
    fixed = _repro(row, report_path.parent, env)
    assert fixed.returncode == 0 and "no longer reproduces" in fixed.stdout, fixed.stdout + fixed.stderr


def _conformance_run(tmp_path: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "layer_conformance", "run", "--out", str(tmp_path / "out"), "--frameworks",
                           "torch", "--dtypes", "float32", "--devices", "cpu", *extra], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=LIMIT_S)


def test_conformance_run_reports_the_crash_and_exits_1(tmp_path):
    env = _environment(tmp_path)
    done = _conformance_run(tmp_path, env, "--", *SELECT)
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-4000:]
    report = load_report(tmp_path / "out" / "report.json")
    row = _check_crash_row(report, "SIGSEGV", ())
    assert report["complete"] is True
    assert {r["nodeid"] for r in report["results"]} == _collected(tmp_path)
    # the summary a person reads: the crash, its reproduction, where the reports are
    assert "ERROR suites/test_forward.py::test_forward[xfw-dense-float32-cpu]" in done.stdout
    assert f"reproduce: {row['counterexample']['command']}" in done.stdout
    assert "report.json" in done.stdout and len(done.stdout.splitlines()) < 40
    assert _repro(row, tmp_path / "out", env).returncode == 1


def test_a_hang_is_an_error_after_the_per_test_limit(tmp_path):
    env = _environment(tmp_path, "hang")
    # the limit covers a worker's first framework import on a loaded machine; only the planted hang reaches it
    done = _conformance_run(tmp_path, env, "--timeout", "60", "--", "-k",
                            "xfw-dense and float32 and not mixed and (test_forward or test_params)")
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-4000:]
    report = load_report(tmp_path / "out" / "report.json")
    row = _check_crash_row(report, "hang", ("per-test limit of 60.0 s",))
    assert report["complete"] is True and len(report["results"]) >= 2, row


def test_a_run_that_loses_tests_is_incomplete_and_exits_3(tmp_path):
    """With worker restarts switched off, the crash ends the run: the tests after it have no result."""
    done = _conformance_run(tmp_path, _environment(tmp_path), "-n", "1", "--", "--max-worker-restart", "0",
                            *SELECT)
    assert done.returncode == 3, done.stdout[-4000:] + done.stderr[-4000:]
    report = load_report(tmp_path / "out" / "report.json")
    assert report["complete"] is False and report["incomplete"]["missing"], report.get("incomplete")
    assert "INCOMPLETE" in done.stdout and "without a result" in done.stdout


@pytest.mark.parametrize("text, code, expected", [
    ("Fatal Python error: Segmentation fault\n\nCurrent thread 0x1 (most recent call first):\n  File \"a.py\"", None,
     "SIGSEGV"),
    ("Fatal Python error: Aborted\n", -6, "SIGABRT"),
    ("Timeout (0:15:00)!\nThread 0x1 (most recent call first):\n", 1, "hang"),
    ("", -9, "SIGKILL"),
    ("", 1, "died"),
])
def test_the_cause_is_read_from_faulthandler_or_the_exit_status(text, code, expected):
    assert cause(text, code, 900)[0] == expected


def test_timeout_values():
    assert parse_timeout("0") is None and parse_timeout("off") is None and parse_timeout("12.5") == 12.5
    for bad in ("-3", "soon"):
        with pytest.raises(ValueError, match="positive number"):
            parse_timeout(bad)
