"""pytest plugin: `--conformance-fault ID` runs the suite on a broken framework.

layer_conformance.plugin registers this module when the option is given, in its own pytest_configure
(after the option checks, before collection and before any adapter builds a layer), which calls this
module's pytest_configure: the fault (layer_conformance/mutation/faults.py) is installed. xdist workers get the same options
and install it too.
"""
from __future__ import annotations

import importlib
import os

import pytest

_ADAPTER_MODULES = {"torch": "layer_conformance.adapters.torch", "keras": "layer_conformance.adapters.keras", "flax": "layer_conformance.adapters.flax"}


def pytest_configure(config: pytest.Config) -> None:
    fault_id = config.getoption("--conformance-fault")
    if not fault_id:
        return
    from layer_conformance.mutation.faults import FAULTS_BY_ID

    fault = FAULTS_BY_ID.get(fault_id)
    if fault is None:
        raise pytest.UsageError(f"--conformance-fault: unknown fault {fault_id!r}; "
                                f"choose from {', '.join(FAULTS_BY_ID)}")
    # the adapter imports its framework the way the suite does (quiet TensorFlow start-up, x64 for jax)
    module = importlib.import_module(_ADAPTER_MODULES[fault.framework])
    if fault.framework == "keras" and module.BACKEND != "tensorflow":
        raise pytest.UsageError(f"--conformance-fault {fault_id}: patches Keras' TensorFlow backend, but "
                                f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND')}; run with KERAS_BACKEND=tensorflow")
    config._conformance_fault_uninstall = fault.install()  # type: ignore[attr-defined]
    from layer_conformance.adapters import clear_programs

    clear_programs()  # nothing traced before the patch may be reused
    config._conformance_fault = fault  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    uninstall = getattr(config, "_conformance_fault_uninstall", None)
    if uninstall is not None:
        uninstall()
        from layer_conformance.adapters import clear_programs

        clear_programs()
        config._conformance_fault_uninstall = None  # type: ignore[attr-defined]


def pytest_report_header(config: pytest.Config) -> list[str]:
    fault = getattr(config, "_conformance_fault", None)
    return [f"layer-conformance: FAULT INJECTED {fault.id} ({fault.kind}): {fault.description}"] if fault else []
