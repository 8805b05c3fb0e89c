"""Self-tests of the speed benchmark: timing helpers, the check's record, the switch, the writers."""
from __future__ import annotations

import time

import pytest

pytest_plugins = ["pytester"]

from layer_conformance.reports.html import render_html
from layer_conformance.reports.markdown import render_markdown
from layer_conformance.reports.merge import merge_reports
from layer_conformance.reports.schema import load_report, summarize
from layer_conformance.reports.table import format_table
from layer_conformance.reports.plots import claim_plots, speed_plot
from layer_conformance.suites import speed
from layer_conformance.suites.catalog import CLAIMS_BY_ID
from layer_conformance.suites.harness import Case, ClaimRunner


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_measure_reports_a_sane_median_for_a_known_duration():
    timing = speed.measure(lambda: _busy(0.004), warmup=1, min_repeats=5, max_repeats=9, budget_s=0.05)
    # a busy loop never returns early; on a loaded machine it may take much longer (7x seen on 2 busy cores)
    assert 0.004 <= timing.median_s < 1.0
    # min_repeats, unless the calls were so slow that twice the budget was spent first (a busy machine)
    assert 5 <= timing.repeats <= 9 or (timing.repeats >= speed.FLOOR_REPEATS
                                        and timing.max_s * timing.repeats >= 2 * 0.05), timing
    assert timing.min_s <= timing.median_s <= timing.max_s
    assert 0 <= timing.iqr_s <= timing.max_s - timing.min_s
    slept = speed.measure(lambda: time.sleep(0.002), warmup=0, min_repeats=3, max_repeats=3, budget_s=1.0)
    assert slept.repeats == 3 and slept.median_s >= 0.002


def test_measure_stops_a_slow_call_at_the_floor():
    timing = speed.measure(lambda: _busy(0.03), warmup=0, min_repeats=7, max_repeats=15, budget_s=0.02)
    assert timing.repeats == speed.FLOOR_REPEATS


def test_relative_of_the_fastest_is_one():
    ratios = speed.relative({"a": 3e-4, "b": 1e-4, "c": 2e-4})
    assert ratios["b"] == 1.0
    assert ratios["a"] == pytest.approx(3.0) and ratios["c"] == pytest.approx(2.0)


def test_peak_memory_sees_a_numpy_allocation():
    import numpy as np

    memory = speed.peak_memory(lambda: np.ones(1_000_000))
    assert memory["memory_method"] == "tracemalloc"
    assert memory["peak_bytes"] >= 8_000_000
    assert memory["rss_delta_bytes"] is None or memory["rss_delta_bytes"] >= 0


def _speed_runner(claim_id: str = "torch-linear-conv1d-k1") -> ClaimRunner:
    pytest.importorskip("torch")
    return ClaimRunner(Case(CLAIMS_BY_ID[claim_id], "float32", "cpu"), {"nodeid": f"speed[{claim_id}]"},
                       check="speed")


def test_speed_check_records_a_row_for_every_runnable_variant(monkeypatch):
    from layer_conformance.suites.test_speed import test_speed

    monkeypatch.delenv(speed.ENV_SWITCH, raising=False)
    runner = _speed_runner()
    test_speed(runner)
    record = runner.record
    points = speed.grid("torch-linear-conv1d-k1", CLAIMS_BY_ID["torch-linear-conv1d-k1"].example)
    assert record["examples"] == len(points) >= 2
    assert record["max_bound_ratio"] is None
    labels = {v.label(runner.case.claim.example) for v in runner.runnable}
    for name, dims in points:
        rows = [row for row in record["speed"] if row["point"] == name]
        assert {row["variant"] for row in rows} == labels
        assert min(row["relative"] for row in rows) == 1.0
        for row in rows:
            assert row["median_s"] > 0 and row["repeats"] >= speed.FLOOR_REPEATS
            assert row["memory_method"] == "tracemalloc" and row["peak_bytes"] >= 0
    assert any(row["shape"] == "(128, 8, 256)" for row in record["speed"])  # the classic (128, 256, 8) input


@pytest.mark.parametrize("value", ["0", "off"])
def test_speed_switched_off_skips_with_a_reason(monkeypatch, value):
    from layer_conformance.suites.test_speed import test_speed

    monkeypatch.setenv(speed.ENV_SWITCH, value)
    with pytest.raises(pytest.skip.Exception, match="CONFORMANCE_SPEED"):
        test_speed(_speed_runner())


def _speed_report() -> dict:
    rows = [{"variant": "torch.Linear", "point": "example", "shape": "(2, 5, 8)", "median_s": 1.2e-5,
             "iqr_s": 1e-6, "repeats": 15, "relative": 1.0, "peak_bytes": 2048, "memory_method": "tracemalloc"},
            {"variant": "torch.Conv1d", "point": "example", "shape": "(2, 5, 8)", "median_s": 3.6e-5,
             "iqr_s": 2e-6, "repeats": 15, "relative": 3.0, "peak_bytes": 4096, "memory_method": "tracemalloc"}]
    return {"schema": "layer-conformance/report/v1", "complete": True,
            "results": [{"nodeid": "suites/test_speed.py::test_speed[torch-linear-conv1d-k1-float32-cpu]",
                         "claim": "torch-linear-conv1d-k1", "relation": "equal", "check": "speed",
                         "variants": ["torch.Linear", "torch.Conv1d"], "dtype": "float32", "device": "cpu",
                         "status": "passed", "examples": 1, "max_abs_error": None, "max_bound_ratio": None,
                         "reason": None, "speed": rows}]}


