"""An interrupted run (SIGTERM or SIGINT during the suite) leaves a valid, partial report.

A tiny conformance module runs in a real pytest process (signals need one): three quick tests, then
two that block until they are interrupted (the first writes a marker file when it starts). Once the
marker is there and the process that writes the report has taken the three quick tests' results (a
conftest notes each one it takes), the signal goes in; the report must load, say `complete: false`,
and hold exactly the rows finished before it, with their statuses. The same through `conformance
run`, which passes the signal on to its pytest child.

These tests wait on events (a file appearing, a result taken), never for a fixed time, so a busy
machine only makes them slower. Their deadlines only catch a hang: a generous ceiling for reaching the
slow test, and for stopping a floor plus a multiple of the start-up time measured in the same test.
The children start with the default dispositions of SIGINT and SIGTERM, as from a terminal: a process
started with a signal ignored (a background job of a script, `nohup`) keeps ignoring it, and by design
the plugin does not override that (see test_handlers_installed_for_the_run_and_restored).
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

from layer_conformance.reports.recorder import SignalGuard
from layer_conformance.reports.schema import load_report

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


def block():
    """Until interrupted (INTERRUPT_BLOCK=0: return at once). Notes a report that appears meanwhile."""
    if os.environ.get("INTERRUPT_BLOCK") == "0":
        return
    sent, report = Path(os.environ["INTERRUPT_SENT"]), Path(os.environ["INTERRUPT_REPORT"])
    seen = Path(os.environ["INTERRUPT_REPORT_SEEN"])
    while True:
        if sent.exists() and report.exists() and not seen.exists():
            seen.write_text("the report was on disk while this test still ran")
        time.sleep(0.05)


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
    block()


def test_e_late(conformance_record):  # never starts in one process; under xdist it may, and blocks too
    fill(conformance_record, "late-claim")
    block()
'''

# Notes, in the process that writes the report (the xdist controller, or the only process), each test
# whose results it has taken: what the test waits for before it sends the signal.
CONFTEST = '''
import os

WORKER = False


def pytest_configure(config):
    global WORKER
    WORKER = hasattr(config, "workerinput")


def pytest_runtest_logreport(report):
    if report.when == "teardown" and not WORKER:
        with open(os.environ["INTERRUPT_TAKEN"], "a", encoding="utf-8") as handle:
            handle.write(report.nodeid.split("::")[-1] + "\\n")
'''
FINISHED = {"test_a_ok": "passed", "test_b_bad": "failed", "test_c_skip": "skipped"}

# Deadlines that only catch a hang. Normally a child reaches the slow test in 1-5 s and stops in under 1 s
# (under xdist about 5 s: the worker stuck in the slow test is interrupted by execnet after 5 s, and xdist
# kills it after 10 s); a busy machine stretches both alike.
START_LIMIT_S = 300  # start-up to the slow test; also the whole uninterrupted control run
STOP_FLOOR_S = 90  # stopping after the signal: this, plus
STOP_PER_START = 5  # this many times the start-up time measured in the same test

# Run first in a child: the default dispositions of SIGINT and SIGTERM (an ignored signal would stay
# ignored across exec, and Python then installs no KeyboardInterrupt handler), then exec the real command.
_DEFAULT_SIGNALS = ("import os, signal, sys\n"
                    "for s in (signal.SIGINT, signal.SIGTERM):\n"
                    "    signal.signal(s, signal.SIG_DFL)\n"
                    "os.execv(sys.executable, [sys.executable] + sys.argv[1:])\n")


def _python(*args: str) -> list[str]:
    """A command running Python with `args`, started with default signal dispositions."""
    return [sys.executable, "-c", _DEFAULT_SIGNALS, *args]


class Files:
    """The sample module, its conftest and the files the child and the test signal each other with."""

    def __init__(self, folder: Path, report: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.module = folder / "test_sample.py"
        self.module.write_text(SAMPLE)
        (folder / "conftest.py").write_text(CONFTEST)
        self.folder, self.report = folder, report
        self.marker, self.taken = folder / "started", folder / "taken.txt"
        self.sent, self.report_seen = folder / "signal-sent", folder / "report-seen.txt"

    def environment(self, block: bool = True) -> dict[str, str]:
        """The test's environment, less what would steer the child: pytest options, xdist and harness settings."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTEST_ADDOPTS", "PYTEST_XDIST", "PYTEST_CURRENT_TEST", "CONFORMANCE_"))}
        env.update(INTERRUPT_MARKER=str(self.marker), INTERRUPT_TAKEN=str(self.taken), INTERRUPT_SENT=str(self.sent),
                   INTERRUPT_REPORT=str(self.report), INTERRUPT_REPORT_SEEN=str(self.report_seen),
                   INTERRUPT_BLOCK="1" if block else "0")
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        return env

    def ready(self) -> bool:
        """The slow test runs, and the quick tests' results were taken by the process writing the report."""
        taken = set(self.taken.read_text().split()) if self.taken.exists() else set()
        return self.marker.exists() and set(FINISHED) <= taken


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no output)"


