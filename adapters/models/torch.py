"""PyTorch models: read an ``nn.Module`` into a `ModelGraph` (torch.fx), build one (`PortedModule`), run one.

`read` traces the model with ``torch.fx.symbolic_trace`` and records every tensor's shape with
``ShapeProp`` on a zeros input of shape ``(2, *input_shape)``; each fx node becomes a graph node (or
none, for operations that pass their input through, such as ``nn.Identity``, ``nn.Dropout`` in eval
mode and ``.contiguous()``). Two idioms fold into the convolution they surround, as explicit
``(low, high)`` padding pairs of its `LayerSpec`: a zero pad (``nn.ConstantPad1d/2d``, ``nn.ZeroPad1d/2d``,
``F.pad``) read only by a convolution, and a crop of a convolution's output (the TCN ``Chomp1d``,
``x[:, :, :-c]``). Anything else is refused with the module (or function) and where it sits.
"""
from __future__ import annotations

import operator
from dataclasses import replace
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..graph import ACTIVATIONS, ModelGraph, Node, UnsupportedModel, _live, refuse
from ..native import read_native
from ..spec import POLICY_COMPUTE, LayerSpec, SpecError, Weights, compute_dtype, numpy_dtype
from ..torch import _DEVICES, _DTYPES, _PAD_MODES, ADAPTER, _layout, _module_padding, _numpy, _tensor

__all__ = ["read", "build", "run", "activation", "PortedModule"]

_CONVS = (nn.Conv1d, nn.Conv2d)
_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
_ACT_MODULES = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
_PASS_MODULES = (nn.Identity,)
_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d)
_POOL_MODULES = {nn.AdaptiveMaxPool1d: ("max", 1), nn.AdaptiveAvgPool1d: ("mean", 1),
                 nn.AdaptiveMaxPool2d: ("max", 2), nn.AdaptiveAvgPool2d: ("mean", 2)}
_PAD_MODULES = (nn.ConstantPad1d, nn.ConstantPad2d, nn.ZeroPad1d, nn.ZeroPad2d)

# activation functions and methods: target -> activation name (gelu is decided by its `approximate`)
_ACT_FUNCTIONS: dict[Any, str] = {F.relu: "relu", torch.relu: "relu", F.relu_: "relu", torch.relu_: "relu",
                                  torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid",
                                  F.sigmoid: "sigmoid", F.gelu: "gelu"}
_ACT_METHODS = {"relu": "relu", "relu_": "relu", "tanh": "tanh", "tanh_": "tanh", "sigmoid": "sigmoid",
                "sigmoid_": "sigmoid"}
_INPLACE_FUNCTIONS = (F.relu_, torch.relu_)
_RESHAPE_METHODS = ("view", "reshape")
_PERMUTE_METHODS = ("permute", "transpose")
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
_SIZE_OPS = (operator.mul, operator.floordiv, operator.add, operator.sub, operator.truediv)


class _Meta:
    """An fx value that is not a tensor: a size (``x.size(0)``, ``x.shape``) or arithmetic on sizes."""


class _MaxPair:
    """The (values, indices) result of ``torch.max(x, dim)``: only its values are read."""

    def __init__(self, index: int, axes: tuple[int, ...], keepdim: bool):
        self.index, self.axes, self.keepdim = index, axes, keepdim


class _Pad:
    """A zero pad waiting for the convolution it folds into."""

    def __init__(self, index: int, pads: tuple[int, ...]):
        self.index, self.pads = index, pads


_META = _Meta()


# ---- names of things, for refusals ------------------------------------------------------------------

def _class_name(obj: Any) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    if getattr(nn, cls.__name__, None) is cls:
        return f"torch.nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _function_name(node: torch.fx.Node) -> str:
    target = node.target
    if node.op == "call_method":
        return f"Tensor.{target}"
    if node.op == "get_attr":
        return f"the parameter or buffer {target!r} used in forward"
    name = getattr(target, "__name__", repr(target))
    for prefix, namespace in (("torch.nn.functional", F), ("torch", torch), ("operator", operator)):
        if getattr(namespace, name, None) is target:
            return f"{prefix}.{name}"
    return f"{getattr(target, '__module__', None) or '?'}.{name}"


def _context(node: torch.fx.Node) -> str:
    """'in the forward of 'blocks.0' (Block)' for a function called inside a submodule, else ''."""
    stack = node.meta.get("nn_module_stack") or {}
    if node.op == "call_module" or not stack:
        return ""
    path, cls = list(stack.values())[-1]
    return f"called in the forward of {path!r} ({_class_name(cls)})"


def _where(node: torch.fx.Node) -> str:
    return str(node.target) if node.op == "call_module" else node.name


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _param_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float32


