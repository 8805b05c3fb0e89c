"""Parametrizes the suites over catalog x dtype x device and provides the per-test runner."""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from reports.plugin import counterexample_folder, record_environment
from suites.catalog import CLAIMS
from suites.harness import Case, ClaimRunner

_RECORDED: set[str] = set()
_NUMERICS_SET: set[str] = set()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "suites" in item.path.parts:
            item.add_marker(pytest.mark.conformance)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "runner" not in metafunc.fixturenames:
        return
    config = metafunc.config
    relation = getattr(metafunc.function, "relation", None)
    check = getattr(metafunc.function, "check", "forward")
    required = set(config.getoption("--conformance-require"))
    claims = [claim for claim in CLAIMS if relation in (None, claim.relation) and check in claim.checks
              and (not required or required & {v.framework for v in claim.variants})]
    # a check may declare the dtypes/devices it is defined for (e.g. initializers: float32 on cpu)
    dtypes = [d for d in config.getoption("--conformance-dtypes") if d in getattr(metafunc.function, "dtypes", [d])]
    devices = [d for d in config.getoption("--conformance-devices")
               if d in getattr(metafunc.function, "devices", [d])]
    # Keras dtype policies exist only in Keras: no rows for claims without a Keras variant
    cases = [Case(claim, dtype, device) for claim in claims for dtype in dtypes for device in devices
             if not dtype.startswith("mixed_") or any(v.framework == "keras" for v in claim.variants)]
    metafunc.parametrize("runner", cases, ids=[case.id for case in cases], indirect=True)


@pytest.fixture
def runner(request: pytest.FixtureRequest, conformance_record: dict[str, Any]) -> Iterator[ClaimRunner]:
    check = getattr(request.function, "check", "forward")
    selected = set(request.config.getoption("--conformance-frameworks"))
    numerics = request.config.getoption("--conformance-numerics")
    for variant in request.param.claim.variants:  # once per framework and process, before its first layer
        if variant.framework not in _NUMERICS_SET and variant.framework in selected:
            _NUMERICS_SET.add(variant.framework)
            from adapters import get_adapter

            get_adapter(variant.framework).set_numerics(numerics)
    conformance_record["numerics"] = numerics
    runner = ClaimRunner(request.param, conformance_record, check=check, frameworks=selected,
                         counterexamples=counterexample_folder(request.config))
    yield runner
    for framework in runner.frameworks_used():
        if framework not in _RECORDED:
            _RECORDED.add(framework)
            from adapters import get_adapter

            record_environment(request.config, framework, get_adapter(framework).environment())
