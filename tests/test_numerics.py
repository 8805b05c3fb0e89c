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
