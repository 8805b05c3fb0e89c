"""The report recorder: one result row per conformance test, written to report.json.

The plugin (layer_conformance.plugin) calls configure/unconfigure and wraps every test in flight_noted.

Suites fill a plain dict from the `conformance_record` fixture; it rides on
`item.user_properties`, so it reaches the controller under pytest-xdist too. The plugin
never imports a framework: the suites hand it numbers and environment facts.

An interrupted run still writes its report, marked `"complete": false`, with every result finished
so far: in the controller process the plugin turns SIGTERM (as well as SIGINT) into an orderly
interruption (see `SignalGuard`).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from layer_conformance.reports import flight
from layer_conformance.reports.messages import cut, failure_reason
from layer_conformance.reports.schema import SCHEMA, summarize, write_json_atomic
from layer_conformance.reports.table import format_table

RECORD = "conformance"
NOT_JUDGED_PREFIX = "measured, not judged: "  # the reason line of a result with comparisons not judged
REPORT_OPTION = "--conformance-report"
_PLUGIN_KEY = pytest.StashKey["ConformancePlugin"]()


MAX_WORKER_RESTARTS = 10_000  # a crashing test costs one worker, never the rest of the run


def timeout_seconds(config: pytest.Config) -> float | None:
    try:
        return flight.parse_timeout(config.getoption("--conformance-timeout"))
    except ValueError as error:
        raise pytest.UsageError(f"--conformance-timeout / ${flight.TIMEOUT_ENV}: {error}") from None


def configure(config: pytest.Config) -> None:
    """The recorder of this run (called by the plugin's pytest_configure)."""
    timeout_seconds(config)  # a bad value is a usage error before anything runs
    if getattr(config.option, "numprocesses", None) and getattr(config.option, "maxworkerrestart", 0) is None:
        config.option.maxworkerrestart = str(MAX_WORKER_RESTARTS)  # read by xdist's DSession (configured last)
    workerinput = getattr(config, "workerinput", None)
    if workerinput and workerinput.get("conformance_flight"):
        flight.start(workerinput["conformance_flight"], timeout_seconds(config), owner=config)
    plugin = ConformancePlugin(config)
    config.stash[_PLUGIN_KEY] = plugin
    config.pluginmanager.register(plugin, "conformance-report")
    if config.pluginmanager.hasplugin("xdist"):  # its hooks exist only when pytest-xdist is active
        config.pluginmanager.register(_XdistHooks(plugin), "conformance-report-xdist")
    if not plugin.is_worker:  # xdist workers are stopped by their controller
        plugin.signals.install()
        config.pluginmanager.register(_EarlyReport(plugin), "conformance-report-early")


def unconfigure(config: pytest.Config) -> None:
    plugin = config.stash.get(_PLUGIN_KEY, None)
    if plugin is not None:
        plugin.signals.restore()
        plugin.close()
    flight.stop(config)


_RUNNING: list[pytest.Item] = []  # the test running in this process (one at a time), for current_record()


@contextlib.contextmanager
def flight_noted(item: pytest.Item) -> Iterator[None]:
    """In a worker with a flight recorder: the test is noted (and the hang watchdog armed) while it runs.
    In every process the item is kept for `current_record`."""
    recorder = flight.recorder(item.config)
    if recorder is not None:
        recorder.begin(item.nodeid)
    _RUNNING.append(item)
    try:
        yield
    finally:
        _RUNNING.remove(item)
        if recorder is not None:
            recorder.end()


def current_record() -> dict[str, Any] | None:
    """The report row of the test running now under the plugin (made if the test did not ask for
    `conformance_record`), or None outside a test: how an API call (assert_conforms) records itself."""
    if not _RUNNING:
        return None
    item = _RUNNING[-1]
    record = _record_of(item.user_properties)
    if record is None:
        record = {"nodeid": item.nodeid}
        item.user_properties.append((RECORD, record))
    return record


class SignalGuard:
    """SIGINT and SIGTERM stop the run in order: the first one raises KeyboardInterrupt in the main thread.

    pytest then ends the session as it does on Ctrl-C: teardowns run, `pytest_sessionfinish` writes the
    report with `"complete": false`, and the exit status is 2 (interrupted). Without this, SIGTERM (what
    CI runners, `timeout` and container stops send) ends the process at once and no report is written.

    A repeat within `DUPLICATE_WINDOW` seconds is taken as the same request (a terminal's Ctrl-C reaches
    `conformance run` and its pytest both, and `conformance run` forwards it too) and ignored; a later
    one interrupts the shutdown itself. While the report is being written, signals are only noted.
    Handlers are installed only where the process still has the default ones (a program that runs
    pytest with its own handlers, or with a signal ignored, keeps them), and restored at unconfigure.
    """

    DUPLICATE_WINDOW = 2.0

    def __init__(self) -> None:
        self.received: int | None = None  # the first signal, if any
        self.writing = False
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}
        self._handler = self._handle  # one bound method, so that restore() can recognise it

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        for name, default in (("SIGTERM", signal.SIG_DFL), ("SIGINT", signal.default_int_handler)):
            signum = getattr(signal, name, None)
            if signum is None:
                continue
            current = signal.getsignal(signum)
            if current is default:
                signal.signal(signum, self._handler)
                self._previous[signum] = current

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handler:
                signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        now = time.monotonic()
        if self.received is None:
            self.received, self._first_at = signum, now
            raise KeyboardInterrupt(f"{signal.Signals(signum).name}: the run stops; the report is written "
                                    f"with complete: false")
        if self.writing or now - self._first_at < self.DUPLICATE_WINDOW:
            return
        raise KeyboardInterrupt(f"{signal.Signals(signum).name} again: stopping the shutdown")


