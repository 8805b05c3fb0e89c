"""Whole models in Flax (layer_conformance.adapters.models.flax): build, run, read back, Sequential, activations."""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from layer_conformance.adapters import reference
from layer_conformance.adapters.graph import ACTIVATIONS, ModelGraph, Node, UnsupportedModel
from layer_conformance.adapters.models import build_model, read_model, run_model
from layer_conformance.adapters.models import flax as port
from layer_conformance.adapters.spec import LayerSpec, numpy_dtype

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
flax = pytest.importorskip("flax")
from flax import linen as nn, nnx  # noqa: E402

FRAMEWORKS = ("flax.linen", "flax.nnx")
_erf = np.vectorize(math.erf)
_C = math.sqrt(2 / math.pi)


# ---- float64 NumPy: activations, their derivatives and a whole graph ---------------------------

def act64(name: str, x: np.ndarray) -> np.ndarray:
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "gelu":
        return 0.5 * x * (1 + _erf(x / math.sqrt(2)))
    if name == "gelu_tanh":
        return 0.5 * x * (1 + np.tanh(_C * (x + 0.044715 * x ** 3)))
    if name == "tanh":
        return np.tanh(x)
    assert name == "sigmoid"
    return 1 / (1 + np.exp(-x))


def grad64(name: str, x: np.ndarray) -> np.ndarray:
    if name == "relu":
        return (x > 0).astype(np.float64)
    if name == "gelu":
        return 0.5 * (1 + _erf(x / math.sqrt(2))) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
    if name == "gelu_tanh":
        t = np.tanh(_C * (x + 0.044715 * x ** 3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * _C * (1 + 3 * 0.044715 * x * x)
    if name == "tanh":
        return 1 - np.tanh(x) ** 2
    s = act64("sigmoid", x)
    return s * (1 - s)


def evaluate(graph: ModelGraph, x: np.ndarray) -> np.ndarray:
    """The graph's literal semantics in float64, layers by the reference (channels-last) oracle."""
    values: list[np.ndarray] = []
    for node in graph.nodes:
        ins = [values[i] for i in node.inputs]
        if node.op == "input":
            y = np.asarray(x, np.float64)
        elif node.op == "layer":
            assert node.spec is not None and node.weights is not None
            if node.channels_first and node.spec.kind == "conv":
                last = np.moveaxis(ins[0], 1, -1)
                y = np.moveaxis(reference.forward(node.spec, last, node.weights), -1, 1)
            else:
                y = reference.forward(node.spec, ins[0], node.weights)
        elif node.op == "act":
            y = act64(node.activation or "", ins[0])
        elif node.op == "flatten":
            y = ins[0].reshape(ins[0].shape[0], -1)
        elif node.op == "reshape":
            y = ins[0].reshape(ins[0].shape[0], *(node.shape or ()))
        elif node.op == "permute":
            y = np.transpose(ins[0], node.perm)
        elif node.op == "pool":
            y = (np.max if node.reduce == "max" else np.mean)(ins[0], axis=node.axes)
        else:
            assert node.op == "add"
            y = ins[0] + ins[1]
        values.append(y)
    return values[-1]


# ---- graphs built by hand -------------------------------------------------------------------------

def _weights(rng: np.random.Generator, spec: LayerSpec, dtype: str = "float32") -> dict[str, np.ndarray]:
    scale = 1 / math.sqrt(spec.reduction_length)
    w = {"kernel": rng.uniform(-scale, scale, spec.kernel_shape())}
    if spec.bias:
        w["bias"] = rng.uniform(-0.5, 0.5, spec.out_features)
    return {k: v.astype(numpy_dtype(dtype)) for k, v in w.items()}


def _layer(rng: np.random.Generator, name: str, inputs: tuple[int, ...], spec: LayerSpec, dtype: str = "float32",
           channels_first: bool = False) -> Node:
    return Node("layer", name, inputs, spec=spec, weights=_weights(rng, spec, dtype), channels_first=channels_first)


def conv1d_stack(rng: np.random.Generator, dtype: str = "float32") -> ModelGraph:
    """Conv1D: explicit pairs with dilation, causal, strided 'same'; flatten; dense."""
    c1 = LayerSpec.conv(3, 4, 3, padding=((2, 1),), dilation=2)
    c2 = LayerSpec.conv(4, 6, 3, padding="causal", dilation=2)
    c3 = LayerSpec.conv(6, 5, 4, padding="same", strides=2, bias=False)
    return ModelGraph([
        Node("input", "input", shape=(16, 3)),
        _layer(rng, "features.0", (0,), c1, dtype), Node("act", "features.1", (1,), activation="relu"),
        _layer(rng, "features.2", (2,), c2, dtype), Node("act", "features.3", (3,), activation="gelu"),
        _layer(rng, "features.4", (4,), c3, dtype), Node("act", "features.5", (5,), activation="tanh"),
        Node("flatten", "flatten", (6,)),
        _layer(rng, "head", (7,), LayerSpec.dense(8 * 5, 3), dtype), Node("act", "out", (8,), activation="sigmoid"),
    ], dtype=dtype, description="conv1d stack")


def residual(rng: np.random.Generator, dtype: str = "float32") -> ModelGraph:
    d = LayerSpec.dense(8, 8)
    return ModelGraph([
        Node("input", "input", shape=(5, 8)),
        _layer(rng, "block.fc1", (0,), d, dtype), Node("act", "block.act", (1,), activation="gelu_tanh"),
        _layer(rng, "block.fc2", (2,), d, dtype), Node("add", "block.add", (3, 0)),
        _layer(rng, "head", (4,), LayerSpec.dense(8, 2, bias=False), dtype),
    ], dtype=dtype)


def conv2d_pool(rng: np.random.Generator, dtype: str = "float32") -> ModelGraph:
    c = LayerSpec.conv(3, 4, (3, 2), padding="same", rank=2)
    return ModelGraph([
        Node("input", "input", shape=(6, 5, 3)),
        _layer(rng, "conv", (0,), c, dtype), Node("act", "act", (1,), activation="relu"),
        Node("pool", "pool", (2,), axes=(1, 2), reduce="mean"),
        _layer(rng, "fc", (3,), LayerSpec.dense(4, 2), dtype),
    ], dtype=dtype)


def grouped(rng: np.random.Generator, dtype: str = "float32") -> ModelGraph:
    """A grouped, strided 2-D convolution; permute, reshape, max pool, dense; a name needing sanitising."""
    c = LayerSpec.conv(4, 6, (2, 3), rank=2, strides=(1, 2), padding=((1, 0), (0, 2)), groups=2)
    return ModelGraph([
        Node("input", "input", shape=(5, 7, 4)),
        _layer(rng, "0/conv grouped", (0,), c, dtype),
        Node("permute", "permute", (1,), perm=(0, 3, 1, 2)),
        Node("reshape", "reshape", (2,), shape=(6, 20)),
        Node("pool", "pool", (3,), axes=(2,), reduce="max"),
        _layer(rng, "0/conv grouped ", (4,), LayerSpec.dense(6, 3), dtype),  # sanitises to the same name
    ], dtype=dtype)


GRAPHS = {"conv1d_stack": conv1d_stack, "residual": residual, "conv2d_pool": conv2d_pool, "grouped": grouped}


def _build_and_run(graph: ModelGraph, framework: str, x: np.ndarray) -> tuple[object, np.ndarray]:
    built = port.build(graph, framework, "cpu")
    if framework == "flax.linen":
        module, variables = built
        return built, port.run(module, x, variables)
    return built, port.run(built, x)


def _input(rng: np.random.Generator, graph: ModelGraph, dtype: str = "float32", batch: int = 3) -> np.ndarray:
    return rng.standard_normal((batch, *graph.input_shape)).astype(numpy_dtype(dtype))


def _read(built: object, framework: str) -> ModelGraph:
    if framework == "flax.linen":
        module, variables = built  # type: ignore[misc]
        return port.read(module, variables, None)
    return port.read(built, None, None)


def assert_same_graph(a: ModelGraph, b: ModelGraph) -> None:
    assert len(a.nodes) == len(b.nodes)
    assert a.dtype == b.dtype and a.shapes == b.shapes and a.description == b.description
    for x, y in zip(a.nodes, b.nodes):
        for attribute in ("op", "name", "inputs", "spec", "channels_first", "activation", "shape", "perm", "axes",
                          "reduce"):
            assert getattr(x, attribute) == getattr(y, attribute), (x.name, attribute)
        if x.op == "layer":
            assert x.weights is not None and y.weights is not None
            assert sorted(x.weights) == sorted(y.weights)
            for key in x.weights:
                assert y.weights[key].dtype == x.weights[key].dtype
                np.testing.assert_array_equal(y.weights[key], x.weights[key])


# ---- build and run ----------------------------------------------------------------------------------

@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("name", list(GRAPHS))
def test_run_matches_float64_evaluation(name: str, framework: str) -> None:
    rng = np.random.default_rng(1)
    graph = GRAPHS[name](rng)
    x = _input(rng, graph)
    _, y = _build_and_run(graph, framework, x)
    expected = evaluate(graph, x)
    assert y.dtype == np.float32 and y.shape == expected.shape == (3, *graph.shapes[-1])
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(y - expected).max() <= 64 * np.finfo(np.float32).eps * scale


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_float64_runs_in_float64(framework: str) -> None:
    rng = np.random.default_rng(2)
    graph = conv1d_stack(rng, "float64")
    x = _input(rng, graph, "float64")
    _, y = _build_and_run(graph, framework, x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, evaluate(graph, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bfloat16_model(framework: str) -> None:
    rng = np.random.default_rng(3)
    graph = residual(rng, "bfloat16")
    x = _input(rng, graph, "bfloat16")
    built, y = _build_and_run(graph, framework, x.astype(np.float32))  # run casts the input to the model's dtype
    assert y.dtype == numpy_dtype("bfloat16")
    expected = evaluate(graph, x)
    assert np.abs(y.astype(np.float64) - expected).max() <= 0.1 * max(1.0, float(np.abs(expected).max()))
    assert_same_graph(graph.replaced(framework=framework), _read(built, framework))


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("name", list(GRAPHS))
def test_round_trip(name: str, framework: str) -> None:
    graph = GRAPHS[name](np.random.default_rng(4))
    back = _read(port.build(graph, framework, "cpu"), framework)
    assert back.framework == framework
    assert_same_graph(graph, back)


def test_built_modules() -> None:
    graph = grouped(np.random.default_rng(5))
    module, variables = port.build(graph, "flax.linen", "cpu")
    assert isinstance(module, nn.Module) and type(module).__name__ == "PortedLinen"
    hash(module)  # its structure is static
    assert sorted(variables["params"]) == ["layer_0_conv_grouped", "layer_0_conv_grouped_2"]
    assert variables["params"]["layer_0_conv_grouped"]["kernel"].shape == (2, 3, 2, 6)
    assert "kernel" not in str(module)  # the weights stay in the variables
    nnx_model = port.build(graph, "flax.nnx", "cpu")
    assert isinstance(nnx_model, nnx.Module) and type(nnx_model).__name__ == "PortedNnx"
    assert isinstance(nnx_model.layers[0], nnx.Conv) and isinstance(nnx_model.layers[1], nnx.Linear)
    assert nnx_model.layers[0].use_bias and nnx_model.layers[0].feature_group_count == 2
    # the framework-level entry points find this module by the model's class
    assert read_model(nnx_model).framework == "flax.nnx"
    assert read_model(module, variables).framework == "flax.linen"
    x = _input(np.random.default_rng(6), graph)
    np.testing.assert_array_equal(run_model(module, x, variables), port.run(nnx_model, x))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_build_model_ports_a_channels_first_graph(framework: str) -> None:
    """A torch-layout graph: build_model lays it out channels-last; the port takes channels-last inputs."""
    rng = np.random.default_rng(7)
    c = LayerSpec.conv(3, 4, 3, padding=((1, 1),))
    graph = ModelGraph([
        Node("input", "input", shape=(3, 10)),
        _layer(rng, "conv", (0,), c, channels_first=True), Node("act", "relu", (1,), activation="relu"),
        Node("flatten", "flatten", (2,)), _layer(rng, "fc", (3,), LayerSpec.dense(40, 2)),
    ], framework="torch")
    model = build_model(graph, framework)
    x = rng.standard_normal((2, 3, 10)).astype(np.float32)
    params = model[1] if framework == "flax.linen" else None
    y = run_model(model[0] if params else model, np.moveaxis(x, 1, -1), params)
    np.testing.assert_allclose(y, evaluate(graph, x), rtol=1e-5, atol=1e-5)


def test_build_refuses() -> None:
    rng = np.random.default_rng(8)
    c = LayerSpec.conv(3, 4, 3)
    nodes = [Node("input", "input", shape=(3, 10)), _layer(rng, "encoder.conv", (0,), c, channels_first=True)]
    with pytest.raises(UnsupportedModel, match=r"channels-first.*'encoder\.conv'"):
        port.build(ModelGraph(nodes), "flax.linen", "cpu")
    reflect = LayerSpec.conv(3, 4, 3, padding="same", padding_mode="reflect")
    graph = ModelGraph([Node("input", "input", shape=(10, 3)), _layer(rng, "pad.conv", (0,), reflect)])
    with pytest.raises(UnsupportedModel, match=r"'pad\.conv'.*padding_mode='reflect'"):
        port.build(graph, "flax.nnx", "cpu")
    mixed = residual(rng).replaced(dtype="mixed_bfloat16")
    with pytest.raises(UnsupportedModel, match="mixed_bfloat16.*Keras only"):
        port.build(mixed, "flax.linen", "cpu")
    with pytest.raises(ValueError, match="flax.linen and flax.nnx"):
        port.build(residual(rng), "torch", "cpu")


def test_read_ported_checks_input_shape_and_params() -> None:
    graph = residual(np.random.default_rng(9))
    module, variables = port.build(graph, "flax.linen", "cpu")
    assert_same_graph(graph, port.read(module, variables, (5, 8)))
    with pytest.raises(UnsupportedModel, match=r"built for inputs of shape \(5, 8\)"):
        port.read(module, variables, (4, 8))
    with pytest.raises(UnsupportedModel, match="holds no weights"):
        port.read(module, None, None)
    with pytest.raises(UnsupportedModel, match="params= is for flax.linen"):
        port.read(port.build(graph, "flax.nnx", "cpu"), variables, None)
    # the weights read are those the model holds now
    changed = jax.tree.map(lambda a: a * 2, variables)
    back = port.read(module, changed, None)
    np.testing.assert_array_equal(back.nodes[1].weights["kernel"], 2 * graph.nodes[1].weights["kernel"])


# ---- reading Sequential models --------------------------------------------------------------------

def test_read_linen_sequential() -> None:
    model = nn.Sequential([
        nn.Conv(4, (3,), padding="CAUSAL"), nn.gelu,
        nn.Conv(5, (3,), padding=((1, 1),), kernel_dilation=2, use_bias=False),
        functools.partial(jax.nn.gelu, approximate=False),
        nn.Dropout(0.5, deterministic=True),
        nn.Dense(2), jax.nn.relu, jnp.tanh, nn.sigmoid,
    ])
    variables = model.init(jax.random.key(0), jnp.ones((1, 9, 3)))
    graph = port.read(model, variables, (9, 3))
    assert graph.framework == "flax.linen" and graph.dtype == "float32"
    assert [n.op for n in graph.nodes] == ["input", "layer", "act", "layer", "act", "layer", "act", "act", "act"]
    assert [n.activation for n in graph.nodes if n.op == "act"] == ["gelu_tanh", "gelu", "relu", "tanh", "sigmoid"]
    assert [n.name for n in graph.nodes if n.op == "layer"] == ["layers_0", "layers_2", "layers_5"]
    assert graph.nodes[1].spec.padding == "causal" and graph.nodes[3].spec.padding == ((1, 1),)
    assert graph.shapes[-1] == (7, 2)
    x = np.random.default_rng(10).standard_normal((2, 9, 3)).astype(np.float32)
    y = np.asarray(model.apply(variables, x))
    np.testing.assert_allclose(evaluate(graph, x), y, rtol=1e-5, atol=1e-6)  # gelu's default is the tanh form
    module, ported = port.build(graph, "flax.linen", "cpu")
    np.testing.assert_allclose(port.run(module, x, ported), y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(port.run(model, x, variables), y, rtol=0, atol=0)


def test_read_nnx_sequential() -> None:
    rngs = nnx.Rngs(0)
    model = nnx.Sequential(
        nnx.Linear(5, 6, rngs=rngs), nnx.gelu, nnx.Dropout(0.3, rngs=rngs),
        nnx.Sequential(nnx.Conv(6, 4, (2,), padding="VALID", rngs=rngs), nnx.relu),
        nnx.Linear(4, 3, rngs=rngs), functools.partial(nnx.gelu, approximate=True),
    )
    model.eval()  # Dropout deterministic
    with pytest.raises(UnsupportedModel, match="input_shape"):
        port.read(model, None, None)
    graph = port.read(model, None, (7, 5))
    assert [n.name for n in graph.nodes] == ["input", "layers.0", "layers.1", "layers.3.layers.0",
                                             "layers.3.layers.1", "layers.4", "layers.5"]
    assert [n.activation for n in graph.nodes if n.op == "act"] == ["gelu_tanh", "relu", "gelu_tanh"]
    x = np.random.default_rng(11).standard_normal((2, 7, 5)).astype(np.float32)
    y = np.asarray(model(x))
    np.testing.assert_allclose(evaluate(graph, x), y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(port.run(port.build(graph, "flax.nnx", "cpu"), x), y, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(port.run(model, x), y)


def test_read_single_layer() -> None:
    layer = nnx.Conv(3, 4, (3, 3), padding="SAME", rngs=nnx.Rngs(1))
    graph = port.read(layer, None, (5, 5, 3))
    assert [n.op for n in graph.nodes] == ["input", "layer"] and graph.shapes[-1] == (5, 5, 4)
    dense = nn.Dense(3)
    variables = dense.init(jax.random.key(0), jnp.ones((1, 4)))
    assert port.read(dense, variables, (4,)).nodes[1].spec == LayerSpec.dense(4, 3)


def _linen_refusal(layers: list, at: int, variables_from: list | None = None) -> str:
    init_layers = variables_from if variables_from is not None else layers
    variables = nn.Sequential(init_layers).init(jax.random.key(0), jnp.ones((1, 4)))
    with pytest.raises(UnsupportedModel) as info:
        port.read(nn.Sequential(layers), variables, (4,))
    message = str(info.value)
    assert f"'layers_{at}'" in message
    return message


def test_linen_refusals() -> None:
    assert "flax.linen.BatchNorm" in _linen_refusal([nn.Dense(4), nn.BatchNorm(use_running_average=True)], 1)
    message = _linen_refusal([nn.Dense(4), nn.relu, lambda x: x * 2, nn.Dense(2)], 2)
    assert "<lambda>" in message and message.count("\n") == 0
    message = _linen_refusal([nn.Dense(4), nn.Dropout(0.5)], 1, variables_from=[nn.Dense(4)])
    assert "flax.linen.Dropout" in message and "deterministic=True" in message
    assert "functools.partial" in _linen_refusal([functools.partial(jax.nn.gelu, 1.0)], 0, variables_from=[nn.Dense(4)])
    mixed = _linen_refusal([nn.Dense(4, dtype=jnp.bfloat16)], 0)
    assert "mixed precision" in mixed and "flax.linen.Dense" in mixed
    # 3-D convolutions are outside LayerSpec: refused by the layer reader, with where it sits
    conv3 = nn.Sequential([nn.Conv(2, (1, 1, 1))])
    v3 = conv3.init(jax.random.key(0), jnp.ones((1, 2, 2, 2, 1)))
    with pytest.raises(UnsupportedModel, match="'layers_0'"):
        port.read(conv3, v3, (2, 2, 2, 1))


def test_linen_refusals_of_models() -> None:
    class Custom(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(x)

    with pytest.raises(UnsupportedModel, match="Custom"):
        port.read(Custom(), {"params": {}}, (4,))
    model = nn.Sequential([nn.Dense(2)])
    variables = model.init(jax.random.key(0), jnp.ones((1, 4)))
    with pytest.raises(UnsupportedModel, match="input_shape"):
        port.read(model, variables, None)
    with pytest.raises(UnsupportedModel, match="holds no weights"):
        port.read(model, None, (4,))
    with pytest.raises(UnsupportedModel, match="layers_0.*4 inputs"):  # the graph's own shape check
        port.read(model, variables, (5,))


def test_nnx_refusals() -> None:
    rngs = nnx.Rngs(0)
    cases = [
        (nnx.Sequential(nnx.Linear(4, 4, rngs=rngs), nnx.BatchNorm(4, rngs=rngs)), "'layers.1'", "flax.nnx.BatchNorm"),
        (nnx.Sequential(nnx.Linear(4, 4, rngs=rngs), nnx.relu, lambda x: x + 1), "'layers.2'", "<lambda>"),
        (nnx.Sequential(nnx.Linear(4, 4, rngs=rngs), nnx.Dropout(0.5, rngs=rngs)), "'layers.1'", "model.eval()"),
        (nnx.Sequential(nnx.Sequential(nnx.Linear(4, 4, rngs=rngs), nnx.LayerNorm(4, rngs=rngs))),
         "'layers.0.layers.1'", "flax.nnx.LayerNorm"),
        (nnx.Sequential(nnx.Linear(4, 4, rngs=rngs), nnx.Linear(4, 4, dtype=jnp.float16, param_dtype=jnp.float16,
                                                                 rngs=rngs)), "'layers.1'", "one dtype"),
    ]
    for model, where, what in cases:
        with pytest.raises(UnsupportedModel) as info:
            port.read(model, None, (4,))
        assert where in str(info.value) and what in str(info.value), str(info.value)
    with pytest.raises(UnsupportedModel, match="params= is for flax.linen"):
        port.read(cases[0][0], {"params": {}}, (4,))
    with pytest.raises(UnsupportedModel, match="not a Flax module"):
        port.read(object(), None, (4,))


# ---- activations --------------------------------------------------------------------------------------

def _vjp_scale(name: str, x: np.ndarray) -> np.ndarray:
    """What jax's derivative formula cancels against: 1 - tanh^2, s (1 - s), 1 + erf (1 + tanh) and x."""
    extra = {"relu": 0.0, "tanh": 1.0, "sigmoid": act64("sigmoid", x), "gelu": 1 + np.abs(x),
             "gelu_tanh": 1 + np.abs(x)}[name]
    return np.abs(grad64(name, x)) + extra


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_within_a_few_ulps(name: str, dtype: str, framework: str) -> None:
    rng = np.random.default_rng(12)
    cast = numpy_dtype(dtype)
    x = np.concatenate([np.linspace(-6, 6, 601), 3 * rng.standard_normal(400), [0.0]]).astype(cast)
    g = rng.standard_normal(x.shape).astype(cast)
    forward, vjp = port.activation(framework, name, dtype)
    y, dx = forward(x), vjp(x, g)
    assert y.dtype == cast and dx.dtype == cast and y.shape == dx.shape == x.shape
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    eps = float(np.finfo(cast).eps)
    # 1 + erf(x) and 1 + tanh(x) cancel for negative x: the gelus are accurate relative to |x| there
    forward_scale = np.abs(act64(name, x64)) + (np.abs(x64) if name.startswith("gelu") else 0.0)
    assert np.all(np.abs(y.astype(np.float64) - act64(name, x64)) <= 4 * eps * forward_scale)
    vjp_error = np.abs(dx.astype(np.float64) - g64 * grad64(name, x64))
    assert np.all(vjp_error <= 8 * eps * np.abs(g64) * _vjp_scale(name, x64))
    assert port.activation(framework, name, dtype)[0](x).tobytes() == y.tobytes()  # compiled once, same result


def test_activation_refusals() -> None:
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        port.activation("flax.linen", "swish", "float32")
    with pytest.raises(UnsupportedModel, match="Keras only"):
        port.activation("flax.nnx", "relu", "mixed_float16")
    with pytest.raises(ValueError, match="not 'keras'"):
        port.activation("keras", "relu", "float32")


def test_import_is_lazy() -> None:
    import subprocess
    import sys

    code = ("import sys, layer_conformance.adapters.models.flax as m; "
            "assert 'jax' not in sys.modules and 'flax' not in sys.modules, sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True)
