"""Whole torch models read into a ModelGraph (adapters.models.torch) and built back from one.

The built model runs the same torch operations as the original on the same weights, so its output must
match to float32 rounding: a difference means a module, a folded pad or crop, or a layout was read wrong.
"""
from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from layer_conformance.adapters.graph import ACTIVATIONS, ModelGraph, UnsupportedModel, channels_last, input_layout
from layer_conformance.adapters.models import torch as models_torch
from layer_conformance.adapters.models.torch import PortedModule, activation, build, read, run
from port_models import MODELS


def sample(shape, seed: int = 0, batch: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *shape)).astype(np.float32)


def same_output(model: nn.Module, shape, **tolerance) -> ModelGraph:
    """Read `model`, build the graph, and check the port computes the model's output on a batch of 3."""
    graph = read(model, None, shape)
    x = sample(shape)
    np.testing.assert_allclose(run(build(graph), x), run(model, x), **(tolerance or {"rtol": 1e-5, "atol": 1e-6}))
    return graph


# ---- the published-style models -----------------------------------------------------------------------

@pytest.mark.parametrize("name", list(MODELS))
def test_port_computes_the_model(name):
    make, shape = MODELS[name]
    model = make()
    graph = same_output(model, shape)
    assert graph.framework == "torch" and graph.dtype == "float32"
    assert graph.input_shape == shape
    n_layers = sum(isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)) for m in model.modules())
    assert len(graph.layers()) == n_layers
    assert graph.shapes[-1] == tuple(run(model, sample(shape)).shape[1:])


@pytest.mark.parametrize("name", list(MODELS))
def test_round_trip_keeps_ops_and_weights(name):
    make, shape = MODELS[name]
    graph = read(make(), None, shape)
    ported = build(graph)
    assert isinstance(ported, PortedModule)
    back = read(ported, None, None)
    assert [(n.op, n.name, n.inputs, n.spec, n.activation, n.shape, n.perm, n.axes, n.reduce, n.channels_first)
            for n in back.nodes] == \
           [(n.op, n.name, n.inputs, n.spec, n.activation, n.shape, n.perm, n.axes, n.reduce, n.channels_first)
            for n in graph.nodes]
    assert back.dtype == graph.dtype
    for i in graph.layers():
        assert back.nodes[i].weights.keys() == graph.nodes[i].weights.keys()
        for key, value in graph.nodes[i].weights.items():
            np.testing.assert_array_equal(back.nodes[i].weights[key], value)


def test_ported_module_reads_its_current_parameters():
    make, shape = MODELS["pointnet"]
    graph = read(make(), None, shape)
    ported = build(graph)
    first = graph.layers()[0]
    with torch.no_grad():
        ported.layers["conv1"].bias.add_(1.0)
    back = read(ported, None, shape)
    np.testing.assert_array_equal(back.nodes[first].weights["bias"], graph.nodes[first].weights["bias"] + 1)
    with pytest.raises(UnsupportedModel, match=r"\(64, 3\)"):
        read(ported, None, (32, 3))


@pytest.mark.parametrize("name", list(MODELS))
def test_channels_last_port_computes_the_model(name):
    make, shape = MODELS[name]
    model = make()
    graph = read(model, None, shape)
    ported = channels_last(graph)
    assert not any(ported.nodes[i].channels_first for i in ported.layers())
    x = sample(shape)
    layout = input_layout(graph, ported)
    # every model here starts with a convolution on its input, but PointNet, which takes (points, xyz) and
    # transposes them itself, as its training loop does
    assert (layout is None) == (name == "pointnet")
    port_x = x if layout is None else np.transpose(x, layout)
    np.testing.assert_allclose(run(build(ported), port_x), run(model, x), rtol=1e-5, atol=1e-6)


# ---- folded padding ------------------------------------------------------------------------------------

def conv_specs(graph: ModelGraph) -> dict[str, object]:
    return {graph.nodes[i].name: graph.nodes[i].spec for i in graph.layers()}


def test_chomp_folds_into_causal_padding():
    make, shape = MODELS["tcn"]
    specs = conv_specs(read(make(), None, shape))
    first = specs["network.0.conv1"]
    assert first.padding == ((2, 0),) and first.dilation == (1,)
    assert specs["network.1.conv2"].padding == ((4, 0),) and specs["network.1.conv2"].dilation == (2,)
    assert specs["network.2.conv1"].padding == ((8, 0),)
    assert specs["network.0.downsample"].padding == "valid"


