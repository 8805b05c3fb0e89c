"""Gradient check: d input, d kernel, d bias of every variant against the float64 reference VJP."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from layer_conformance.suites.gradients import has_gradient_adjoints
from layer_conformance.suites.harness import ClaimRunner


@given(data=st.data())
def test_gradient(runner: ClaimRunner, data: st.DataObject) -> None:
    if not has_gradient_adjoints(runner.case.claim):  # pragma: no cover - every equal row is gather-only today
        pytest.skip("a mapping of this row is not a gather, so gradients cannot be mapped back to the claim")
    runner.gradient_example(data)


test_gradient.check = "gradient"  # type: ignore[attr-defined]
test_gradient.relation = "equal"  # type: ignore[attr-defined]
