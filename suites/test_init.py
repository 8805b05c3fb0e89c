"""Init check: each variant's default initializers against the distributions its framework documents
(layer_conformance.suites.checks.init: the statistics and the row's false-alarm rate)."""
from __future__ import annotations

from layer_conformance.suites.harness import ClaimRunner


def test_init(runner: ClaimRunner) -> None:
    runner.check_init()


test_init.check = "init"  # type: ignore[attr-defined]
# default_weights draws with each framework's float32 initializers, on the cpu: one case per claim
test_init.dtypes = ("float32",)  # type: ignore[attr-defined]
test_init.devices = ("cpu",)  # type: ignore[attr-defined]
