"""Whole models in Flax: read a linen or nnx model into a `ModelGraph`, build one, run it.

One module serves "flax.linen" and "flax.nnx" (told apart by the `framework` argument or the model's class).

* `build` gives ``(PortedLinen(...), variables)`` for linen and a ``PortedNnx`` for nnx: modules that execute
  the graph literally, one ``Dense``/``Conv`` (``Linear``/``Conv``) per layer node, computing in the graph's
  dtype. The graph's structure is a static, hashable field of the module (`steps`); the weights live in the
  linen variables or in the nnx submodules.
* `read` reads those modules back, and ``flax.linen.Sequential`` / ``flax.nnx.Sequential`` of dense and
  convolution layers, activation functions and deterministic dropout (a single dense or convolution layer
  reads as a one-layer model). Flax's and jax's ``gelu`` default to ``approximate=True``: "gelu_tanh".

Flax, jax and flax import only when a function here is called (importing this module imports neither).
"""
from __future__ import annotations

import functools
import re
from dataclasses import replace
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..graph import ACTIVATIONS, ModelGraph, Node, UnsupportedModel, refuse
from ..spec import LayerSpec, SpecError, check_weights, numpy_dtype

__all__ = ["read", "build", "run", "activation"]  # PortedLinen, PortedNnx: module __getattr__

FRAMEWORKS = ("flax.linen", "flax.nnx")
DTYPES = ("float64", "float32", "float16", "bfloat16")  # one dtype for parameters and compute
READS = ("models made by build, flax.linen.Sequential (with its variables) and flax.nnx.Sequential of "
         "Dense/Linear and Conv layers, the activation functions relu, gelu, tanh, sigmoid and deterministic "
         "Dropout, or one Dense/Linear or Conv layer")

# A step of a ported model: (op, node name, inputs, options), options a tuple of (key, value) pairs of plain
# hashable values; a layer's options hold its spec as a tuple (`_spec_key`), its submodule name and slot.
Step = tuple[str, str, tuple[int, ...], tuple[tuple[str, Any], ...]]


# ---- jax, lazily -------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _jax() -> Any:
    import jax

    jax.config.update("jax_enable_x64", True)  # else float64 silently runs as float32 (as adapters.flax)
    return jax


def _jnp_dtype(dtype: str) -> Any:
    import jax.numpy as jnp

    return {"float64": jnp.float64, "float32": jnp.float32, "float16": jnp.float16, "bfloat16": jnp.bfloat16}[dtype]


def _check_dtype(dtype: str, where: str) -> None:
    if dtype not in DTYPES:
        why = ("mixed precision (float32 parameters computing in a half type) is ported for Keras only"
               if dtype.startswith("mixed_") else f"expected one of {', '.join(DTYPES)}")
        raise UnsupportedModel(f"{where}: dtype {dtype!r} cannot be built in Flax: {why}")


def _check_framework(framework: str) -> None:
    if framework not in FRAMEWORKS:
        raise SpecError(f"layer_conformance.adapters.models.flax serves {' and '.join(FRAMEWORKS)}, "
                        f"not {framework!r}")


# ---- the ported modules ------------------------------------------------------------------------

def _spec_key(spec: LayerSpec) -> tuple[Any, ...]:
    padding = spec.padding if isinstance(spec.padding, str) else tuple(tuple(p) for p in spec.padding)
    return (spec.kind, spec.in_features, spec.out_features, tuple(spec.kernel_size), tuple(spec.strides), padding,
            tuple(spec.dilation), spec.groups, spec.bias)


def _spec_from(key: tuple[Any, ...]) -> LayerSpec:
    kind, in_features, out_features, kernel_size, strides, padding, dilation, groups, bias = key
    if kind == "dense":
        return LayerSpec.dense(in_features, out_features, bias=bias)
    return LayerSpec.conv(in_features, out_features, kernel_size, strides=strides, padding=padding,
                          dilation=dilation, groups=groups, bias=bias)


def _flax_padding(spec: LayerSpec) -> Any:
    if isinstance(spec.padding, str):
        return spec.padding.upper()  # VALID, SAME (lax's rule, as LayerSpec's), CAUSAL
    return [tuple(pair) for pair in spec.padding]


