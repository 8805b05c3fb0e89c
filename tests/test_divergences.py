"""Self-tests of documented divergences: version scope, ceilings, asserted exceptions, known-crash re-checks.

Divergences are planted (a copy of a real one pointed at torch, whose layers a fault then changes) and
installed versions are planted too, so every test runs on any machine with torch and shows its
check failing where it must.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from layer_conformance import adapters
import layer_conformance.suites.divergences as divergences
from layer_conformance.adapters import get_adapter
from layer_conformance.adapters.spec import LayerSpec, numpy_dtype
from layer_conformance.suites.bounds import error_bound
from layer_conformance.suites.catalog import CLAIMS_BY_ID
from layer_conformance.suites.divergences import Ceiling, Divergence, Raises, by_id
from layer_conformance.suites.harness import Case, ClaimRunner, evaluate_example
from layer_conformance.suites.known_crashes import KnownCrash, Recheck, recheck, torch_bf16_onednn_crash
from layer_conformance.mutation.planting import FaultyAdapter

ROOT = Path(__file__).resolve().parent.parent
OBSERVED = {"torch": "2.13.0+cpu", "keras": "3.15.1", "tensorflow": "2.21.0"}


@pytest.fixture
def versions(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """versions(torch="2.14.0"): the installed versions divergences see (the rest as observed)."""
    def plant(**changed: str) -> None:
        table = {**OBSERVED, **changed}
        monkeypatch.setattr(divergences, "installed_version", table.get)
    plant()
    return plant


@pytest.fixture
def plant_divergence(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Divergence]:
    """plant_divergence(base_id, **changes): the only divergence, a copy of a real one applied to torch Linear."""
    def plant(base_id: str, **changes: Any) -> Divergence:
        planted = dataclasses.replace(by_id(base_id), framework="torch", applies=_torch_linear, **changes)
        monkeypatch.setattr(divergences, "DIVERGENCES", (planted,))
        return planted
    return plant


@pytest.fixture
def plant_fault(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    def plant(fault: Callable | None = None, vjp_fault: Callable | None = None) -> None:
        inner = get_adapter("torch")
        if inner.available():
            pytest.skip(inner.available())
        faulty = FaultyAdapter(inner, fault or (lambda layer, y: y), vjp_fault=vjp_fault)
        monkeypatch.setitem(adapters._CACHE, "torch", faulty)
    return plant


def _torch_linear(spec: LayerSpec, dtype: str, backend: str | None, shape: tuple[int, ...]) -> bool:
    return spec.kind == "dense"


def run_claim(dtype: str, check: str = "forward", examples: int = 10) -> dict[str, Any]:
    """torch Linear against torch Conv1d(k=1), the torch variants only; the record, or AssertionError."""
    record: dict[str, Any] = {}
    runner = ClaimRunner(Case(CLAIMS_BY_ID["torch-linear-conv1d-k1"], dtype, "cpu"), record, check=check,
                         frameworks={"torch"})

    @settings(max_examples=examples, database=None, derandomize=True, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check_all(data: st.DataObject) -> None:
        getattr(runner, f"{check}_example")(data)

    check_all()
    return record


def _linear_rounded_through(dtype: str) -> Callable[[Any, np.ndarray], np.ndarray]:
    """A fault: the Linear layer's output rounded through `dtype` (the Conv1d is left right)."""
    return lambda layer, y: y.astype(dtype).astype(y.dtype) if layer.spec.kind == "dense" else y


def _is_linear(weight_gradients: dict[str, np.ndarray]) -> bool:
    """A VJP fault sees no layer: the Linear's kernel is (in, out), the Conv1d's (k, in, out)."""
    return weight_gradients["kernel"].ndim == 2


def _entry(record: dict[str, Any]) -> dict[str, Any]:
    (entry,) = [e for label, e in record["divergences"].items() if label.startswith("torch.Linear")]
    return entry


# ---- version scope --------------------------------------------------------------------------------
def test_version_scope_follows_the_specifiers(versions):
    matmul = by_id("keras-torch-float64-matmul")
    assert divergences.in_scope(matmul), "torch 2.13.0+cpu must match '==2.13.0' (a local version label)"
    versions(keras="3.16.0")
    assert not divergences.in_scope(matmul), "keras 3.16.0 is outside '==3.15.1'"
    versions(keras=None)
    assert not divergences.in_scope(matmul), "a package that is not installed is outside every scope"
    ranged = dataclasses.replace(matmul, versions={"torch": ">=2.12,<2.14"})
    versions(torch="2.12.1")
    assert divergences.in_scope(ranged)


