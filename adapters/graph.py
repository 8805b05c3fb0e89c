"""A whole model in this project's terms: `ModelGraph`, a framework-neutral graph of operations.

A model read from a framework (layer_conformance.adapters.models) or ported to one is a list of
nodes in topological order, each taking earlier nodes' outputs. Every node's semantics is literal,
in the model's own layout (batch axis 0 always):

* ``input``: the model input, shape `shape` (batch left out);
* ``layer``: a dense or convolution layer (`spec`, canonical `weights`); a convolution with
  ``channels_first`` reads and writes ``(N, C, *spatial)`` (torch), otherwise ``(N, *spatial, C)``;
  a dense layer acts on the last axis;
* ``act``: an elementwise activation, one of `ACTIVATIONS`;
* ``flatten``: ``reshape(N, -1)`` of the tensor as it is laid out;
* ``reshape``: ``reshape(N, *shape)``;
* ``permute``: ``transpose(perm)`` with ``perm[0] == 0``;
* ``pool``: ``max`` or ``mean`` over the axes `axes` (never the batch axis), which are dropped;
* ``add``: the sum of two tensors of one shape (a residual connection).

The same graph therefore means the same function in every framework; what differs between a source
model and its port is the graph itself (a channels-last port has other permutes and flatten inputs,
`channels_last`), the weights, and the framework each layer and activation runs in.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

from .spec import LayerSpec, SpecError, Weights

OPS = ("input", "layer", "act", "flatten", "reshape", "permute", "pool", "add")
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "tanh", "sigmoid")  # gelu: the exact (erf) form
REDUCTIONS = ("max", "mean")
SUPPORTED_MODELS = ("sequences and simple graphs (residual adds) of dense and convolution layers, the activations "
                    f"{', '.join(ACTIVATIONS)}, flatten, reshape, permute, global max/average pooling over positions")


class UnsupportedModel(SpecError):
    """A model that cannot be read or ported: the message names the module, where it sits, and what is supported."""


def refuse(where: str, what: str, why: str = "") -> UnsupportedModel:
    return UnsupportedModel(f"unsupported module {what} at {where!r}{': ' + why if why else ''}; the port check "
                            f"supports {SUPPORTED_MODELS}")


@dataclass(frozen=True, eq=False)
class Node:
    """One operation of a model; `name` is where it sits in the model it was read from (its module path)."""

    op: str
    name: str
    inputs: tuple[int, ...] = ()
    spec: LayerSpec | None = None
    weights: Weights | None = field(default=None, repr=False)
    channels_first: bool = False
    activation: str | None = None
    shape: tuple[int, ...] | None = None
    perm: tuple[int, ...] | None = None
    axes: tuple[int, ...] | None = None
    reduce: str | None = None

    def label(self) -> str:
        """What the node computes, in words a reader knows: 'Conv1d 64->128, k=5', 'relu', 'flatten'."""
        if self.op == "layer":
            spec = self.spec
            assert spec is not None
            if spec.kind == "dense":
                return f"Dense {spec.in_features}->{spec.out_features}{'' if spec.bias else ', no bias'}"
            parts = [f"k={'x'.join(map(str, spec.kernel_size))}"]
            if any(s != 1 for s in spec.strides):
                parts.append(f"s={'x'.join(map(str, spec.strides))}")
            if any(d != 1 for d in spec.dilation):
                parts.append(f"d={'x'.join(map(str, spec.dilation))}")
            if spec.padding != "valid":
                parts.append(f"pad={spec.padding}")
            if spec.groups != 1:
                parts.append(f"groups={spec.groups}")
            return f"Conv{spec.rank}d {spec.in_features}->{spec.out_features}, {', '.join(parts)}"
        if self.op == "act":
            return str(self.activation)
        if self.op == "permute":
            return f"permute{self.perm}"
        if self.op == "reshape":
            return f"reshape{self.shape}"
        if self.op == "pool":
            return f"global {self.reduce} pool over axes {self.axes}"
        return self.op


@dataclass(eq=False)
class ModelGraph:
    """A model: nodes in topological order, the last one its output; `framework` and `dtype` it was read in."""

    nodes: list[Node]
    framework: str = "reference"
    dtype: str = "float32"
    description: str = ""

    def __post_init__(self) -> None:
        self.shapes = self.validate()

    @property
    def input_shape(self) -> tuple[int, ...]:
        shape = self.nodes[0].shape
        assert shape is not None
        return shape

    def layers(self) -> list[int]:
        """Indices of the layer nodes, in order: layer 1 is the first of them."""
        return [i for i, node in enumerate(self.nodes) if node.op == "layer"]

    def consumers(self, index: int) -> list[int]:
        return [i for i, node in enumerate(self.nodes) if index in node.inputs]

    def with_weights(self, weights: Sequence[Weights]) -> "ModelGraph":
        """The same graph with these weights for its layers, in order."""
        layers = self.layers()
        if len(weights) != len(layers):
            raise SpecError(f"{len(weights)} weight sets for {len(layers)} layers")
        nodes = list(self.nodes)
        for index, w in zip(layers, weights):
            nodes[index] = replace(nodes[index], weights=w)
        return ModelGraph(nodes, self.framework, self.dtype, self.description)

    def replaced(self, framework: str | None = None, dtype: str | None = None) -> "ModelGraph":
        return ModelGraph(list(self.nodes), framework or self.framework, dtype or self.dtype, self.description)

    # ---- validation and shapes ------------------------------------------------------------------
    def validate(self) -> list[tuple[int, ...]]:
        """Every node's output shape (batch left out); UnsupportedModel naming the first node that does not fit."""
        if not self.nodes or self.nodes[0].op != "input" or self.nodes[0].shape is None:
            raise UnsupportedModel("a model graph starts with its input node (and its shape)")
        shapes: list[tuple[int, ...]] = []
        for i, node in enumerate(self.nodes):
            if node.op not in OPS:
                raise refuse(node.name, node.op)
            if any(j >= i or j < 0 for j in node.inputs):
                raise UnsupportedModel(f"node {i} ({node.name}) reads a node that is not before it")
            ins = [shapes[j] for j in node.inputs]
            shapes.append(_shape_of(node, ins))
        return shapes


