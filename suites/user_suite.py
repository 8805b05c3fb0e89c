"""`conformance_suite(claims)`: the built-in checks as a test class for a user's own test file.

    from layer_conformance import LayerSpec, conformance_suite, layer_claim

    TestMyLayers = conformance_suite([layer_claim(LayerSpec.conv(64, 128, 5, padding="same"),
                                                  ("torch", "flax.linen"), id="encoder-conv")])

Each method is a check of the suites (forward, gradient, batch, depth, params, init, speed), run with
the very functions the built-in suites run, over the claims x the dtypes and devices selected by the
`--conformance-*` options; the plugin parametrizes them and records them into `--conformance-report`.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Iterable, Sequence

from layer_conformance.suites.catalog import CHECKS, CatalogError, Claim
from layer_conformance.suites.user_claims import check_claims

# check -> (suite module, function) of the built-in suites
SUITE_FUNCTIONS = {"forward": ("test_forward", "test_forward"), "params": ("test_forward", "test_params"),
                   "gradient": ("test_gradient", "test_gradient"), "batch": ("test_batch", "test_batch"),
                   "depth": ("test_depth", "test_depth"), "init": ("test_init", "test_init"),
                   "speed": ("test_speed", "test_speed")}
_NARROWING = ("relation", "dtypes", "devices")


def _check_method(check: str, claims: tuple[Claim, ...]) -> Callable[..., None]:
    from hypothesis import HealthCheck, given, settings, strategies as st

    module, name = SUITE_FUNCTIONS[check]
    suite_function = getattr(importlib.import_module(f"layer_conformance.suites.{module}"), name)
    inner = getattr(getattr(suite_function, "hypothesis", None), "inner_test", None)
    if inner is None:  # params, init, speed: no drawing
        def method(self: Any, conformance_runner: Any) -> None:
            __tracebackhide__ = True
            suite_function(runner=conformance_runner)
    else:
        # the suites' own @given body, under the settings the suites run with (profiles in layer_conformance.plugin):
        # no deadline (first calls compile) and a function-scoped runner; examples from the active profile
        examples = settings().max_examples
        if check == "depth":
            from layer_conformance.suites.depth import depth_examples

            examples = depth_examples(examples)

        @settings(deadline=None, max_examples=examples,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                         HealthCheck.data_too_large])
        @given(data=st.data())
        def method(self: Any, conformance_runner: Any, data: Any) -> None:
            __tracebackhide__ = True
            inner(runner=conformance_runner, data=data)

    method.__name__ = method.__qualname__ = f"test_{check}"
    method.__doc__ = f"The suites' {check} check of this suite's claims."
    for attribute in _NARROWING:
        if hasattr(suite_function, attribute):
            setattr(method, attribute, getattr(suite_function, attribute))
    method.check = check  # type: ignore[attr-defined]
    method.claims = claims  # type: ignore[attr-defined]
    return method


def conformance_suite(claims: Iterable[Claim], checks: Sequence[str] | None = None,
                      name: str = "TestConformance") -> type:
    """A test class (assign it to a name that starts with `Test`) running `checks` (default: every check the
    claims have) on `claims`.

    The claims are validated like the catalog's; an error names the claim and the fix."""
    checked = tuple(check_claims(list(claims), "conformance_suite"))
    if not checked:
        raise CatalogError("conformance_suite: no claims given; pass a list of layer_claim(...) claims")
    # default: every check some claim asks for (a convolution has no depth check)
    wanted = tuple(c for c in CHECKS if any(c in claim.checks for claim in checked)) if checks is None else tuple(checks)
    unknown = [check for check in wanted if check not in SUITE_FUNCTIONS]
    if unknown:
        raise CatalogError(f"conformance_suite: unknown checks {unknown}; choose from {', '.join(SUITE_FUNCTIONS)}")
    methods = {f"test_{check}": _check_method(check, checked) for check in wanted}
    return type(name, (), {"__doc__": f"layer-conformance checks of {', '.join(c.id for c in checked)}", **methods})
