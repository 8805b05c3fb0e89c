"""A depth or batch result that compared no variant is skipped with the reasons, never passed.

Before: the loops stepped past a variant whose drawn geometry its framework refuses, or whose
documented divergence is not run, and the test passed having compared nothing.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from layer_conformance import adapters
from layer_conformance.adapters import get_adapter
from layer_conformance.suites.catalog import CLAIMS_BY_ID
from layer_conformance.suites.harness import Case, ClaimRunner

CHECKS = {"depth": ClaimRunner.depth_example, "batch": ClaimRunner.batch_example}


class _Refusing:
    """A real adapter that refuses the specs `refuse` picks (after the runner was built on the claim's example)."""

    def __init__(self, inner: Any, refuse: Callable[[Any], bool]):
        self.inner, self.refuse = inner, refuse

    def supports(self, spec: Any, dtype: str, device: str) -> str | None:
        return "planted refusal" if self.refuse(spec) else self.inner.supports(spec, dtype, device)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _runner(check: str) -> ClaimRunner:
    if get_adapter("torch").available():
        pytest.skip(get_adapter("torch").available())
    return ClaimRunner(Case(CLAIMS_BY_ID["xfw-dense"], "float32", "cpu"), {"nodeid": f"t::{check}"}, check=check,
                       frameworks={"torch"})


def _run(runner: ClaimRunner, check: str, examples: int = 8) -> None:
    """The check under hypothesis, as the suite runs it (no shrinking: nothing here fails)."""
    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one(data: st.DataObject) -> None:
        CHECKS[check](runner, data)

    one()


@pytest.mark.parametrize("check", list(CHECKS))
def test_every_variant_refused_skips_with_the_reason(monkeypatch, check: str) -> None:
    runner = _runner(check)
    monkeypatch.setitem(adapters._CACHE, "torch", _Refusing(get_adapter("torch"), lambda spec: True))
    with pytest.raises(pytest.skip.Exception, match=rf"no variant was compared in the {check} check: "
                                                    r"torch\.Linear: planted refusal"):
        _run(runner, check)
    assert runner.record["examples"] == 0
    assert runner.record["skipped_variants"]["torch.Linear (some examples)"] == "planted refusal"


@pytest.mark.parametrize("check", list(CHECKS))
def test_a_divergence_that_is_not_run_skips_with_its_reason(monkeypatch, check: str) -> None:
    from layer_conformance.suites import divergences

    runner = _runner(check)
    planted = divergences.Divergence(
        id="planted-crash", framework="torch", applies=lambda *args: True, summary="planted: kills the process",
        evidence="none", versions={}, ceiling=divergences.DIVERGENCES[0].ceiling, kind="crash", checks=(check,))
    # the depth and batch checks ask layer_conformance.suites.checks.common whether a variant runs
    monkeypatch.setattr("layer_conformance.suites.checks.common.divergence_for", lambda *args, **kwargs: planted)
    with pytest.raises(pytest.skip.Exception, match=r"torch\.Linear: not run, documented divergence planted-crash"):
        _run(runner, check)
    assert runner.record["examples"] == 0


@pytest.mark.parametrize("check", list(CHECKS))
def test_examples_with_nothing_compared_do_not_count(monkeypatch, check: str) -> None:
    """Refused on even widths only: the result passes on the examples it compared, and lists the refusal."""
    runner = _runner(check)
    monkeypatch.setitem(adapters._CACHE, "torch", _Refusing(get_adapter("torch"), lambda s: s.in_features % 2 == 0))
    verdicts: list[bool] = []  # per example: nothing compared?
    judge = ClaimRunner._nothing_compared
    monkeypatch.setattr(ClaimRunner, "_nothing_compared",
                        lambda self, outcome: verdicts.append(judge(self, outcome)) or verdicts[-1])
    _run(runner, check, examples=12)
    assert True in verdicts and False in verdicts  # both kinds of example ran
    assert runner.record["examples"] == verdicts.count(False)
    assert runner.record["skipped_variants"]["torch.Linear (some examples)"] == "planted refusal"
