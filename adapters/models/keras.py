"""Keras 3 whole models: read a Sequential or functional `keras.Model` into a `ModelGraph`, build one back.

`read` walks the model's graph of layer calls from its output back to its input (a model nested in
another is read in place, its layers named ``outer.inner``); `build` makes a functional model with one
Keras layer per node. Both speak the layouts Keras does: convolutions channels-last. `run` is the
model's own call in inference; `activation` is Keras' own activation on the current backend, with its
vector-Jacobian product by that backend's autodiff (tensorflow, jax or torch).

Keras is imported through the layer adapter (layer_conformance.adapters.keras), and only when one of
these functions is called: it silences TensorFlow's start-up output and turns on float64 for jax.
"""
from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from ..graph import ModelGraph, Node, UnsupportedModel, refuse
from ..spec import DTYPES, SpecError, compute_dtype, numpy_dtype, variable_dtype

__all__ = ["read", "build", "run", "activation", "gelu_tanh"]

# the exact dtypes a layer computing in the key holds without rounding (layout layers may be wider)
_HOLDS = {"float64": ("float64", "float32", "float16", "bfloat16"), "float32": ("float32", "float16", "bfloat16"),
          "float16": ("float16",), "bfloat16": ("bfloat16",)}


def _adapter() -> Any:
    """The Keras layer adapter module: its import silences TensorFlow's start-up and enables jax float64."""
    from .. import keras as adapter

    return adapter


def gelu_tanh(x: Any) -> Any:
    """GELU in its tanh approximation, keras.activations.gelu(x, approximate=True): the activation `build`
    gives a ``gelu_tanh`` node, and one `read` recognises."""
    import keras

    return keras.activations.gelu(x, approximate=True)


def _reduce(x: Any, reduce: str, axes: tuple[int, ...]) -> Any:
    """``max`` or ``mean`` over `axes`, dropped: the Lambda `build` makes for pooling no Keras layer does."""
    import keras

    return (keras.ops.max if reduce == "max" else keras.ops.mean)(x, axis=axes)


# ---- read ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Pad:
    """The output of a ZeroPadding layer, held back until the convolution it is folded into reads it."""

    source: int  # the node it pads
    pairs: tuple[tuple[int, int], ...]
    name: str
    cls: str


@dataclass
class _Call:
    """One call of a layer in the model: `node` is its Keras Node; `ctx` the nested model calls around it."""

    op: Any
    node: Any
    ctx: tuple[Any, ...]
    prefix: str

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.ctx, id(self.node))

    @property
    def name(self) -> str:
        return f"{self.prefix}{self.op.name}"


def _activation_name(fn: Any) -> str | None:
    """The graph activation of a Keras activation function; "linear" for none; None if not one of ours."""
    import keras

    gelu = keras.activations.gelu
    known = {keras.activations.linear: "linear", keras.activations.relu: "relu", gelu: "gelu",
             keras.activations.tanh: "tanh", keras.activations.sigmoid: "sigmoid", gelu_tanh: "gelu_tanh"}
    if fn in known:
        return known[fn]
    if isinstance(fn, functools.partial) and fn.func is gelu and not fn.args and set(fn.keywords) <= {"approximate"}:
        return "gelu_tanh" if fn.keywords.get("approximate", False) else "gelu"
    return None


def _fn_text(fn: Any) -> str:
    return getattr(fn, "__name__", None) or repr(fn)


