"""Each adapter builds layers with exactly the canonical weights, and converts layouts correctly."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from layer_conformance import adapters
from layer_conformance.adapters import FRAMEWORKS, LayerSpec, SpecError, convert, get_adapter, reference
from layer_conformance.suites.bounds import error_bound

SPECS = [
    (LayerSpec.dense(5, 3), (2, 4, 5)),
    (LayerSpec.conv(4, 6, 3, strides=2, padding="same", groups=2), (2, 9, 4)),
    (LayerSpec.conv(3, 2, 4, padding=((2, 1),), dilation=2, bias=False), (1, 8, 3)),
    (LayerSpec.conv(4, 6, (3, 2), strides=(2, 1), padding=((1, 2), (0, 1)), groups=2), (2, 9, 7, 4)),
]


def adapter_or_skip(framework: str):
    adapter = get_adapter(framework)
    reason = adapter.available()
    if reason:
        pytest.skip(reason)
    return adapter


def random_weights(spec: LayerSpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    weights = {"kernel": rng.standard_normal(spec.kernel_shape())}
    if spec.bias:
        weights["bias"] = rng.standard_normal(spec.out_features)
    return weights


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("spec, shape", SPECS, ids=[s.describe() for s, _ in SPECS])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_forward_vjp_and_weights_round_trip(framework, spec, shape, dtype):
    adapter = adapter_or_skip(framework)
    if adapter.supports(spec, dtype, "cpu"):
        pytest.skip(adapter.supports(spec, dtype, "cpu"))
    rng = np.random.default_rng(0)
    weights = {k: v.astype(dtype) for k, v in random_weights(spec, rng).items()}
    x = rng.standard_normal(shape).astype(dtype)
    layer = adapter.build(spec, weights, dtype)
    for name, value in layer.weights().items():
        np.testing.assert_array_equal(value, weights[name], err_msg=f"{layer.name} {name} changed on the way in")
    assert layer.param_count() == spec.param_count()
    from layer_conformance.suites.divergences import divergence_for

    divergence = divergence_for(framework, spec, dtype, "forward", x.shape)
    if divergence:  # e.g. Keras float64 Dense on the torch backend computes in float32
        pytest.skip(f"documented divergence {divergence.id}: {divergence.summary}")
    y = layer.forward(x)
    bound = error_bound(spec.reduction_length, reference.magnitude(spec, x, weights), dtype)
    assert np.all(np.abs(y - reference.forward(spec, x, weights)) <= bound)
    g = rng.standard_normal(y.shape).astype(dtype)
    dx, dw = layer.vjp(x, g)
    rdx, rdw = reference.vjp(spec, x, weights, g)
    scale = 1e-12 if dtype == "float64" else 1e-4
    np.testing.assert_allclose(dx, rdx, rtol=scale, atol=scale * np.abs(rdx).max())
    for name in rdw:
        np.testing.assert_allclose(dw[name], rdw[name], rtol=scale, atol=scale * np.abs(rdw[name]).max())


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_layout_conversion_is_not_a_reshape(framework):
    """A one-hot kernel must land on the output channel and tap it names (catches reshape-for-transpose)."""
    adapter = adapter_or_skip(framework)
    spec = LayerSpec.conv(3, 2, 2, bias=False)
    kernel = np.zeros(spec.kernel_shape())
    kernel[1, 2, 0] = 1.0  # tap 1 of input channel 2 feeds output channel 0
    x = np.arange(1 * 4 * 3, dtype=np.float64).reshape(1, 4, 3)
    y = adapter.build(spec, {"kernel": kernel}, "float64").forward(x)
    np.testing.assert_array_equal(y[0, :, 0], x[0, 1:, 2])
    np.testing.assert_array_equal(y[0, :, 1], 0.0)


def test_convert_moves_a_layer_across_frameworks_and_classes():
    for framework in FRAMEWORKS:
        adapter_or_skip(framework)
    rng = np.random.default_rng(1)
    spec = LayerSpec.dense(8, 32)
    start = get_adapter("torch").build(spec, random_weights(spec, rng), "float64")
    chain = [start]
    for target in ("torch.Conv1d", "keras.Conv1D", "flax.linen.Conv", "flax.nnx.Linear", "keras.Dense", "torch"):
        chain.append(convert(chain[-1], target))
    assert [layer.name for layer in chain] == ["torch.Linear", "torch.Conv1d", "keras.Conv1D", "flax.linen.Conv",
                                               "flax.nnx.Linear", "keras.Dense", "torch.Linear"]
    assert all(layer.param_count() == 288 for layer in chain)
    x = rng.standard_normal((2, 5, 8))
    from layer_conformance.suites.divergences import divergence_for

    for layer in chain:
        if divergence_for(layer.adapter.name, layer.spec, "float64", "forward", x.shape):
            # documented: Keras float64 Dense on the torch backend computes in float32, within its bound
            bound = error_bound(layer.spec.reduction_length, reference.magnitude(layer.spec, x, layer.weights()), "float32")
            assert np.all(np.abs(layer.forward(x) - start.forward(x)) <= bound)
            continue
        np.testing.assert_allclose(layer.forward(x), start.forward(x), rtol=1e-13, atol=1e-13)
    conv2d = convert(chain[1], "torch.Conv2d")
    np.testing.assert_allclose(conv2d.forward(x[:, :, None, :])[:, :, 0], start.forward(x), rtol=1e-13, atol=1e-13)


def test_convert_refuses_what_is_not_an_equivalence():
    adapter_or_skip("torch")
    spec = LayerSpec.conv(4, 2, 3)
    layer = get_adapter("torch").build(spec, random_weights(spec, np.random.default_rng(0)), "float32")
    with pytest.raises(SpecError, match="Only a pointwise convolution"):
        convert(layer, "torch.Linear")
    with pytest.raises(SpecError, match="Invalid value for argument `to`"):
        convert(layer, "mxnet")
    with pytest.raises(SpecError, match="no layer class 'Dense'"):
        convert(layer, "torch.Dense")


def test_build_rejects_bad_input_before_the_framework(monkeypatch):
    adapter = adapter_or_skip("torch")
    spec = LayerSpec.dense(4, 3)
    with pytest.raises(SpecError, match="expected canonical shape"):
        adapter.build(spec, {"kernel": np.zeros((3, 4)), "bias": np.zeros(3)})
    with pytest.raises(SpecError, match="dtype"):
        adapter.build(spec, {"kernel": np.zeros((4, 3)), "bias": np.zeros(3)}, dtype="float8")
    layer = adapter.build(spec, {"kernel": np.zeros((4, 3)), "bias": np.zeros(3)})
    with pytest.raises(SpecError, match="last axis must be the features"):
        layer.forward(np.zeros((2, 5)))


def test_missing_framework_disables_only_its_adapter(monkeypatch):
    """An ImportError becomes a reason naming the framework and the install command; others still work."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    monkeypatch.delitem(sys.modules, "layer_conformance.adapters.torch", raising=False)
    monkeypatch.setattr(adapters, "_CACHE", {})
    adapter = get_adapter("torch")
    reason = adapter.supports(LayerSpec.dense(2, 2), "float32", "cpu")
    assert reason and "torch" in reason and "pip install 'layer-conformance[torch]'" in reason
    assert get_adapter("flax.linen").available() in (None, get_adapter("flax.linen").available())
    with pytest.raises(SpecError, match="torch"):
        adapter.build(LayerSpec.dense(2, 2), {"kernel": np.zeros((2, 2)), "bias": np.zeros(2)})


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_default_weights_have_canonical_shapes(framework):
    adapter = adapter_or_skip(framework)
    spec = LayerSpec.conv(4, 6, 3, groups=2)
    weights = adapter.default_weights(spec, seed=0)
    assert weights["kernel"].shape == spec.kernel_shape() and weights["bias"].shape == (6,)
    assert np.std(weights["kernel"]) > 0


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_strict_numerics_turn_reduced_precision_off(framework):
    """--conformance-numerics strict: TF32 off and highest matmul precision, as the fingerprint then shows."""
    adapter = adapter_or_skip(framework)
    adapter.set_numerics("strict")
    modes = adapter.environment()["numeric_modes"]
    for name, value in modes.items():
        if "tf32" in name.lower() or "tensor_float_32" in name:
            assert value is False, (name, value)
        if "matmul_precision" in name:
            assert value == "highest", (name, value)
    assert any("tf32" in n.lower() or "tensor_float_32" in n or "matmul_precision" in n for n in modes)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_layers_of_one_geometry_keep_their_own_weights(framework):
    """Flax and Keras-on-jax share one compiled program per geometry: weights must stay per layer."""
    adapter = adapter_or_skip(framework)
    rng = np.random.default_rng(7)
    spec, shape = SPECS[1]
    first, second = random_weights(spec, rng), random_weights(spec, rng)
    a, b = adapter.build(spec, first, "float64"), adapter.build(spec, second, "float64")
    x, cotangent = rng.standard_normal(shape), rng.standard_normal(reference.forward(spec, rng.standard_normal(shape), first).shape)
    for layer, weights in ((a, first), (b, second), (a, first)):  # a again, after b was built and run
        np.testing.assert_allclose(layer.forward(x), reference.forward(spec, x, weights), rtol=0, atol=1e-12)
        dx, dw = layer.vjp(x, cotangent)
        rdx, rdw = reference.vjp(spec, x, weights, cotangent)
        np.testing.assert_allclose(dx, rdx, rtol=0, atol=1e-12)
        for name in weights:
            np.testing.assert_allclose(layer.weights()[name], weights[name], rtol=0, atol=0)
            np.testing.assert_allclose(dw[name], rdw[name], rtol=0, atol=1e-12)
    for other in (2, 11):  # the same geometry on inputs of other lengths (a new compile for jitted layers)
        x = rng.standard_normal((1, other, spec.in_features))
        np.testing.assert_allclose(b.forward(x), reference.forward(spec, x, second), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "mixed_float16"])
