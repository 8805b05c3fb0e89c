"""Batch invariance and determinism: batched == per-sample within the bound; repeated runs bitwise equal."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from suites import HEAVY_CHECK_DIVISOR
from suites.harness import ClaimRunner


@settings(max_examples=max(settings().max_examples // HEAVY_CHECK_DIVISOR, 5))  # each example runs every sample on its own
@given(data=st.data())
def test_batch(runner: ClaimRunner, data: st.DataObject) -> None:
    runner.batch_example(data)


test_batch.check = "batch"  # type: ignore[attr-defined]
test_batch.relation = "equal"  # type: ignore[attr-defined]