def _io(model: Any) -> tuple[list[Any], list[Any]] | None:
    """The model's symbolic inputs and outputs, or None when it has none (a subclassed or unbuilt model)."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        return None
    if not inputs or not outputs:
        return None
    return list(inputs), list(outputs)


class _Reader:
    def __init__(self, model: Any, input_shape: tuple[int, ...] | None):
        import keras

        self.keras = keras
        self.model = model
        self.input_shape = input_shape
        self.alias: dict[tuple[Any, ...], tuple[Any, tuple[Any, ...], str]] = {}
        self.nodes: list[Node] = []
        self.values: dict[tuple[Any, ...], int | _Pad] = {}
        self.math_dtypes: list[tuple[str, str]] = []  # (where, policy) of layers that compute
        self.layout_dtypes: list[tuple[str, str, str]] = []  # (where, class, policy) of layers that move data

    # -- the walk --------------------------------------------------------------------------------
    def producer(self, tensor: Any, ctx: tuple[Any, ...], prefix: str) -> tuple[_Call, int]:
        """The layer call that makes `tensor` (through nested models and their inputs) and its output index."""
        keras = self.keras
        while True:
            key = (ctx, id(tensor))
            if key in self.alias:
                tensor, ctx, prefix = self.alias[key]
                continue
            history = getattr(tensor, "_keras_history", None)
            if history is None:
                raise UnsupportedModel(f"a tensor in {self.model.name!r} was not made by a Keras layer call")
            op, node_index, tensor_index = history
            node = op._inbound_nodes[node_index]  # Keras 3 keeps a layer's calls here only
            if isinstance(op, keras.Model):  # a nested model: continue at its output, its inputs aliased
                io = _io(op)
                if io is None:
                    raise refuse(f"{prefix}{op.name}", type(op).__name__, "a subclassed or unbuilt model has no "
                                 "graph of layers to read; build it with keras.Sequential or the functional API")
                inner_ctx = (*ctx, (id(op), node_index))
                inner_prefix = f"{prefix}{op.name}."
                outer = list(node.input_tensors)
                if len(outer) != len(io[0]):
                    raise refuse(f"{prefix}{op.name}", type(op).__name__, f"called on {len(outer)} tensors for "
                                                                          f"{len(io[0])} inputs")
                for inner, given in zip(io[0], outer):
                    self.alias[(inner_ctx, id(inner))] = (given, ctx, prefix)
                tensor, ctx, prefix = io[1][tensor_index], inner_ctx, inner_prefix
                continue
            return _Call(op, node, ctx, prefix), tensor_index

    def calls(self, output: Any) -> list[_Call]:
        """Every layer call the output depends on, each after those it reads (iterative depth-first)."""
        first, _ = self.producer(output, (), "")
        order: list[_Call] = []
        state: dict[tuple[Any, ...], bool] = {}  # False: open, True: done
        stack = [first]
        while stack:
            call = stack[-1]
            if state.get(call.key) is True:
                stack.pop()
                continue
            if call.key not in state:
                state[call.key] = False
                # reversed: the first input's operations come first, as in the model's own order of calls
                stack.extend(dep for dep in reversed(self.inputs_of(call)) if dep.key not in state)
                continue
            state[call.key] = True
            order.append(call)
            stack.pop()
        return order

    def inputs_of(self, call: _Call) -> list[_Call]:
        out = []
        for tensor in call.node.input_tensors:
            dep, index = self.producer(tensor, call.ctx, call.prefix)
            if index != 0:
                raise refuse(dep.name, type(dep.op).__name__, "a layer with several outputs")
            out.append(dep)
        return out

    # -- translation -----------------------------------------------------------------------------
    def emit(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    def shape(self, index: int) -> tuple[int, ...]:
        return ModelGraph(self.nodes[:index + 1]).shapes[index]

    def source(self, call: _Call, value: int | _Pad) -> int:
        """A node index a layer that is not a convolution reads (an unfolded zero padding is refused)."""
        if isinstance(value, _Pad):
            raise refuse(value.name, value.cls, f"zero padding is supported only right before a Conv1D/Conv2D with "
                                                f"padding='valid' (here {call.name!r}, a {type(call.op).__name__}, "
                                                f"reads it)")
        return value

    def read(self) -> ModelGraph:
        io = _io(self.model)
        assert io is not None
        inputs, outputs = io
        if len(inputs) != 1 or len(outputs) != 1:
            raise refuse(self.model.name, type(self.model).__name__,
                         f"a model with {len(inputs)} inputs and {len(outputs)} outputs (one of each is supported)")
        order = self.calls(outputs[0])
        for call in order:
            ins = [self.values[dep.key] for dep in self.inputs_of(call)]
            self.values[call.key] = self.translate(call, ins)
        final, _ = self.producer(outputs[0], (), "")
        out = self.values[final.key]
        if isinstance(out, _Pad):
            raise refuse(out.name, out.cls, "zero padding is supported only right before a convolution with "
                                            "padding='valid', not as the model output")
        if out != len(self.nodes) - 1:  # the output is a pass-through of an earlier node, or the input
            raise UnsupportedModel(f"the output of {self.model.name!r} is not the last operation the port check "
                                   f"reads (node {out} of {len(self.nodes)})")
        if not self.nodes or self.nodes[0].op != "input":
            raise UnsupportedModel(f"{self.model.name!r} does not start with its input")
        return ModelGraph(self.nodes, "keras", self.dtype(), f"keras.{type(self.model).__name__} {self.model.name!r}")

    def dtype(self) -> str:
        names = sorted({policy for _, policy in self.math_dtypes})
        if len(names) > 1:
            shown = ", ".join(f"{where}: {policy}" for where, policy in self.math_dtypes)
            raise UnsupportedModel(f"the layers of {self.model.name!r} compute in several dtype policies ({shown}); "
                                   f"the port check reads models whose layers share one")
        dtype = names[0] if names else (self.layout_dtypes[0][2] if self.layout_dtypes else "float32")
        for where, cls, policy in self.layout_dtypes:
            if compute_dtype(dtype) not in _HOLDS.get(compute_dtype(policy) if policy in DTYPES else "", ()):
                raise refuse(where, cls, f"its dtype policy {policy!r} rounds the {dtype} data of the other layers")
        return dtype

    def policy(self, call: _Call, math_layer: bool) -> None:
        policy = call.op.dtype_policy.name
        if policy not in DTYPES:
            raise refuse(call.name, type(call.op).__name__, f"dtype policy {policy!r} is not one of {', '.join(DTYPES)}")
        if math_layer:
            self.math_dtypes.append((call.name, policy))
        else:
            self.layout_dtypes.append((call.name, type(call.op).__name__, policy))

    def translate(self, call: _Call, ins: list[int | _Pad]) -> int | _Pad:  # noqa: C901 - one branch per layer
        keras = self.keras
        layers = keras.layers
        op, name = call.op, call.name
        cls = type(op).__name__
        kind = type(op)

        def need(condition: bool, why: str) -> None:
            if not condition:
                raise refuse(name, cls, why)

        if kind is layers.InputLayer:
            need(not call.ctx, "an input of a nested model that is not called on a tensor")
            return self.emit(Node("input", name, shape=self.model_input_shape(op)))
        if kind in (layers.Dense, layers.Conv1D, layers.Conv2D):
            return self.read_layer(call, ins)
        if not isinstance(op, layers.Layer):  # a keras.ops call on symbolic tensors, e.g. x + y
            if cls == "Add" and type(op).__module__.startswith("keras.") and len(ins) == 2:
                return self.emit(Node("add", name, tuple(self.source(call, v) for v in ins)))
            raise refuse(name, f"keras.ops {cls}", "only the sum of two tensors (x + y) is read among operations "
                                                   "outside layers")
        known = (layers.Dense, layers.Conv1D, layers.Conv2D, layers.Activation, layers.ReLU, layers.Lambda,
                 layers.Flatten, layers.Reshape, layers.Permute, layers.Add, layers.Dropout, layers.ZeroPadding1D,
                 layers.ZeroPadding2D, layers.GlobalMaxPooling1D, layers.GlobalMaxPooling2D,
                 layers.GlobalAveragePooling1D, layers.GlobalAveragePooling2D)
        if kind not in known and isinstance(op, known) and not isinstance(op, self.keras.Model):
            raise refuse(name, cls, "a subclass of a supported Keras layer, which may compute something else")
        if kind in (layers.Dropout, layers.Identity):  # the identity in inference
            self.policy(call, False)
            return ins[0]
        if kind in (layers.ZeroPadding1D, layers.ZeroPadding2D):
            need(getattr(op, "data_format", "channels_last") == "channels_last", "data_format='channels_first'")
            self.policy(call, False)
            pairs = (tuple(op.padding),) if kind is layers.ZeroPadding1D else tuple(tuple(p) for p in op.padding)
            value = ins[0]
            if isinstance(value, _Pad):  # two paddings in a row: one
                pairs = tuple((a + c, b + d) for (a, b), (c, d) in zip(value.pairs, pairs))
                value = value.source
            return _Pad(value, tuple((int(lo), int(hi)) for lo, hi in pairs), name, cls)
        if kind is layers.Activation:
            act = _activation_name(op.activation)
            need(act is not None, f"activation {_fn_text(op.activation)!r}")
            self.policy(call, act != "linear")
            if act == "linear":
                return ins[0]
            return self.emit(Node("act", name, (self.source(call, ins[0]),), activation=act))
        if kind is layers.ReLU:
            need(op.max_value is None and float(op.negative_slope) == 0 and float(op.threshold) == 0,
                 f"ReLU(max_value={op.max_value}, negative_slope={float(op.negative_slope)}, "
                 f"threshold={float(op.threshold)}) (the plain ReLU() is supported)")
            self.policy(call, True)
            return self.emit(Node("act", name, (self.source(call, ins[0]),), activation="relu"))
        if kind is layers.Lambda:
            fn = op.function
            if isinstance(fn, functools.partial) and fn.func is _reduce and not fn.args:
                self.policy(call, True)
                return self.emit(Node("pool", name, (self.source(call, ins[0]),), axes=tuple(fn.keywords["axes"]),
                                      reduce=fn.keywords["reduce"]))
            act = _activation_name(fn)
            need(act not in (None, "linear"), f"a Lambda of {_fn_text(fn)!r} (what it computes is unknown)")
            self.policy(call, True)
            return self.emit(Node("act", name, (self.source(call, ins[0]),), activation=act))
        if kind is layers.Flatten:
            x = self.source(call, ins[0])
            need(op.data_format == "channels_last" or len(self.shape(x)) <= 1, "data_format='channels_first'")
            self.policy(call, False)
            return self.emit(Node("flatten", name, (x,)))
        if kind is layers.Reshape:
            x = self.source(call, ins[0])
            self.policy(call, False)
            target = [int(n) for n in op.target_shape]
            if -1 in target:
                known = math.prod(n for n in target if n != -1)
                total = math.prod(self.shape(x))
                need(known > 0 and total % known == 0, f"cannot reshape {self.shape(x)} to {tuple(op.target_shape)}")
                target[target.index(-1)] = total // known
            return self.emit(Node("reshape", name, (x,), shape=tuple(target)))
        if kind is layers.Permute:
            self.policy(call, False)
            return self.emit(Node("permute", name, (self.source(call, ins[0]),), perm=(0, *map(int, op.dims))))
        pools = {layers.GlobalMaxPooling1D: "max", layers.GlobalMaxPooling2D: "max",
                 layers.GlobalAveragePooling1D: "mean", layers.GlobalAveragePooling2D: "mean"}
        if kind in pools:
            need(not op.keepdims, "keepdims=True")
            x = self.source(call, ins[0])
            rank = len(self.shape(x)) - 1  # spatial axes
            first = 1 if op.data_format == "channels_last" else 2
            self.policy(call, True)
            return self.emit(Node("pool", name, (x,), axes=tuple(range(first, first + rank)), reduce=pools[kind]))
        if kind is layers.Add:
            need(len(ins) == 2, f"an Add of {len(ins)} tensors (two are supported)")
            self.policy(call, True)
            return self.emit(Node("add", name, tuple(self.source(call, v) for v in ins)))
        raise refuse(name, cls)

    def model_input_shape(self, op: Any) -> tuple[int, ...]:
        shape = tuple(op.batch_shape[1:]) if getattr(op, "batch_shape", None) is not None else tuple(
            self.model.inputs[0].shape[1:])
        given = self.input_shape
        if given is not None:
            if len(given) != len(shape) or any(n is not None and n != g for n, g in zip(shape, given)):
                raise UnsupportedModel(f"input_shape={tuple(given)} does not fit the input of {self.model.name!r}, "
                                       f"(None, {', '.join(map(str, shape))}) (batch first)")
            return tuple(given)
        if any(n is None for n in shape):
            raise UnsupportedModel(f"the input of {self.model.name!r} has unknown sizes {shape} (batch left out); "
                                   f"pass input_shape=")
        return tuple(int(n) for n in shape)

    def read_layer(self, call: _Call, ins: list[int | _Pad]) -> int:
        """Dense/Conv1D/Conv2D through read_native (without its built-in activation), and that activation."""
        from ..native import read_native

        keras = self.keras
        op, name, cls = call.op, call.name, type(call.op).__name__
        if getattr(op, "data_format", "channels_last") != "channels_last":
            raise refuse(name, cls, "data_format='channels_first' (Keras convolutions are read channels-last)")
        act = _activation_name(op.activation)
        if act is None:
            raise refuse(name, cls, f"activation {_fn_text(op.activation)!r}")
        saved = op.activation
        try:  # read_native reads the affine map alone; the activation becomes its own node
            op.activation = keras.activations.linear
            native = read_native(op)
        except SpecError as exc:
            raise refuse(name, cls, str(exc)) from None
        finally:
            op.activation = saved
        spec = native.spec
        value = ins[0]
        if isinstance(value, _Pad):
            if spec.kind != "conv" or spec.padding != "valid":
                raise refuse(value.name, value.cls, f"zero padding is supported only right before a convolution "
                                                    f"with padding='valid' ({name!r} has padding={op.padding!r})"
                             if spec.kind == "conv" else "zero padding before a Dense layer")
            if any(lo or hi for lo, hi in value.pairs):
                spec = spec.with_(padding=value.pairs)
            value = value.source
        self.math_dtypes.append((name, native.dtype))
        index = self.emit(Node("layer", name, (value,), spec=spec, weights=native.weights, channels_first=False))
        if act != "linear":
            index = self.emit(Node("act", f"{name}.activation", (index,), activation=act))
        return index


def read(model: Any, params: Mapping[str, Any] | None = None,
         input_shape: tuple[int, ...] | None = None) -> ModelGraph:
    """A keras.Sequential or functional keras.Model as a ModelGraph (see the module's docstring).

    input_shape: one example's shape, batch left out; needed for a Sequential that is not built (it is
    then built with it) and for inputs with unknown sizes. UnsupportedModel names any layer not read.
    """
    keras = _adapter().keras
    name = getattr(model, "name", type(model).__name__)
    if params is not None:
        raise SpecError(f"params= is for flax.linen models only; the Keras model {name!r} holds its own weights")
    if not isinstance(model, keras.Model):
        raise refuse(name, type(model).__name__, "not a keras.Model")
    if _io(model) is None and isinstance(model, keras.Sequential) and input_shape is not None:
        model.build((None, *input_shape))
    if _io(model) is None:
        if isinstance(model, keras.Sequential) or not model.built:
            raise UnsupportedModel(f"the Keras model {name!r} is not built, so it has no weights or input shape; "
                                   f"build it (model.build((None, *shape)) or call it once), or pass input_shape=")
        raise refuse(name, type(model).__name__, "a subclassed keras.Model has no graph of layers to read; "
                                                 "build it with keras.Sequential or the functional API")
    return _Reader(model, input_shape).read()


# ---- build ---------------------------------------------------------------------------------------

class _Names:
    """Keras layer names from node names: characters other than letters, digits, '_' and '-' become '_' (the
    torch backend refuses '.' in a name); a name taken already gets a suffix."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def __call__(self, name: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_\-]", "_", name) or "node"
        out, n = base, 2
        while out in self.taken:
            out, n = f"{base}_{n}", n + 1
        self.taken.add(out)
        return out