def test_out_of_scope_divergence_is_judged_normally(versions, plant_divergence, plant_fault):
    """The same float32-rounded Linear: within the divergence's ceiling on torch 2.13.0, a failure on 2.14.0."""
    plant_divergence("keras-torch-float64-matmul")
    plant_fault(_linear_rounded_through("float32"))
    entry = _entry(run_claim("float64"))
    assert entry["observed"] and entry["within_ceiling"], entry
    versions(torch="2.14.0")
    with pytest.raises(AssertionError, match=r"torch\.Linear exceeds the error bound"):
        run_claim("float64")


# ---- ceilings ---------------------------------------------------------------------------------------
def test_float64_matmul_ceiling_is_the_float32_bound():
    """An error of 0.9x the float32 bound is allowed, 1.1x is not (and 1.1x the float64 bound is no measure)."""
    ceiling = by_id("keras-torch-float64-matmul").ceiling
    magnitude, reference = np.array([3.0, 0.5]), np.array([1.0, -0.25])
    bound = error_bound(8, magnitude, ceiling.bound_dtype("float64"))
    assert np.allclose(bound, error_bound(8, magnitude, "float32")), "the ceiling must use u = 2^-24"
    assert ceiling.judge(reference + 0.9 * bound, reference, bound)[1] <= 1.0
    assert ceiling.judge(reference + 1.1 * bound, reference, bound)[1] > 1.0


def test_float64_matmul_ceiling_fails_an_error_beyond_the_float32_bound(versions, plant_divergence, plant_fault):
    plant_divergence("keras-torch-float64-matmul")
    plant_fault(_linear_rounded_through("float16"))
    with pytest.raises(AssertionError, match="exceeds the ceiling of documented divergence "
                                             "keras-torch-float64-matmul .the float32 bound"):
        run_claim("float64")


def test_float64_matmul_ceiling_holds_in_gradient_and_depth(versions, plant_divergence, plant_fault):
    plant_divergence("keras-torch-float64-matmul", checks=("gradient", "depth"))
    plant_fault(_linear_rounded_through("float16"),
                vjp_fault=lambda dx, dw: (dx.astype("float16").astype(dx.dtype) if _is_linear(dw) else dx, dw))
    for check in ("gradient", "depth"):
        with pytest.raises(AssertionError, match="exceeds the ceiling"):
            run_claim("float64", check)


def test_nan_exemption_does_not_exempt_finite_values():
    ceiling = by_id("tf-bf16-conv-backprop-filter-nan").ceiling
    reference, bound = np.array([1.0, 2.0, 3.0]), np.full(3, 1e-3)
    assert ceiling.judge(np.array([np.nan, 2.0, 3.0]), reference, bound)[1] == 0.0, "NaN is what it exempts"
    assert ceiling.judge(np.array([np.nan, 2.0, 3.002]), reference, bound)[1] > 1.0, "a finite value beyond the bound"
    assert ceiling.judge(np.array([np.inf, 2.0, 3.0]), reference, bound)[1] > 1.0, "inf is not NaN"


def test_nan_exemption_in_the_gradient_check(versions, plant_divergence, plant_fault):
    """The kernel gradient of torch Linear: NaN passes under the divergence, NaN plus a finite error fails."""
    plant_divergence("tf-bf16-conv-backprop-filter-nan", versions={"torch": "==2.13.0"})

    def nan_kernel(off: float) -> Callable:
        def fault(dx: np.ndarray, dw: dict[str, np.ndarray]) -> tuple:
            if not _is_linear(dw):
                return dx, dw
            kernel = dw["kernel"].copy()
            kernel.flat[0], kernel.flat[-1] = np.nan, kernel.flat[-1] * (1 + off) + off
            return dx, {**dw, "kernel": kernel}
        return fault

    plant_fault(vjp_fault=nan_kernel(0.0))
    entry = _entry(run_claim("float32", "gradient", examples=5))
    assert entry["observed"] and entry["within_ceiling"], entry
    plant_fault(vjp_fault=nan_kernel(1e-2))
    with pytest.raises(AssertionError, match="torch.Linear dkernel exceeds the ceiling of documented divergence "
                                             "tf-bf16-conv-backprop-filter-nan"):
        run_claim("float32", "gradient", examples=5)


