"""The report plugin end to end (pytester): rows, statuses, reasons, xdist, the written file."""
from __future__ import annotations

import json

import pytest

from layer_conformance.reports.schema import SCHEMA, load_report

pytest_plugins = ["pytester"]

SAMPLE = '''
import pytest

def fill(record, claim):
    record.update({"claim": claim, "relation": "equal", "check": "forward", "variants": ["torch.Linear"],
                   "dtype": "float32", "device": "cpu", "examples": 3, "max_abs_error": 1e-7,
                   "max_bound_ratio": 0.25, "reason": None})

def test_ok(conformance_record):
    fill(conformance_record, "ok-claim")

def test_bad(conformance_record):
    fill(conformance_record, "bad-claim")
    conformance_record["max_bound_ratio"] = 4.0
    assert False, "torch.Linear exceeds the error bound: 4x"

def test_bad_after_not_judged(conformance_record):
    fill(conformance_record, "half-claim")
    conformance_record["not_judged"] = {"torch.Conv2d dkernel": "the bfloat16 worst-case bound is infinite"}
    conformance_record["reason"] = "measured, not judged: torch.Conv2d dkernel: the bfloat16 worst-case bound is infinite"
    assert False, "torch.Conv2d dkernel exceeds the error bound: got nan"

def test_skip(conformance_record):
    fill(conformance_record, "skip-claim")
    pytest.skip("keras is not installed; install it with: pip install 'layer-conformance[tensorflow]'")

@pytest.fixture
def broken():
    raise RuntimeError("setup exploded")

def test_error(conformance_record, broken):
    pass

@pytest.mark.xfail(reason="documented divergence", strict=True)
def test_xfail(conformance_record):
    fill(conformance_record, "xfail-claim")
    assert False

def test_not_conformance():
    pass
'''


@pytest.fixture
def sample(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(test_sample=SAMPLE)
    return pytester


def _statuses(report: dict) -> dict[str, str]:
    return {row["nodeid"].split("::")[-1]: row["status"] for row in report["results"]}


def test_report_rows_statuses_and_reasons(sample: pytest.Pytester):
    result = sample.runpytest("-p", "layer_conformance.plugin", "--conformance-report", "out/report.json")
    result.assert_outcomes(passed=2, failed=2, skipped=1, errors=1, xfailed=1)
    report = load_report(sample.path / "out" / "report.json")
    assert report["schema"] == SCHEMA and report["complete"] is True
    assert _statuses(report) == {"test_ok": "passed", "test_bad": "failed", "test_skip": "skipped",
                                 "test_error": "error", "test_xfail": "xfailed", "test_bad_after_not_judged": "failed"}
    rows = {row["nodeid"].split("::")[-1]: row for row in report["results"]}
    assert "exceeds the error bound" in rows["test_bad"]["reason"]
    # a failure's reason is its own text, even where comparisons were measured but not judged before it
    assert "got nan" in rows["test_bad_after_not_judged"]["reason"]
    assert rows["test_bad_after_not_judged"]["not_judged"] == {"torch.Conv2d dkernel": "the bfloat16 worst-case bound is infinite"}
    assert rows["test_bad"]["max_bound_ratio"] == 4.0
    assert rows["test_skip"]["reason"].startswith("keras is not installed")
    assert "setup exploded" in rows["test_error"]["reason"]
    assert report["summary"] == {"passed": 1, "failed": 2, "skipped": 1, "error": 1, "xfailed": 1}
    assert report["environment"]["python"] and "frameworks" in report["environment"]
    result.stdout.fnmatch_lines(["conformance: 1 passed, 2 failed, 1 skipped, 1 error, 1 xfailed; report: *"])


def test_xdist_gives_the_same_result_set(sample: pytest.Pytester):
    pytest.importorskip("xdist")
    sample.runpytest("-p", "layer_conformance.plugin", "--conformance-report", "serial.json")
    sample.runpytest("-p", "layer_conformance.plugin", "--conformance-report", "parallel.json", "-n", "2")
    serial = load_report(sample.path / "serial.json")
    parallel = load_report(sample.path / "parallel.json")
    assert _statuses(serial) == _statuses(parallel)


def test_no_report_option_writes_nothing(sample: pytest.Pytester):
    sample.runpytest("-p", "layer_conformance.plugin")
    assert not list(sample.path.rglob("*.json"))


def test_report_file_is_strict_json(sample: pytest.Pytester):
    sample.runpytest("-p", "layer_conformance.plugin", "--conformance-report", "r.json")
    json.loads((sample.path / "r.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))


def test_junitxml_works_alongside(sample: pytest.Pytester):
    sample.runpytest("-p", "layer_conformance.plugin", "--conformance-report", "r.json", "--junitxml", "junit.xml")
    xml = (sample.path / "junit.xml").read_text()
    assert "test_bad" in xml and "<failure" in xml
    assert load_report(sample.path / "r.json")["summary"]["failed"] == 2