def _conv_layer(node: Node, dtype: str, name: str, names: _Names) -> tuple[Any, Any]:
    """(the ZeroPadding layer or None, the Conv1D/Conv2D layer) for a channels-last convolution node."""
    import keras

    spec = node.spec
    assert spec is not None
    what = node.label()
    if node.channels_first:
        raise refuse(node.name, what, "a channels-first convolution (build_model lays the graph out channels-last "
                                      "for Keras first)")
    if spec.padding_mode != "zeros":
        raise refuse(node.name, what, f"Keras convolutions pad with zeros only, not {spec.padding_mode!r}")
    if max(spec.strides) > 1 and max(spec.dilation) > 1:
        raise refuse(node.name, what, "Keras refuses strides > 1 together with dilation_rate > 1")
    pad = None
    padding = spec.padding
    if not isinstance(padding, str):
        if any(lo or hi for lo, hi in padding):
            cls = keras.layers.ZeroPadding1D if spec.rank == 1 else keras.layers.ZeroPadding2D
            pairs = padding[0] if spec.rank == 1 else padding
            pad = cls(pairs, data_format="channels_last", dtype=dtype, name=names(f"{node.name}.pad"))
        padding = "valid"
    cls = keras.layers.Conv1D if spec.rank == 1 else keras.layers.Conv2D
    conv = cls(spec.out_features, spec.kernel_size, strides=spec.strides, padding=padding,
               dilation_rate=spec.dilation, groups=spec.groups, use_bias=spec.bias, data_format="channels_last",
               dtype=dtype, name=name)
    return pad, conv