@pytest.mark.parametrize("spec, shape", [SPECS[0], SPECS[1]], ids=[SPECS[0][0].describe(), SPECS[1][0].describe()])
def test_a_reused_native_computes_what_a_fresh_build_does(spec, shape, dtype):
    """Keras on an eager backend gives a gone layer's native new weights instead of building anew:
    the layer holds exactly its own weights and computes bit for bit what a fresh build computes,
    and a native is never shared by two live layers."""
    keras = adapter_or_skip("keras")
    if not keras.reuses_natives:
        pytest.skip("Keras on the jax backend shares one program per geometry and builds no native per layer")
    rng = np.random.default_rng(3)
    first, second = random_weights(spec, rng), random_weights(spec, rng)
    x = rng.standard_normal(shape)
    gone = keras.build(spec, first, dtype)
    native = gone.native
    del gone
    layer = keras.build(spec, second, dtype)
    assert layer.native is native  # reused
    other = keras.build(spec, first, dtype)
    assert other.native is not layer.native  # `layer` is alive: its native is not lent again
    adapters.clear_programs()
    fresh = keras.build(spec, second, dtype)
    assert fresh.native is not native
    for name, value in layer.weights().items():
        np.testing.assert_array_equal(value, fresh.weights()[name])
    np.testing.assert_array_equal(layer.forward(x), fresh.forward(x))
    cotangent = rng.standard_normal(fresh.forward(x).shape)
    (dx, dw), (fdx, fdw) = layer.vjp(x, cotangent), fresh.vjp(x, cotangent)
    np.testing.assert_array_equal(dx, fdx)
    for name in dw:
        np.testing.assert_array_equal(dw[name], fdw[name])