def _model_dtype(model: nn.Module) -> torch.dtype:
    """The dtype a model computes in: its parameters' (a PortedModule without layers: its graph's)."""
    if isinstance(model, PortedModule) and not any(True for _ in model.parameters()):
        return _torch_dtype(model.dtype_name)
    return _param_dtype(model)


def _param_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


# ---- read ------------------------------------------------------------------------------------------

def read(model: Any, params: Any = None, input_shape: Sequence[int] | None = None) -> ModelGraph:
    """A torch model's graph, in its own (channels-first) layout; `input_shape` is one example's shape."""
    if params is not None:
        raise UnsupportedModel("params= is for flax.linen models; a torch model holds its own parameters: "
                               "read it without params")
    if not isinstance(model, nn.Module):
        raise UnsupportedModel(f"{_class_name(model)} is not a torch.nn.Module")
    if isinstance(model, PortedModule):
        return model.graph(input_shape)
    if input_shape is None:
        raise UnsupportedModel(f"reading the torch model {_class_name(model)} needs its input shape: pass "
                               f"input_shape, one example's shape with the batch left out, e.g. "
                               f"input_shape=(3, 1024)")
    input_shape = tuple(int(n) for n in input_shape)
    return _Reader(model, input_shape).read()


class _Reader:
    def __init__(self, model: nn.Module, input_shape: tuple[int, ...]):
        self.model, self.input_shape = model, input_shape
        self.modules = dict(model.named_modules())
        self.nodes: list[Node] = []
        self.value: dict[torch.fx.Node, Any] = {}  # fx node -> graph index, _META, _MaxPair or _Pad
        self.aliases: dict[int, list[torch.fx.Node]] = {}  # graph index -> the fx nodes holding it
        self.dtypes: dict[str, str] = {}  # layer name -> its dtype

    # ---- tracing ----
    def trace(self) -> torch.fx.GraphModule:
        from torch.fx.passes.shape_prop import ShapeProp

        name = _class_name(self.model)
        try:
            traced = torch.fx.symbolic_trace(self.model)
        except Exception as exc:  # noqa: BLE001 - any tracing failure is a model the check cannot read
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UnsupportedModel(f"torch.fx cannot trace {name}: {first}; the port check reads models whose "
                                   f"forward is a fixed graph of operations (no control flow on tensor values)") \
                from None
        placeholders = [n for n in traced.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedModel(f"{name}.forward takes {len(placeholders)} inputs "
                                   f"({', '.join(n.name for n in placeholders)}); the port check reads models "
                                   f"with one input tensor")
        x = torch.zeros((2, *self.input_shape), dtype=_param_dtype(self.model), device=_param_device(self.model))
        try:
            with torch.no_grad():
                traced(x)  # the model's own error for a wrong shape (ShapeProp's names only the node)
                ShapeProp(traced).propagate(x)
        except Exception as exc:  # noqa: BLE001 - the model cannot run on that shape
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UnsupportedModel(f"{name} fails on an input of shape {tuple(x.shape)}: {first}; pass "
                                   f"input_shape, one example's shape with the batch left out "
                                   f"(input_shape={self.input_shape} was given)") from None
        return traced

    # ---- helpers ----
    def emit(self, node: Node, fx_node: torch.fx.Node) -> int:
        self.nodes.append(node)
        index = len(self.nodes) - 1
        self.hold(fx_node, index)
        return index

    def hold(self, fx_node: torch.fx.Node, value: Any) -> None:
        self.value[fx_node] = value
        if isinstance(value, int):
            self.aliases.setdefault(value, []).append(fx_node)

    def tensor(self, arg: Any, node: torch.fx.Node) -> int:
        """The graph index of a tensor argument of `node`; refuse anything else."""
        value = self.value.get(arg) if isinstance(arg, torch.fx.Node) else None
        if isinstance(value, int):
            return value
        if isinstance(value, _Pad):
            raise self.refuse(arg, "a zero pad folds only into the one convolution reading it")
        if isinstance(value, _MaxPair):
            raise self.refuse(node, "it reads the (values, indices) pair of a max; only its values ([0], "
                                    ".values) are supported")
        what = "the size of a tensor" if value is _META else f"the constant {arg!r}"
        raise self.refuse(node, f"it takes {what} where a tensor was expected")

    def shape(self, node: torch.fx.Node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise self.refuse(node, "its result is not a tensor")
        return tuple(int(n) for n in meta.shape)

    def kept(self, node: torch.fx.Node) -> tuple[int, ...]:
        """The node's output shape with the batch left out; refuse when the batch axis is not kept."""
        shape = self.shape(node)
        if not shape or shape[0] != 2:
            raise self.refuse(node, f"its output (shape {shape} for a batch of 2) does not keep the batch axis first")
        return shape[1:]

    def refuse(self, node: torch.fx.Node, why: str = "") -> UnsupportedModel:
        if node.op == "call_module":
            what = _class_name(self.modules[node.target])
        else:
            what = _function_name(node)
        context = _context(node)
        return refuse(_where(node), what, "; ".join(p for p in (why, context) if p))

    def consumers(self, index: int) -> set[torch.fx.Node]:
        """The fx nodes reading graph value `index`, other than those that merely hold it."""
        holders = self.aliases.get(index, [])
        return {user for holder in holders for user in holder.users} - set(holders)

    def axes(self, node: torch.fx.Node, dims: Any, ndim: int) -> tuple[int, ...]:
        dims = (dims,) if isinstance(dims, int) else tuple(dims) if isinstance(dims, (tuple, list)) else None
        if not dims or not all(isinstance(d, int) and -ndim <= d < ndim for d in dims):
            raise self.refuse(node, f"reduces over dim={dims!r}; give the positions' axes explicitly")
        axes = tuple(sorted({d % ndim for d in dims}))
        if 0 in axes:
            raise self.refuse(node, "it reduces over the batch axis")
        return axes

    # ---- the walk ----
    def check_dtypes(self) -> None:
        """One dtype for every layer (a model in several dtypes is not one port check)."""
        dtypes = {path: _dtype_name(m.weight.dtype) for path, m in self.modules.items() if type(m) in _LAYERS}
        if len(set(dtypes.values())) > 1:
            shown = ", ".join(f"{path}: {dtype}" for path, dtype in dtypes.items())
            raise UnsupportedModel(f"the layers of {_class_name(self.model)} have different dtypes ({shown}); the "
                                   f"port check reads models in one dtype: convert it, e.g. model.to(torch.float32)")

    def read(self) -> ModelGraph:
        self.check_dtypes()
        traced = self.trace()
        output: int | None = None
        for node in traced.graph.nodes:
            if node.op == "placeholder":
                self.emit(Node("input", node.name, shape=self.input_shape), node)
            elif node.op == "call_module":
                self.call_module(node)
            elif node.op == "call_function":
                self.call_function(node)
            elif node.op == "call_method":
                self.call_method(node)
            elif node.op == "output":
                result = node.args[0]
                if not isinstance(result, torch.fx.Node):
                    raise refuse("output", f"an output of type {type(result).__name__}",
                                 "the port check reads models returning one tensor")
                output = self.tensor(result, node)
            else:
                raise self.refuse(node)
        assert output is not None
        dtypes = set(self.dtypes.values())
        if len(dtypes) > 1:
            shown = ", ".join(f"{name}: {dtype}" for name, dtype in self.dtypes.items())
            raise UnsupportedModel(f"the layers of {_class_name(self.model)} have different dtypes ({shown}); the "
                                   f"port check reads models in one dtype: convert it, e.g. model.to(torch.float32)")
        dtype = dtypes.pop() if dtypes else _dtype_name(_param_dtype(self.model))
        nodes = _live(self.nodes, output)
        return ModelGraph(nodes, "torch", dtype, f"torch {_class_name(self.model)}")

    # ---- modules ----
    def call_module(self, node: torch.fx.Node) -> None:
        module = self.modules[node.target]
        cls = type(module)
        path = str(node.target)
        if cls in _LAYERS:
            self.layer(node, module)
            return
        x_arg = node.args[0] if node.args else None
        if cls in _ACT_MODULES or cls is nn.GELU:
            if cls is nn.GELU:
                act = {"none": "gelu", "tanh": "gelu_tanh"}.get(module.approximate)
                if act is None:
                    raise self.refuse(node, f"approximate={module.approximate!r}")
            else:
                act = _ACT_MODULES[cls]
            x = self.tensor(x_arg, node)
            if getattr(module, "inplace", False):
                self.check_inplace(node, x)
            self.emit(Node("act", path, (x,), activation=act), node)
        elif cls in _PASS_MODULES:
            self.hold(node, self.tensor(x_arg, node))
        elif cls in _DROPOUTS:
            if module.training and module.p > 0:
                raise self.refuse(node, "dropout in training mode changes the output on every call; call "
                                        "model.eval()")
            self.hold(node, self.tensor(x_arg, node))
        elif cls is nn.Flatten:
            x = self.tensor(x_arg, node)
            self.flatten(node, x, module.start_dim, module.end_dim, path)
        elif cls in _POOL_MODULES:
            reduce, rank = _POOL_MODULES[cls]
            size = module.output_size
            sizes = (size,) * rank if isinstance(size, int) else tuple(size)
            indices = getattr(module, "return_indices", False)
            if any(s != 1 for s in sizes) or indices:
                raise self.refuse(node, f"output_size={size!r}{', return_indices=True' if indices else ''}; only "
                                        "global pooling (output size 1) without indices is supported")
            x = self.tensor(x_arg, node)
            ndim = len(self.shape(x_arg))
            if ndim != rank + 2:
                layout = "N, C, H, W" if rank == 2 else "N, C, L"
                raise self.refuse(node, f"it gets a tensor of {ndim} axes, expected ({layout})")
            pooled = len(self.nodes)
            self.nodes.append(Node("pool", path, (x,), axes=tuple(range(2, ndim)), reduce=reduce))
            self.emit(Node("reshape", f"{path}.reshape", (pooled,), shape=self.kept(node)), node)
        elif cls in _PAD_MODULES:
            if float(module.value) != 0.0:
                raise self.refuse(node, f"it pads with value={module.value}; only zero padding folds into a "
                                        "convolution")
            self.pad(node, self.tensor(x_arg, node), tuple(int(p) for p in module.padding))
        else:
            raise self.refuse(node)

    def layer(self, node: torch.fx.Node, module: nn.Module) -> None:
        path = str(node.target)
        try:
            native = read_native(module)
        except SpecError as exc:
            raise refuse(path, _class_name(module), str(exc)) from None
        if len(node.args) != 1 or node.kwargs:
            raise self.refuse(node, "it is called with more than its input")
        arg = node.args[0]
        spec = native.spec
        pending = self.value.get(arg) if isinstance(arg, torch.fx.Node) else None
        if isinstance(pending, _Pad):  # fold the zero pad into the convolution's own padding
            if spec.kind != "conv":
                raise self.refuse(arg, "a zero pad folds only into a convolution")
            spatial = self.shape(arg)[2:]
            pairs = [list(p) for p in spec.explicit_padding(spatial)]
            pads = pending.pads
            for k in range(len(pads) // 2):
                pairs[spec.rank - 1 - k][0] += pads[2 * k]
                pairs[spec.rank - 1 - k][1] += pads[2 * k + 1]
            spec = _with_pairs(spec, pairs)
            x = pending.index
        else:
            x = self.tensor(arg, node)
        self.dtypes[path] = native.dtype
        self.emit(Node("layer", path, (x,), spec=spec, weights=native.weights, channels_first=spec.kind == "conv"),
                  node)

    def pad(self, node: torch.fx.Node, x: int, pads: tuple[int, ...]) -> None:
        """A zero pad: held until the convolution that is its only consumer, which takes it as padding."""
        users = list(node.users)
        conv = users[0] if len(users) == 1 else None
        module = self.modules.get(conv.target) if conv is not None and conv.op == "call_module" else None
        if module is None or type(module) not in _CONVS or conv.args[:1] != (node,):
            raise self.refuse(node, "a zero pad is supported only when its one consumer is a Conv1d or Conv2d, "
                                    "into whose padding it folds")
        if module.padding_mode != "zeros":
            raise self.refuse(node, f"the convolution {conv.target!r} reading it pads with "
                                    f"padding_mode={module.padding_mode!r}, so the zero pad does not fold into it")
        rank = len(module.kernel_size)
        if len(pads) % 2 or len(pads) > 2 * rank or min(pads, default=0) < 0:
            raise self.refuse(node, f"pad={pads} is not non-negative (low, high) pairs of the "
                                    f"{rank} spatial axes of {conv.target!r}")
        self.hold(node, _Pad(x, pads))

    def check_inplace(self, node: torch.fx.Node, x: int) -> None:
        others = self.consumers(x) - {node}
        if others:
            raise self.refuse(node, f"it works in place on a tensor that {', '.join(sorted(o.name for o in others))} "
                                    f"also read(s); use inplace=False")

    def flatten(self, node: torch.fx.Node, x: int, start: int, end: int, name: str) -> None:
        ndim = len(self.shape(node.args[0]))
        if not all(isinstance(d, int) and -ndim <= d < ndim for d in (start, end)):
            raise self.refuse(node, f"start_dim={start!r}, end_dim={end!r} for a tensor of {ndim} axes")
        start, end = start % ndim, end % ndim
        if start < 1:
            raise self.refuse(node, f"start_dim={start} flattens the batch axis; use start_dim=1")
        if start == 1 and end == ndim - 1:
            self.emit(Node("flatten", name, (x,)), node)
        else:
            self.emit(Node("reshape", name, (x,), shape=self.kept(node)), node)

    def sizes(self, args: Sequence[Any]) -> bool:
        """Whether `args` are sizes and numbers, at least one of them a size (x.size(0), x.shape[1])."""
        metas = [isinstance(a, torch.fx.Node) and self.value.get(a) is _META for a in args]
        return any(metas) and all(m or isinstance(a, (int, float)) for m, a in zip(metas, args))

    # ---- functions and methods ----
    def call_function(self, node: torch.fx.Node) -> None:
        target, args, kwargs = node.target, node.args, node.kwargs
        if target is operator.getitem:
            self.getitem(node)
        elif target is getattr:
            base = self.value.get(args[0]) if isinstance(args[0], torch.fx.Node) else None
            if args[1] in ("shape", "ndim") and isinstance(base, int):
                self.hold(node, _META)
            elif args[1] == "values" and isinstance(base, _MaxPair):
                self.max_values(node, base)
            else:
                raise self.refuse(node, f"it reads the attribute {args[1]!r}")
        elif target in _ACT_FUNCTIONS:
            act = _ACT_FUNCTIONS[target]
            if target is F.gelu:
                approximate = args[1] if len(args) > 1 else kwargs.get("approximate", "none")
                act = {"none": "gelu", "tanh": "gelu_tanh"}.get(approximate)
                if act is None:
                    raise self.refuse(node, f"approximate={approximate!r}")
            x = self.tensor(args[0], node)
            inplace = target in _INPLACE_FUNCTIONS or (target is F.relu and (kwargs.get("inplace")
                                                                              or (len(args) > 1 and args[1])))
            if inplace:
                self.check_inplace(node, x)
            self.emit(Node("act", node.name, (x,), activation=act), node)
        elif target is F.pad:
            mode = args[2] if len(args) > 2 else kwargs.get("mode", "constant")
            value = args[3] if len(args) > 3 else kwargs.get("value", None)
            if mode != "constant" or value not in (None, 0, 0.0):
                raise self.refuse(node, f"mode={mode!r}, value={value!r}; only zero padding folds into a convolution")
            pads = args[1] if len(args) > 1 else kwargs.get("pad")
            if not isinstance(pads, (tuple, list)) or not all(isinstance(p, int) for p in pads):
                raise self.refuse(node, f"pad={pads!r} is not a tuple of ints")
            self.pad(node, self.tensor(args[0], node), tuple(pads))
        elif target is F.dropout:
            training = args[2] if len(args) > 2 else kwargs.get("training", True)
            if training:
                raise self.refuse(node, "dropout in training mode changes the output on every call; call "
                                        "model.eval() (or pass training=self.training)")
            self.hold(node, self.tensor(args[0], node))
        elif target is torch.flatten:
            start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
            end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
            self.flatten(node, self.tensor(args[0], node), start, end, node.name)
        elif target is torch.reshape:
            self.reshape(node, args[0], args[1] if len(args) > 1 else kwargs.get("shape"))
        elif target in (torch.permute, torch.transpose):
            rest = list(args[1:]) + list(kwargs.values())
            if target is torch.permute and len(rest) == 1 and isinstance(rest[0], (tuple, list)):
                rest = list(rest[0])
            self.permute(node, args[0], rest, target is torch.transpose)
        elif target in _SIZE_OPS and self.sizes(args):
            self.hold(node, _META)  # arithmetic on sizes, e.g. x.size(1) * x.size(2)
        elif target in _ADD_FUNCTIONS:
            self.add(node, args, kwargs)
        elif target in (torch.max, torch.amax, torch.mean):
            self.reduction(node, {torch.max: "max", torch.amax: "amax", torch.mean: "mean"}[target])
        else:
            raise self.refuse(node)

    def call_method(self, node: torch.fx.Node) -> None:
        method, args, kwargs = node.target, node.args, node.kwargs
        if method in ("size", "dim"):
            self.tensor(args[0], node)
            self.hold(node, _META)
        elif method == "contiguous":
            self.hold(node, self.tensor(args[0], node))
        elif method in _ACT_METHODS:
            x = self.tensor(args[0], node)
            if method.endswith("_"):
                self.check_inplace(node, x)
            self.emit(Node("act", node.name, (x,), activation=_ACT_METHODS[method]), node)
        elif method == "flatten":
            start = args[1] if len(args) > 1 else kwargs.get("start_dim", 0)
            end = args[2] if len(args) > 2 else kwargs.get("end_dim", -1)
            self.flatten(node, self.tensor(args[0], node), start, end, node.name)
        elif method in _RESHAPE_METHODS:
            shape = args[1:] if len(args) > 2 or (len(args) == 2 and not isinstance(args[1], (tuple, list))) \
                else (args[1] if len(args) == 2 else kwargs.get("shape", kwargs.get("size")))
            self.reshape(node, args[0], shape)
        elif method in _PERMUTE_METHODS:
            rest = list(args[1:]) + list(kwargs.values())
            if method == "permute" and len(rest) == 1 and isinstance(rest[0], (tuple, list)):
                rest = list(rest[0])
            self.permute(node, args[0], rest, method == "transpose")
        elif method in ("add", "add_"):
            if method == "add_":
                self.check_inplace(node, self.tensor(args[0], node))
            self.add(node, args, kwargs)
        elif method in ("max", "amax", "mean"):
            self.reduction(node, method)
        else:
            raise self.refuse(node)

    def reshape(self, node: torch.fx.Node, arg: Any, shape: Any) -> None:
        x = self.tensor(arg, node)
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
        first = shape[0] if shape else None
        if not (first == -1 or (isinstance(first, torch.fx.Node) and self.value.get(first) is _META)):
            raise self.refuse(node, f"its first size {first!r} is not the batch size (x.size(0) or -1), so the "
                                    "model would only work for one batch size")
        self.emit(Node("reshape", node.name, (x,), shape=self.kept(node)), node)

    def permute(self, node: torch.fx.Node, arg: Any, dims: list[Any], transpose: bool) -> None:
        x = self.tensor(arg, node)
        ndim = len(self.shape(arg))
        if not all(isinstance(d, int) and -ndim <= d < ndim for d in dims):
            raise self.refuse(node, f"dims {dims!r}")
        dims = [d % ndim for d in dims]
        if transpose:
            if len(dims) != 2:
                raise self.refuse(node, f"dims {dims!r}")
            perm = list(range(ndim))
            perm[dims[0]], perm[dims[1]] = perm[dims[1]], perm[dims[0]]
        else:
            perm = dims
        if sorted(perm) != list(range(ndim)) or perm[0] != 0:
            raise self.refuse(node, f"the permutation {tuple(perm)} moves the batch axis (it must stay axis 0)")
        self.emit(Node("permute", node.name, (x,), perm=tuple(perm)), node)

    def add(self, node: torch.fx.Node, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        alpha = args[2] if len(args) > 2 else kwargs.get("alpha", 1)
        if len(args) < 2 or alpha != 1 or set(kwargs) - {"alpha"}:
            raise self.refuse(node, "only the sum of two tensors (alpha=1) is supported")
        if not all(isinstance(a, torch.fx.Node) and isinstance(self.value.get(a), int) for a in args[:2]):
            shown = [a if not isinstance(a, torch.fx.Node) else a.name for a in args[:2]]
            raise self.refuse(node, f"it adds {shown}; only the sum of two tensors of one shape (a residual "
                                    "connection) is supported")
        a, b = (self.tensor(arg, node) for arg in args[:2])
        sa, sb = self.shape(args[0]), self.shape(args[1])
        if sa != sb:
            raise self.refuse(node, f"it adds tensors of shapes {sa[1:]} and {sb[1:]} (broadcasting is not "
                                    "supported)")
        self.emit(Node("add", node.name, (a, b)), node)

    def reduction(self, node: torch.fx.Node, kind: str) -> None:
        """torch.max(x, dim) (a (values, indices) pair), amax and mean over positions: a "pool"."""
        args, kwargs = node.args, node.kwargs
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        if dims is None:
            raise self.refuse(node, "it reduces over every axis, the batch included; give the dims to pool over")
        if isinstance(dims, torch.fx.Node):
            raise self.refuse(node, "its dim is a tensor (torch.max of two tensors is not supported)")
        if set(kwargs) - {"dim", "keepdim"} or len(args) > 3:
            raise self.refuse(node, f"it takes {sorted(set(kwargs) - {'dim', 'keepdim'})} or extra arguments")
        x = self.tensor(args[0], node)
        axes = self.axes(node, dims, len(self.shape(args[0])))
        if kind == "max":
            if len(axes) != 1:
                raise self.refuse(node, "torch.max reduces over one dim")
            self.hold(node, _MaxPair(x, axes, bool(keepdim)))
            return
        self.pool(node, x, axes, "max" if kind == "amax" else "mean", bool(keepdim))

    def pool(self, node: torch.fx.Node, x: int, axes: tuple[int, ...], reduce: str, keepdim: bool) -> None:
        if not keepdim:
            self.emit(Node("pool", node.name, (x,), axes=axes, reduce=reduce), node)
            return
        pooled = len(self.nodes)
        self.nodes.append(Node("pool", node.name, (x,), axes=axes, reduce=reduce))
        self.emit(Node("reshape", f"{node.name}.reshape", (pooled,), shape=self.kept(node)), node)

    def max_values(self, node: torch.fx.Node, pair: _MaxPair) -> None:
        self.pool(node, pair.index, pair.axes, "max", pair.keepdim)

    def getitem(self, node: torch.fx.Node) -> None:
        base, index = node.args
        value = self.value.get(base) if isinstance(base, torch.fx.Node) else None
        if value is _META:
            self.hold(node, _META)
        elif isinstance(value, _MaxPair):
            if index != 0:
                raise self.refuse(node, "it reads the indices of a max (argmax); only its values ([0]) are supported")
            self.max_values(node, value)
        elif isinstance(value, int):
            self.crop(node, value, index)
        else:
            raise self.refuse(node, "it indexes something other than a tensor")

    def crop(self, node: torch.fx.Node, x: int, index: Any) -> None:
        """A crop of a convolution's output along its positions (TCN Chomp1d): less padding on that side."""
        conv = self.nodes[x]
        why = "indexing a tensor is supported only as a crop of a convolution's positions (a TCN Chomp1d, " \
              "x[:, :, :-c]), which folds into its padding"
        if conv.op != "layer" or conv.spec is None or conv.spec.kind != "conv":
            raise self.refuse(node, why)
        if self.consumers(x) != {node}:
            raise self.refuse(node, f"{why}; here the convolution {conv.name!r} has other consumers too")
        shape = self.shape(self.aliases[x][0])
        ndim = len(shape)
        items = list(index) if isinstance(index, tuple) else [index]
        if items.count(Ellipsis) > 1 or not all(isinstance(i, slice) or i is Ellipsis for i in items):
            raise self.refuse(node, f"{why}; index {index!r}")
        if Ellipsis in items:
            at = items.index(Ellipsis)
            items[at:at + 1] = [slice(None)] * (ndim - len(items) + 1)
        items += [slice(None)] * (ndim - len(items))
        if len(items) != ndim or not all(isinstance(v, (int, type(None))) for s in items
                                         for v in (s.start, s.stop, s.step)):
            raise self.refuse(node, f"{why}; index {index!r}")
        bounds = [s.indices(n) for s, n in zip(items, shape)]
        if any(step != 1 for _, _, step in bounds) or any(b[:2] != (0, n) for b, n in zip(bounds[:2], shape[:2])):
            raise self.refuse(node, f"{why}; index {index!r} steps, or crops the batch or channel axis")
        spec = conv.spec
        in_spatial = self.shape(self.aliases[x][0].args[0])[2:]  # the conv's input (a folded pad's output)
        pairs = [list(p) for p in spec.explicit_padding(in_spatial)]
        for axis, ((start, stop, _), n, stride) in enumerate(zip(bounds[2:], shape[2:], spec.strides)):
            if stop <= start:
                raise self.refuse(node, f"index {index!r} leaves no positions")
            pairs[axis][0] -= start * stride
            pairs[axis][1] -= (n - stop) * stride
            if min(pairs[axis]) < 0:
                raise self.refuse(node, f"{why}; the crop {index!r} removes more than the padding of "
                                        f"{conv.name!r} on spatial axis {axis}")
        self.nodes[x] = replace(conv, spec=_with_pairs(spec, pairs))
        self.hold(node, x)


def _with_pairs(spec: LayerSpec, pairs: Sequence[Sequence[int]]) -> LayerSpec:
    padding = tuple((int(lo), int(hi)) for lo, hi in pairs)
    if not any(lo or hi for lo, hi in padding):
        return spec.with_(padding="valid", padding_mode="zeros")
    return spec.with_(padding=padding)


# ---- build -----------------------------------------------------------------------------------------

def _torch_dtype(dtype: str) -> torch.dtype:
    if dtype in POLICY_COMPUTE:
        raise UnsupportedModel(f"the torch port builds models in float64, float32, float16 or bfloat16; "
                               f"{dtype!r} is a Keras mixed-precision policy: build the graph in one dtype, "
                               f"e.g. graph.replaced(dtype='float32')")
    if dtype not in _DTYPES:
        raise UnsupportedModel(f"unknown dtype {dtype!r}; expected one of {', '.join(_DTYPES)}")
    return _DTYPES[dtype]


def _key(name: str, index: int, layers: nn.ModuleDict) -> str:
    """The ModuleDict key of a layer node: its name with dots replaced (made unique where names repeat)."""
    key = name.replace(".", "_")
    if not key or key in layers or hasattr(layers, key):
        key = f"layer{index}_{key}".rstrip("_")
    return key


_ACT_FNS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu, "gelu": lambda t: F.gelu(t, approximate="none"),
    "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "tanh": torch.tanh, "sigmoid": torch.sigmoid}


class PortedModule(nn.Module):
    """A torch model computing a `ModelGraph` literally: one nn.Linear/Conv1d/Conv2d per layer node."""

    def __init__(self, graph: ModelGraph, device: str = "cpu"):
        super().__init__()
        dtype = _torch_dtype(graph.dtype)
        if device not in _DEVICES:
            raise UnsupportedModel(f"unknown device {device!r}; expected one of {', '.join(_DEVICES)}")
        self.layers = nn.ModuleDict()
        self.structure = [replace(node, weights=None) if node.op == "layer" else node for node in graph.nodes]
        self.keys: list[str | None] = []
        self.dtype_name, self.description = graph.dtype, graph.description
        for index, node in enumerate(graph.nodes):
            if node.op != "layer":
                self.keys.append(None)
                continue
            spec, weights = node.spec, node.weights
            assert spec is not None and weights is not None
            module = ADAPTER._module(spec).to(device=_DEVICES[device], dtype=dtype)
            with torch.no_grad():
                module.weight.copy_(_layout(_tensor(weights["kernel"], graph.dtype, device), "kernel", spec, True))
                if spec.bias:
                    module.bias.copy_(_tensor(weights["bias"], graph.dtype, device))
            key = _key(node.name, index, self.layers)
            self.layers[key] = module
            self.keys.append(key)

    def _layer(self, index: int, x: torch.Tensor) -> torch.Tensor:
        node = self.structure[index]
        spec = node.spec
        assert spec is not None
        module = self.layers[self.keys[index]]
        if spec.kind == "dense":
            return module(x)
        if not node.channels_first:
            x = x.permute(0, spec.rank + 1, *range(1, spec.rank + 1))
        if spec.padding != "valid" and _module_padding(spec) == 0:  # padding the module does not take itself
            pairs = spec.explicit_padding(tuple(x.shape[2:]))
            flat = [p for lo_hi in reversed(pairs) for p in lo_hi]  # F.pad wants the last axis first
            if any(flat):
                x = F.pad(x, flat, mode=_PAD_MODES[spec.padding_mode])
        y = module(x)
        if not node.channels_first:
            y = y.permute(0, *range(2, spec.rank + 2), 1)
        return y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: list[torch.Tensor] = []
        for index, node in enumerate(self.structure):
            ins = [values[j] for j in node.inputs]
            if node.op == "input":
                y = x
            elif node.op == "layer":
                y = self._layer(index, ins[0])
            elif node.op == "act":
                y = _ACT_FNS[str(node.activation)](ins[0])
            elif node.op == "flatten":
                y = ins[0].reshape(ins[0].shape[0], -1)
            elif node.op == "reshape":
                y = ins[0].reshape(ins[0].shape[0], *(node.shape or ()))
            elif node.op == "permute":
                y = ins[0].permute(*(node.perm or ()))
            elif node.op == "pool":
                axes = tuple(node.axes or ())
                y = torch.amax(ins[0], dim=axes) if node.reduce == "max" else torch.mean(ins[0], dim=axes)
            elif node.op == "add":
                y = ins[0] + ins[1]
            else:  # pragma: no cover - ModelGraph.validate refuses unknown ops
                raise refuse(node.name, node.op)
            values.append(y)
        return values[-1]

    def graph(self, input_shape: Sequence[int] | None = None) -> ModelGraph:
        """The graph this module computes, with its current parameters."""
        dtype = _dtype_name(_model_dtype(self))
        nodes = []
        for index, node in enumerate(self.structure):
            if node.op == "layer":
                assert node.spec is not None
                module = self.layers[self.keys[index]]
                weights: Weights = {"kernel": _numpy(_layout(module.weight, "kernel", node.spec, False), dtype)}
                if node.spec.bias:
                    weights["bias"] = _numpy(module.bias, dtype)
                node = replace(node, weights=weights)
            nodes.append(node)
        graph = ModelGraph(nodes, "torch", dtype, self.description)
        if input_shape is not None and tuple(input_shape) != graph.input_shape:
            raise UnsupportedModel(f"this ported model takes inputs of shape {graph.input_shape}, not "
                                   f"input_shape={tuple(input_shape)}")
        return graph


def build(graph: ModelGraph, framework: str = "torch", device: str = "cpu") -> PortedModule:
    """A torch model computing `graph` in graph.dtype, in eval mode."""
    if framework != "torch":
        raise UnsupportedModel(f"this module builds torch models, not {framework!r}")
    return PortedModule(graph, device).eval()


# ---- run and activations ---------------------------------------------------------------------------

def _to_tensor(x: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    wide = np.float64 if dtype == torch.float64 else np.float32  # holds every value of the half types
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).astype(wide))).to(device=device, dtype=dtype)


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return np.asarray(t.detach().to("cpu", torch.float64).numpy()).astype(numpy_dtype(_dtype_name(t.dtype)))


def run(model: nn.Module, x: np.ndarray, params: Any = None) -> np.ndarray:
    """The model's output on NumPy input `x` (in eval mode, without gradients), in its parameters' dtype."""
    if params is not None:
        raise UnsupportedModel("params= is for flax.linen models; a torch model holds its own parameters")
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            y = model(_to_tensor(x, _model_dtype(model), _param_device(model)))
    finally:
        model.train(training)
    if not isinstance(y, torch.Tensor):
        raise UnsupportedModel(f"{_class_name(model)} returns a {type(y).__name__}, not one tensor")
    return _to_numpy(y)


def activation(framework: str, name: str, dtype: str) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                                Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """torch's own activation `name` in `dtype` (a mixed policy: its compute dtype) and its VJP."""
    if name not in _ACT_FNS:
        raise SpecError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    tdtype = _torch_dtype(compute_dtype(dtype))
    fn = _ACT_FNS[name]

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return _to_numpy(fn(_to_tensor(x, tdtype, torch.device("cpu"))))

    def vjp(x: np.ndarray, g: np.ndarray) -> np.ndarray:
        xt = _to_tensor(x, tdtype, torch.device("cpu")).requires_grad_(True)
        fn(xt).backward(_to_tensor(g, tdtype, torch.device("cpu")))
        assert xt.grad is not None
        return _to_numpy(xt.grad)

    return forward, vjp