def build(graph: ModelGraph, framework: str, device: str) -> Any:
    """A functional keras.Model computing `graph` in graph.dtype (a mixed policy included), its weights set."""
    adapter = _adapter()
    keras = adapter.keras
    dtype = graph.dtype
    if dtype not in DTYPES:
        raise SpecError(f"Invalid value for argument `dtype`: expected one of {', '.join(DTYPES)}. Received {dtype!r}.")
    names = _Names()
    shapes = graph.shapes
    with keras.device(adapter._keras_device(device)):
        tensors: list[Any] = []
        weighted: list[tuple[Any, Node]] = []
        for i, node in enumerate(graph.nodes):
            if node.op == "input":
                if i != 0:
                    raise UnsupportedModel(f"{node.name}: a model graph has one input, its first node")
                tensors.append(keras.Input(shape=node.shape, dtype=variable_dtype(dtype), name=names(node.name)))
                continue
            ins = [tensors[j] for j in node.inputs]
            name = names(node.name)
            if node.op == "layer":
                spec = node.spec
                assert spec is not None and node.weights is not None
                if spec.kind == "dense":
                    layer = keras.layers.Dense(spec.out_features, use_bias=spec.bias, dtype=dtype, name=name)
                else:
                    pad, layer = _conv_layer(node, dtype, name, names)
                    if pad is not None:
                        ins = [pad(ins[0])]
                tensors.append(layer(ins[0]))
                weighted.append((layer, node))
            elif node.op == "act":
                fn = gelu_tanh if node.activation == "gelu_tanh" else node.activation
                tensors.append(keras.layers.Activation(fn, dtype=dtype, name=name)(ins[0]))
            elif node.op == "flatten":
                tensors.append(keras.layers.Flatten(data_format="channels_last", dtype=dtype, name=name)(ins[0]))
            elif node.op == "reshape":
                tensors.append(keras.layers.Reshape(tuple(node.shape or ()), dtype=dtype, name=name)(ins[0]))
            elif node.op == "permute":
                tensors.append(keras.layers.Permute(tuple(node.perm or ())[1:], dtype=dtype, name=name)(ins[0]))
            elif node.op == "pool":
                tensors.append(_pool_layer(node, shapes[node.inputs[0]], dtype, name)(ins[0]))
            elif node.op == "add":
                tensors.append(keras.layers.Add(dtype=dtype, name=name)(ins))
            else:  # pragma: no cover - ModelGraph.validate refuses unknown ops
                raise refuse(node.name, node.op)
        model = keras.Model(tensors[0], tensors[-1])
        for layer, node in weighted:
            adapter._assign(layer, node.spec, node.weights, dtype)
    return model


