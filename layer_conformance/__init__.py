"""layer-conformance: do weight-transferred layers agree across PyTorch, Keras and Flax?

The stable API is `__all__` below (everything else is internal and may change):

* `assert_conforms(a, b)`: two live layers compute the same function, judged against the float64
  reference under the derived error bound (`ConformanceError` on failure, `ConformsResult` otherwise).
* `bound_ratio(output, reference, spec, dtype=... | u_eff=...)`: is this difference what rounding
  allows? (`Explanation`).
* `layer_claim(spec, frameworks)`, `register_claims(claims)`, `conformance_suite(claims)`: the suites'
  checks on a user's own layer geometries.
* `LayerSpec`, `Claim`, `Variant`: the terms claims are written in; `read_native` reads a live layer;
  `convert` moves one to another framework.
* `check_port(source, target | to=...)`: a whole model port, layer by layer, isolated and propagated, with
  the likely porting mistake (`PortResult`; `.raise_for_status()` raises `PortError`); `convert_model`
  ports a model to another framework, `read_model` reads one into a `ModelGraph` (`UnsupportedModel`
  names what it cannot read and where).

The package's parts: `layer_conformance.adapters` (frameworks behind one protocol, the float64
reference), `layer_conformance.suites` (claims, strategies, bounds, checks), `layer_conformance.reports`
(reports, the gate), `layer_conformance.cli` (the command line, one module per command) and
`layer_conformance.plugin` (the pytest plugin). Importing
this package imports no framework; the names below load on first use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "assert_conforms": "layer_conformance.suites.conforms",
    "ConformanceError": "layer_conformance.suites.conforms",
    "ConformsResult": "layer_conformance.suites.conforms",
    "bound_ratio": "layer_conformance.reports.explain",
    "Explanation": "layer_conformance.reports.explain",
    "layer_claim": "layer_conformance.suites.user_claims",
    "register_claims": "layer_conformance.suites.user_claims",
    "conformance_suite": "layer_conformance.suites.user_suite",
    "Claim": "layer_conformance.suites.catalog",
    "Variant": "layer_conformance.suites.catalog",
    "CatalogError": "layer_conformance.suites.catalog",
    "LayerSpec": "layer_conformance.adapters.spec",
    "SpecError": "layer_conformance.adapters.spec",
    "read_native": "layer_conformance.adapters.native",
    "convert": "layer_conformance.adapters",
    "check_port": "layer_conformance.suites.port.check",
    "PortResult": "layer_conformance.suites.port.check",
    "PortError": "layer_conformance.suites.port.check",
    "convert_model": "layer_conformance.adapters.models",
    "read_model": "layer_conformance.adapters.models",
    "ModelGraph": "layer_conformance.adapters.graph",
    "UnsupportedModel": "layer_conformance.adapters.graph",
}
__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from layer_conformance.adapters import convert
    from layer_conformance.adapters.graph import ModelGraph, UnsupportedModel
    from layer_conformance.adapters.models import convert_model, read_model
    from layer_conformance.adapters.native import read_native
    from layer_conformance.adapters.spec import LayerSpec, SpecError
    from layer_conformance.reports.explain import Explanation, bound_ratio
    from layer_conformance.suites.catalog import CatalogError, Claim, Variant
    from layer_conformance.suites.conforms import ConformanceError, ConformsResult, assert_conforms
    from layer_conformance.suites.port.check import PortError, PortResult, check_port
    from layer_conformance.suites.user_claims import layer_claim, register_claims
    from layer_conformance.suites.user_suite import conformance_suite


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'layer_conformance' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