def _shape_of(node: Node, ins: list[tuple[int, ...]]) -> tuple[int, ...]:
    where = f"{node.name} ({node.label() if node.op != 'layer' or node.spec else node.op})"

    def need(condition: bool, why: str) -> None:
        if not condition:
            raise UnsupportedModel(f"{where}: {why}")

    if node.op == "input":
        return tuple(int(n) for n in node.shape or ())
    arity = 2 if node.op == "add" else 1
    need(len(ins) == arity, f"takes {arity} input(s), has {len(ins)}")
    x = ins[0]
    if node.op == "layer":
        spec = node.spec
        need(spec is not None and node.weights is not None, "a layer node needs its spec and weights")
        assert spec is not None
        if spec.kind == "dense":
            need(len(x) >= 1 and x[-1] == spec.in_features,
                 f"a dense layer with {spec.in_features} inputs gets a tensor of shape {x}")
            return (*x[:-1], spec.out_features)
        need(len(x) == spec.rank + 1, f"a {spec.rank}-D convolution gets a tensor of shape {x}")
        channels, spatial = (x[0], x[1:]) if node.channels_first else (x[-1], x[:-1])
        need(channels == spec.in_features, f"a convolution with {spec.in_features} input channels gets shape {x}")
        try:
            spec.check_input((1, *spatial, channels))
        except SpecError as exc:
            raise UnsupportedModel(f"{where}: {exc}") from None
        out = spec.output_spatial(spatial)
        return (spec.out_features, *out) if node.channels_first else (*out, spec.out_features)
    if node.op == "act":
        need(node.activation in ACTIVATIONS, f"unknown activation {node.activation!r}")
        return x
    if node.op == "flatten":
        return (math.prod(x),)
    if node.op == "reshape":
        need(node.shape is not None and math.prod(node.shape) == math.prod(x),
             f"cannot reshape {x} to {node.shape}")
        return tuple(node.shape or ())
    if node.op == "permute":
        perm = node.perm or ()
        need(sorted(perm) == list(range(len(x) + 1)) and perm[0] == 0,
             f"permutation {perm} of a tensor of shape (N, *{x})")
        full = (0, *x)
        return tuple(full[p] for p in perm[1:])
    if node.op == "pool":
        axes = node.axes or ()
        need(node.reduce in REDUCTIONS and axes and all(1 <= a <= len(x) for a in axes),
             f"pooling {node.reduce} over axes {axes} of (N, *{x})")
        return tuple(n for a, n in enumerate(x, start=1) if a not in axes)
    if node.op == "add":
        need(ins[0] == ins[1], f"adds tensors of shapes {ins[0]} and {ins[1]} (no broadcasting)")
        return x
    raise refuse(node.name, node.op)  # pragma: no cover - validate() refuses unknown ops first