def _pool_layer(node: Node, shape: tuple[int, ...], dtype: str, name: str) -> Any:
    """Global pooling over exactly the spatial axes of a channels-last tensor; a Lambda over any others."""
    import keras

    axes = tuple(node.axes or ())
    if len(shape) in (2, 3) and axes == tuple(range(1, len(shape))):
        cls = {("max", 2): keras.layers.GlobalMaxPooling1D, ("max", 3): keras.layers.GlobalMaxPooling2D,
               ("mean", 2): keras.layers.GlobalAveragePooling1D,
               ("mean", 3): keras.layers.GlobalAveragePooling2D}[(node.reduce, len(shape))]
        return cls(data_format="channels_last", dtype=dtype, name=name)
    return keras.layers.Lambda(functools.partial(_reduce, reduce=node.reduce, axes=axes), dtype=dtype, name=name)


# ---- run and activations -------------------------------------------------------------------------

def _host(tensor: Any) -> np.ndarray:
    """A backend tensor as NumPy in its own dtype (bfloat16 as ml_dtypes.bfloat16)."""
    import keras

    dtype = keras.backend.standardize_dtype(tensor.dtype)
    wide = "float64" if dtype == "float64" else "float32"  # exact for every float dtype
    array = keras.ops.convert_to_numpy(keras.ops.cast(tensor, wide))
    return array.astype(numpy_dtype(dtype)) if dtype in DTYPES else array


