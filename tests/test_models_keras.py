"""Keras whole models: read -> ModelGraph -> build gives the same function, the same graph, and clear refusals."""
from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("keras")

from layer_conformance.adapters.graph import ModelGraph, Node, UnsupportedModel  # noqa: E402
from layer_conformance.adapters.models import build_model  # noqa: E402
from layer_conformance.adapters.models import keras as km  # noqa: E402
from layer_conformance.adapters.spec import LayerSpec, compute_dtype, numpy_dtype  # noqa: E402


@pytest.fixture(scope="module")
def keras():
    from layer_conformance.adapters import keras as adapter

    return adapter.keras


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal((2, *shape)).astype(np.float32)


def _same_graph(a: ModelGraph, b: ModelGraph) -> None:
    assert a.dtype == b.dtype
    assert a.shapes == b.shapes
    assert len(a.nodes) == len(b.nodes)
    for left, right in zip(a.nodes, b.nodes):
        assert (left.op, left.inputs, left.spec, left.activation, left.shape, left.perm, left.axes, left.reduce,
                left.channels_first) == (right.op, right.inputs, right.spec, right.activation, right.shape,
                                         right.perm, right.axes, right.reduce, right.channels_first), left.name
        assert (left.weights is None) == (right.weights is None)
        for key in left.weights or {}:
            np.testing.assert_array_equal(left.weights[key], right.weights[key])
        assert set(left.weights or {}) == set(right.weights or {})


def _port_agrees(model, shape):
    """read -> build -> run equals the model's own output; the port reads back to the same graph."""
    graph = km.read(model)
    port = km.build(graph, "keras", "cpu")
    x = _x(shape)
    np.testing.assert_allclose(km.run(port, x), km.run(model, x), rtol=1e-5, atol=1e-6)
    _same_graph(km.read(port), graph)
    return graph


def _ops(graph):
    return [node.op for node in graph.nodes]


def test_sequential_conv1d_stack_flatten_dense(keras):
    layers = keras.layers
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((24, 4)), layers.Conv1D(8, 3, activation="relu"),
                              layers.Conv1D(8, 3, padding="same", strides=2, groups=2),
                              layers.Conv1D(6, 3, padding="causal", dilation_rate=2, use_bias=False),
                              layers.Activation("tanh"), layers.Flatten(), layers.Dropout(0.5), layers.Dense(5)])
    graph = _port_agrees(model, (24, 4))
    assert _ops(graph) == ["input", "layer", "act", "layer", "layer", "act", "flatten", "layer"]
    assert graph.input_shape == (24, 4) and graph.shapes[-1] == (5,) and graph.dtype == "float32"
    conv = graph.nodes[4].spec
    assert (conv.padding, conv.dilation, conv.bias) == ("causal", (2,), False)
    assert graph.nodes[3].spec.groups == 2 and graph.nodes[3].spec.strides == (2,)
    assert graph.nodes[2].name == "conv1d.activation" or graph.nodes[2].name.endswith(".activation")
    assert not any(graph.nodes[i].channels_first for i in graph.layers())


def test_functional_residual_add(keras):
    layers = keras.layers
    keras.utils.set_random_seed(2)
    inputs = keras.Input((10, 6))
    h = layers.Conv1D(6, 3, padding="same")(inputs)
    r = layers.Conv1D(6, 1, activation="sigmoid")(h)
    y = layers.Add()([h, r])
    y = y + inputs  # a keras.ops add on symbolic tensors
    out = layers.Dense(3)(layers.GlobalMaxPooling1D()(y))
    graph = _port_agrees(keras.Model(inputs, out), (10, 6))
    assert _ops(graph) == ["input", "layer", "layer", "act", "add", "add", "pool", "layer"]
    assert graph.nodes[4].inputs == (1, 3) and graph.nodes[5].inputs == (4, 0)
    assert (graph.nodes[6].axes, graph.nodes[6].reduce) == ((1,), "max")


def test_conv2d_global_average_pooling_dense(keras):
    layers = keras.layers
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((7, 6, 3)), layers.Conv2D(5, (3, 2), strides=(2, 1), padding="same"),
                              layers.ReLU(), layers.GlobalAveragePooling2D(), layers.Dense(4)])
    graph = _port_agrees(model, (7, 6, 3))
    assert _ops(graph) == ["input", "layer", "act", "pool", "layer"]
    assert (graph.nodes[3].axes, graph.nodes[3].reduce) == ((1, 2), "mean")
    assert graph.nodes[1].spec == LayerSpec.conv(3, 5, (3, 2), strides=(2, 1), padding="same")


