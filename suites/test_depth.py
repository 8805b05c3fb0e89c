"""Depth check: stacks of up to 16 equivalent layers with ReLU between, under the composed bound."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from layer_conformance.suites.depth import depth_examples
from layer_conformance.suites.harness import ClaimRunner


@settings(max_examples=depth_examples(settings().max_examples))  # the profile is loaded before collection
@given(data=st.data())
def test_depth(runner: ClaimRunner, data: st.DataObject) -> None:
    runner.depth_example(data)


test_depth.check = "depth"  # type: ignore[attr-defined]
test_depth.relation = "equal"  # type: ignore[attr-defined]