# ---- exception divergences -------------------------------------------------------------------------
PLANTED_EXCEPTION = Divergence(
    id="planted-exception", framework="torch", applies=_torch_linear, summary="planted", evidence="planted",
    versions={"torch": "==2.13.0"}, kind="exception", raises=Raises(RuntimeError, r"planted: grad_weight refused"),
    ceiling=Ceiling("raises RuntimeError 'planted: grad_weight refused'"), checks=("gradient",),
    gradients=("input", "kernel", "bias"))


def _raising(message: str) -> Callable:
    def fault(dx: np.ndarray, dw: dict[str, np.ndarray]) -> tuple:
        if _is_linear(dw):
            raise RuntimeError(message)
        return dx, dw
    return fault


def test_exception_divergence_is_asserted(versions, monkeypatch, plant_fault):
    monkeypatch.setattr(divergences, "DIVERGENCES", (PLANTED_EXCEPTION,))
    plant_fault(vjp_fault=_raising("planted: grad_weight refused"))
    entry = _entry(run_claim("float32", "gradient", examples=3))
    assert entry["observed"] and entry["within_ceiling"] and entry["raised"] == entry["examples"] >= 1, entry


def test_exception_divergence_that_stops_raising_is_reported(versions, monkeypatch, plant_fault):
    monkeypatch.setattr(divergences, "DIVERGENCES", (PLANTED_EXCEPTION,))
    plant_fault()
    with pytest.raises(AssertionError, match=r"planted-exception no longer raises: the divergence is fixed in "
                                             r"torch 2\.13\.0\+cpu, remove or re-scope it"):
        run_claim("float32", "gradient", examples=3)
    plant_fault(vjp_fault=_raising("grad_weight must be contiguous"))
    with pytest.raises(AssertionError, match="raises a different error than documented divergence planted-exception"):
        run_claim("float32", "gradient", examples=3)


def test_stopped_exception_shows_in_the_report_section(versions, monkeypatch):
    monkeypatch.setattr(divergences, "DIVERGENCES", (PLANTED_EXCEPTION,))
    row = {"divergences": {"torch.Linear": {"id": "planted-exception", "observed": False, "within_ceiling": False}}}
    (entry,) = divergences.report_entries([row, {"divergences": {}}], {})
    assert entry["observed"] is False and entry["exceeded_ceiling"] is True and entry["results"] == 1, entry
    (unexercised,) = divergences.report_entries([], {})
    assert unexercised["observed"] is None and unexercised["exceeded_ceiling"] is False


def test_report_section_fields_for_the_gate(versions):
    rows = [{"divergences": {"keras.Dense": {"id": "keras-torch-float64-matmul", "observed": True,
                                             "within_ceiling": True}}}]
    rechecks = {"torch-bf16-onednn-padding-only-segfault": "crashes (SIGSEGV)",
                "tf-float64-grouped-dilated-conv-grad-abort": "no crash"}
    entries = {e["id"]: e for e in divergences.report_entries(rows, rechecks)}
    assert set(entries) == {d.id for d in divergences.DIVERGENCES}
    fields = {"id", "framework", "versions", "in_scope", "kind", "summary", "evidence", "ceiling", "observed",
              "exceeded_ceiling"}
    assert all(fields <= set(e) for e in entries.values())
    assert entries["keras-torch-float64-matmul"]["observed"] is True
    assert entries["keras-torch-float64-matmul"]["versions"] == {"keras": "==3.15.1", "torch": "==2.13.0"}
    assert entries["torch-bf16-onednn-padding-only-segfault"]["observed"] is True
    assert entries["tf-float64-grouped-dilated-conv-grad-abort"]["observed"] is False
    assert entries["tf-bf16-conv-backprop-filter-nan"]["observed"] is None
    assert {e["kind"] for e in entries.values()} == {"numeric", "exception", "crash"}