GROUPED = [
    (LayerSpec.conv(4, 6, 3, strides=2, padding="same", groups=2), (2, 9, 4)),
    (LayerSpec.conv(6, 3, 2, padding=((1, 0),), dilation=3, groups=3, bias=False), (3, 7, 6)),
    (LayerSpec.conv(4, 4, 3, padding="causal", dilation=2, groups=4), (1, 6, 4)),
    (LayerSpec.conv(4, 6, (3, 2), strides=(2, 1), padding=((1, 2), (0, 1)), groups=2), (2, 9, 7, 4)),
]


@pytest.mark.parametrize("spec, shape", GROUPED, ids=[s.describe() for s, _ in GROUPED])
@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16", "mixed_float16", "mixed_bfloat16"])
def test_keras_tensorflow_grouped_program_is_keras_eager_call(spec, shape, dtype):
    """The per-geometry tf.functions that run Keras' grouped convolutions on tensorflow compute
    exactly what the layer's eager call and eager tape do (the same XLA computations), in every dtype."""
    adapter = adapter_or_skip("keras")
    from layer_conformance.adapters import keras as keras_adapter

    if keras_adapter.BACKEND != "tensorflow":
        pytest.skip(f"the grouped-convolution program exists on the tensorflow backend only; "
                    f"KERAS_BACKEND is {keras_adapter.BACKEND}")
    rng = np.random.default_rng(3)
    weights = random_weights(spec, rng)
    x = rng.standard_normal(shape)
    layer = adapter.build(spec, weights, dtype, "cpu")
    assert keras_adapter._tf_grouped(spec)
    eager = keras_adapter.KerasLayer(adapter, spec, dtype, "cpu", layer.native)
    eager_call = eager._call
    x_t = keras_adapter._to_tensor(x, dtype)
    expected = keras_adapter._to_numpy(eager_call(x_t), dtype)
    for batch in (shape[0], 1):  # a second input shape through the same program
        got = layer.forward(x[:batch])
        np.testing.assert_array_equal(got, expected[:batch] if batch == shape[0] else
                                      keras_adapter._to_numpy(eager_call(x_t[:1]), dtype))
    other = adapter.build(spec, random_weights(spec, rng), dtype, "cpu")  # same program, other weights
    assert not np.array_equal(other.forward(x), expected)
    cotangent = rng.standard_normal(expected.shape)
    dx, dw = layer.vjp(x, cotangent)  # through the program
    eager_dx, eager_dvars = keras_adapter._vjp_tensorflow(eager, x_t, keras_adapter._to_tensor(cotangent, dtype),
                                                          eager=True)
    np.testing.assert_array_equal(dx, keras_adapter._to_numpy(eager_dx, dtype))
    names = ["kernel", "bias"] if spec.bias else ["kernel"]
    for name, grad in zip(names, eager_dvars, strict=True):
        np.testing.assert_array_equal(dw[name], keras_adapter._numpy_as(
            keras_adapter._layout(grad, name, spec, False), keras_adapter._variable(dtype)))


