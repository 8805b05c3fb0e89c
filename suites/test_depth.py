"""Depth check: stacks of up to 16 equivalent layers with ReLU between, under the composed bound."""
from __future__ import annotations

from hypothesis import given, strategies as st

from suites.harness import ClaimRunner


@given(data=st.data())
def test_depth(runner: ClaimRunner, data: st.DataObject) -> None:
    runner.depth_example(data)


test_depth.check = "depth"  # type: ignore[attr-defined]
test_depth.relation = "equal"  # type: ignore[attr-defined]