def base_environment() -> dict[str, Any]:
    """What is known without importing a framework: Python, platform, CPU, installed versions."""
    from layer_conformance.adapters.base import package_version

    frameworks = {name: package_version(name) for name in
                  ("torch", "tensorflow-cpu", "tensorflow", "keras", "jax", "jaxlib", "flax", "numpy", "ml-dtypes")}
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "frameworks": {k: v for k, v in frameworks.items() if v or k in ("torch", "keras", "jax", "flax")},
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "devices": {},
        "numeric_modes": {"TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
                          "numpy.blas": _numpy_blas()},
    }


def _numpy_blas() -> str | None:
    """NumPy's BLAS (the float64 reference runs on it), from its build configuration."""
    try:
        import numpy

        blas = numpy.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        return " ".join(str(blas[k]) for k in ("name", "version") if blas.get(k)) or None
    except Exception:  # older NumPy without mode="dicts": the fingerprint just lacks this line
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def counterexample_folder(config: pytest.Config) -> Path | None:
    """Where failing examples are saved: the option, else next to the report, else nowhere."""
    folder = config.getoption("--conformance-counterexamples")
    if folder:
        return Path(folder)
    report = config.getoption(REPORT_OPTION)
    return Path(report).parent / "counterexamples" if report else None


def add_report_section(config: pytest.Config, name: str, value: Any) -> None:
    """Suites add a top-level section of report.json (plain JSON data, e.g. `divergences`), in the controller."""
    plugin = config.stash.get(_PLUGIN_KEY, None)
    if plugin is not None:
        plugin.sections[name] = value


def recorded_results(config: pytest.Config) -> list[dict[str, Any]]:
    """The result rows recorded so far (in the controller: every worker's), for the suites' report sections."""
    plugin = config.stash.get(_PLUGIN_KEY, None)
    return list(plugin.results.values()) if plugin is not None else []


def record_environment(config: pytest.Config, framework: str, info: dict[str, Any]) -> None:
    """Suites call this once per framework they used: devices and numeric modes in force."""
    plugin = config.stash.get(_PLUGIN_KEY, None)
    if plugin is not None:
        plugin.add_environment(framework, info)


@pytest.fixture
def conformance_record(request: pytest.FixtureRequest) -> dict[str, Any]:
    """A dict the test fills; it becomes this test's row in report.json."""
    record: dict[str, Any] = {"nodeid": request.node.nodeid}
    request.node.user_properties.append((RECORD, record))
    return record


def _record_of(properties: list[tuple[str, Any]]) -> dict[str, Any] | None:
    return next((value for name, value in properties if name == RECORD), None)