# ---- the torch bf16 oneDNN crash -----------------------------------------------------------------------
@pytest.mark.parametrize("spec, shape, dtype, expected", [
    (LayerSpec.conv(3, 12, 1, strides=2, padding=((1, 1),), dilation=2, bias=False), (2, 1, 3), "bfloat16", True),
    (LayerSpec.conv(3, 12, (1, 1), strides=(1, 2), padding=((0, 0), (1, 1)), dilation=(1, 2)), (2, 2, 1, 3),
     "bfloat16", True),  # the Conv2d
    (LayerSpec.conv(3, 12, 1, strides=2, padding=((1, 1),), dilation=2), (2, 1, 3), "float32", False),
    (LayerSpec.conv(3, 12, 1, strides=2, padding=((1, 1),), dilation=1), (2, 1, 3), "bfloat16", False),
    (LayerSpec.conv(3, 12, 1, strides=2, padding=((1, 2),), dilation=2), (2, 1, 3), "bfloat16", False),  # F.pad
    (LayerSpec.conv(3, 12, 1, strides=2, padding=((1, 1),), dilation=2), (2, 3, 3), "bfloat16", False),  # reads x
    (LayerSpec.conv(3, 12, 1, strides=3, padding=((1, 1),), dilation=2), (2, 1, 3), "bfloat16", False),  # one output
    (LayerSpec.conv(1, 12, 1, strides=2, padding=((1, 1),), dilation=2), (2, 1, 1), "bfloat16", False),  # contiguous
])
def test_torch_crash_rule(spec, shape, dtype, expected):
    assert torch_bf16_onednn_crash(spec, dtype, shape) is expected, (spec.describe(), shape, dtype)


def test_torch_crash_variant_is_not_run_in_scope(versions, monkeypatch):
    """In scope the torch variant is skipped with the reason (it never reaches torch); out of scope it runs."""
    inner = get_adapter("torch")
    if inner.available():
        pytest.skip(inner.available())

    def refuse(spec: LayerSpec, weights: dict) -> dict:
        raise RuntimeError("the torch layer was built")  # before torch's conv: this test never segfaults

    monkeypatch.setitem(adapters._CACHE, "torch", FaultyAdapter(inner, lambda layer, y: y, weights_fault=refuse))
    claim = CLAIMS_BY_ID["xfw-conv1d"]
    spec = LayerSpec.conv(3, 12, 1, strides=2, padding=((1, 1),), dilation=2, bias=False)
    dims = {"spec": spec, "shape": (2, 1, 3)}
    x = np.zeros((2, 1, 3), numpy_dtype("bfloat16"))
    weights = {"kernel": np.ones(spec.kernel_shape(), numpy_dtype("bfloat16"))}
    torch_only = [v for v in claim.variants if v.framework == "torch"]
    outcome = evaluate_example(Case(claim, "bfloat16", "cpu"), dims, x, weights, torch_only)
    (reason,) = outcome.skipped.values()
    assert "torch-bf16-onednn-padding-only-segfault" in reason
    versions(torch="2.14.0")
    with pytest.raises(RuntimeError, match="the torch layer was built"):
        evaluate_example(Case(claim, "bfloat16", "cpu"), dims, x, weights, torch_only)


# ---- re-checks in child processes -----------------------------------------------------------------------
def _crash(script: str, packages: tuple[str, ...] = ("numpy",)) -> KnownCrash:
    return KnownCrash("planted", packages, script)


@pytest.mark.parametrize("script, expected", [
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "crashes (SIGSEGV)"),
    ("import os; os.abort()", "crashes (SIGABRT)"),
    ("x = 1", "no crash"),
])
def test_recheck_reports_what_the_child_did(script, expected):
    assert recheck(_crash(script), timeout=60) == expected


def test_recheck_names_what_it_could_not_check():
    assert recheck(_crash("x = 1", ("no-such-package-xyz",))) == "not checked: no-such-package-xyz not installed"
    assert recheck(_crash("import time; time.sleep(5)"), timeout=0.5).startswith("timed out")
    assert recheck(_crash("raise SystemExit(3)")).startswith("not checked: the script failed with exit status 3")


def test_recheck_runs_in_the_background_and_reports_unfinished_ones():
    slow = KnownCrash("slow", ("numpy",), "import time; time.sleep(3)")
    recheck_ = Recheck([_crash("import os; os.abort()"), slow], timeout=60).start()
    assert recheck_.results(wait=0.0)["slow"] == "timed out (the run ended first)"