class Padded(nn.Module):
    """F.pad and pad modules before convolutions, and crops of convolution outputs on both sides."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv1d(2, 4, 3, padding=1)
        self.pad2 = nn.ZeroPad2d((1, 2, 3, 0))  # (left, right, top, bottom): width first
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, stride=(1, 2))
        self.pad3 = nn.ConstantPad1d((0, 2), 0.0)
        self.conv3 = nn.Conv1d(4, 3, 2, stride=2, padding=3)

    def forward(self, x):
        y = self.conv1(F.pad(x, (3, 1)))  # (N, 4, 12 + 4)
        y = y.reshape(y.size(0), 4, 2, 8)
        y = self.conv2(self.pad2(y))[:, :, 1:, :]  # crop one row of the top padding
        y = y.flatten(2)
        y = self.conv3(self.pad3(y))[..., 1:-1]
        return y


def test_pads_and_crops_fold_into_padding_pairs():
    model = Padded().eval()
    graph = same_output(model, (2, 12))
    specs = conv_specs(graph)
    assert specs["conv1"].padding == ((4, 2),)  # F.pad (3, 1) plus the conv's own 1 each side
    assert specs["conv2"].padding == ((3, 1), (2, 3))  # rows: 3 + 1 - 1 (cropped), 0 + 1; columns: 1 + 1, 2 + 1
    assert specs["conv3"].padding == ((1, 3),)  # 3 + 0 - 1 * stride 2, 3 + 2 - 1 * stride 2
    assert [n.op for n in graph.nodes].count("layer") == 3


def test_chomp_of_a_same_padded_conv_and_a_crop_to_no_padding():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv1d(1, 2, 3, padding="same")
            self.b = nn.Conv1d(2, 2, 3, padding=1)

        def forward(self, x):
            return self.b(self.a(x)[:, :, :-1])[:, :, 1:-1]

    graph = same_output(Net().eval(), (1, 10))
    specs = conv_specs(graph)
    assert specs["a"].padding == ((1, 0),)
    assert specs["b"].padding == "valid"


@pytest.mark.parametrize("forward, why", [
    (lambda self, x: self.conv(x)[:, :, :-4], "removes more than the padding"),
    (lambda self, x: self.conv(x)[:, 1:, :], "crops the batch or channel axis"),
    (lambda self, x: self.conv(x)[:, :, ::2], "steps"),
    (lambda self, x: x[:, :, :-1], "a crop of a convolution's positions"),
    (lambda self, x: self.conv(x) + F.pad(self.conv(x)[:, :, 1:], (0, 1)),
     "only when its one consumer is a Conv1d or Conv2d"),
    (lambda self, x: F.relu(F.pad(x, (1, 1))), "only when its one consumer is a Conv1d or Conv2d"),
    (lambda self, x: self.conv(F.pad(x, (1, 1), value=1.0)), "only zero padding"),
    (lambda self, x: self.conv(F.pad(x, (1, 1), mode="reflect")), "only zero padding"),
    (lambda self, x: self.conv(F.pad(x, (0, 0, 0, 0, 1, 0))), "spatial axes"),
])
def test_crops_and_pads_that_do_not_fold_are_refused(forward, why):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 2, 3, padding=1)

    Net.forward = forward
    with pytest.raises(UnsupportedModel, match="unsupported module") as info:
        read(Net().eval(), None, (2, 8))
    assert why in str(info.value)


def test_conv_with_two_consumers_is_not_cropped():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 2, 3, padding=1)

        def forward(self, x):
            y = self.conv(x)
            return y[:, :, :-1].mean(2) + y.mean(2)

    with pytest.raises(UnsupportedModel, match="'conv' has other consumers"):
        read(Net().eval(), None, (2, 8))


# ---- other supported operations -------------------------------------------------------------------------

def test_supported_operations_compute_the_model():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.act = nn.ReLU(inplace=True)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.maxpool = nn.AdaptiveMaxPool2d((1, 1))
            self.skip = nn.Identity()
            self.drop = nn.Dropout(0.5)
            self.proj = nn.Linear(8, 6)
            self.seq = nn.Conv1d(6, 4, 1)
            self.flat = nn.Flatten(2)
            self.head = nn.Linear(4 * 20, 8)
            self.out = nn.Linear(8, 3)

        def forward(self, x):
            y = self.act(self.conv(x))  # (N, 8, 5, 4)
            a = self.pool(y).view(y.size(0), -1) + self.maxpool(y).flatten(1)  # (N, 8)
            b = y.amax(dim=(2, 3)) + torch.mean(y, (-1, -2), keepdim=True).reshape(-1, 8)
            t = self.flat(y).transpose(1, 2)  # (N, 20, 8)
            t = self.drop(self.proj(self.skip(t)))  # a dense layer on the last axis: (N, 20, 6)
            t = torch.permute(t, (0, 2, 1)).contiguous()  # (N, 6, 20)
            t = F.gelu(self.seq(t))  # (N, 4, 20)
            t = t.sigmoid()
            t = self.head(t.reshape(t.shape[0], t.size(1) * 20))  # (N, 8)
            s = F.dropout(torch.tanh(torch.add(a, b, alpha=1)), training=False)
            return self.out(t.add(s).relu_())

    model = Net().eval()
    graph = same_output(model, (3, 5, 4))
    ops = [n.op for n in graph.nodes]
    assert {"pool", "reshape", "permute", "flatten", "add", "act", "layer"} <= set(ops)
    assert [n.activation for n in graph.nodes if n.op == "act"] == ["relu", "gelu", "sigmoid", "tanh", "relu"]
    x = sample((3, 5, 4))
    ported = channels_last(graph)
    np.testing.assert_allclose(run(build(ported), np.transpose(x, input_layout(graph, ported))),
                               run(model, x), rtol=1e-5, atol=1e-6)


def test_keepdim_max_and_transpose_read_as_pool_reshape_and_permute():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 4, 1)

        def forward(self, x):
            y = self.conv(x)
            return y.max(dim=-1, keepdim=True)[0].transpose(1, 2) + torch.amax(y, 2, True).permute(0, 2, 1)

    graph = same_output(Net().eval(), (2, 6))
    pools = [n for n in graph.nodes if n.op == "pool"]
    assert [(n.axes, n.reduce) for n in pools] == [((2,), "max"), ((2,), "max")]
    assert [n.perm for n in graph.nodes if n.op == "permute"] == [(0, 2, 1), (0, 2, 1)]
    assert graph.shapes[-1] == (1, 4)


# ---- dtypes -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype, tolerance", [("float64", {"rtol": 1e-12, "atol": 1e-12}),
                                              ("bfloat16", {"rtol": 2e-2, "atol": 2e-2})])
def test_dtypes_are_read_built_and_run(dtype, tolerance):
    make, shape = MODELS["tcn"]
    model = make().to(getattr(torch, dtype))
    graph = read(model, None, shape)
    assert graph.dtype == dtype
    ported = build(graph)
    assert next(ported.parameters()).dtype == getattr(torch, dtype)
    x = sample(shape).astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    out, expected = run(ported, x), run(model, x)
    assert out.dtype == expected.dtype == (np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype))
    np.testing.assert_allclose(out.astype(np.float64), expected.astype(np.float64), **tolerance)


def test_mixed_policies_and_mixed_layer_dtypes_are_refused():
    make, shape = MODELS["pointnet"]
    graph = read(make(), None, shape)
    with pytest.raises(UnsupportedModel, match="mixed_float16.*Keras mixed-precision policy"):
        build(graph.replaced(dtype="mixed_float16"))
    model = make()
    model.fc2.to(torch.float64)
    with pytest.raises(UnsupportedModel, match="different dtypes.*fc2: float64"):
        read(model, None, shape)


# ---- refusals -----------------------------------------------------------------------------------------

class Encoder(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind
        self.conv1 = nn.Conv1d(3, 8, 3)
        self.bn1 = nn.BatchNorm1d(8)
        self.rnn = nn.LSTM(8, 8, batch_first=True)

    def forward(self, x):
        y = self.conv1(x)
        if self.kind == "batchnorm":
            return self.bn1(y)
        if self.kind == "lstm":
            return self.rnn(y.transpose(1, 2))[0]
        return torch.cat([y, y], dim=1)


class Wrapper(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.blocks = nn.ModuleList([Encoder(kind)])

    def forward(self, x):
        return self.blocks[0](x)


@pytest.mark.parametrize("kind, what, where", [
    ("batchnorm", "torch.nn.BatchNorm1d", "'blocks.0.bn1'"),
    ("lstm", "torch.nn.LSTM", "'blocks.0.rnn'"),
    ("cat", "torch.cat", "'cat'"),
])
def test_unsupported_modules_are_named_with_their_path(kind, what, where):
    with pytest.raises(UnsupportedModel) as info:
        read(Wrapper(kind).eval(), None, (3, 16))
    message = str(info.value)
    assert f"unsupported module {what} at {where}" in message
    assert "\n" not in message
    if kind == "cat":
        assert "in the forward of 'blocks.0'" in message


def test_missing_input_shape_says_how_to_pass_it():
    make, _ = MODELS["pointnet"]
    with pytest.raises(UnsupportedModel, match=r"pass input_shape.*batch left out.*input_shape=\(3, 1024\)"):
        read(make(), None, None)


def test_wrong_input_shape_names_the_shape():
    make, _ = MODELS["lenet"]
    with pytest.raises(UnsupportedModel, match=r"fails on an input of shape \(2, 1, 20, 20\)"):
        read(make(), None, (1, 20, 20))


@pytest.mark.parametrize("module, why", [
    (nn.AdaptiveAvgPool1d(2), "output_size=2"),
    (nn.Dropout(0.1), "call model.eval()"),
    (nn.Softmax(dim=1), ""),
    (nn.Flatten(0), "flattens the batch axis"),
])
def test_unsupported_module_settings(module, why):
    model = nn.Sequential(nn.Conv1d(2, 3, 1), module).eval()
    if isinstance(module, nn.Dropout):
        model.train()
    with pytest.raises(UnsupportedModel, match=f"unsupported module torch.nn.{type(module).__name__} at '1'") as info:
        read(model, None, (2, 4))
    assert why in str(info.value)


@pytest.mark.parametrize("forward, why", [
    (lambda self, x: self.conv(x).view(2, -1), "not the batch size"),
    (lambda self, x: self.conv(x).permute(1, 0, 2), "moves the batch axis"),
    (lambda self, x: self.conv(x) + 1.0, "only the sum of two tensors"),
    (lambda self, x: self.conv(x).mean(2)[:, :1], "a crop of a convolution"),
    (lambda self, x: torch.max(self.conv(x), 2)[1].float(), "argmax"),
    (lambda self, x: self.conv(x).mean(), "every axis"),
    (lambda self, x: self.conv(x).sum(2), ""),
    (lambda self, x: self.conv(x).mean(0), "reduces over the batch axis"),
    (lambda self, x: torch.amax(self.conv(x), (0, 2)), "reduces over the batch axis"),
])
def test_unsupported_functions(forward, why):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 2, 1)

    Net.forward = forward
    with pytest.raises(UnsupportedModel, match="unsupported module") as info:
        read(Net().eval(), None, (2, 8))
    assert why in str(info.value)


# ---- activations --------------------------------------------------------------------------------------

def _phi(x):
    return np.exp(-x * x / 2) / math.sqrt(2 * math.pi)


def _cdf(x):
    return 0.5 * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


_C = math.sqrt(2 / math.pi)
REFERENCE = {  # float64 value and derivative
    "relu": (lambda x: np.maximum(x, 0), lambda x: (x > 0).astype(np.float64)),
    "gelu": (lambda x: x * _cdf(x), lambda x: _cdf(x) + x * _phi(x)),
    "gelu_tanh": (lambda x: 0.5 * x * (1 + np.tanh(_C * (x + 0.044715 * x ** 3))),
                  lambda x: 0.5 * (1 + np.tanh(_C * (x + 0.044715 * x ** 3)))
                  + 0.5 * x * (1 - np.tanh(_C * (x + 0.044715 * x ** 3)) ** 2) * _C * (1 + 3 * 0.044715 * x ** 2)),
    "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "sigmoid": (lambda x: 1 / (1 + np.exp(-x)), lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2),
}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_forward_and_vjp(name, dtype):
    npdtype = np.dtype(ml_dtypes.bfloat16) if dtype == "bfloat16" else np.dtype(dtype)
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(200) * 3).astype(npdtype)
    g = rng.standard_normal(200).astype(npdtype)
    forward, vjp = activation("torch", name, dtype)
    y, dx = forward(x), vjp(x, g)
    assert y.dtype == dx.dtype == npdtype and y.shape == dx.shape == x.shape
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    value, slope = REFERENCE[name]
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == "float32" else {"rtol": 2e-2, "atol": 2e-2}
    np.testing.assert_allclose(y.astype(np.float64), value(x64), **tol)
    np.testing.assert_allclose(dx.astype(np.float64), g64 * slope(x64), **tol)


def test_gelu_forms_differ_and_unknown_names_are_refused():
    x = np.linspace(-4, 4, 101).astype(np.float32)
    exact, _ = activation("torch", "gelu", "float32")
    approximate, _ = activation("torch", "gelu_tanh", "float32")
    assert np.abs(exact(x) - approximate(x)).max() > 1e-5
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        activation("torch", "swish", "float32")


def test_module_namespace_is_the_framework_module():
    assert models_torch.__name__ == "layer_conformance.adapters.models.torch"