# ---- the channels-last port of a channels-first graph ---------------------------------------------

def _compose(first: Sequence[int], then: Sequence[int]) -> tuple[int, ...]:
    """The permutation of transpose(transpose(x, first), then)."""
    return tuple(first[t] for t in then)


def _inverse(perm: Sequence[int]) -> tuple[int, ...]:
    out = [0] * len(perm)
    for i, p in enumerate(perm):
        out[p] = i
    return tuple(out)


def to_last(ndim: int) -> tuple[int, ...]:
    """(N, C, *S) -> (N, *S, C) for a tensor of `ndim` axes, batch included."""
    return (0, *range(2, ndim), 1)


def channels_last(graph: ModelGraph, *, flatten_fix: bool = True, permute_as_view: bool = False) -> ModelGraph:
    """The same function with every convolution channels-last (Keras, Flax): the correct port's graph.

    Each tensor t of the source is held in the port as transpose(t, R_t); R is the identity, or
    channels-first -> channels-last for a convolution's output. Operations whose meaning depends on the
    layout (flatten, reshape, permute, a dense layer on the last axis, pooling axes) get the permutes that
    keep the function the same; consecutive permutes merge and identities vanish. The model input is
    taken channels-last when the first layer reading it is a channels-first convolution.

    `flatten_fix=False` and `permute_as_view=True` build two porting mistakes instead (flatten in the
    port's own layout; a permute done as a reshape to the permuted shape): layer_conformance.suites.port.
    """
    shapes = graph.shapes
    nodes: list[Node] = []
    held: dict[int, tuple[int, tuple[int, ...]]] = {}  # source node -> (port node, R)

    def emit(node: Node) -> int:
        if node.op == "permute" and nodes[node.inputs[0]].op == "permute":  # merge; the first may be left unused
            prev = nodes[node.inputs[0]]
            node = replace(node, inputs=prev.inputs, perm=_compose(prev.perm or (), node.perm or ()))
        if node.op == "permute" and node.perm == tuple(range(len(node.perm or ()))):
            return node.inputs[0]
        nodes.append(node)
        return len(nodes) - 1

    def as_(source: int, want: tuple[int, ...], name: str) -> int:
        index, r = held[source]
        if r == want:
            return index
        # held = transpose(t, r); wanted transpose(t, want) = transpose(held, inverse(r) o want)
        return emit(Node("permute", name, (index,), perm=_compose(_inverse(r), want)))

    def ident(source: int) -> tuple[int, ...]:
        return tuple(range(len(shapes[source]) + 1))

    for i, node in enumerate(graph.nodes):
        if node.op == "input":
            ndim = len(node.shape or ()) + 1
            if input_channels_first(graph):
                shape = node.shape or ()
                nodes.append(replace(node, shape=(*shape[1:], shape[0])))
                held[i] = (len(nodes) - 1, to_last(ndim))
            else:
                nodes.append(node)
                held[i] = (len(nodes) - 1, ident(i))
            continue
        src = node.inputs[0] if node.inputs else None
        if node.op == "layer" and node.spec is not None and node.spec.kind == "conv":
            ndim = node.spec.rank + 2
            want = to_last(ndim) if node.channels_first else tuple(range(ndim))
            x = as_(src, want, f"{node.name}.input")  # type: ignore[arg-type]
            held[i] = (emit(replace(node, inputs=(x,), channels_first=False)), want)
        elif node.op == "layer":
            x = as_(src, ident(src), f"{node.name}.input")  # type: ignore[arg-type]
            held[i] = (emit(replace(node, inputs=(x,))), ident(i))
        elif node.op == "act":
            index, r = held[src]  # type: ignore[index]
            held[i] = (emit(replace(node, inputs=(index,))), r)
        elif node.op == "add":
            index, r = held[node.inputs[0]]
            other = as_(node.inputs[1], r, f"{node.name}.other")
            held[i] = (emit(replace(node, inputs=(index, other))), r)
        elif node.op == "flatten":
            x = as_(src, ident(src), f"{node.name}.input") if flatten_fix else held[src][0]  # type: ignore[index]
            held[i] = (emit(replace(node, inputs=(x,))), ident(i))
        elif node.op == "reshape":
            x = as_(src, ident(src), f"{node.name}.input")  # type: ignore[arg-type]
            held[i] = (emit(replace(node, inputs=(x,))), ident(i))
        elif node.op == "permute":
            index, r = held[src]  # type: ignore[index]
            if permute_as_view:
                x = as_(src, ident(src), f"{node.name}.input")  # type: ignore[arg-type]
                held[i] = (emit(Node("reshape", node.name, (x,), shape=shapes[i])), ident(i))
            else:
                held[i] = (emit(replace(node, inputs=(index,), perm=_compose(_inverse(r), node.perm or ()))),
                           ident(i))
        elif node.op == "pool":
            index, r = held[src]  # type: ignore[index]
            # port axis j holds source axis r[j]
            axes = tuple(j for j, a in enumerate(r) if a in (node.axes or ()))
            kept = [a for a in r if a not in (node.axes or ())]
            order = sorted(kept)
            held[i] = (emit(replace(node, inputs=(index,), axes=axes)), tuple(order.index(a) for a in kept))
        else:  # pragma: no cover - validate() refused it
            raise refuse(node.name, node.op)
    out_index, r = held[len(graph.nodes) - 1]
    if r != tuple(range(len(r))):  # the output keeps the source's layout, so that outputs compare as they are
        out_index = emit(Node("permute", "output", (out_index,), perm=_inverse(r)))
    return ModelGraph(_live(nodes, out_index), graph.framework, graph.dtype, graph.description)