@pytest.mark.parametrize("spec", [LayerSpec.dense(5, 3), LayerSpec.conv(4, 6, (3,), padding="same", bias=False)],
                         ids=["dense", "conv1d"])
def test_linen_and_nnx_share_one_compiled_program(spec):
    """Flax linen and nnx layers of one geometry lower to the same module (forward and VJP), so JAX's
    compilation cache compiles it once for both APIs; a result pytree of either API's own kind would
    name its outputs differently and cost a second compile per geometry."""
    pytest.importorskip("flax")
    import layer_conformance.adapters.flax as flax_adapter

    weights = {"kernel": np.ones(spec.kernel_shape(), np.float32)}
    if spec.bias:
        weights["bias"] = np.ones(spec.out_features, np.float32)
    shape = (2, 7, spec.in_features)
    x = flax_adapter._array(np.ones(shape, np.float32), "float32", "cpu")
    linen = get_adapter("flax.linen").build(spec, weights, "float32")
    nnx = get_adapter("flax.nnx").build(spec, weights, "float32")
    apply_linen, vjp_linen = flax_adapter._linen_program(spec, "float32")
    apply_nnx, vjp_nnx = flax_adapter._nnx_program(spec, "float32")[2:]
    y = np.asarray(apply_linen(x, linen._params_dict))
    cotangent = flax_adapter._array(np.ones(y.shape, np.float32), "float32", "cpu")
    assert apply_linen.lower(x, linen._params_dict).as_text() == apply_nnx.lower(x, nnx._state()).as_text()
    assert vjp_linen.lower(x, linen._params_dict, cotangent).as_text() == \
        vjp_nnx.lower(x, nnx._state(), cotangent).as_text()
    dx_linen, grads_linen = linen.vjp(np.ones(shape), np.ones(y.shape))
    dx_nnx, grads_nnx = nnx.vjp(np.ones(shape), np.ones(y.shape))
    assert np.array_equal(dx_linen, dx_nnx) and grads_linen.keys() == grads_nnx.keys() == weights.keys()
    assert all(np.array_equal(grads_linen[k], grads_nnx[k]) for k in weights)
