"""An interrupted run (SIGTERM or SIGINT during the suite) leaves a valid, partial report.

A tiny conformance module runs in a real pytest process (signals need one): three quick tests, then
one that writes a marker file and sleeps. Once the marker is there, the signal goes in; the report
must load, say `complete: false`, and hold exactly the rows finished before it, with their statuses.
The same through `conformance run`, which passes the signal on to its pytest child.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reports.plugin import SignalGuard
from reports.schema import load_report

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

SAMPLE = '''
import os
import time
from pathlib import Path

import pytest


def fill(record, claim):
    record.update({"claim": claim, "relation": "equal", "check": "forward", "variants": ["torch.Linear"],
                   "dtype": "float32", "device": "cpu", "examples": 3, "max_abs_error": 1e-7,
                   "max_bound_ratio": 0.25, "reason": None})


def test_a_ok(conformance_record):
    fill(conformance_record, "ok-claim")


def test_b_bad(conformance_record):
    fill(conformance_record, "bad-claim")
    assert False, "planted failure"


def test_c_skip(conformance_record):
    fill(conformance_record, "skip-claim")
    pytest.skip("not here")


def test_d_slow(conformance_record):
    fill(conformance_record, "slow-claim")
    Path(os.environ["INTERRUPT_MARKER"]).write_text("started")
    time.sleep(60)


def test_e_never(conformance_record):
    fill(conformance_record, "never-claim")
'''
FINISHED = {"test_a_ok": "passed", "test_b_bad": "failed", "test_c_skip": "skipped"}
TIMEOUT = 120  # start-up included; the runs take a few seconds


def _environment(marker: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    env["INTERRUPT_MARKER"] = str(marker)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _wait_until(ready, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before the slow test started:\n"
                        + log.read_text(errors="replace")[-3000:])
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the slow test did not start in time:\n" + log.read_text(errors="replace")[-3000:])
        time.sleep(0.02)


class Stopped(int):
    """The exit status, with when the process ended and when the report first appeared (monotonic)."""

    stopped: float
    written: float | None


def _stop(process: subprocess.Popen, signum: int, twice: bool, group: bool = False,
          report: Path | None = None) -> Stopped:
    send = (lambda: os.killpg(process.pid, signum)) if group else (lambda: process.send_signal(signum))
    if report is not None:
        report.unlink(missing_ok=True)
    send()
    if twice:  # a second copy at once, as from a terminal's Ctrl-C plus a forwarding parent
        send()
    written, deadline = None, time.monotonic() + 30
    while process.poll() is None:
        if written is None and report is not None and report.exists():
            written = time.monotonic()
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the run did not stop after the signal")
        time.sleep(0.02)
    result = Stopped(process.returncode)
    result.stopped, result.written = time.monotonic(), written
    return result


def _rows(report: dict) -> dict[str, str]:
    return {row["nodeid"].split("::")[-1]: row["status"] for row in report["results"]}


@pytest.mark.parametrize("signum, twice, workers", [
    pytest.param(signal.SIGTERM, False, 0, id="SIGTERM"),
    pytest.param(signal.SIGINT, False, 0, id="SIGINT"),
    pytest.param(signal.SIGINT, True, 0, id="SIGINT-twice"),
    pytest.param(signal.SIGTERM, False, 1, id="SIGTERM-xdist"),
])
def test_interrupted_pytest_writes_a_partial_report(tmp_path, signum, twice, workers):
    if workers:
        pytest.importorskip("xdist")
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    marker, log, report_path = tmp_path / "started", tmp_path / "pytest.log", tmp_path / "out" / "report.json"
    command = [sys.executable, "-u", "-m", "pytest", "test_sample.py", "-v", "-p", "reports.plugin",
               "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "--conformance-report", str(report_path)]
    if workers:
        command += ["-n", str(workers)]
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, cwd=tmp_path, env=_environment(marker), stdout=handle,
                                   stderr=subprocess.STDOUT)
        if workers:  # the controller must have taken the reports the worker sent before the slow test
            _wait_until(lambda: marker.exists() and "test_c_skip" in log.read_text(errors="replace"), process, log)
        else:  # in one process, a test's report is taken before the next test starts
            _wait_until(marker.exists, process, log)
        sent = time.monotonic()
        code = _stop(process, signum, twice, report=report_path)
    output = log.read_text(errors="replace")
    if workers and code.stopped - sent > 2:  # xdist waits for the busy worker: the report is on disk first
        assert code.written is not None and code.stopped - code.written > 1, (sent, code.written, code.stopped)
    assert code == pytest.ExitCode.INTERRUPTED, output[-3000:]
    report = load_report(report_path)
    assert report["complete"] is False
    assert _rows(report) == FINISHED, output[-3000:]
    assert report["summary"] == {"passed": 1, "failed": 1, "skipped": 1, "error": 0}
    assert "planted failure" in next(r["reason"] for r in report["results"] if r["claim"] == "bad-claim")
    assert "conformance: 1 passed, 1 failed, 1 skipped" in output


def test_a_finished_run_is_complete(tmp_path):
    """The control: without a signal the same module (slow test made quick) gives complete: true."""
    (tmp_path / "test_sample.py").write_text(SAMPLE.replace("time.sleep(60)", "pass"))
    report_path = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pytest", "test_sample.py", "-p", "reports.plugin",
                           "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "--conformance-report",
                           str(report_path)], cwd=tmp_path, env=_environment(tmp_path / "m"),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout[-3000:]
    report = load_report(report_path)
    assert report["complete"] is True
    assert _rows(report) == {**FINISHED, "test_d_slow": "passed", "test_e_never": "passed"}


def test_handlers_installed_for_the_run_and_restored(pytester):
    """Default handlers are replaced during the session and put back at unconfigure; others are left alone."""
    seen = pytester.path / "seen.txt"
    pytester.makepyfile(test_handlers=f'''
import signal
from pathlib import Path

def test_record():
    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)]
    names = [getattr(h, "__qualname__", None) or getattr(h, "name", str(h)) for h in handlers]
    Path({str(seen)!r}).write_text(" ".join(names))
''')
    old_term, old_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        pytester.runpytest_inprocess("-p", "reports.plugin").assert_outcomes(passed=1)
        assert seen.read_text() == "SignalGuard._handle SignalGuard._handle"
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

        def own(signum, frame):  # a program running pytest with its own handler keeps it
            pass

        signal.signal(signal.SIGTERM, own)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        pytester.runpytest_inprocess("-p", "reports.plugin").assert_outcomes(passed=1)
        assert seen.read_text() == f"{own.__qualname__} SIG_IGN"
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def test_guard_takes_repeats_as_one_request(monkeypatch):
    guard = SignalGuard()
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        guard._handle(signal.SIGTERM, None)
    clock[0] += guard.DUPLICATE_WINDOW / 2
    guard._handle(signal.SIGINT, None)  # a duplicate: ignored
    clock[0] += guard.DUPLICATE_WINDOW
    guard.writing = True
    guard._handle(signal.SIGINT, None)  # the report is being written: only noted
    guard.writing = False
    with pytest.raises(KeyboardInterrupt, match="again"):
        guard._handle(signal.SIGINT, None)
    assert guard.received == signal.SIGTERM


# ---- `conformance run` ---------------------------------------------------------------------------------

DRIVER = '''
import sys
import reports.cli as cli

module, rootdir = sys.argv[1], sys.argv[2]
original = cli._pytest_command


def command(args, shard, backend, first):  # the real command, on the tiny module instead of the suites
    cmd = original(args, shard, backend, first)
    cmd[cmd.index(str(cli.ROOT / "suites"))] = module
    cmd[cmd.index("--rootdir") + 1] = rootdir
    return cmd[:1] + ["-u"] + cmd[1:] + ["-p", "reports.plugin", "-v"]


cli._pytest_command = command
sys.exit(cli.main(sys.argv[3:]))
'''


@pytest.mark.parametrize("signum, group", [
    pytest.param(signal.SIGTERM, False, id="SIGTERM-to-run"),
    pytest.param(signal.SIGINT, False, id="SIGINT-to-run"),
    pytest.param(signal.SIGINT, True, id="SIGINT-to-group"),  # a terminal's Ctrl-C reaches both processes
])
def test_conformance_run_forwards_the_signal_and_writes_the_partial_report(tmp_path, signum, group):
    (tmp_path / "suite").mkdir()
    module = tmp_path / "suite" / "test_sample.py"
    module.write_text(SAMPLE)
    (tmp_path / "driver.py").write_text(DRIVER)
    marker, log, out = tmp_path / "started", tmp_path / "run.log", tmp_path / "out"
    with open(log, "wb") as handle:
        process = subprocess.Popen(
            [sys.executable, "-u", str(tmp_path / "driver.py"), str(module), str(tmp_path / "suite"),
             "run", "--out", str(out), "--keras-backends", "tensorflow,jax", "--no-speed"],
            cwd=tmp_path, env=_environment(marker), stdout=handle, stderr=subprocess.STDOUT,
            start_new_session=True)
        _wait_until(marker.exists, process, log)
        code = _stop(process, signum, twice=False, group=group)
    output = log.read_text(errors="replace")
    assert code == 128 + signum, output[-3000:]
    assert "KERAS_BACKEND=jax" not in output  # no further backend started after the signal
    report = load_report(out / "report.json")
    assert report["complete"] is False
    assert _rows(report) == FINISHED, output[-3000:]
    assert load_report(out / "shards" / "report-keras-tensorflow.json")["complete"] is False
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert f"interrupted by {signal.Signals(signum).name}" in output
    assert "Traceback" not in output
