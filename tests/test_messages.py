"""A failed result's reason is a line a reader can act on: hypothesis' own errors are explained, and the
report writers show the first line with the full text folded below it."""
from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from hypothesis import errors

from layer_conformance.reports.html import render_html
from layer_conformance.reports.markdown import render_markdown
from layer_conformance.reports.messages import HEADLINE_LIMIT, NOT_REPRODUCIBLE, explain, failure_reason, headline, rest

FAILURE = ("torch.Linear is not deterministic: two runs on the same input differ by 1.19e-07; example: B=2, L=3\n"
           "  claim xfw-dense [float32, cpu] batch: a title\n  torch.Linear is not deterministic: ...\n  dims=B=2, L=3")


def test_a_failure_that_passes_when_replayed_is_explained_with_the_first_failure():
    calls = []

    @settings(database=None, derandomize=True, max_examples=5, phases=[Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(st.integers())
    def replayed(n):
        calls.append(n)
        if len(calls) == 1:
            raise AssertionError(FAILURE)

    with pytest.raises(errors.FlakyFailure) as info:
        replayed()
    assert "replayed(" in info.exconly()  # what the report showed before: the test's signature and reprs
    reason = failure_reason(info.value, info.exconly())
    first = headline(reason)
    assert first.startswith("torch.Linear is not deterministic: two runs on the same input differ by 1.19e-07")
    assert first.endswith(f"({NOT_REPRODUCIBLE})")
    assert "FlakyFailure" not in reason and "replayed(" not in reason
    assert FAILURE in rest(reason)  # the full first failure behind the fold


@pytest.mark.parametrize("error, words", [
    (errors.Unsatisfiable("Unable to satisfy assumptions"), "too few valid examples"),
    (errors.FailedHealthCheck("Data generation is extremely slow"), "health check failed"),
    (errors.DeadlineExceeded(timedelta(milliseconds=300), timedelta(milliseconds=200)), "deadline=None"),
    (errors.FlakyStrategyDefinition("Inconsistent data generation!"), "could not replay an example"),
    (errors.InvalidArgument("max_examples=-1 should be at least one"), "hypothesis stopped the test (InvalidArgument)"),
])
def test_every_hypothesis_error_gets_a_sentence(error, words):
    reason = explain(error)
    assert reason is not None and words in headline(reason) and str(error) in reason


def test_other_exceptions_keep_their_own_message():
    assert explain(ValueError("bad")) is None
    assert failure_reason(AssertionError("x exceeds the bound\n  more"), "AssertionError: x ...") == \
        "x exceeds the bound\n  more"
    assert failure_reason(TypeError("boom"), "TypeError: boom") == "TypeError: boom"


def test_writers_show_the_first_line_and_fold_the_rest():
    long_first = "v exceeds the error bound " + "x" * 400
    report = {"schema": 2, "complete": True, "summary": {"failed": 1}, "results": [
        {"nodeid": "suites/test_forward.py::test_forward[c-float32-cpu]", "claim": "c", "check": "forward",
         "dtype": "float32", "device": "cpu", "status": "failed", "variants": ["torch.Linear"],
         "reason": long_first + "\nsecond line of the full text"}]}
    md, html = render_markdown(report), render_html(report)
    cut_line = long_first[:HEADLINE_LIMIT - 3] + "..."
    for page in (md, html):
        assert cut_line in page and "Full message" in page and "second line of the full text" in page
    assert "<details" in md and "<details class=\"message\">" in html
