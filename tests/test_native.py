"""read_native: live torch, Keras and Flax layers read back into LayerSpec, canonical weights and dtype.

Two kinds of proof per framework:
- round trip: a layer built by this project's adapter from (spec, weights), read back from its native
  object, gives the same spec and bit-identical weights;
- a user's layer: one made with the framework's own constructor, read and rebuilt by the adapter,
  computes bit-identical outputs. Both sides are the same framework running the same operation on
  the same weights and the same input, on CPU, so nothing may differ: any difference, even an ulp,
  means the spec, the layout or the weights were read wrong.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from layer_conformance.adapters import LayerSpec, SpecError, get_adapter
from layer_conformance.adapters.native import NativeLayer, framework_of, read_native
from layer_conformance.adapters.spec import numpy_dtype, variable_dtype


def adapter_or_skip(framework: str):
    adapter = get_adapter(framework)
    if adapter.available():
        pytest.skip(adapter.available())
    return adapter


def random_weights(spec: LayerSpec, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = {"kernel": rng.standard_normal(spec.kernel_shape()).astype(np.float32)}
    if spec.bias:
        weights["bias"] = rng.standard_normal(spec.out_features).astype(np.float32)
    return weights


def build(framework: str, spec: LayerSpec, dtype: str = "float32"):
    adapter = adapter_or_skip(framework)
    reason = adapter.supports(spec, dtype, "cpu")
    if reason:
        pytest.skip(reason)
    return adapter.build(spec, random_weights(spec), dtype, "cpu")


def assert_read_back(native: NativeLayer, layer, spec: LayerSpec | None = None, weights: bool = True) -> None:
    """`native` (read from `layer.native`) has the layer's spec (or `spec`), dtype and exact weights."""
    assert isinstance(native, NativeLayer)
    assert native.framework == layer.adapter.name
    assert native.spec == (spec or layer.spec), native.spec.describe()
    assert native.dtype == layer.dtype
    if weights:
        assert set(native.weights) == set(layer.given_weights)
        for name, given in layer.given_weights.items():
            assert native.weights[name].dtype == numpy_dtype(variable_dtype(layer.dtype))  # the parameters' dtype
            np.testing.assert_array_equal(native.weights[name].astype(np.float64), given.astype(np.float64),
                                          err_msg=f"{name} of {native.description}")


def rebuilt_output(native: NativeLayer, x: np.ndarray) -> np.ndarray:
    """The output of the adapter's layer built from what read_native read."""
    return get_adapter(native.framework).build(native.spec, native.weights, native.dtype, "cpu").forward(x)