def test_dense_with_gelu_and_its_tanh_form(keras):
    layers = keras.layers
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((6,)), layers.Dense(8, activation="gelu"), layers.Activation(km.gelu_tanh),
                              layers.Dense(8, activation=keras.activations.gelu),
                              layers.Activation(functools.partial(keras.activations.gelu, approximate=True)),
                              layers.Dense(2)])
    graph = _port_agrees(model, (6,))
    assert [n.activation for n in graph.nodes if n.op == "act"] == ["gelu", "gelu_tanh", "gelu", "gelu_tanh"]
    assert model.layers[0].activation is keras.activations.gelu  # read leaves the model as it was


def test_nested_sequential_reads_in_place(keras):
    layers = keras.layers
    keras.utils.set_random_seed(5)
    block = keras.Sequential([layers.Dense(4, activation="relu"), layers.Dense(4)], name="block")
    inputs = keras.Input((4,))
    out = layers.Dense(2)(layers.Add()([inputs, block(inputs)]))
    graph = _port_agrees(keras.Model(inputs, out), (4,))
    assert [n.name for n in graph.nodes][1:4] == [f"block.{block.layers[0].name}", f"block.{block.layers[0].name}"
                                                   ".activation", f"block.{block.layers[1].name}"]


def test_zero_padding_folds_into_the_valid_convolution(keras):
    layers = keras.layers
    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((9, 8, 2)), layers.ZeroPadding2D(((1, 2), (0, 3))), layers.Conv2D(3, 3),
                              layers.Reshape((-1, 3)), layers.ZeroPadding1D((2, 0)), layers.Conv1D(2, 2),
                              layers.Permute((2, 1)), layers.Flatten(), layers.Dense(2)])
    graph = _port_agrees(model, (9, 8, 2))
    assert _ops(graph) == ["input", "layer", "reshape", "layer", "permute", "flatten", "layer"]
    assert graph.nodes[1].spec.padding == ((1, 2), (0, 3)) and graph.nodes[3].spec.padding == ((2, 0),)
    assert graph.nodes[2].shape == (10 * 9, 3) and graph.nodes[4].perm == (0, 2, 1)
    port = km.build(graph, "keras", "cpu")
    assert sum(type(layer).__name__.startswith("ZeroPadding") for layer in port.layers) == 2


@pytest.mark.parametrize("after", ["same", "flatten"])
def test_zero_padding_elsewhere_is_refused(keras, after):
    layers = keras.layers
    pad = layers.ZeroPadding1D(1, name="pad_here")
    tail = layers.Conv1D(2, 3, padding="same") if after == "same" else layers.Flatten()
    model = keras.Sequential([keras.Input((8, 2)), pad, tail])
    with pytest.raises(UnsupportedModel, match=r"ZeroPadding1D at 'pad_here'"):
        km.read(model)


@pytest.mark.parametrize("make", [lambda L: L.BatchNormalization(name="bn"), lambda L: L.LSTM(3, name="rnn"),
                                  lambda L: L.MaxPooling1D(name="pool")], ids=["BatchNormalization", "LSTM",
                                                                               "MaxPooling1D"])
def test_unsupported_layers_are_named(keras, make):
    layer = make(keras.layers)
    model = keras.Sequential([keras.Input((8, 3)), keras.layers.Dense(3), layer])
    with pytest.raises(UnsupportedModel) as info:
        km.read(model)
    message = str(info.value)
    assert f"{type(layer).__name__} at {layer.name!r}" in message and "\n" not in message


def test_other_refusals(keras):
    layers = keras.layers
    with pytest.raises(UnsupportedModel, match=r"Dense at 'swishy'.*activation 'silu'"):
        km.read(keras.Sequential([keras.Input((3,)), layers.Dense(2, activation="silu", name="swishy")]))
    with pytest.raises(UnsupportedModel, match=r"Conv1D at 'cf'.*channels_first"):
        km.read(keras.Sequential([keras.Input((3, 8)), layers.Conv1D(2, 3, data_format="channels_first", name="cf")]))
    with pytest.raises(UnsupportedModel, match=r"ReLU at 'capped'"):
        km.read(keras.Sequential([keras.Input((3,)), layers.ReLU(max_value=6.0, name="capped")]))
    with pytest.raises(UnsupportedModel, match=r"several dtype policies"):
        km.read(keras.Sequential([keras.Input((3,)), layers.Dense(2, dtype="float64"), layers.Dense(2)]))
    with pytest.raises(UnsupportedModel, match=r"Flatten at 'narrow'.*float16"):
        km.read(keras.Sequential([keras.Input((3, 2)), layers.Dense(2), layers.Flatten(dtype="float16",
                                                                                          name="narrow")]))