@contextlib.contextmanager
def _child(command: list[str], cwd: Path, env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """The command in its own process group, output to `log`; whatever of the group is left is killed after."""
    with open(log, "wb") as handle:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            yield process
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_until(ready: Callable[[], bool], process: subprocess.Popen, log: Path) -> float:
    """Seconds until `ready()`; fails if the process ends first or START_LIMIT_S passes."""
    start = time.monotonic()
    while not ready():
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before the slow test started:\n" + _tail(log))
        if time.monotonic() - start > START_LIMIT_S:
            pytest.fail(f"the slow test did not start within {START_LIMIT_S} s:\n" + _tail(log))
        time.sleep(0.02)
    return time.monotonic() - start


def _stop(process: subprocess.Popen, signum: int, started_in: float, files: Files, log: Path,
          twice: bool = False, group: bool = False) -> int:
    """Sends the signal (twice: two copies at once), waits for the process to end; its exit status."""
    send = (lambda: os.killpg(process.pid, signum)) if group else (lambda: process.send_signal(signum))
    files.report.unlink(missing_ok=True)
    files.sent.write_text("")
    first = time.monotonic()
    send()
    if twice:  # a second copy at once, as from a terminal's Ctrl-C plus a forwarding parent
        send()
        gap = time.monotonic() - first
        assert gap < SignalGuard.DUPLICATE_WINDOW / 2, f"the test itself was stalled {gap:.1f} s between the copies"
    limit = STOP_FLOOR_S + STOP_PER_START * started_in
    try:
        return process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        pass
    pytest.fail(f"the run did not stop within {limit:.0f} s of the signal (it started in {started_in:.1f} s):\n"
                + _tail(log))


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
    files = Files(tmp_path, tmp_path / "out" / "report.json")
    log = tmp_path / "pytest.log"
    command = _python("-u", "-m", "pytest", "test_sample.py", "-v", "-p", "layer_conformance.plugin", "-p", "no:cacheprovider",
                      "--rootdir", str(tmp_path), "--conformance-report", str(files.report))
    if workers:
        command += ["-n", str(workers)]
    with _child(command, tmp_path, files.environment(), log) as process:
        started_in = _wait_until(files.ready, process, log)
        code = _stop(process, signum, started_in, files, log, twice=twice)
    output = log.read_text(errors="replace")
    assert code == pytest.ExitCode.INTERRUPTED, output[-3000:]
    report = load_report(files.report)
    assert report["complete"] is False
    assert _rows(report) == FINISHED, output[-3000:]
    assert report["summary"] == {"passed": 1, "failed": 1, "skipped": 1, "error": 0}
    assert "planted failure" in next(r["reason"] for r in report["results"] if r["claim"] == "bad-claim")
    assert "conformance: 1 passed, 1 failed, 1 skipped" in output
    if workers:  # xdist waits for the busy worker before it ends it: the report must be on disk before that
        assert files.report_seen.exists(), "the report was written only after the busy worker was stopped"


def test_a_finished_run_is_complete(tmp_path):
    """The control: without a signal the same module (blocking tests made quick) gives complete: true."""
    files = Files(tmp_path, tmp_path / "report.json")
    done = subprocess.run(_python("-m", "pytest", "test_sample.py", "-p", "layer_conformance.plugin", "-p", "no:cacheprovider",
                                  "--rootdir", str(tmp_path), "--conformance-report", str(files.report)),
                          cwd=tmp_path, env=files.environment(block=False), capture_output=True, text=True,
                          timeout=START_LIMIT_S)
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout[-3000:]
    report = load_report(files.report)
    assert report["complete"] is True
    assert _rows(report) == {**FINISHED, "test_d_slow": "passed", "test_e_late": "passed"}


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
        pytester.runpytest_inprocess("-p", "layer_conformance.plugin").assert_outcomes(passed=1)
        assert seen.read_text() == "SignalGuard._handle SignalGuard._handle"
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

        def own(signum, frame):  # a program running pytest with its own handler keeps it
            pass

        signal.signal(signal.SIGTERM, own)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        pytester.runpytest_inprocess("-p", "layer_conformance.plugin").assert_outcomes(passed=1)
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
from layer_conformance.cli import main, run
from layer_conformance.suites import SUITES_DIR

module, rootdir = sys.argv[1], sys.argv[2]
original = run._pytest_command


def command(args, shard, backend, first):  # the real command, on the tiny module instead of the suites
    cmd = original(args, shard, backend, first)
    cmd[cmd.index(str(SUITES_DIR))] = module
    cmd[cmd.index("--rootdir") + 1] = rootdir
    return cmd[:1] + ["-u"] + cmd[1:] + ["-p", "layer_conformance.plugin", "-v"]


run._pytest_command = command
sys.exit(main(sys.argv[3:]))
'''


@pytest.mark.parametrize("signum, group", [
    pytest.param(signal.SIGTERM, False, id="SIGTERM-to-run"),
    pytest.param(signal.SIGINT, False, id="SIGINT-to-run"),
    pytest.param(signal.SIGINT, True, id="SIGINT-to-group"),  # a terminal's Ctrl-C reaches every process
])
def test_conformance_run_forwards_the_signal_and_writes_the_partial_report(tmp_path, signum, group):
    """`conformance run` as it runs by default (its own number of xdist workers), on the sample module."""
    out = tmp_path / "out"
    files = Files(tmp_path / "suite", out / "shards" / "report-keras-tensorflow.json")
    (tmp_path / "driver.py").write_text(DRIVER)
    log = tmp_path / "run.log"

    def outputs() -> str:  # the run's own output, then its pytest children's logs
        return "\n".join(_tail(path) for path in [log, *sorted((out / "shards").glob("*.log"))])

    command = _python("-u", str(tmp_path / "driver.py"), str(files.module), str(files.folder),
                      "run", "--out", str(out), "--keras-backends", "tensorflow,jax", "--no-speed")
    with _child(command, tmp_path, files.environment(), log) as process:
        started_in = _wait_until(files.ready, process, log)
        code = _stop(process, signum, started_in, files, log, group=group)
    output = log.read_text(errors="replace")
    assert code == 128 + signum, outputs()
    assert "KERAS_BACKEND=jax" not in output  # no further part started after the signal
    assert not (out / "shards" / "report-keras-jax.json").exists()
    report = load_report(out / "report.json")
    assert report["complete"] is False and "keras-jax: not run (interrupted)" in report["incomplete"]["reason"]
    assert _rows(report) == FINISHED, outputs()
    assert load_report(files.report)["complete"] is False
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    assert f"interrupted by {signal.Signals(signum).name}" in output
    assert "Traceback" not in output