class ConformancePlugin:
    def __init__(self, config: pytest.Config):
        self.config = config
        self.path = config.getoption(REPORT_OPTION)
        self.results: dict[str, dict[str, Any]] = {}
        self.environment = base_environment()
        self.interrupted = False
        self.is_worker = hasattr(config, "workerinput")
        self.signals = SignalGuard()
        self.sections: dict[str, Any] = {}  # extra top-level sections of the report (add_report_section)
        self.expected: set[str] = set()  # every selected test (collection), to tell what produced no result
        self.finished: dict[str, str] = {}  # nodeid -> worst status of its reports so far
        self.flight_dir: Path | None = None
        self.progress = open(config.getoption("--conformance-progress"), "a", encoding="utf-8") \
            if config.getoption("--conformance-progress") and not self.is_worker else None  # noqa: SIM115

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        if self.flight_dir is not None:
            shutil.rmtree(self.flight_dir, ignore_errors=True)

    def flight_folder(self) -> Path:
        """The controller's folder for its workers' flight records (made on first use, removed at the end)."""
        if self.flight_dir is None:
            self.flight_dir = Path(tempfile.mkdtemp(prefix="conformance-flight-"))
        return self.flight_dir

    def _progress(self, **event: Any) -> None:
        if self.progress is not None:
            self.progress.write(json.dumps(event) + "\n")
            self.progress.flush()

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if not self.is_worker and not self.expected:
            self.note_collected([item.nodeid for item in session.items])

    def note_collected(self, nodeids: list[str]) -> None:
        if not self.expected:
            self.expected = set(nodeids)
            self._progress(total=len(self.expected))

    def _note_finished(self, report: pytest.TestReport, status: str) -> None:
        """Progress: a test is done after its teardown, or when its process died (xdist's `???` report)."""
        old = self.finished.get(report.nodeid)
        if old is None or _SEVERITY.get(status, 0) > _SEVERITY.get(old, 0):
            self.finished[report.nodeid] = status
        if report.when in ("teardown", "???"):
            counts = summarize([{"status": s} for s in self.finished.values()])
            self._progress(done=len(self.finished), total=len(self.expected) or None, nodeid=report.nodeid,
                           status=self.finished[report.nodeid], failed=counts["failed"], error=counts["error"])

    def missing(self) -> list[str]:
        """Selected tests that produced no result at all (a worker lost, the run stopped)."""
        return sorted(self.expected - set(self.finished))

    def add_environment(self, framework: str, info: dict[str, Any]) -> None:
        if info.get("unavailable"):  # selected but not importable here: the gate must see it gone
            self.environment.setdefault("unavailable", {})[framework] = str(info["unavailable"])
        else:
            self.environment["devices"][framework] = info.get("devices", [])
        for name, value in info.get("numeric_modes", {}).items():
            self.environment["numeric_modes"][name] = value if isinstance(value, (bool, int, float, str)) or value is None else str(value)
        if self.is_worker:
            self.config.workeroutput["conformance_environment"] = self.environment  # type: ignore[attr-defined]

    # ---- collecting ----------------------------------------------------------------------------
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
        outcome = yield
        record = _record_of(item.user_properties)
        report = outcome.get_result()
        if record is not None and call.excinfo is not None and report.failed and not record.get("reason"):
            record["reason"] = failure_reason(call.excinfo.value, call.excinfo.exconly())

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.is_worker:
            self._note_finished(report, _status(report, _record_of(report.user_properties))
                                if report.when != "teardown" or report.failed
                                else self.finished.get(report.nodeid, "passed"))
        record = _record_of(report.user_properties)
        if record is None:
            return
        if report.when == "call" or report.outcome != "passed":
            old = self.results.get(report.nodeid, {})
            status = _status(report, record)
            if old.get("status") in ("failed", "error") and report.when == "teardown" and status == "passed":
                return
            row = {**old, **record, "nodeid": report.nodeid, "status": status}
            if report.skipped:
                row["reason"] = _skip_reason(report)
            elif report.failed and (not row.get("reason") or str(row["reason"]).startswith(NOT_JUDGED_PREFIX)):
                # a failure's own text, not the note of comparisons measured but not judged (kept in not_judged)
                row["reason"] = cut(report.longreprtext)
            # one assignment: an interruption arriving here leaves the old row or the new one, never half
            self.results[report.nodeid] = row

    def take_worker_environment(self, env: dict[str, Any]) -> None:
        self.environment["devices"].update(env.get("devices", {}))
        self.environment["numeric_modes"].update(env.get("numeric_modes", {}))
        if env.get("unavailable"):
            self.environment.setdefault("unavailable", {}).update(env["unavailable"])

    def pytest_keyboard_interrupt(self, excinfo: Any) -> None:
        self.interrupted = True

    # ---- writing -------------------------------------------------------------------------------
    def report(self, complete: bool, incomplete: str | None = None) -> dict[str, Any]:
        results = [_ordered(row) for row in self.results.values()]
        missing = self.missing()
        return {
            "schema": SCHEMA,
            "complete": complete and not missing,
            **({"incomplete": {"reason": incomplete or f"{len(missing)} selected test(s) produced no result",
                               "missing": missing}} if incomplete or missing else {}),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["pytest", *self.config.invocation_params.args]),
            "environment": self.environment,
            "claims": _claims(results),
            "summary": summarize(results),
            "results": results,
            **self.sections,
        }

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.is_worker or not self.path:
            return
        self.write(self.incomplete_because(exitstatus))

    def incomplete_because(self, exitstatus: int) -> str | None:
        if self.signals.received is not None:
            return f"interrupted by {signal.Signals(self.signals.received).name}"
        if self.interrupted or exitstatus == pytest.ExitCode.INTERRUPTED:
            return "interrupted"
        if exitstatus == pytest.ExitCode.INTERNAL_ERROR:
            return "internal error"
        return None

    def write(self, incomplete: str | None) -> None:
        self.signals.writing = True  # a signal now must not cut the write short
        try:
            write_json_atomic(self.path, self.report(incomplete is None, incomplete))
        finally:
            self.signals.writing = False

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or not self.results:
            return
        if self.config.getoption("--conformance-table"):
            terminalreporter.write_sep("=", "conformance results")
            terminalreporter.write_line(format_table(list(self.results.values())))
        summary = summarize(list(self.results.values()))
        where = f"; report: {self.path}" if self.path else ""
        terminalreporter.write_line(
            "conformance: " + ", ".join(f"{v} {k}" for k, v in summary.items() if v) + where)


