"""Catalog validation of `checks` and `data_styles`: a misspelt name is refused at import, naming it."""
from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

import pytest

from layer_conformance.suites.catalog import CHECKS, CLAIMS, CLAIMS_BY_ID, CatalogError, Claim, validate as _validate
from layer_conformance.suites.strategies import STYLES

SUITES = Path(__file__).resolve().parent.parent / "suites"


def _row(**changes: object) -> Claim:
    """A copy of a real row under an id the catalog does not hold yet, with `changes` applied."""
    return dataclasses.replace(CLAIMS_BY_ID["xfw-dense"], id="new-row", **changes)


@pytest.mark.parametrize("changes, message", [
    ({"checks": ("forward", "gradiant")}, r"claim new-row: unknown checks 'gradiant'; known checks: forward, gradient"),
    ({"checks": ("speed", "fwd", "dept")}, r"unknown checks 'fwd', 'dept'; known checks: .*depth"),
    ({"checks": "forward"}, r"`checks` must be a tuple of names, not 'forward'; write checks=\('forward',\)"),
    ({"checks": ()}, r"empty `checks` runs nothing"),
    ({"data_styles": ("normal", "gaussian")}, r"unknown data_styles 'gaussian'; known data_styles: normal, uniform"),
    ({"data_styles": "normal"}, r"`data_styles` must be a tuple of names"),
    ({"data_styles": ()}, r"empty `data_styles` runs nothing; .* \(or None for all\)"),
])
def test_unknown_or_malformed_names_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        _validate(_row(**changes))


def test_known_names_pass() -> None:
    _validate(_row(checks=("forward", "depth"), data_styles=("normal",)))
    _validate(_row(data_styles=None))  # None: every style
    assert set(CHECKS) >= {name for claim in CLAIMS for name in claim.checks}
    assert set(STYLES) >= {name for claim in CLAIMS for name in claim.data_styles or ()}


def test_checks_are_the_suites_checks() -> None:
    """CHECKS names exactly the checks that suites/test_*.py functions declare (default: forward)."""
    declared = set()
    for path in sorted(SUITES.glob("test_*.py")):
        module = importlib.import_module(f"layer_conformance.suites.{path.stem}")
        declared |= {getattr(fn, "check", "forward") for name, fn in vars(module).items()
                     if name.startswith("test_") and callable(fn) and "runner" in fn.__code__.co_varnames}
    assert declared == set(CHECKS), f"suites declare {sorted(declared)}, catalog.CHECKS has {sorted(CHECKS)}"