def _linen_layer(spec: LayerSpec, dtype: str, name: str | None = None) -> Any:
    from flax import linen

    kw = dict(use_bias=spec.bias, dtype=_jnp_dtype(dtype), param_dtype=_jnp_dtype(dtype), name=name)
    if spec.kind == "dense":
        return linen.Dense(spec.out_features, **kw)
    return linen.Conv(spec.out_features, spec.kernel_size, strides=spec.strides, padding=_flax_padding(spec),
                      kernel_dilation=spec.dilation, feature_group_count=spec.groups, **kw)


def _nnx_layer(spec: LayerSpec, dtype: str) -> Any:
    from flax import nnx

    zeros = nnx.initializers.zeros_init()  # overwritten at once: no random draw
    kw = dict(use_bias=spec.bias, dtype=_jnp_dtype(dtype), param_dtype=_jnp_dtype(dtype), kernel_init=zeros,
              bias_init=zeros, rngs=nnx.Rngs(0))
    if spec.kind == "dense":
        return nnx.Linear(spec.in_features, spec.out_features, **kw)
    return nnx.Conv(spec.in_features, spec.out_features, spec.kernel_size, strides=spec.strides,
                    padding=_flax_padding(spec), kernel_dilation=spec.dilation, feature_group_count=spec.groups,
                    **kw)


def _apply_activation(name: str, x: Any) -> Any:
    jax = _jax()
    import jax.numpy as jnp

    if name == "relu":
        return jax.nn.relu(x)
    if name == "gelu":
        return jax.nn.gelu(x, approximate=False)
    if name == "gelu_tanh":
        return jax.nn.gelu(x, approximate=True)
    if name == "tanh":
        return jnp.tanh(x)
    if name == "sigmoid":
        return jax.nn.sigmoid(x)
    raise SpecError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")


def _execute(steps: Sequence[Step], dtype: str, x: Any, layer: Callable[[dict[str, Any], Any], Any]) -> Any:
    """The graph, node by node, on x; `layer(options, x)` runs a layer node."""
    import jax.numpy as jnp

    values: list[Any] = []
    for op, _, inputs, options in steps:
        o = dict(options)
        ins = [values[i] for i in inputs]
        if op == "input":
            y = jnp.asarray(x, _jnp_dtype(dtype))
        elif op == "layer":
            y = layer(o, ins[0])
        elif op == "act":
            y = _apply_activation(o["activation"], ins[0])
        elif op == "flatten":
            y = ins[0].reshape(ins[0].shape[0], -1)
        elif op == "reshape":
            y = ins[0].reshape(ins[0].shape[0], *o["shape"])
        elif op == "permute":
            y = jnp.transpose(ins[0], o["perm"])
        elif op == "pool":
            y = (jnp.max if o["reduce"] == "max" else jnp.mean)(ins[0], axis=o["axes"])
        elif op == "add":
            y = ins[0] + ins[1]
        else:  # pragma: no cover - steps come from a validated graph
            raise refuse("", op)
        values.append(y)
    return values[-1]


@functools.lru_cache(maxsize=1)
def _classes() -> tuple[type, type]:
    """(PortedLinen, PortedNnx), defined on first use so that importing this module imports no flax."""
    _jax()
    from flax import linen, nnx

    class PortedLinen(linen.Module):
        """A ModelGraph as a linen module: `steps` the static structure, the weights in its variables."""

        steps: tuple
        dtype: str = "float32"
        description: str = ""

        @linen.compact
        def __call__(self, x: Any) -> Any:
            return _execute(self.steps, self.dtype, x,
                            lambda o, y: _linen_layer(_spec_from(o["spec"]), self.dtype, o["module"])(y))

    class PortedNnx(nnx.Module):
        """A ModelGraph as an nnx module: `steps` the static structure, `layers` its Linear/Conv layers."""

        def __init__(self, steps: tuple, dtype: str, description: str, layers: Sequence[Any]) -> None:
            self.steps = steps
            self.dtype = dtype
            self.description = description
            self.layers = nnx.List(list(layers))

        def __call__(self, x: Any) -> Any:
            return _execute(self.steps, self.dtype, x, lambda o, y: self.layers[o["slot"]](y))

    for cls in (PortedLinen, PortedNnx):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
    return PortedLinen, PortedNnx


def __getattr__(name: str) -> Any:
    if name == "PortedLinen":
        return _classes()[0]
    if name == "PortedNnx":
        return _classes()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---- build -------------------------------------------------------------------------------------

def _module_name(name: str, taken: set[str]) -> str:
    """A submodule name from a node name: letters, digits and '_', unique in the model."""
    base = re.sub(r"\W", "_", name).strip("_") or "layer"
    if base[0].isdigit():
        base = f"layer_{base}"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}_{n}", n + 1
    taken.add(candidate)
    return candidate


