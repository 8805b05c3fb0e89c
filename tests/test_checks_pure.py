"""The checks are pure functions: called without pytest or hypothesis, each returns its outcome.

A planted fault shows up as failures in the outcome, never as a raised AssertionError or a skip: raising,
skipping, the books and saved counterexamples are the runner's (suites/harness.py). Nothing in
suites/checks imports pytest.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from layer_conformance import adapters
from layer_conformance.adapters import get_adapter
from layer_conformance.mutation.planting import FaultyAdapter
from layer_conformance.suites.catalog import CLAIMS_BY_ID
from layer_conformance.suites.checks.batch import check_batch
from layer_conformance.suites.checks.depth import check_depth
from layer_conformance.suites.checks.forward import evaluate_example
from layer_conformance.suites.checks.gradient import check_gradient
from layer_conformance.suites.checks.init import check_init
from layer_conformance.suites.checks.params import check_params
from layer_conformance.suites.depth import stackable
from layer_conformance.suites.outcomes import Case, CheckOutcome, ExampleOutcome
from layer_conformance.suites.strategies import random_array

CHECKS = Path(__file__).resolve().parents[1] / "suites" / "checks"
CLAIM = CLAIMS_BY_ID["xfw-dense"]
CASE = Case(CLAIM, "float32", "cpu")


@pytest.fixture
def torch_variants() -> list[Any]:
    if get_adapter("torch").available():
        pytest.skip(get_adapter("torch").available())
    return [v for v in CLAIM.variants if v.framework == "torch"]


@pytest.fixture
def plant(monkeypatch) -> Callable[..., None]:
    def plant(adapter: Any) -> None:
        monkeypatch.setitem(adapters._CACHE, "torch", adapter)
    return plant


def _example(seed: int = 5) -> tuple[dict, np.ndarray, dict]:
    dims = CLAIM.example
    rng = np.random.default_rng(seed)
    base = CLAIM.variants[0].spec(dims)
    x = random_array(rng, CLAIM.input_shape(dims), "normal", "float32")
    weights = {"kernel": random_array(rng, base.kernel_shape(), "normal", "float32")}
    if base.bias:
        weights["bias"] = random_array(rng, (base.out_features,), "normal", "float32")
    return dims, x, weights


def _faulty(fault: Callable | None = None, vjp_fault: Callable | None = None) -> FaultyAdapter:
    return FaultyAdapter(get_adapter("torch"), fault or (lambda layer, y: y), vjp_fault=vjp_fault)


class _Delegating:
    """A real adapter; subclasses change one of its methods."""

    def __init__(self, inner: Any):
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _Refusing(_Delegating):
    def supports(self, spec: Any, dtype: str, device: str) -> str:
        return "planted refusal"


# ---- each check returns its outcome ----------------------------------------------------------------

def test_forward_check_judges_and_returns(torch_variants):
    dims, x, weights = _example()
    outcome = evaluate_example(CASE, dims, x, weights, torch_variants)
    assert isinstance(outcome, ExampleOutcome) and not outcome.failures and not outcome.skipped
    assert [v.label for v in outcome.variants] == ["torch.Linear"]
    assert all(0 < v.ratio <= 1 and v.not_judged is None for v in outcome.variants)
    assert 0 < outcome.worst[0] <= 1 and outcome.reduction_length == CLAIM.variants[0].spec(dims).reduction_length


def test_forward_check_returns_a_planted_fault_as_failures(torch_variants, plant):
    plant(_faulty(lambda layer, y: y + 1))
    dims, x, weights = _example()
    outcome = evaluate_example(CASE, dims, x, weights, torch_variants)  # no AssertionError: the runner raises
    assert outcome.failures and "torch.Linear exceeds the error bound" in outcome.failures[0]
    assert outcome.variants[0].failure == outcome.failures[0] and outcome.variants[0].ratio > 1


def test_gradient_check_judges_and_returns(torch_variants, plant):
    dims, x, weights = _example()
    outcome = check_gradient(CASE, dims, x, weights, 11, torch_variants)
    assert isinstance(outcome, CheckOutcome) and outcome.compared == ["torch.Linear"] and not outcome.failures
    assert {c.label for c in outcome.comparisons} == {"torch.Linear dinput", "torch.Linear dkernel", "torch.Linear dbias"}
    plant(_faulty(vjp_fault=lambda dx, dw: (dx * (1 + 1e-3), dw)))
    faulty = check_gradient(CASE, dims, x, weights, 11, torch_variants)
    assert faulty.failures and "torch.Linear dinput exceeds the error bound" in faulty.failures[0]
    assert faulty.message().startswith(faulty.failures[0])


def test_depth_check_judges_and_returns(torch_variants, plant):
    dims = stackable(CLAIM.example)
    outcome = check_depth(CASE, dims, 3, 2, torch_variants)
    assert outcome.compared == ["torch.Linear"] and not outcome.failures and outcome.what == "depth 3"
    assert len(outcome.depth_curve["torch.Linear"]) == 3 and len(outcome.comparisons) == 3
    plant(_faulty(lambda layer, y: y * np.asarray(1 + 1e-2, y.dtype)))
    faulty = check_depth(CASE, dims, 3, 2, torch_variants)
    assert faulty.failures and "exceeds the composed bound" in faulty.failures[0]


def test_batch_check_judges_and_returns(torch_variants, plant):
    dims, x, weights = _example()
    outcome = check_batch(CASE, dims, x, weights, torch_variants)
    assert outcome.compared == ["torch.Linear"] and not outcome.failures
    assert len(outcome.comparisons) == x.shape[0]  # every sample alone against the batch
    plant(_faulty(lambda layer, y: y * np.asarray(1 + 1e-3 * (y.shape[0] > 1), dtype=y.dtype)))
    faulty = check_batch(CASE, dims, x, weights, torch_variants)
    assert faulty.failures and "alone differs from the batched result" in faulty.failures[0]


@pytest.mark.parametrize("check", ["depth", "batch"])
def test_nothing_compared_is_returned_not_skipped(torch_variants, plant, check):
    plant(_Refusing(get_adapter("torch")))
    if check == "depth":
        outcome = check_depth(CASE, stackable(CLAIM.example), 2, 0, torch_variants)
    else:
        dims, x, weights = _example()
        outcome = check_batch(CASE, dims, x, weights, torch_variants)
    assert outcome.compared == [] and not outcome.comparisons and not outcome.failures
    assert outcome.skipped == outcome.not_compared == {"torch.Linear": "planted refusal"}


def test_params_check_counts_and_returns(torch_variants, plant):
    outcome = check_params(CASE, torch_variants)
    assert outcome.counts == {"torch.Linear": outcome.expected} and not outcome.wrong

    class ExtraParameter(_Delegating):
        def build(self, *args: Any) -> Any:
            layer = self.inner.build(*args)
            count = layer.param_count()
            layer.param_count = lambda: count + 1
            return layer

    plant(ExtraParameter(get_adapter("torch")))
    faulty = check_params(CASE, torch_variants)
    assert faulty.wrong == {"torch.Linear": outcome.expected + 1} and "parameter counts differ" in faulty.message()


def test_init_check_tests_and_returns(torch_variants, plant):
    outcome = check_init(CLAIM, torch_variants)
    assert not outcome.failures and set(outcome.results["torch.Linear"]) == {"kernel", "bias"}

    class Doubled(_Delegating):
        def default_weights(self, spec: Any, seed: int) -> Any:
            weights = dict(self.inner.default_weights(spec, seed))
            return {**weights, "kernel": np.asarray(weights["kernel"]) * 2}

    plant(Doubled(get_adapter("torch")))
    faulty = check_init(CLAIM, torch_variants)
    assert faulty.failures and faulty.failures[0].startswith("torch.Linear kernel: documented U(")


# ---- and know nothing of pytest --------------------------------------------------------------------

def test_no_check_module_imports_pytest_or_the_runner():
    """Not pytest, nor what raises, keeps the books, writes counterexamples or reports."""
    forbidden = ("pytest", "_pytest", "layer_conformance.suites.harness", "layer_conformance.suites.books",
                 "layer_conformance.suites.counterexamples", "layer_conformance.reports")
    modules = sorted(CHECKS.glob("*.py"))
    assert {m.stem for m in modules} >= {"forward", "gradient", "depth", "batch", "params", "init"}
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            bad = [n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden)]
            assert not bad, f"suites/checks/{module.name} imports {bad}"


def test_importing_the_checks_loads_no_pytest():
    code = ("import importlib, pkgutil, sys; import layer_conformance.suites.checks as checks\n"
            "for m in pkgutil.iter_modules(checks.__path__): importlib.import_module(f'{checks.__name__}.{m.name}')\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('pytest', '_pytest')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
