"""Framework-level fault injection: each patch really changes the framework op and is undone cleanly;
one fault is caught and one benign perturbation passes end to end; bad ids are refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from layer_conformance.mutation.faults import FAULTS, FAULTS_BY_ID, PERTURB_MIN_SIZE

ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(0)
# grouped, strided, dilated, even kernel: every conv fault changes these calls (each under 1000 outputs)
X_CONV = RNG.standard_normal((2, 48, 4)).astype(np.float32)  # channels-last (B, L, C)
W_CONV = RNG.standard_normal((4, 2, 4)).astype(np.float32)  # (k, in/groups, out), groups=2
X_DENSE = RNG.standard_normal((40, 32)).astype(np.float32)  # 40 x 32 outputs >= 1000
W_DENSE = RNG.standard_normal((32, 32)).astype(np.float32)  # (in, out), square
BIAS = RNG.standard_normal(32).astype(np.float32)
CONV = dict(stride=2, dilation=2, groups=2)
assert 2 * 9 * 4 < PERTURB_MIN_SIZE <= 40 * 32


def _torch(op: str, grad: bool = False):
    import torch
    import torch.nn.functional as F

    if op == "dense":
        x = torch.tensor(X_DENSE, requires_grad=True)
        w = torch.tensor(W_DENSE.T.copy(), requires_grad=True)
        b = torch.tensor(BIAS, requires_grad=True)
        y = F.linear(x, w, b)
        wide = F.linear(x, w, b)  # same call again: deterministic
        assert torch.equal(y, wide)
        inputs = (x, w, b)
    else:
        x = torch.tensor(X_CONV.transpose(0, 2, 1).copy(), requires_grad=True)
        w = torch.tensor(W_CONV.transpose(2, 1, 0).copy(), requires_grad=True)
        b = torch.tensor(BIAS[:4], requires_grad=True)
        y = F.conv1d(x, w, b, CONV["stride"], 0, CONV["dilation"], CONV["groups"])
        y = torch.cat([y, F.conv1d(x, w, b, 1, 0, 1, 2)], dim=2)  # undilated too: the dilation-free fault shows
        inputs = (x, w, b)
    if not grad:
        return y.detach().numpy()
    y.backward(torch.ones_like(y))
    return np.concatenate([t.grad.numpy().ravel() for t in inputs])


def _keras(op: str, grad: bool = False):
    import layer_conformance.adapters.keras  # noqa: F401  (quiet TensorFlow start-up)
    import keras
    import tensorflow as tf

    if op == "dense":
        x, w = tf.constant(X_DENSE), tf.Variable(W_DENSE)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = keras.ops.matmul(x, w)
    else:
        x, w = tf.constant(X_CONV), tf.Variable(W_CONV)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.concat([keras.ops.conv(x, w, strides=2, padding="valid"),
                           keras.ops.conv(x, w, strides=1, padding="valid", dilation_rate=2)], axis=1)
    if not grad:
        return y.numpy()
    dx, dw = tape.gradient(y, [x, w])
    return np.concatenate([dx.numpy().ravel(), dw.numpy().ravel()])


def _flax(op: str, grad: bool = False):
    import layer_conformance.adapters.flax  # noqa: F401  (x64 as the suite runs it)
    import jax
    import jax.numpy as jnp
    from flax import linen, nnx

    if op == "dense":
        def f(x, w):
            y1 = linen.Dense(32, use_bias=False).apply({"params": {"kernel": w}}, x)
            layer = nnx.Linear(32, 32, use_bias=False, rngs=nnx.Rngs(0))
            layer.kernel.set_value(w)
            return jnp.concatenate([y1, layer(x)])
        args = (jnp.asarray(X_DENSE), jnp.asarray(W_DENSE))
    else:
        def f(x, w):
            ys = [linen.Conv(4, (4,), strides=s, kernel_dilation=d, feature_group_count=2, padding="VALID",
                             use_bias=False).apply({"params": {"kernel": w}}, x) for s, d in ((2, 1), (1, 2))]
            layer = nnx.Conv(4, 4, (4,), strides=2, feature_group_count=2, padding="VALID", use_bias=False,
                             rngs=nnx.Rngs(0))
            layer.kernel.set_value(w)
            return jnp.concatenate([*ys, layer(x)], axis=1)
        args = (jnp.asarray(X_CONV), jnp.asarray(W_CONV))
    if not grad:
        return np.asarray(f(*args))
    y, pullback = jax.vjp(f, *args)
    return np.concatenate([np.asarray(g).ravel() for g in pullback(jnp.ones_like(y))])


CALL = {"torch": _torch, "keras": _keras, "flax": _flax}


def _ops(fault) -> list[str]:
    return ["dense", "conv"] if fault.op == "both" else [fault.op]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_install_changes_and_uninstall_restores(fault):
    pytest.importorskip({"torch": "torch", "keras": "tensorflow", "flax": "flax"}[fault.framework])
    if fault.framework == "keras" and os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        pytest.skip("the Keras faults patch the TensorFlow backend")
    call = CALL[fault.framework]
    grad = "gradient" in fault.checks and "forward" not in fault.checks
    before = {op: call(op, grad) for op in _ops(fault)}
    uninstall = fault.install()
    try:
        during = {op: call(op, grad) for op in _ops(fault)}
    finally:
        uninstall()
    after = {op: call(op, grad) for op in _ops(fault)}
    for op in _ops(fault):
        np.testing.assert_array_equal(after[op], before[op], err_msg=f"{op}: uninstall did not restore the op")
        assert during[op].shape == before[op].shape
        changed = not np.array_equal(during[op], before[op])
        if fault.id.endswith("benign-reversed-sum"):
            continue  # a reordered sum may round identically on this input
        if fault.id.endswith("perturb-one-element") and op == "conv":
            assert not changed, "the perturbation fired on an output smaller than PERTURB_MIN_SIZE"
            continue
        assert changed, f"{fault.id} did not change {fault.framework} {op}"
        if fault.kind == "benign":  # changes only at rounding level
            np.testing.assert_allclose(during[op], before[op], rtol=1e-5, atol=1e-5)


def _pytest(fault_id: str, claim: str, tmp_path: Path, check: str = "forward") -> dict:
    report = tmp_path / f"{fault_id}.json"
    fault = FAULTS_BY_ID[fault_id]
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "suites"), "--rootdir", str(ROOT), "-q", "-p", "no:cacheprovider",
           "--conformance-fault", fault_id, "--conformance-report", str(report),
           "--conformance-devices", "cpu", "--conformance-dtypes", "float32", "--conformance-frameworks",
           ",".join(fault.frameworks), "--hypothesis-profile", "debug", "-k", f"test_{check}[{claim}-float32"]
    subprocess.run(cmd, cwd=str(ROOT), capture_output=True, timeout=300)
    results = json.loads(report.read_text())["results"]
    assert results, "the run selected no test"
    return results


def test_fault_caught_end_to_end(tmp_path):
    pytest.importorskip("torch")
    results = _pytest("torch-kernel-flipped", "xfw-conv1d", tmp_path)
    assert any(r["status"] == "failed" for r in results), results


def test_benign_passes_end_to_end(tmp_path):
    pytest.importorskip("torch")
    results = _pytest("torch-benign-float64-accumulation", "xfw-conv1d", tmp_path)
    assert all(r["status"] == "passed" for r in results), results


def test_unknown_fault_exits_2():
    done = subprocess.run([sys.executable, "-m", "layer_conformance", "faults", "--faults", "nonexistent"], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "nonexistent" in lines[0] and "torch-kernel-flipped" in lines[0]


def test_compiled_layers_see_a_fault_installed_later():
    """Layers compiled before a jax.lax patch would keep the unpatched op: clear_programs re-traces them."""
    pytest.importorskip("flax")
    from layer_conformance.adapters import LayerSpec, clear_programs, get_adapter

    spec = LayerSpec.dense(3, 4, bias=False)
    weights = {"kernel": np.arange(12.0).reshape(3, 4)}
    x = np.arange(6.0).reshape(2, 3) + 1
    layer = get_adapter("flax.linen").build(spec, weights, "float32")
    before = layer.forward(x)
    uninstall = FAULTS_BY_ID["flax-bf16-compute"].install()
    try:
        clear_programs()
        x_odd = x + 1 / 3  # not exact in bfloat16
        during = layer.forward(x_odd)
    finally:
        uninstall()
        clear_programs()
    assert not np.array_equal(during, get_adapter("flax.linen").build(spec, weights, "float32").forward(x_odd))
    np.testing.assert_array_equal(layer.forward(x), before)


def test_benign_runs_are_sized_to_the_required_examples(monkeypatch):
    """The per-test number of examples times the tests selected covers the total asked for."""
    import layer_conformance.mutation.score as faults_cli

    collected = "suites/test_batch.py: 5\nsuites/test_forward.py: 5\nsuites/test_gradient.py: 3\n"
    monkeypatch.setattr(faults_cli.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=collected, stderr=""))
    per_test = faults_cli.benign_examples_per_test(FAULTS_BY_ID["torch-benign-ulp"], 1000, {})
    assert 13 * per_test >= 1000
    assert 13 * per_test <= 1000 * 1.3  # not wildly more than asked


@pytest.mark.parametrize("fault", [f for f in FAULTS if f.kind == "benign"], ids=lambda f: f.id)
def test_benign_perturbations_are_differentiable(fault):
    """The gradient check runs under every benign perturbation: its backward must exist and stay benign."""
    pytest.importorskip({"torch": "torch", "keras": "tensorflow", "flax": "flax"}[fault.framework])
    if fault.framework == "keras" and os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        pytest.skip("the Keras faults patch the TensorFlow backend")
    call = CALL[fault.framework]
    for op in _ops(fault):
        before = call(op, True)
        uninstall = fault.install()
        try:
            during = call(op, True)
        finally:
            uninstall()
        np.testing.assert_allclose(during, before, rtol=1e-5, atol=1e-5)