def _steps(graph: ModelGraph) -> tuple[list[Step], list[tuple[LayerSpec, dict[str, np.ndarray]]]]:
    """The static structure of the graph and its layers' (spec, weights), in slot order."""
    steps: list[Step] = []
    layers: list[tuple[LayerSpec, dict[str, np.ndarray]]] = []
    taken: set[str] = set()
    for node in graph.nodes:
        if node.op == "input":
            options: tuple[tuple[str, Any], ...] = (("shape", tuple(node.shape or ())),)
        elif node.op == "layer":
            spec, weights = node.spec, node.weights
            assert spec is not None and weights is not None  # validated by ModelGraph
            if spec.kind == "conv" and node.channels_first:
                raise refuse(node.name, f"channels-first {node.label()}", "Flax convolutions are channels-last; "
                             "build_model lays the graph out channels-last (graph.channels_last) first")
            if spec.kind == "conv" and spec.padding_mode != "zeros":
                raise refuse(node.name, node.label(), f"padding_mode={spec.padding_mode!r}: the Flax port builds "
                             "zero-padded convolutions only")
            try:
                check_weights(spec, weights)
            except SpecError as exc:
                raise UnsupportedModel(f"layer {node.name!r}: {exc}") from None
            options = (("spec", _spec_key(spec)), ("module", _module_name(node.name, taken)),
                       ("slot", len(layers)), ("channels_first", bool(node.channels_first)))  # dense: no effect
            layers.append((spec, dict(weights)))
        elif node.op == "act":
            options = (("activation", node.activation),)
        elif node.op == "reshape":
            options = (("shape", tuple(node.shape or ())),)
        elif node.op == "permute":
            options = (("perm", tuple(node.perm or ())),)
        elif node.op == "pool":
            options = (("axes", tuple(node.axes or ())), ("reduce", node.reduce))
        else:  # flatten, add
            options = ()
        steps.append((node.op, node.name, tuple(node.inputs), options))
    return steps, layers


def _device(device: str) -> Any:
    jax = _jax()
    if device not in ("cpu", "gpu"):
        raise SpecError(f"unknown device {device!r}; expected 'cpu' or 'gpu'")
    try:
        return jax.devices(device)[0]
    except RuntimeError:
        raise SpecError(f"device {device!r} is not available to jax here") from None


def _array(value: np.ndarray, dtype: str, device: Any) -> Any:
    # rounded on the host: an eager jnp cast would compile a program per shape
    return _jax().device_put(np.asarray(value).astype(numpy_dtype(dtype)), device)


def build(graph: ModelGraph, framework: str, device: str = "cpu") -> Any:
    """A Flax model computing `graph` in graph.dtype: ``(PortedLinen, variables)`` for "flax.linen", a
    ``PortedNnx`` for "flax.nnx". Convolutions must be channels-last (`build_model` converts)."""
    _check_framework(framework)
    _check_dtype(graph.dtype, "the model")
    steps, layers = _steps(graph)
    target = _device(device)
    linen_cls, nnx_cls = _classes()
    if framework == "flax.linen":
        params: dict[str, Any] = {}
        for (op, _, _, options) in steps:
            if op == "layer":
                o = dict(options)
                spec, weights = layers[o["slot"]]
                params[o["module"]] = {k: _array(v, graph.dtype, target) for k, v in weights.items()}
        return linen_cls(steps=tuple(steps), dtype=graph.dtype, description=graph.description), {"params": params}
    modules = []
    for spec, weights in layers:
        module = _nnx_layer(spec, graph.dtype)
        for key, value in weights.items():
            getattr(module, key).set_value(_array(value, graph.dtype, target))
        modules.append(module)
    return nnx_cls(tuple(steps), graph.dtype, graph.description, modules)


# ---- read --------------------------------------------------------------------------------------

def _what(obj: Any) -> str:
    """An object as a reader knows it: 'flax.linen.BatchNorm', 'function mymodule.<lambda>'."""
    from flax import linen, nnx

    if isinstance(obj, functools.partial):
        return f"functools.partial({_what(obj.func)}, ...)"
    if not isinstance(obj, (linen.Module, nnx.Module, type)) and callable(obj) and hasattr(obj, "__qualname__"):
        return f"function {getattr(obj, '__module__', None) or '?'}.{obj.__qualname__}"
    cls = type(obj)
    module = cls.__module__ or "?"
    for package in FRAMEWORKS:
        if module.startswith(package + "."):
            module = package
    return f"{module}.{cls.__qualname__}"


