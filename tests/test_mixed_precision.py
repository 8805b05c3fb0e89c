"""Mixed precision as training runs it: float32 parameters, half-precision compute, asserted.

Keras mixed policies (called through Layer.__call__ in a StatelessScope, as Model.fit does, on every
backend), Flax `dtype=half, param_dtype=float32` and torch `autocast` must really compute in the half
type: the adapters check the output dtype and the dtypes that reached the matmul or convolution, and
raise ComputeDtypeError otherwise. These tests show the layers pass that check, that the gradients of
the float32 parameters are float32, and that the check catches a layer that quietly computes in float32.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from layer_conformance.adapters import LayerSpec, get_adapter
from layer_conformance.adapters.compute import ComputeDtypeError

ROOT = Path(__file__).resolve().parent.parent
SPECS = [LayerSpec.dense(5, 3), LayerSpec.conv(4, 6, (3,), padding="same"), LayerSpec.conv(4, 6, (3, 2), groups=2)]
POLICIES = ("mixed_bfloat16", "mixed_float16")


def _weights(spec: LayerSpec) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"kernel": rng.integers(-3, 4, spec.kernel_shape()).astype(np.float32) / 4,
            "bias": rng.integers(-3, 4, spec.out_features).astype(np.float32) / 4}


def _input(spec: LayerSpec) -> np.ndarray:
    shape = (2, spec.in_features) if spec.kind == "dense" else (2, *([5] * spec.rank), spec.in_features)
    return np.random.default_rng(1).integers(-3, 4, shape).astype(np.float64) / 4


def _run(framework: str, spec: LayerSpec, policy: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    layer = get_adapter(framework).build(spec, _weights(spec), policy)
    x = _input(spec)
    y = layer.forward(x)
    dx, grads = layer.vjp(x, np.ones(y.shape))
    return y, dx, grads


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("framework", ["torch", "flax.linen", "flax.nnx"])
@pytest.mark.parametrize("spec", SPECS, ids=["dense", "conv1d", "conv2d-grouped"])
def test_torch_and_flax_compute_in_half_with_float32_parameters(framework, spec, policy):
    pytest.importorskip("torch" if framework == "torch" else "flax")
    y, dx, grads = _run(framework, spec, policy)
    half = policy.removeprefix("mixed_")
    assert str(y.dtype) == half and str(dx.dtype) == half
    assert {k: str(g.dtype) for k, g in grads.items()} == {"kernel": "float32", "bias": "float32"}


def test_flax_layer_computing_in_float32_is_caught(monkeypatch):
    """Flax built with a float32 compute dtype under a mixed policy: the output check fails it."""
    pytest.importorskip("flax")
    import layer_conformance.adapters.flax as flax_adapter

    flax_adapter.clear_programs()
    monkeypatch.setattr(flax_adapter, "_dtype_kw", lambda dtype: dict(dtype=flax_adapter.jnp.float32,
                                                                      param_dtype=flax_adapter.jnp.float32))
    try:
        with pytest.raises(ComputeDtypeError, match="returned a float32 output; it should compute in bfloat16"):
            _run("flax.linen", SPECS[1], "mixed_bfloat16")
    finally:
        monkeypatch.undo()
        flax_adapter.clear_programs()


def test_torch_without_autocast_is_caught(monkeypatch):
    """A float32 torch layer under mixed_bfloat16 without autocast: the operand check fails it."""
    torch = pytest.importorskip("torch")
    import layer_conformance.adapters.compute as compute

    monkeypatch.setattr(torch, "autocast", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(compute, "_CHECKED", set())
    with pytest.raises(ComputeDtypeError, match="operands were float32"):
        _run("torch", SPECS[1], "mixed_bfloat16")


_KERAS_SCRIPT = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from tests.test_mixed_precision import SPECS, POLICIES, _run
from layer_conformance.adapters.compute import ComputeDtypeError
import layer_conformance.adapters.keras as K
for spec in SPECS:
    for policy in POLICIES:
        y, dx, grads = _run("keras", spec, policy)
        half = policy.removeprefix("mixed_")
        assert str(y.dtype) == half and str(dx.dtype) == half, (spec, policy, y.dtype, dx.dtype)
        assert {{k: str(g.dtype) for k, g in grads.items()}} == {{"kernel": "float32", "bias": "float32"}}
# the check's power: Layer.stateless_call skips __call__'s autocast, so the float32 variables reach the op
def old(native, trainable, x):
    return native.stateless_call(trainable, [v.value for v in native.non_trainable_variables], x)[0]
K._stateless_call = old
K.clear_programs()
import layer_conformance.adapters.compute as C
C._CHECKED.clear()
try:
    _run("keras", SPECS[1], "mixed_bfloat16")
except (ComputeDtypeError, RuntimeError) as exc:
    print("caught:", type(exc).__name__, exc)
else:
    print("stateless_call not caught")
print("ok", K.BACKEND)
"""


@pytest.mark.parametrize("backend", ["jax", "tensorflow", "torch"])
def test_keras_mixed_policies_compute_in_half_on_every_backend(backend):
    """In a child per backend (KERAS_BACKEND is fixed at import). The plant (Layer.stateless_call
    instead of __call__) reaches the jax backend's forward and VJP, where the dtype check must catch
    it, and the torch backend's VJP, where torch itself refuses float32 weights with a bfloat16
    input; the tensorflow backend calls __call__ under a GradientTape and never used stateless_call."""
    pytest.importorskip("keras")
    pytest.importorskip({"jax": "jax", "tensorflow": "tensorflow", "torch": "torch"}[backend])
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", _KERAS_SCRIPT.format(root=str(ROOT))], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"ok {backend}" in done.stdout
    if backend == "jax":
        assert "caught: ComputeDtypeError" in done.stdout and "float32" in done.stdout.split("caught:")[1]
    if backend == "torch":
        assert "caught: RuntimeError" in done.stdout, done.stdout


def test_operand_check_sees_the_dtypes_inside_jitted_programs():
    """The jaxpr walk finds a matmul nested in a jitted call, and the dtype it really ran in."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from layer_conformance.adapters.compute import jax_operand_dtypes

    x = jnp.ones((2, 3), jnp.bfloat16)
    w = jnp.ones((3, 4), jnp.bfloat16)
    widened = jax.jit(lambda a, b: jnp.dot(a.astype(jnp.float32), b.astype(jnp.float32)))
    half = jax.jit(lambda a, b: jnp.dot(a, b))
    assert jax_operand_dtypes(lambda a, b: widened(a, b) + 1, x, w) == {"float32"}
    assert jax_operand_dtypes(half, x, w) == {"bfloat16"}
    assert jax_operand_dtypes(lambda a, b: a + 1, x, w) == set()  # no matmul: check_operands then fails it