def _tensor(array: np.ndarray, dtype: str) -> Any:
    """A NumPy array as a backend tensor of `dtype` (a plain dtype name), rounded once."""
    import keras

    array = np.asarray(array)
    host = array.astype(np.float64 if dtype == "float64" or array.dtype == np.float64 else np.float32)
    return keras.ops.cast(keras.ops.convert_to_tensor(host), dtype)


def run(model: Any, x: np.ndarray, params: Mapping[str, Any] | None = None) -> np.ndarray:
    """The model's own call in inference on a NumPy input (batch first, channels-last); its output as NumPy."""
    keras = _adapter().keras
    if params is not None:
        raise SpecError(f"params= is for flax.linen models only; the Keras model {model.name!r} holds its own weights")
    io = _io(model)
    dtype = keras.backend.standardize_dtype(io[0][0].dtype) if io else keras.config.floatx()
    return _host(model(_tensor(x, dtype), training=False))


def _keras_fn(name: str) -> Callable[[Any], Any]:
    import keras

    fns = {"relu": keras.activations.relu, "gelu": functools.partial(keras.activations.gelu, approximate=False),
           "gelu_tanh": functools.partial(keras.activations.gelu, approximate=True),
           "tanh": keras.activations.tanh, "sigmoid": keras.activations.sigmoid}
    if name not in fns:
        raise UnsupportedModel(f"unknown activation {name!r}; the port check supports {', '.join(fns)}")
    return fns[name]


