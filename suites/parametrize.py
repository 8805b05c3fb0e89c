"""Parametrization of conformance checks over claims x dtype x device, and the per-test runner fixture.

Registered by the plugin (layer_conformance.plugin), so it serves the built-in suites and a user's own
(`conformance_suite`) alike. A test function takes part when it asks for the `conformance_runner`
fixture; its claims are its `claims` attribute (a user suite) or, for the built-in suites, the catalog
and every registered user claim. `check`, `relation`, `dtypes` and `devices` attributes narrow the rows.
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from layer_conformance.reports import flight
from layer_conformance.reports.recorder import counterexample_folder, record_environment
from layer_conformance.suites.harness import ClaimRunner, freeze_imports
from layer_conformance.suites.outcomes import Case
from layer_conformance.suites.strategies import configured_pool_size

FIXTURE = "conformance_runner"
_RECORDED: set[str] = set()
_NUMERICS_SET: set[str] = set()


def cases_for(function: Any, config: pytest.Config) -> list[Case]:
    """The rows a check function runs: its claims x the selected dtypes x devices."""
    from layer_conformance.suites.user_claims import all_claims

    relation = getattr(function, "relation", None)
    check = getattr(function, "check", "forward")
    required = set(config.getoption("--conformance-require"))
    own = getattr(function, "claims", None)
    claims = [claim for claim in (all_claims() if own is None else own)
              if relation in (None, claim.relation) and check in claim.checks
              and (not required or required & {v.framework for v in claim.variants})]
    # a check may declare the dtypes/devices it is defined for (e.g. initializers: float32 on cpu)
    dtypes = [d for d in config.getoption("--conformance-dtypes") if d in getattr(function, "dtypes", [d])]
    devices = [d for d in config.getoption("--conformance-devices") if d in getattr(function, "devices", [d])]
    # Keras dtype policies exist only in Keras: no rows for claims without a Keras variant
    return [Case(claim, dtype, device) for claim in claims for dtype in dtypes for device in devices
            if not dtype.startswith("mixed_") or any(v.framework == "keras" for v in claim.variants)]


def generate(metafunc: pytest.Metafunc) -> None:
    if FIXTURE not in metafunc.fixturenames:
        return
    cases = cases_for(metafunc.function, metafunc.config)
    metafunc.parametrize(FIXTURE, cases, ids=[case.id for case in cases], indirect=True)


def _record_unavailable(config: pytest.Config, variants: Any, selected: set[str]) -> None:
    """A selected framework that cannot be imported here is named in the report's environment (once)."""
    from layer_conformance.adapters import get_adapter

    for framework in {v.framework for v in variants} & selected - _RECORDED:
        reason = get_adapter(framework).available()
        if reason:
            _RECORDED.add(framework)
            record_environment(config, framework, {"unavailable": reason})


def runner_for(request: pytest.FixtureRequest, conformance_record: dict[str, Any]) -> Iterator[ClaimRunner]:
    """The `conformance_runner` fixture (defined by the plugin, which imports this module only when a
    check runs): the runner of one row (claim, dtype, device); it fills the report's row."""
    if not hasattr(request, "param"):
        raise pytest.UsageError(f"{request.node.nodeid}: the {FIXTURE} fixture is parametrized by the "
                                f"layer-conformance plugin; is the plugin disabled (-p no:...)?")
    check = getattr(request.function, "check", "forward")
    selected = set(request.config.getoption("--conformance-frameworks"))
    numerics = request.config.getoption("--conformance-numerics")
    _record_unavailable(request.config, request.param.claim.variants, selected)
    for variant in request.param.claim.variants:  # once per framework and process, before its first layer
        if variant.framework not in _NUMERICS_SET and variant.framework in selected:
            _NUMERICS_SET.add(variant.framework)
            from layer_conformance.adapters import get_adapter

            get_adapter(variant.framework).set_numerics(numerics)
    conformance_record["numerics"] = numerics
    runner = ClaimRunner(request.param, conformance_record, check=check, frameworks=selected,
                         counterexamples=counterexample_folder(request.config),
                         geometries=configured_pool_size(request.config.getoption("--conformance-geometries")))
    freeze_imports()  # the row's frameworks are imported now (the runner asked each whether it runs)
    recorder = flight.recorder(request.config)
    if recorder is not None:  # an xdist worker: a crash from here on is reported with this row's facts
        recorder.describe(conformance_record)
    yield runner
    for framework in runner.frameworks_used():
        if framework not in _RECORDED:
            _RECORDED.add(framework)
            from layer_conformance.adapters import get_adapter

            record_environment(request.config, framework, get_adapter(framework).environment())
