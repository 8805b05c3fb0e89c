"""--conformance-numerics default: the precision each framework really computes float32 in, read from its settings.

No GPU is needed: the frameworks' device queries are replaced by an Ampere GPU (compute capability 8.0), and
the settings are the frameworks' own flags, set as `strict` and as their defaults leave them.
"""
from __future__ import annotations

import pytest

from layer_conformance.adapters import precision
from layer_conformance.adapters.spec import LayerSpec
from layer_conformance.suites.bounds import DECLARED_ROUNDOFF

CONV = LayerSpec.conv(3, 4, (3, 3))
DENSE = LayerSpec.dense(8, 4)


@pytest.fixture
def ampere_torch(monkeypatch):
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32,
             torch.get_float32_matmul_precision())
    yield torch
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])


def test_torch_defaults_compute_float32_convolutions_in_tf32(ampere_torch):
    torch = ampere_torch
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, False  # torch's defaults
    torch.set_float32_matmul_precision("highest")
    assert precision.torch_declared(CONV, "float32", "gpu") == "tf32"
    assert precision.torch_declared(DENSE, "float32", "gpu") is None  # matmul TF32 is off by default
    assert precision.torch_declared(CONV, "float32", "cpu") is None
    assert precision.torch_declared(CONV, "float64", "gpu") is None and precision.torch_declared(CONV, "bfloat16", "gpu") is None
    torch.set_float32_matmul_precision("high")
    assert precision.torch_declared(DENSE, "float32", "gpu") == "tf32"
    torch.set_float32_matmul_precision("medium")
    assert precision.torch_declared(DENSE, "float32", "gpu") == "bf16-pass"


def test_torch_strict_is_float32(ampere_torch):
    from layer_conformance.adapters import get_adapter

    get_adapter("torch").set_numerics("strict")
    assert precision.torch_declared(CONV, "float32", "gpu") is None
    assert precision.torch_declared(DENSE, "float32", "gpu") is None
    assert get_adapter("torch").declared_roundoff(CONV, "float32", "gpu") is None


def test_torch_before_ampere_is_float32(ampere_torch, monkeypatch):
    ampere_torch.backends.cudnn.allow_tf32 = True
    monkeypatch.setattr(ampere_torch.cuda, "get_device_capability", lambda *a: (7, 5))
    assert precision.torch_declared(CONV, "float32", "gpu") is None


class _GPU:
    compute_capability = "8.0"


def test_jax_default_precision_is_tf32_on_ampere(monkeypatch):
    jax = pytest.importorskip("jax")
    monkeypatch.setattr(jax, "devices", lambda kind=None: [_GPU()])
    saved = jax.config.jax_default_matmul_precision
    try:
        jax.config.update("jax_default_matmul_precision", None)
        assert precision.jax_declared(CONV, "float32", "gpu") == "tf32"
        assert precision.jax_declared(CONV, "float32", "cpu") is None
        jax.config.update("jax_default_matmul_precision", "highest")  # what strict sets
        assert precision.jax_declared(CONV, "float32", "gpu") is None
    finally:
        jax.config.update("jax_default_matmul_precision", saved)


def test_every_declared_mode_has_a_roundoff():
    assert {"tf32", "bf16-pass"} <= set(DECLARED_ROUNDOFF)
    assert DECLARED_ROUNDOFF["tf32"] == 2.0 ** -11 and DECLARED_ROUNDOFF["bf16-pass"] == 2.0 ** -8


# ---- the checks judge a variant under its framework's declared mode ----------------------------------------
def tf32(array):
    """Float32 values rounded to TF32's 10 explicit mantissa bits (round to nearest)."""
    import numpy as np

    bits = np.ascontiguousarray(array, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def _plant_tf32(monkeypatch, mode: str | None, relative_error: float = 0.0):
    """torch's layers compute float32 as TF32 does (operands rounded to TF32, float32 sums), and the adapter
    declares `mode` (None: as under strict numerics); `relative_error`: every output is also that far off."""
    from layer_conformance import adapters
    from layer_conformance.adapters import get_adapter
    from layer_conformance.mutation.planting import FaultyAdapter

    inner = get_adapter("torch")
    if inner.available():
        pytest.skip(inner.available())

    class TF32(FaultyAdapter):
        def declared_roundoff(self, spec, dtype, device):
            return mode if dtype == "float32" else None

        def _build(self, spec, weights, dtype, device):
            layer = super()._build(spec, weights, dtype, device)
            original = layer._forward
            layer._forward = lambda x: original(tf32(x) if dtype == "float32" else x)
            return layer

    rounded = lambda spec, w: {k: tf32(v) for k, v in w.items()}  # noqa: E731
    skewed = lambda layer, y: y * (1 + relative_error) if relative_error else y  # noqa: E731
    monkeypatch.setitem(adapters._CACHE, "torch", TF32(inner, skewed, weights_fault=rounded))


def _forward_record(examples: int = 40) -> dict:
    from hypothesis import HealthCheck, Phase, given, settings, strategies as st

    from layer_conformance.suites.catalog import CLAIMS_BY_ID
    from layer_conformance.suites.harness import Case, ClaimRunner

    record: dict = {}
    runner = ClaimRunner(Case(CLAIMS_BY_ID["torch-linear-conv1d-k1"], "float32", "cpu"), record)

    @settings(max_examples=examples, database=None, derandomize=True, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        runner.forward_example(data)

    check()
    return record


def test_tf32_results_pass_under_the_declared_tf32_bound(monkeypatch):
    _plant_tf32(monkeypatch, "tf32")
    record = _forward_record()
    assert record["examples"] >= 40 and 0 < record["max_bound_ratio"] <= 1.0
    assert record["declared_roundoff"] and all(modes == ["tf32"] for modes in record["declared_roundoff"].values())


def test_tf32_results_fail_under_strict_float32(monkeypatch):
    """The same TF32 computation, declared as float32 (strict numerics): the float32 bound catches it."""
    _plant_tf32(monkeypatch, None)
    with pytest.raises(AssertionError, match="exceeds the error bound"):
        _forward_record()


def test_the_declared_mode_does_not_excuse_a_real_error(monkeypatch):
    """TF32 plus a 1e-2 relative error in every output: beyond what TF32 allows, it fails, naming the mode."""
    _plant_tf32(monkeypatch, "tf32", relative_error=1e-2)
    with pytest.raises(AssertionError, match="the declared tf32 mode"):
        _forward_record()


def test_the_report_names_the_declared_modes():
    from layer_conformance.reports.markdown import render_markdown

    row = {"nodeid": "suites/test_forward.py::test_forward[c-float32-gpu]", "claim": "c", "check": "forward",
           "status": "passed", "dtype": "float32", "device": "gpu", "examples": 3, "max_abs_error": 1e-4,
           "max_bound_ratio": 0.2, "reason": None, "declared_roundoff": {"torch.Conv1d": ["tf32"]}}
    text = render_markdown({"schema": "layer-conformance/report/v1", "results": [row]})
    assert "## Declared precision modes" in text and "tf32 (u = 0.000488)" in text