@functools.lru_cache(maxsize=64)
def _programs(backend: str, name: str, compute: str) -> tuple[Callable[[Any], Any], Callable[[Any, Any], Any]]:
    """(forward, vjp) on backend tensors of the compute dtype, by the backend's own autodiff."""
    fn = _keras_fn(name)
    if backend == "jax":
        import jax

        def vjp(x: Any, g: Any) -> Any:
            y, pullback = jax.vjp(fn, x)
            return pullback(g.astype(y.dtype))[0]

        return jax.jit(fn), jax.jit(vjp)
    if backend == "tensorflow":
        import tensorflow as tf

        def vjp_tf(x: Any, g: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = fn(x)
            return tape.gradient(y, x, output_gradients=g)

        return fn, vjp_tf
    if backend == "torch":
        import torch

        def vjp_torch(x: Any, g: Any) -> Any:
            x = x.detach().requires_grad_(True)
            y = fn(x)
            return torch.autograd.grad(y, x, grad_outputs=g.to(y.dtype))[0]

        return fn, vjp_torch
    raise UnsupportedModel(f"the Keras backend {backend!r} has no autodiff the port check uses (tensorflow, jax, "
                           f"torch)")


def activation(framework: str, name: str, dtype: str) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                                Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Keras' own activation `name` on NumPy arrays, computed in compute_dtype(dtype) on the current backend,
    and its VJP ``vjp(x, g)`` (the gradient of <g, f(x)>) by that backend's autodiff, in the same dtype."""
    adapter = _adapter()
    if dtype not in DTYPES:
        raise SpecError(f"Invalid value for argument `dtype`: expected one of {', '.join(DTYPES)}. Received {dtype!r}.")
    compute = compute_dtype(dtype)
    forward_t, vjp_t = _programs(adapter.BACKEND, name, compute)
    out = numpy_dtype(compute)

    def forward(x: np.ndarray) -> np.ndarray:
        return _host(forward_t(_tensor(x, compute))).astype(out)

    def vjp(x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return _host(vjp_t(_tensor(x, compute), _tensor(g, compute))).astype(out)

    return forward, vjp