class _EarlyReport:
    """An interrupted run writes its report first thing in sessionfinish, then again last.

    Other plugins' sessionfinish can take a while after an interruption (pytest-xdist waits for busy
    workers before it kills them), and whoever sent SIGTERM may follow with SIGKILL: the first write
    makes sure the results are on disk; the last adds what arrived meanwhile (workers' environment).
    """

    def __init__(self, plugin: ConformancePlugin):
        self.plugin = plugin

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        reason = self.plugin.incomplete_because(exitstatus)
        if self.plugin.path and reason is not None:
            self.plugin.write(reason)


class _XdistHooks:
    """The controller's side of worker isolation: flight records, crashed workers, collection totals."""

    def __init__(self, plugin: ConformancePlugin):
        self.plugin = plugin

    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["conformance_flight"] = str(self.plugin.flight_folder())

    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self.plugin.note_collected(list(ids))

    def pytest_handlecrashitem(self, crashitem: str, report: pytest.TestReport, sched: Any) -> None:
        """A worker died in `crashitem`: the test becomes an `error` row naming the cause and the call."""
        plugin = self.plugin
        row = flight.describe_crash(plugin.flight_folder(), crashitem, _exit_status(getattr(report, "node", None)),
                                    timeout_seconds(plugin.config), counterexample_folder(plugin.config))
        report.longrepr = row["reason"]
        report.user_properties = [*getattr(report, "user_properties", []), (RECORD, row)]

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: take the environment facts a worker gathered."""
        env = getattr(node, "workeroutput", {}).get("conformance_environment")
        if env:
            self.plugin.take_worker_environment(env)


def _exit_status(node: Any) -> int | None:
    """A crashed xdist worker's exit status (negative: the signal), where execnet exposes its process."""
    popen = getattr(getattr(getattr(node, "gateway", None), "_io", None), "popen", None)
    if popen is None:
        return None
    try:
        return popen.wait(timeout=5)
    except Exception:  # still running, or not a subprocess.Popen: the flight record tells the cause
        return None


_SEVERITY = {"error": 5, "failed": 4, "passed": 2, "measured": 2, "xfailed": 1, "skipped": 1}

_ORDER = ("nodeid", "claim", "title", "relation", "check", "variants", "skipped_variants", "keras_backend", "dtype",
          "device", "status", "examples", "max_abs_error", "max_bound_ratio", "reason")


def _ordered(row: dict[str, Any]) -> dict[str, Any]:
    base = {key: row.get(key) for key in _ORDER}
    base.update({k: v for k, v in row.items() if k not in base})
    base.setdefault("variants", [])
    return base


def _claims(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    claims: dict[str, dict[str, Any]] = {}
    for row in results:
        entry = claims.setdefault(row["claim"], {"title": row.get("title"), "relation": row.get("relation"),
                                                 "source": row.get("source"), "variants": []})
        for name in row.get("variants") or []:
            if name not in entry["variants"]:
                entry["variants"].append(name)
    return claims


def _status(report: pytest.TestReport, record: dict[str, Any] | None = None) -> str:
    """The result's status; a passing test whose record says `measurement` (speed), or that has comparisons it
    could not judge (`not_judged`: an infinite bound), is `measured`, not passed."""
    if hasattr(report, "wasxfail"):
        return "xfailed" if report.skipped else "failed"
    if report.skipped:
        return "skipped"
    if report.failed:
        return "failed" if report.when == "call" else "error"
    return "measured" if record and (record.get("measurement") or record.get("not_judged")) else "passed"


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


