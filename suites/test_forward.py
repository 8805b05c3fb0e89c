"""Forward check: every variant of every claim against the float64 reference, under the derived bound."""
from __future__ import annotations

from hypothesis import given, strategies as st

from layer_conformance.suites.harness import ClaimRunner


@given(data=st.data())
def test_forward(runner: ClaimRunner, data: st.DataObject) -> None:
    runner.forward_example(data)


def test_params(runner: ClaimRunner) -> None:
    runner.check_params()


test_params.check = "params"  # type: ignore[attr-defined]
test_params.relation = "equal"  # type: ignore[attr-defined]