def test_writers_render_speed_table_and_plot():
    report = _speed_report()
    markdown = render_markdown(report)
    assert "## Speed" in markdown
    assert "3.00×" in markdown and "12 µs" in markdown and "2 KiB (tracemalloc)" in markdown
    assert speed_plot(report["results"]).startswith(b"\x89PNG")
    plots = claim_plots(report["results"], title="torch-linear-conv1d-k1")
    assert plots["errors"] == [] and plots["speed"].startswith("data:image/png;base64,")
    page = render_html(report)
    assert '<img class="plot plot-speed" src="data:image/png;base64,' in page
    assert "No per-example samples recorded" not in page


def test_speed_plot_copes_with_junk():
    assert speed_plot([]) is None
    assert speed_plot([{"check": "speed", "speed": [None, {"relative": "x"}, {"relative": 0}]}]) is None
    assert speed_plot([{"check": "forward", "speed": [{"relative": 2.0}]}]) is None


# ---- a measurement is never a verdict -------------------------------------------------------------

MEASURING = '''
import pytest

def fill(record, claim, check):
    record.update({"claim": claim, "relation": "equal", "check": check, "variants": ["torch.Linear"],
                   "dtype": "float32", "device": "cpu", "examples": 1, "max_abs_error": None,
                   "max_bound_ratio": None, "reason": None})

def test_timed(conformance_record):
    fill(conformance_record, "timed", "speed")
    conformance_record["measurement"] = True

def test_timing_crashed(conformance_record):
    fill(conformance_record, "crashed", "speed")
    conformance_record["measurement"] = True
    raise RuntimeError("layer.forward raised")

def test_timing_off(conformance_record):
    fill(conformance_record, "off", "speed")
    conformance_record["measurement"] = True
    pytest.skip("speed benchmark switched off")

def test_judged(conformance_record):
    fill(conformance_record, "judged", "forward")
'''


def test_plugin_reports_a_passing_measurement_as_measured(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_sample=MEASURING)
    result = pytester.runpytest("-p", "layer_conformance.plugin", "--conformance-report", "report.json")
    report = load_report(pytester.path / "report.json")
    statuses = {row["claim"]: row["status"] for row in report["results"]}
    assert statuses == {"timed": "measured", "crashed": "failed", "off": "skipped", "judged": "passed"}
    assert report["summary"] == {"passed": 1, "failed": 1, "skipped": 1, "error": 0, "measured": 1}
    result.stdout.fnmatch_lines(["conformance: 1 passed, 1 failed, 1 skipped, 1 measured; report: *"])


def test_the_speed_check_marks_its_record_as_a_measurement(monkeypatch) -> None:
    from layer_conformance.suites.test_speed import test_speed

    monkeypatch.delenv(speed.ENV_SWITCH, raising=False)
    monkeypatch.setattr(speed, "grid", lambda claim_id, example: [("example", dict(example))])
    runner = _speed_runner()
    test_speed(runner)
    assert runner.record["measurement"] is True and runner.record["speed"]


def test_speed_with_nothing_timed_is_skipped_with_the_reasons(monkeypatch) -> None:
    from layer_conformance.suites.test_speed import test_speed

    monkeypatch.delenv(speed.ENV_SWITCH, raising=False)
    monkeypatch.setattr(speed, "grid", lambda claim_id, example: [("example", dict(example))])
    runner = _speed_runner()
    inner = type(runner.runnable[0])
    monkeypatch.setattr(runner, "runnable", [inner(v.framework, v.spec, v.x_in, v.y_out, v.w_map, v.how)
                                             for v in runner.runnable])
    from layer_conformance import adapters

    refusing = type("Refusing", (), {"supports": lambda self, spec, dtype, device: "planted refusal"})()
    monkeypatch.setattr("layer_conformance.suites.test_speed.get_adapter", lambda framework: refusing)
    with pytest.raises(pytest.skip.Exception, match="no variant could be timed: .*planted refusal"):
        test_speed(runner)
    assert adapters  # the real adapters are untouched


def _measured_report(status: str = "measured") -> dict:
    report = _speed_report()
    report["results"][0]["status"] = status
    report["summary"] = summarize(report["results"])
    return report


def test_writers_show_measured_never_passed() -> None:
    report = _measured_report()
    assert report["summary"]["passed"] == 0 and report["summary"]["measured"] == 1
    table = format_table(report["results"])
    assert " measured " in table and " ok " not in table
    markdown = render_markdown(report)
    assert "⏱ 1 measured" in markdown and "✅ 1 passed" not in markdown
    assert "| ⏱ |" in markdown  # the matrix cell: the measured mark, no bound ratio
    page = render_html(report)
    assert 'class="badge st-measured">⏱ 1 measured' in page and "✅ 0 passed" in page
    assert '<td class="cell st-measured"' in page and '<td class="cell st-passed"' not in page


@pytest.mark.parametrize("other, kept", [("passed", "passed"), ("failed", "failed"), ("error", "error"),
                                         ("skipped", "measured"), ("xfailed", "measured")])
def test_merge_ranks_measured_below_verdicts_above_skips(other: str, kept: str) -> None:
    merged = merge_reports([("a", _measured_report()), ("b", _measured_report(other))])
    assert [row["status"] for row in merged["results"]] == [kept]
    assert merged["summary"].get("measured", 0) == (kept == "measured")