def input_for(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def assert_refused(layer, *fragments: str, params=None) -> None:
    with pytest.raises(SpecError) as info:
        read_native(layer, params)
    message = str(info.value)
    for fragment in (f"{type(layer).__module__}.{type(layer).__qualname__}", "Supported:", "Fix:", *fragments):
        assert fragment in message, message


# geometries every adapter builds natively (no padding applied outside the native object)
DENSE = [LayerSpec.dense(5, 3), LayerSpec.dense(4, 2, bias=False)]

# ---- generic -----------------------------------------------------------------------------------


def test_objects_of_no_supported_framework_are_refused():
    assert framework_of(object()) is None
    assert_refused(object(), "builtins.object", "not a layer of a supported framework")
    assert_refused(np.zeros(3), "numpy.ndarray")


def test_reading_a_torch_layer_imports_neither_tensorflow_nor_jax():
    pytest.importorskip("torch", reason="torch is not installed")
    code = ("import sys, torch\nfrom layer_conformance.adapters.native import read_native\n"
            "read_native(torch.nn.Conv1d(2, 3, 3))\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'jax', 'flax') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- torch -------------------------------------------------------------------------------------

TORCH_SPECS = DENSE + [
    LayerSpec.conv(4, 8, 3, strides=2, padding=1, bias=False),
    LayerSpec.conv(4, 6, 3, padding="same", dilation=2, groups=2),
    LayerSpec.conv(3, 3, 4, padding="same", padding_mode="circular"),
    LayerSpec.conv(4, 4, (3, 2), strides=(2, 1), padding=((1, 1), (0, 0)), groups=4, padding_mode="replicate"),
    LayerSpec.conv(2, 6, (2, 3), dilation=(1, 2)),
    LayerSpec.conv(4, 2, (3, 3), padding=2, padding_mode="reflect", bias=False),
]


@pytest.mark.parametrize("spec", TORCH_SPECS, ids=LayerSpec.describe)
def test_torch_round_trip(spec):
    pytest.importorskip("torch", reason="torch is not installed")
    layer = build("torch", spec)
    assert_read_back(read_native(layer.native), layer)


@pytest.mark.parametrize("dtype", ["float64", "float16", "bfloat16"])
def test_torch_dtypes(dtype):
    pytest.importorskip("torch", reason="torch is not installed")
    layer = build("torch", LayerSpec.conv(4, 6, 3, strides=2, groups=2), dtype)
    assert_read_back(read_native(layer.native), layer)


def test_torch_mixed_precision_is_autocast_outside_the_module():
    pytest.importorskip("torch", reason="torch is not installed")
    layer = build("torch", LayerSpec.dense(4, 3), "mixed_bfloat16")
    native = read_native(layer.native)
    assert native.dtype == "float32" and native.weights["kernel"].dtype == np.float32


@pytest.mark.parametrize("spec", [LayerSpec.conv(4, 4, 3, padding="causal"),
                                  LayerSpec.conv(3, 2, 3, padding=((2, 1),), padding_mode="reflect"),
                                  LayerSpec.conv(2, 4, (3, 3), strides=2, padding="same")], ids=LayerSpec.describe)
def test_torch_padding_the_adapter_applies_outside_the_module_is_not_read(spec):
    """The adapter pads these with F.pad before calling a module with padding 0: the module itself
    computes, and reads as, a valid convolution."""
    pytest.importorskip("torch", reason="torch is not installed")
    layer = build("torch", spec)
    assert_read_back(read_native(layer.native), layer, spec.with_(padding="valid", padding_mode="zeros"))


def test_torch_no_padding_reads_as_valid_with_zeros():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    for module in (torch.nn.Conv1d(2, 3, 3, padding=0, padding_mode="circular"),
                   torch.nn.Conv2d(2, 3, 3, padding="valid", padding_mode="reflect"),
                   torch.nn.Conv2d(2, 3, 3, padding=(0, 0))):
        spec = read_native(module).spec
        assert (spec.padding, spec.padding_mode) == ("valid", "zeros")


def _torch_modules():
    import torch

    torch.manual_seed(0)
    return [
        (torch.nn.Conv1d(4, 8, 3, stride=2, padding=1, bias=False), (2, 11, 4)),
        (torch.nn.Conv2d(4, 6, (3, 2), padding="same", dilation=2, groups=2, padding_mode="reflect"), (2, 7, 8, 4)),
        (torch.nn.Conv2d(3, 5, 3, stride=(2, 1), padding=(1, 0), padding_mode="circular"), (1, 8, 6, 3)),
        (torch.nn.Linear(5, 3), (4, 5)),
    ]


def test_torch_user_layers_rebuild_to_the_same_function():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    adapter_or_skip("torch")
    for module, shape in _torch_modules():
        native = read_native(module)
        assert native.description == f"torch.nn.{module!r}"
        x = input_for(shape)
        # the adapter's own call: canonical channels-last input viewed channels-first (same strides)
        rank = len(shape) - 2
        xt = torch.from_numpy(x)
        if rank:
            xt = xt.permute(0, rank + 1, *range(1, rank + 1))
        with torch.no_grad():
            y = module(xt)
        if rank:
            y = y.permute(0, *range(2, rank + 2), 1)
        np.testing.assert_array_equal(rebuilt_output(native, x), y.numpy(), err_msg=native.description)


def test_torch_refusals():
    torch = pytest.importorskip("torch", reason="torch is not installed")

    class MyLinear(torch.nn.Linear):
        pass

    assert_refused(torch.nn.Conv3d(2, 2, 1), "not one of the torch layers", "Linear, Conv1d, Conv2d")
    assert_refused(torch.nn.ConvTranspose1d(2, 2, 1), "not one of the torch layers")
    assert_refused(MyLinear(2, 3), "subclass")
    hooked = torch.nn.Linear(2, 3)
    hooked.register_forward_hook(lambda module, args, out: out * 2)
    assert_refused(hooked, "hooks")
    assert_refused(torch.nn.Linear(2, 3, device="meta"), "meta device")
    assert_refused(torch.nn.Linear(2, 3), "params= is for flax.linen", params={"kernel": np.zeros((2, 3))})
    layer = build("torch", LayerSpec.dense(2, 3))
    assert_refused(layer, "pass its .native")


# ---- Keras 3 -----------------------------------------------------------------------------------

KERAS_SPECS = DENSE + [
    LayerSpec.conv(4, 6, 3, strides=2, padding="same"),
    LayerSpec.conv(4, 4, 3, padding="causal", dilation=2, bias=False),
    LayerSpec.conv(4, 6, 3, groups=2),
    LayerSpec.conv(3, 5, (3, 2), strides=(2, 1), padding="same"),
    LayerSpec.conv(4, 8, (2, 2), dilation=(2, 1), groups=2),
]


def _keras_holds_weights() -> bool:
    """On the jax backend the adapter's native is a weightless template shared by a geometry (the
    weights travel with each call); its weights are checked through user layers below instead."""
    import keras

    return keras.backend.backend() != "jax"


@pytest.mark.parametrize("spec", KERAS_SPECS, ids=LayerSpec.describe)
def test_keras_round_trip(spec):
    pytest.importorskip("keras", reason="keras is not installed")
    layer = build("keras", spec)
    assert_read_back(read_native(layer.native), layer, weights=_keras_holds_weights())


@pytest.mark.parametrize("spec, dtype", [(LayerSpec.conv(4, 6, 3, strides=2), "mixed_bfloat16"),
                                         (LayerSpec.dense(3, 2), "mixed_float16"),
                                         (LayerSpec.dense(3, 2), "float64")])
def test_keras_dtypes(spec, dtype):
    pytest.importorskip("keras", reason="keras is not installed")
    layer = build("keras", spec, dtype)
    assert_read_back(read_native(layer.native), layer, weights=_keras_holds_weights())


def test_keras_explicit_padding_is_applied_outside_the_layer():
    pytest.importorskip("keras", reason="keras is not installed")
    spec = LayerSpec.conv(3, 4, 3, padding=((1, 2),))
    layer = build("keras", spec)
    assert_read_back(read_native(layer.native), layer, spec.with_(padding="valid"), weights=_keras_holds_weights())


def test_keras_user_layers_rebuild_to_the_same_function():
    keras = pytest.importorskip("keras", reason="keras is not installed")
    adapter_or_skip("keras")
    keras.utils.set_random_seed(0)
    cases = [(keras.layers.Conv2D(8, 3, padding="same"), (2, 9, 9, 4)),
             (keras.layers.Dense(5), (2, 3)),
             (keras.layers.Conv1D(6, 3, dilation_rate=2, padding="causal", use_bias=False), (2, 10, 4)),
             (keras.layers.Conv1D(4, 2, strides=2, bias_initializer="random_normal"), (1, 9, 3))]
    for layer, shape in cases:
        x = input_for(shape)
        y = keras.ops.convert_to_numpy(layer(x))  # builds the layer
        native = read_native(layer)
        assert native.description.startswith(f"keras.layers.{type(layer).__name__}(")
        np.testing.assert_array_equal(rebuilt_output(native, x), y, err_msg=native.description)


def test_keras_refusals():
    keras = pytest.importorskip("keras", reason="keras is not installed")
    assert_refused(keras.layers.Dense(3), "not built", "layer.build(input_shape)")
    channels_first = keras.layers.Conv2D(4, 3, data_format="channels_first")
    channels_first.build((None, 2, 6, 6))
    assert_refused(channels_first, "channels_first", "data_format='channels_last'")
    relu = keras.layers.Dense(3, activation="relu")
    relu.build((None, 2))
    assert_refused(relu, "activation='relu'", "activation=None")
    assert_refused(keras.layers.Conv3D(2, 1), "not one of the keras layers", "Dense, Conv1D, Conv2D")

    class MyDense(keras.layers.Dense):
        pass

    assert_refused(MyDense(2), "subclass")


# ---- Flax --------------------------------------------------------------------------------------

FLAX_SPECS = DENSE + [
    LayerSpec.conv(4, 8, 3, strides=2, padding=1, bias=False),
    LayerSpec.conv(4, 4, 3, padding="causal", dilation=2),
    LayerSpec.conv(4, 6, (3, 3), strides=(2, 1), padding=((1, 0), (2, 1)), groups=2),
    LayerSpec.conv(3, 3, 4, padding="same", padding_mode="circular"),
    LayerSpec.conv(4, 4, 3, strides=2, padding=((1, 1),), padding_mode="reflect"),
    LayerSpec.conv(2, 4, (2, 3), strides=(1, 2), padding="same", dilation=(2, 1)),
]
FLAX_DTYPES = [(LayerSpec.conv(4, 6, 3, strides=2, groups=2), "mixed_bfloat16"), (LayerSpec.dense(3, 2), "bfloat16"),
               (LayerSpec.conv(2, 3, (2, 2)), "float64"), (LayerSpec.dense(3, 2), "mixed_float16")]


def _read_flax(framework: str, layer) -> NativeLayer:
    if framework == "flax.nnx":
        return read_native(layer.native)
    # a linen module holds no weights: the adapter keeps its params dict beside it
    inner = read_native(layer.native, params=layer._params_dict)
    outer = read_native(layer.native, params={"params": layer._params_dict})
    assert outer.spec == inner.spec and outer.dtype == inner.dtype
    return inner


@pytest.mark.parametrize("framework", ["flax.linen", "flax.nnx"])
@pytest.mark.parametrize("spec", FLAX_SPECS, ids=LayerSpec.describe)
def test_flax_round_trip(framework, spec):
    pytest.importorskip("flax", reason="flax is not installed")
    layer = build(framework, spec)
    assert_read_back(_read_flax(framework, layer), layer)


@pytest.mark.parametrize("framework", ["flax.linen", "flax.nnx"])
@pytest.mark.parametrize("spec, dtype", FLAX_DTYPES, ids=[d for _, d in FLAX_DTYPES])
def test_flax_dtypes(framework, spec, dtype):
    pytest.importorskip("flax", reason="flax is not installed")
    layer = build(framework, spec, dtype)
    assert_read_back(_read_flax(framework, layer), layer)


@pytest.mark.parametrize("framework", ["flax.linen", "flax.nnx"])
def test_flax_circular_at_stride_one_reads_as_same(framework):
    """Flax 'CIRCULAR' pads ((k_d - 1) // 2, k_d // 2), which at stride 1 is "same": the adapter builds
    the same layer from either spec, and reads it back as "same"."""
    pytest.importorskip("flax", reason="flax is not installed")
    spec = LayerSpec.conv(3, 3, 4, padding=((1, 2),), padding_mode="circular")
    layer = build(framework, spec)
    same = spec.with_(padding="same")
    assert same.explicit_padding((9,)) == spec.explicit_padding((9,))
    assert_read_back(_read_flax(framework, layer), layer, same)


def _linen_modules():
    from flax import linen

    return [(linen.Conv(8, kernel_size=(3,), strides=2, padding=1), (2, 11, 4)),
            (linen.Conv(6, (3, 3), strides=(2, 1), padding="CIRCULAR", feature_group_count=2), (2, 7, 8, 4)),
            (linen.Conv(4, (3,), padding="CAUSAL", kernel_dilation=2, use_bias=False), (1, 9, 3)),
            (linen.Conv(5, (2, 2), padding=[(1, 0), (0, 1)]), (1, 6, 5, 2)),
            (linen.Dense(3), (4, 5))]


def test_linen_user_layers_rebuild_to_the_same_function():
    pytest.importorskip("flax", reason="flax is not installed")
    import jax

    adapter_or_skip("flax.linen")
    for module, shape in _linen_modules():
        x = input_for(shape)
        variables = jax.jit(module.init)(jax.random.key(0), x)  # one compile, not one per initializer op
        variables = {"params": {k: np.asarray(v) + 0.5 for k, v in variables["params"].items()}}  # non-zero bias
        native = read_native(module, params=variables)
        assert native.description.startswith("flax.linen.")
        y = np.asarray(jax.jit(module.apply)(variables, x))  # jitted, as the adapter runs it
        np.testing.assert_array_equal(rebuilt_output(native, x), y, err_msg=native.description)
    bound = module.bind(variables)  # a bound module carries its variables
    assert read_native(bound).spec == native.spec


def test_nnx_user_layers_rebuild_to_the_same_function():
    pytest.importorskip("flax", reason="flax is not installed")
    from flax import nnx

    adapter_or_skip("flax.nnx")
    rngs = nnx.Rngs(0)
    cases = [(nnx.Conv(4, 8, kernel_size=(3,), rngs=rngs), (2, 9, 4)),
             (nnx.Conv(4, 6, (3, 3), strides=2, padding="REFLECT", feature_group_count=2, use_bias=False,
                       rngs=rngs), (2, 7, 8, 4)),
             (nnx.Conv(3, 4, (3,), padding="CAUSAL", kernel_dilation=2, bias_init=nnx.initializers.ones, rngs=rngs),
              (1, 9, 3)),
             (nnx.Linear(5, 3, rngs=rngs), (4, 5))]
    for module, shape in cases:
        x = input_for(shape)
        native = read_native(module)
        assert native.description.startswith("flax.nnx.")
        y = np.asarray(nnx.jit(lambda m, inputs: m(inputs))(module, x))  # jitted, as the adapter runs it
        np.testing.assert_array_equal(rebuilt_output(native, x), y, err_msg=native.description)


def test_flax_refusals():
    pytest.importorskip("flax", reason="flax is not installed")
    import jax
    import jax.numpy as jnp
    from flax import linen, nnx

    conv = linen.Conv(4, (3,))
    variables = conv.init(jax.random.key(0), jnp.zeros((1, 5, 2)))
    assert_refused(conv, "hold no weights", "params=variables")
    assert_refused(conv, "received keys ['kernel']", params={"params": {"kernel": variables["params"]["kernel"]}})
    assert_refused(linen.Conv(4, (3,), use_bias=False), "use_bias=False", params=variables)
    mixed = {"kernel": variables["params"]["kernel"], "bias": np.zeros(4, np.float64)}
    assert_refused(conv, "one dtype", params=mixed)
    assert_refused(linen.Conv(4, (3,), input_dilation=2), "input_dilation=2", params=variables)
    assert_refused(linen.DenseGeneral(3), "not one of the flax.linen layers", "Dense, Conv")
    rngs = nnx.Rngs(0)
    assert_refused(nnx.Conv(2, 4, (3,), mask=jnp.ones((3, 2, 4)), rngs=rngs), "mask=<array of shape (3, 2, 4)>")
    assert_refused(nnx.Conv(2, 4, (3,), padding="SAME_LOWER", rngs=rngs), "padding='SAME_LOWER'")
    assert_refused(nnx.Linear(2, 3, param_dtype=jnp.float16, dtype=jnp.float32, rngs=rngs),
                   "float16 and computes in float32")
    assert_refused(nnx.Linear(2, 3, dot_general=lambda *a, **k: jax.lax.dot_general(*a, **k), rngs=rngs),
                   "dot_general=")
    assert_refused(nnx.ConvTranspose(2, 4, (3,), rngs=rngs), "not one of the flax.nnx layers", "Linear, Conv")
    assert_refused(nnx.Linear(2, 3, rngs=rngs), "params= is for flax.linen", params=variables)