def test_unbuilt_model_needs_an_input_shape(keras):
    model = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(UnsupportedModel, match="not built"):
        km.read(model)
    graph = km.read(model, None, (5,))
    assert graph.input_shape == (5,) and graph.shapes[-1] == (3,)
    inputs = keras.Input((None, 4))
    free = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(UnsupportedModel, match="unknown sizes"):
        km.read(free)
    assert km.read(free, None, (6, 4)).shapes[-1] == (6, 2)
    with pytest.raises(UnsupportedModel, match="does not fit"):
        km.read(free, None, (6, 5))


def _graph_with_pools(dtype="float32"):
    rng = np.random.default_rng(7)
    conv = LayerSpec.conv(3, 4, 2)
    dense = LayerSpec.dense(4, 2)
    nodes = [Node("input", "x", shape=(6, 5, 3)),
             Node("reshape", "r", (0,), shape=(30, 3)),
             Node("layer", "c", (1,), spec=conv, weights={"kernel": rng.standard_normal((2, 3, 4)).astype(np.float32),
                                                          "bias": rng.standard_normal(4).astype(np.float32)}),
             Node("act", "a", (2,), activation="gelu_tanh"),
             Node("permute", "p", (3,), perm=(0, 2, 1)),
             Node("pool", "over positions", (4,), axes=(2,), reduce="mean"),  # not the spatial axes: a Lambda
             Node("pool", "global max", (3,), axes=(1,), reduce="max"),  # GlobalMaxPooling1D
             Node("add", "sum", (5, 6)),
             Node("layer", "d", (7,), spec=dense, weights={"kernel": rng.standard_normal((4, 2)).astype(np.float32),
                                                           "bias": np.zeros(2, np.float32)})]
    return ModelGraph(nodes, "reference", dtype)


