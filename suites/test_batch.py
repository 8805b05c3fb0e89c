"""Batch invariance and determinism: batched == per-sample within the bound; repeated runs bitwise equal."""
from __future__ import annotations

from hypothesis import given, strategies as st

from layer_conformance.suites.harness import ClaimRunner


@given(data=st.data())
def test_batch(runner: ClaimRunner, data: st.DataObject) -> None:
    runner.batch_example(data)


test_batch.check = "batch"  # type: ignore[attr-defined]
test_batch.relation = "equal"  # type: ignore[attr-defined]