def test_the_known_crash_scripts_name_installed_packages():
    """Each crash divergence has a script; its re-check asks for the packages its versions name."""
    crashes = {c.divergence: c for c in divergences.known_crashes()}
    assert set(crashes) == {d.id for d in divergences.DIVERGENCES if d.kind == "crash"}
    assert crashes["torch-bf16-onednn-padding-only-segfault"].packages == ("torch",)


def test_a_run_reports_divergences_and_rechecks(tmp_path):
    """End to end: pytest with a report; planted crash scripts re-checked in the controller's background."""
    driver = (
        "import sys, pytest, layer_conformance.suites.divergences as d\n"
        "from layer_conformance.suites.known_crashes import KnownCrash\n"
        "d.known_crashes = lambda: [KnownCrash('torch-bf16-onednn-padding-only-segfault', ('numpy',),\n"
        "    'import os, signal; os.kill(os.getpid(), signal.SIGSEGV)'),\n"
        "    KnownCrash('tf-float64-grouped-dilated-conv-grad-abort', ('numpy',), 'x = 1')]\n"
        "sys.exit(pytest.main(sys.argv[1:]))\n")
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-c", driver, "suites/test_refusals.py", "-k", "torch", "-q",
                           "-p", "no:xdist", f"--conformance-report={report}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "CONFORMANCE_CRASH_RECHECK": "on"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    entries = {e["id"]: e for e in json.loads(report.read_text())["divergences"]}
    assert entries["torch-bf16-onednn-padding-only-segfault"]["recheck"] == "crashes (SIGSEGV)"
    assert entries["tf-float64-grouped-dilated-conv-grad-abort"]["recheck"] == "no crash"
    assert entries["keras-torch-float64-matmul"]["observed"] is None  # no row exercised it


def test_report_md_and_html_list_every_divergence(versions):
    from layer_conformance.reports.html import render_html
    from layer_conformance.reports.markdown import render_markdown

    rechecks = {"torch-bf16-onednn-padding-only-segfault": "crashes (SIGSEGV)"}
    report = {"schema": "layer-conformance/report/v1", "complete": True, "results": [], "claims": {},
              "divergences": divergences.report_entries([], rechecks)}
    for page in (render_markdown(report), render_html(report)):
        for divergence in divergences.DIVERGENCES:
            assert divergence.id in page, f"{divergence.id} missing from the page"
        assert "crashes (SIGSEGV)" in page and "torch ==2.13.0" in page and "not exercised" in page
        assert "exits -11, 3 of 3 runs" in page, "the evidence must be on the page"


@pytest.mark.parametrize("changes, message", [
    ({"versions": {}}, "name the versions it was observed in"),
    ({"versions": {"torch": "2.13"}}, "is not a version specifier"),
    ({"kind": "exception"}, "give `raises` exactly when kind is 'exception'"),
    ({"ceiling": Ceiling("x", dtype="float8")}, "has no unit roundoff"),
])
def test_malformed_divergences_are_rejected(changes, message):
    bad = dataclasses.replace(by_id("keras-torch-float64-matmul"), **changes)
    with pytest.raises(ValueError, match=message):
        divergences._validate((bad,))


# ---- bfloat16 backward-weights NaN (torch and Keras on torch) ---------------------------------------------
def test_bf16_backward_weights_nan_rule(versions, monkeypatch):
    """A strided axis of input length 1, bfloat16 compute, the kernel gradient only; the gravest kind wins."""
    conv = LayerSpec.conv(8, 16, (5,), strides=(2,), padding=((2, 2),))
    match = divergences.divergence_for
    found = match("torch", conv, "bfloat16", "gradient", (1, 1, 8), gradient="kernel")
    assert found and found.id == "torch-bf16-conv-backward-weights-nan" and found.ceiling.exempt_unread
    assert match("torch", conv, "mixed_bfloat16", "gradient", (3, 1, 8), gradient="kernel") is found
    assert match("torch", conv, "bfloat16", "gradient", (1, 2, 8), gradient="kernel") is None  # length 2
    assert match("torch", conv.with_(strides=(1,)), "bfloat16", "gradient", (1, 1, 8), gradient="kernel") is None
    assert match("torch", conv, "float32", "gradient", (1, 1, 8), gradient="kernel") is None
    assert match("torch", conv, "bfloat16", "gradient", (1, 1, 8), gradient="input") is None
    assert match("torch", conv, "bfloat16", "forward", (1, 1, 8)) is None
    monkeypatch.setattr(divergences, "keras_backend", lambda: "torch")
    assert match("keras", conv, "mixed_bfloat16", "gradient", (1, 1, 8), gradient="kernel").id == \
        "keras-torch-bf16-conv-backward-weights-nan"
    versions(torch="2.14.0")
    assert match("torch", conv, "bfloat16", "gradient", (1, 1, 8), gradient="kernel") is None  # out of scope