def test_pools_keras_has_no_layer_for_are_lambdas_read_back():
    graph = _graph_with_pools()
    port = build_model(graph, "keras")
    assert any(type(layer).__name__ == "Lambda" for layer in port.layers)
    back = km.read(port)
    _same_graph(back, graph.replaced(framework="keras"))
    assert [n.name for n in back.nodes][5:7] == ["over_positions", "global_max"]  # sanitized names
    assert [type(layer).__name__ for layer in port.layers][5:7] == ["Lambda", "GlobalMaxPooling1D"]
    x = np.random.default_rng(8).standard_normal((2, 6, 5, 3)).astype(np.float32)
    h = x.reshape(2, 30, 3).astype(np.float64)
    k, b = graph.nodes[2].weights["kernel"], graph.nodes[2].weights["bias"]
    h = np.einsum("nwkc,kco->nwo", np.stack([h[:, :-1], h[:, 1:]], axis=2), k) + b
    h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))
    h = (np.transpose(h, (0, 2, 1)).mean(axis=2) + h.max(axis=1)) @ graph.nodes[-1].weights["kernel"]
    np.testing.assert_allclose(km.run(port, x), h, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", ["mixed_float16", "float64"])
def test_dtype_policies_round_trip(dtype):
    graph = _graph_with_pools(dtype)
    port = km.build(graph, "keras", "cpu")
    assert km.read(port).dtype == dtype
    x = np.random.default_rng(9).standard_normal((2, 6, 5, 3)).astype(np.float32)
    assert km.run(port, x).dtype == np.dtype("float16" if dtype == "mixed_float16" else "float64")


def test_build_refusals():
    # a (N, 30, 3) tensor read channels-first: 30 channels, 3 positions
    cf = ModelGraph([Node("input", "x", shape=(30, 3)), Node("layer", "c", (0,), spec=LayerSpec.conv(30, 4, 2),
                                                             weights={"kernel": np.zeros((2, 30, 4), np.float32),
                                                                      "bias": np.zeros(4, np.float32)},
                                                             channels_first=True)])
    with pytest.raises(UnsupportedModel, match="'c'.*channels-first"):
        km.build(cf, "keras", "cpu")
    assert build_model(cf, "keras").input_shape == (None, 3, 30)  # build_model lays it out channels-last first
    reflect = ModelGraph([Node("input", "x", shape=(8, 3)), Node("layer", "c", (0,), spec=LayerSpec.conv(
        3, 4, 3, padding="same", padding_mode="reflect"), weights={"kernel": np.zeros((3, 3, 4), np.float32),
                                                                   "bias": np.zeros(4, np.float32)})])
    with pytest.raises(UnsupportedModel, match="'c'.*reflect"):
        km.build(reflect, "keras", "cpu")


# ---- activations ------------------------------------------------------------------------------------

_C = math.sqrt(2 / math.pi)


def _reference(name, x):
    """(f(x), f'(x), scale of f's terms, scale of f''s terms) in float64."""
    one = np.ones_like(x)
    if name == "relu":
        return np.maximum(x, 0), (x > 0).astype(np.float64), np.abs(x), one
    if name == "tanh":
        t = np.tanh(x)
        return t, 1 - t * t, np.abs(t), one
    if name == "sigmoid":
        s = 1 / (1 + np.exp(-x))
        return s, s * (1 - s), s, one
    if name == "gelu":
        cdf = 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
        pdf = np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
        return x * cdf, cdf + x * pdf, np.abs(x), 1 + np.abs(x)
    u = _C * (x + 0.044715 * x ** 3)
    t = np.tanh(u)
    du = _C * (1 + 3 * 0.044715 * x * x)
    return 0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * du, np.abs(x), 1 + np.abs(x) * du


def _ulps(got, want, scale, dtype):
    """The error in units of the dtype's spacing at the magnitude of the terms computed (one at least normal)."""
    import ml_dtypes

    tiny = float(ml_dtypes.finfo(dtype).tiny)
    spacing = np.spacing(np.maximum(scale, tiny).astype(dtype)).astype(np.float64)
    return np.abs(got.astype(np.float64) - want) / spacing


_NAMES = ("relu", "gelu", "gelu_tanh", "tanh", "sigmoid")


def _check_activation(name, dtype, limit):
    forward, vjp = km.activation("keras", name, dtype)
    rng = np.random.default_rng(10)
    x = np.concatenate([rng.standard_normal(2000) * 3, [-9.0, -1.0, 0.0, 1e-3, 2.5, 9.0]]).astype(np.float32)
    g = rng.standard_normal(x.size).astype(np.float32)
    y, dx = forward(x), vjp(x, g)
    compute = numpy_dtype(compute_dtype(dtype))
    assert y.dtype == compute and dx.dtype == compute and y.shape == dx.shape == x.shape
    xs, gs = x.astype(compute).astype(np.float64), g.astype(compute).astype(np.float64)
    f, df, fscale, dscale = _reference(name, xs)
    assert _ulps(y, f, fscale, compute).max() <= limit, name
    assert _ulps(dx, gs * df, np.abs(gs) * dscale, compute).max() <= limit, name


@pytest.mark.parametrize("name", _NAMES)
def test_activation_matches_float64_within_a_few_ulps(name):
    _check_activation(name, "float32", 8)


@pytest.mark.parametrize("dtype", ["mixed_float16", "bfloat16"])
def test_activation_computes_in_the_half_type(dtype):
    import ml_dtypes

    if dtype == "bfloat16":
        assert km.activation("keras", "tanh", dtype)[0](np.zeros(3, np.float32)).dtype == ml_dtypes.bfloat16
    for name in _NAMES:
        _check_activation(name, dtype, 4)


def test_activation_refuses_an_unknown_name():
    with pytest.raises(UnsupportedModel, match="swish"):
        km.activation("keras", "swish", "float32")


def test_activation_on_the_jax_backend():
    pytest.importorskip("jax")
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        import keras
        assert keras.backend.backend() == "jax", keras.backend.backend()
        from test_models_keras import _NAMES, _check_activation
        for name in _NAMES:
            _check_activation(name, "float32", 8)
        print("ok")
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_a_subclass_of_a_supported_layer_is_refused(keras):
    class Scaled(keras.layers.Dense):
        def call(self, x):
            return 2 * super().call(x)

    with pytest.raises(UnsupportedModel, match=r"Scaled at 'twice': a subclass"):
        km.read(keras.Sequential([keras.Input((3,)), Scaled(2, name="twice")]))