def _activation_name(fn: Any) -> str | None:
    """The graph activation of a function in a Sequential, None if it is not one."""
    jax = _jax()
    import jax.numpy as jnp
    from flax import linen, nnx

    if isinstance(fn, functools.partial):
        gelu = fn.func is jax.nn.gelu and not fn.args and set(fn.keywords) <= {"approximate"}
        if gelu and isinstance(fn.keywords.get("approximate", True), (bool, np.bool_)):
            return "gelu_tanh" if fn.keywords.get("approximate", True) else "gelu"
        return None
    known = [(jax.nn.relu, "relu"), (jax.nn.gelu, "gelu_tanh"), (jnp.tanh, "tanh"), (jax.nn.sigmoid, "sigmoid"),
             (jax.lax.tanh, "tanh"), (jax.lax.logistic, "sigmoid")]
    for namespace in (linen, nnx):  # the same functions re-exported, as long as they are
        known += [(getattr(namespace, name, None), graph)
                  for name, graph in (("relu", "relu"), ("gelu", "gelu_tanh"), ("tanh", "tanh"),
                                      ("sigmoid", "sigmoid"))]
    return next((graph for known_fn, graph in known if known_fn is not None and fn is known_fn), None)


def _native(layer: Any, params: Mapping[str, Any] | None, where: str) -> Any:
    from ..native import read_native

    try:
        return read_native(layer, params)
    except SpecError as exc:
        raise UnsupportedModel(f"at {where!r}: {exc}") from None


class _Reader:
    """Nodes of a Sequential (or a single layer) read item by item, in the model's own layout."""

    def __init__(self, framework: str, input_shape: tuple[int, ...]) -> None:
        self.framework = framework
        self.nodes = [Node("input", "input", shape=input_shape)]
        self.dtype: tuple[str, str] | None = None  # (dtype, where it was first seen)

    def add(self, node: Node) -> None:
        self.nodes.append(replace(node, inputs=(len(self.nodes) - 1,)))

    def layer(self, layer: Any, params: Mapping[str, Any] | None, where: str) -> None:
        native = _native(layer, params, where)
        if native.dtype not in DTYPES:
            raise refuse(where, _what(layer), f"its dtype is {native.dtype!r}: mixed precision (float32 parameters "
                         "computing in a half type) is ported for Keras only; use equal dtype and param_dtype")
        if self.dtype is None:
            self.dtype = (native.dtype, where)
        elif native.dtype != self.dtype[0]:
            raise refuse(where, _what(layer), f"it computes in {native.dtype} and {self.dtype[1]!r} in "
                         f"{self.dtype[0]}; the port check reads models of one dtype")
        self.add(Node("layer", where, spec=native.spec, weights=native.weights, channels_first=False))

    def function(self, fn: Any, where: str) -> bool:
        name = _activation_name(fn)
        if name is not None:
            self.add(Node("act", where, activation=name))
        return name is not None

    def graph(self, description: str) -> ModelGraph:
        return ModelGraph(self.nodes, self.framework, self.dtype[0] if self.dtype else "float32", description)


def _dropout_why(layer: Any) -> str | None:
    """None when a Dropout is the identity (deterministic or rate 0), else why it is refused."""
    if getattr(layer, "deterministic", None) is True or float(getattr(layer, "rate", 1.0)) == 0.0:
        return None
    fix = ("construct it with deterministic=True" if _what(layer).startswith("flax.linen")
           else "call model.eval() (or construct it with deterministic=True)")
    return f"a dropout that is not deterministic drops values at random; {fix}"


def _read_linen_items(reader: _Reader, sequential: Any, params: Any, prefix: str) -> None:
    from flax import linen

    for i, layer in enumerate(sequential.layers):
        key = f"layers_{i}"
        where = prefix + key
        if isinstance(layer, (linen.Dense, linen.Conv)):
            inner = params.get(key) if isinstance(params, Mapping) else None
            if inner is None:
                raise UnsupportedModel(f"at {where!r}: the variables hold no params for this {_what(layer)}; pass "
                                       "the variables init returned for the model")
            reader.layer(layer, {"params": inner}, where)
        elif type(layer) is linen.Sequential:
            _read_linen_items(reader, layer, params.get(key, {}) if isinstance(params, Mapping) else {}, where + "/")
        elif type(layer) is linen.Dropout:
            why = _dropout_why(layer)
            if why:
                raise refuse(where, _what(layer), why)
        elif not reader.function(layer, where):
            raise refuse(where, _what(layer))