def _live(nodes: list[Node], output: int) -> list[Node]:
    """The nodes the output depends on, renumbered, the output last (merged permutes leave unused ones)."""
    needed = {output}
    for i in range(output, -1, -1):
        if i in needed:
            needed.update(nodes[i].inputs)
    needed.add(0)
    order = sorted(needed)
    index = {old: new for new, old in enumerate(order)}
    return [replace(nodes[old], inputs=tuple(index[j] for j in nodes[old].inputs)) for old in order]


def input_channels_first(graph: ModelGraph) -> bool:
    """Whether the model's input is channels-first: the first layer reading it (through activations only)
    is a channels-first convolution. A channels-last port takes it channels-last."""
    first = _first_layer(graph, 0)
    return first is not None and first.channels_first and len(graph.input_shape) >= 2


def _first_layer(graph: ModelGraph, start: int) -> Node | None:
    """The first layer node reached from `start` through layout-keeping operations (activations)."""
    frontier = [start]
    while frontier:
        index = frontier.pop(0)
        for user in graph.consumers(index):
            node = graph.nodes[user]
            if node.op == "layer":
                return node
            if node.op == "act":
                frontier.append(user)
    return None


def input_layout(graph: ModelGraph, ported: ModelGraph) -> tuple[int, ...] | None:
    """The permutation from the source's input to the port's (None when they are laid out alike)."""
    if graph.input_shape == ported.input_shape:
        return None
    return to_last(len(graph.input_shape) + 1)
