"""Depth check: stacks of up to 16 equivalent layers with ReLU between, under the composed bound."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from suites import HEAVY_CHECK_DIVISOR
from suites.harness import ClaimRunner


@settings(max_examples=max(settings().max_examples // HEAVY_CHECK_DIVISOR, 5))  # each example runs up to 16 layers per variant
@given(data=st.data())
def test_depth(runner: ClaimRunner, data: st.DataObject) -> None:
    runner.depth_example(data)


test_depth.check = "depth"  # type: ignore[attr-defined]
test_depth.relation = "equal"  # type: ignore[attr-defined]