def _read_nnx_items(reader: _Reader, sequential: Any, prefix: str) -> None:
    from flax import nnx

    for i, layer in enumerate(sequential.layers):
        where = f"{prefix}layers.{i}"
        if isinstance(layer, (nnx.Linear, nnx.Conv)):
            reader.layer(layer, None, where)
        elif type(layer) is nnx.Sequential:
            _read_nnx_items(reader, layer, where + ".")
        elif type(layer) is nnx.Dropout:
            why = _dropout_why(layer)
            if why:
                raise refuse(where, _what(layer), why)
        elif not reader.function(layer, where):
            raise refuse(where, _what(layer))


def _read_ported(model: Any, framework: str, input_shape: tuple[int, ...] | None,
                 native_of: Callable[[dict[str, Any], LayerSpec, str], Any]) -> ModelGraph:
    """The graph of a PortedLinen/PortedNnx: its steps, with the weights it holds now."""
    steps: tuple[Step, ...] = model.steps
    built = tuple(dict(steps[0][3])["shape"])
    if input_shape is not None and tuple(input_shape) != built:
        raise UnsupportedModel(f"this {type(model).__name__} was built for inputs of shape {built} (batch left out), "
                               f"not {tuple(input_shape)}")
    nodes = []
    for op, name, inputs, options in steps:
        o = dict(options)
        if op == "layer":
            spec = _spec_from(o["spec"])
            native = native_of(o, spec, name)
            if native.dtype != model.dtype:
                raise UnsupportedModel(f"layer {name!r} of this {type(model).__name__} holds {native.dtype} "
                                       f"parameters; the model computes in {model.dtype}")
            try:
                check_weights(spec, native.weights)
            except SpecError as exc:
                raise UnsupportedModel(f"layer {name!r} of this {type(model).__name__}: {exc}") from None
            nodes.append(Node("layer", name, inputs, spec=spec, weights=native.weights,
                              channels_first=o.get("channels_first", False)))
        elif op == "input":
            nodes.append(Node("input", name, shape=built))
        else:
            nodes.append(Node(op, name, inputs, activation=o.get("activation"), shape=o.get("shape"),
                              perm=o.get("perm"), axes=o.get("axes"), reduce=o.get("reduce")))
    return ModelGraph(nodes, framework, model.dtype, model.description)


def _variables(model: Any, params: Any) -> Any:
    """The variables of a linen model: `params`, or those a bound module carries."""
    if params is None and getattr(model, "scope", None) is not None:
        params = model.variables
    if isinstance(params, Mapping) and not params:  # what init returns for a model without parameters
        params = {"params": {}}
    if not isinstance(params, Mapping) or "params" not in params:
        raise UnsupportedModel(f"a flax.linen model ({_what(model)}) holds no weights: pass the variables init "
                               f"returned, {{'params': ...}}, as params")
    return params