def test_a_crash_divergence_wins_over_a_numeric_one(versions):
    """The padding-only crash geometry in bfloat16 also has a strided length-1 axis: it is not run, whatever order
    the divergences are listed in."""
    crash = LayerSpec.conv(3, 12, (1,), strides=(2,), padding=((1, 1),), dilation=(2,))
    for order in (divergences.DIVERGENCES, tuple(reversed(divergences.DIVERGENCES))):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(divergences, "DIVERGENCES", order)
            found = divergences.divergence_for("torch", crash, "bfloat16", "gradient", (2, 1, 3), gradient="kernel")
            assert found.kind == "crash", found.id


def test_bf16_backward_weights_nans_stay_inside_the_rule(versions):
    """torch alone: NaN in bfloat16 kernel gradients only where a strided axis has length 1 (96 Conv1d geometries,
    bfloat16 and autocast, contiguous and channels-last, 10 runs each). Outside its versions, nothing to re-check."""
    torch = pytest.importorskip("torch")
    if not divergences.in_scope(by_id("torch-bf16-conv-backward-weights-nan")):
        pytest.skip("torch-bf16-conv-backward-weights-nan is scoped to torch 2.13.0")
    torch.manual_seed(0)
    outside = []
    for k, padding, length, channels_last, autocast, batch in itertools.product(
            (3, 5), (0, 2), (1, 2, 3), (False, True), (False, True), (1, 3)):
        if length + 2 * padding < k:
            continue
        conv = torch.nn.Conv1d(8, 16, k, stride=2, padding=padding)
        if not autocast:
            conv = conv.to(torch.bfloat16)
        spec = LayerSpec.conv(8, 16, (k,), strides=(2,), padding=((padding, padding),))
        for _ in range(10):
            x = torch.randn(batch, length, 8, dtype=torch.float32 if autocast else torch.bfloat16).permute(0, 2, 1)
            x = (x if channels_last else x.contiguous()).requires_grad_(True)
            conv.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
                y = conv(x)
            y.backward(torch.randn_like(y))
            ruled = divergences.divergence_for("torch", spec, "mixed_bfloat16" if autocast else "bfloat16",
                                               "gradient", (batch, length, 8), gradient="kernel")
            if torch.isnan(conv.weight.grad).any() and ruled is None:
                outside.append((k, padding, length, channels_last, autocast, batch))
    assert not outside, f"NaN kernel gradients outside the documented rule: {outside}"


def test_unread_exemption_covers_only_elements_no_product_reaches():
    """The torch bfloat16 ceiling: any value where the reference's magnitude is 0 (taps that read only padding),
    the normal bound everywhere else; without the magnitude nothing is exempt that way."""
    ceiling = by_id("torch-bf16-conv-backward-weights-nan").ceiling
    reference, bound, magnitude = np.array([0.0, 2.0, 3.0]), np.full(3, 1e-3), np.array([0.0, 2.5, 3.5])
    assert ceiling.judge(np.array([-0.477, 2.0, 3.0]), reference, bound, magnitude)[1] == 0.0
    assert ceiling.judge(np.array([np.nan, 2.0, 3.0]), reference, bound, magnitude)[1] == 0.0
    assert ceiling.judge(np.array([0.0, np.nan, 3.0]), reference, bound, magnitude)[1] > 1.0, "a read element"
    assert ceiling.judge(np.array([0.0, 2.0, 3.002]), reference, bound, magnitude)[1] > 1.0
    assert ceiling.judge(np.array([-0.477, 2.0, 3.0]), reference, bound)[1] > 1.0
