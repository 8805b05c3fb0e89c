"""What `conformance run` tells a person: its exit status, its closing summary, its progress lines.

The end-to-end runs (a real crash, a hang, a lost test, an interruption) are in tests/test_crash.py and
tests/test_interrupt.py; here each rule is checked on small reports, so every status has a test.
"""
from __future__ import annotations

import io
import json
import signal
import time
from pathlib import Path

import pytest

from layer_conformance.cli.run import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, _mark_incomplete, run_exit_code, \
    run_summary
from layer_conformance.reports import progress
from layer_conformance.reports.schema import summarize


def _report(*statuses: str, complete: bool = True) -> dict:
    results = [{"nodeid": f"suites/test_forward.py::test_forward[c{i}]", "claim": f"c{i}", "status": s,
                "reason": f"reason {i}\nsecond line", "keras_backend": None} for i, s in enumerate(statuses)]
    return {"complete": complete, "results": results, "summary": summarize(results)}


@pytest.mark.parametrize("statuses, complete, interrupted, expected", [
    (("passed", "skipped", "measured"), True, None, EXIT_OK),
    (("passed", "failed"), True, None, EXIT_FAILED),
    (("passed", "error"), True, None, EXIT_FAILED),
    ((), True, None, EXIT_USAGE),  # nothing matched the selection: no verdict
    (("passed",), False, None, EXIT_INCOMPLETE),
    (("failed",), False, None, EXIT_INCOMPLETE),  # incomplete beats failed
    (("failed",), False, signal.SIGTERM, 128 + signal.SIGTERM),  # interrupted beats both
    (("passed",), False, signal.SIGINT, 130),
])
def test_every_exit_status(statuses, complete, interrupted, expected):
    assert run_exit_code(_report(*statuses, complete=complete), interrupted) == expected


def test_a_part_that_wrote_no_report_makes_the_run_incomplete():
    report = _report("passed")
    _mark_incomplete(report, ["keras-jax: wrote no report (pytest killed by SIGSEGV)"], None)
    assert report["complete"] is False and "keras-jax: wrote no report" in report["incomplete"]["reason"]
    assert run_exit_code(report, None) == EXIT_INCOMPLETE
    whole = _report("passed")
    _mark_incomplete(whole, [], None)
    assert whole["complete"] is True and "incomplete" not in whole


def test_the_summary_is_short_and_names_crashes_first(tmp_path):
    statuses = ["passed"] * 700 + ["failed"] * 8 + ["error"]
    report = _report(*statuses)
    report["results"][-1]["counterexample"] = {"command": "conformance repro out/counterexamples/x.crash.npz"}
    text = run_summary(report, tmp_path, 75.0)
    lines = text.strip().splitlines()
    assert lines[0] == "conformance run: 700 passed, 8 failed, 1 error in 1:15"
    assert "the first 5 of 9" in text and lines[2].startswith("  ERROR ")  # the crash comes first
    assert "reproduce: conformance repro out/counterexamples/x.crash.npz" in text
    assert "second line" not in text and len(lines) < 20 and "report.json" in lines[-1]


def test_the_summary_says_what_is_incomplete(tmp_path):
    report = _report("passed", complete=False)
    report["incomplete"] = {"reason": "keras-torch: interrupted", "missing": ["a", "b"]}
    text = run_summary(report, tmp_path, 1.0)
    assert "INCOMPLETE" in text and "incomplete: keras-torch: interrupted (2 test(s) without a result" in text


def test_progress_degrades_to_plain_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.2)
    monkeypatch.setattr(progress, "POLL_S", 0.05)
    path, stream = tmp_path / "progress.jsonl", io.StringIO()
    path.write_text(json.dumps({"total": 4}) + "\n")
    with progress.Progress(stream).follow("KERAS_BACKEND=jax", path):
        with open(path, "a") as handle:
            handle.write(json.dumps({"done": 1, "total": 4, "failed": 0, "error": 1}) + "\n")
            handle.write('{"done": 2, "tot')  # a line still being written is not read yet
        deadline = time.monotonic() + 60
        while "1/4" not in stream.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    lines = stream.getvalue().splitlines()
    assert any(line.startswith("KERAS_BACKEND=jax: 1/4 tests, 0 failed, 1 errors") and "left" in line
               for line in lines), lines
    assert lines[-1].startswith("KERAS_BACKEND=jax: 1/4 tests") and "left" not in lines[-1]


def test_counts_read_whole_lines_only(tmp_path):
    path = tmp_path / "p.jsonl"
    counts = progress.Counts()
    path.write_text('{"total": 3}\n{"done": 1, "failed": 1, "error": 0}\n{"done": 2')
    counts.read(path)
    assert (counts.total, counts.done, counts.failed) == (3, 1, 1)
    with open(path, "a") as handle:
        handle.write(', "failed": 1, "error": 1}\n')
    counts.read(path)
    assert (counts.done, counts.error) == (2, 1)


def test_a_missing_progress_file_is_no_progress(tmp_path: Path):
    counts = progress.Counts()
    counts.read(tmp_path / "none.jsonl")
    assert counts.done == 0 and counts.total is None