def read(model: Any, params: Mapping[str, Any] | None = None,
         input_shape: Sequence[int] | None = None) -> ModelGraph:
    """The graph of a Flax model, in its own (channels-last) layout, with the weights it holds now.

    Reads what `build` makes (params: its variables, for linen), ``flax.linen.Sequential`` (params: its
    variables) and ``flax.nnx.Sequential`` of dense/convolution layers and activation functions, and a single
    dense or convolution layer. input_shape (batch left out) is needed for all but `build`'s modules.
    """
    if isinstance(model, tuple) and len(model) == 2 and params is None:  # build's (module, variables)
        model, params = model
    _jax()
    from flax import linen, nnx

    ported_linen, ported_nnx = _classes()
    shape = None if input_shape is None else tuple(int(n) for n in input_shape)
    if type(model) is ported_linen:
        variables = _variables(model, params)["params"]

        def linen_native(o: dict[str, Any], spec: LayerSpec, name: str) -> Any:
            inner = variables.get(o["module"]) if isinstance(variables, Mapping) else None
            if inner is None:
                raise UnsupportedModel(f"layer {name!r}: the variables hold no params[{o['module']!r}]; pass the "
                                       "variables build returned")
            return _native(_linen_layer(spec, model.dtype), {"params": inner}, name)

        return _read_ported(model, "flax.linen", shape, linen_native)
    if type(model) is ported_nnx:
        if params is not None:
            raise UnsupportedModel("params= is for flax.linen models; a flax.nnx model holds its own weights")
        return _read_ported(model, "flax.nnx", shape,
                            lambda o, spec, name: _native(model.layers[o["slot"]], None, name))
    if isinstance(model, linen.Module):
        framework = "flax.linen"
        supported = type(model) is linen.Sequential or isinstance(model, (linen.Dense, linen.Conv))
    elif isinstance(model, nnx.Module):
        framework = "flax.nnx"
        supported = type(model) is nnx.Sequential or isinstance(model, (nnx.Linear, nnx.Conv))
        if params is not None:
            raise UnsupportedModel("params= is for flax.linen models; a flax.nnx model holds its own weights")
    else:
        raise refuse("model", _what(model), f"not a Flax module; the Flax reader reads {READS}")
    if not supported:
        raise refuse("model", _what(model), f"the Flax reader reads {READS}")
    if shape is None:
        raise UnsupportedModel(f"reading a {_what(model)} needs input_shape: one example's shape, batch left out, "
                               "channels-last (e.g. input_shape=(length, channels))")
    reader = _Reader(framework, shape)
    if framework == "flax.linen":
        variables = _variables(model, params)["params"]
        if type(model) is linen.Sequential:
            _read_linen_items(reader, model, variables, "")
        else:
            reader.layer(model, {"params": variables}, model.name or type(model).__name__)
    elif type(model) is nnx.Sequential:
        _read_nnx_items(reader, model, "")
    else:
        reader.layer(model, None, type(model).__name__)
    return reader.graph(_what(model))


# ---- run and activations -----------------------------------------------------------------------

def _float_dtype(leaves: Sequence[Any]) -> str | None:
    for leaf in leaves:
        name = np.dtype(getattr(leaf, "dtype", np.int32)).name
        if name in DTYPES:
            return name
    return None


def run(model: Any, x: np.ndarray, params: Mapping[str, Any] | None = None) -> np.ndarray:
    """The model's own forward pass (linen ``model.apply(params, x)``, nnx ``model(x)``) on x, cast to the
    model's dtype (its parameters' for other models); the output as NumPy (bfloat16 as ml_dtypes.bfloat16)."""
    if isinstance(model, tuple) and len(model) == 2 and params is None:  # build's (module, variables)
        model, params = model
    jax = _jax()
    from flax import linen, nnx

    ported = _classes()
    if isinstance(model, linen.Module):
        variables = _variables(model, params)
        dtype = model.dtype if isinstance(model, ported[0]) else _float_dtype(jax.tree.leaves(variables["params"]))
        run_ = functools.partial(model.apply, variables)
    elif isinstance(model, nnx.Module):
        if params is not None:
            raise UnsupportedModel("params= is for flax.linen models; a flax.nnx model holds its own weights")
        dtype = model.dtype if isinstance(model, ported[1]) else _float_dtype(jax.tree.leaves(nnx.state(model,
                                                                                                        nnx.Param)))
        run_ = model
    else:
        raise refuse("model", _what(model), "not a Flax module")
    xa = np.asarray(x)
    if dtype is not None:
        xa = xa.astype(numpy_dtype(dtype))
    return np.asarray(run_(xa))


@functools.lru_cache(maxsize=None)
def _activation_programs(name: str, dtype: str) -> tuple[Any, Any]:
    jax = _jax()

    def f(x: Any) -> Any:
        return _apply_activation(name, x)

    def vjp(x: Any, g: Any) -> Any:
        return jax.vjp(f, x)[1](g)[0]

    return jax.jit(f), jax.jit(vjp)


def activation(framework: str, name: str, dtype: str) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                                Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """jax's activation `name` (graph.ACTIVATIONS; "gelu" exact, "gelu_tanh" the tanh form) on NumPy arrays in
    `dtype`, jitted: ``(forward(x), vjp(x, cotangent))``, outputs as NumPy arrays of `dtype`."""
    _check_framework(framework)
    if name not in ACTIVATIONS:
        raise SpecError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    _check_dtype(dtype, f"activation {name!r}")
    forward_program, vjp_program = _activation_programs(name, dtype)
    cast = numpy_dtype(dtype)

    def forward(x: np.ndarray) -> np.ndarray:
        return np.asarray(forward_program(np.asarray(x).astype(cast)))

    def vjp(x: np.ndarray, cotangent: np.ndarray) -> np.ndarray:
        return np.asarray(vjp_program(np.asarray(x).astype(cast), np.asarray(cotangent).astype(cast)))

    return forward, vjp
