"""Diagnosis of a failing layer: the porting mistakes people make, tested as hypotheses.

Each hypothesis is the source model with one mistake made in the failing layer's segment (the
operations since the layers before it): its float64 output, under its own derived bound, is
compared with what the port computed. A mistake whose output matches (bound ratio <= 1) is what the
port is consistent with; the smallest ratio is the diagnosis. Precision hypotheses keep the model
and widen the unit roundoff to a declared mode's (TF32, one bfloat16 pass).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np

from layer_conformance.adapters.graph import ModelGraph, Node
from layer_conformance.adapters.spec import SpecError
from layer_conformance.suites.bounds import DECLARED_ROUNDOFF, UNIT_ROUNDOFF
from layer_conformance.suites.port.reference import canonical_of, propagate, segment

# id -> what a reader is told the port is consistent with
MISTAKES: dict[str, str] = {
    "kernel-transpose": "missing kernel transpose (the kernel reshaped, not transposed, between layouts)",
    "kernel-flip": "a spatially flipped kernel (convolution vs cross-correlation)",
    "same-padding-side": "padding put on the wrong side ('same' padding's odd extra pad on the low side, or "
                         "causal padding on the high side)",
    "padding-dropped": "the padding dropped (a 'valid' convolution where the source pads)",
    "flatten-order": "NCHW/NHWC flatten order",
    "view-not-permute": "view/reshape instead of permute",
    "bias-dropped": "the bias dropped",
    "tied-copy": "a tied-weights copy of another layer, not a conversion",
    "gelu-approximation": "GELU tanh approximation vs exact erf",
    "tf32": "TF32 matmul/convolution (u_eff 2^-11)",
    "bf16-pass": "a bfloat16 matmul pass (u_eff 2^-8)",
    "float32-compute": "float32 computation in a float64 model (its layers or activations cast to float32)",
}
PRECISION = ("tf32", "bf16-pass", "float32-compute")


@dataclass(frozen=True)
class Hypothesis:
    mistake: str
    detail: str
    graph: ModelGraph
    index: int  # the failing layer's node in `graph`
    mapping: Mapping[int, int]  # node of the source graph -> node of `graph`
    u_eff: float | None = None

    @property
    def title(self) -> str:
        return MISTAKES[self.mistake] + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Verdict:
    mistake: str
    title: str
    ratio: float  # max |observed - hypothesis| / its bound; inf when it cannot explain the output

    def as_dict(self) -> dict:
        return {"mistake": self.mistake, "title": self.title,
                "ratio": self.ratio if np.isfinite(self.ratio) else None}


def _torch_kernel(kernel: np.ndarray, rank: int) -> np.ndarray:
    """Canonical (*k, in/g, out) or (in, out) -> torch's (out, in/g, *k) or (out, in)."""
    return np.transpose(kernel, (rank + 1, rank, *range(rank)))


def _from_torch(kernel: np.ndarray, rank: int) -> np.ndarray:
    return np.transpose(kernel, (*range(2, rank + 2), 1, 0))


def _with_node(graph: ModelGraph, index: int, node: Node) -> ModelGraph:
    nodes = list(graph.nodes)
    nodes[index] = node
    return ModelGraph(nodes, graph.framework, graph.dtype, graph.description)


def _identity(graph: ModelGraph) -> dict[int, int]:
    return {i: i for i in range(len(graph.nodes))}


def _insert_before(graph: ModelGraph, index: int, make: "callable") -> tuple[ModelGraph, dict[int, int]]:
    """A graph with one node inserted before node `index`, which then reads it; `make(input)` builds it."""
    mapping = {i: (i if i < index else i + 1) for i in range(len(graph.nodes))}
    nodes = []
    for i, node in enumerate(graph.nodes):
        if i == index:
            nodes.append(make(mapping[node.inputs[0]]))
            node = replace(node, inputs=(index,) + tuple(mapping[j] for j in node.inputs[1:]))
        else:
            node = replace(node, inputs=tuple(mapping[j] for j in node.inputs))
        nodes.append(node)
    return ModelGraph(nodes, graph.framework, graph.dtype, graph.description), mapping


def hypotheses(graph: ModelGraph, index: int, device: str = "cpu") -> list[Hypothesis]:
    """The catalogued porting mistakes that could have happened in the segment of layer node `index`
    (the precision modes of accelerators only on one: no framework computes float32 in TF32 on a CPU)."""
    out: list[Hypothesis] = []
    node = graph.nodes[index]
    spec, weights = node.spec, dict(node.weights or {})
    assert spec is not None
    kernel = np.asarray(weights["kernel"])
    same = _identity(graph)

    def layer_variant(mistake: str, detail: str, **changes: object) -> None:
        try:
            out.append(Hypothesis(mistake, detail, _with_node(graph, index, replace(node, **changes)), index, same))
        except (SpecError, ValueError):
            pass  # a mistake this geometry cannot have made

    rank = spec.rank
    torch_shape = _torch_kernel(kernel, rank).shape
    for detail, wrong in (("the torch kernel reshaped to the channels-last layout",
                           _torch_kernel(kernel, rank).reshape(kernel.shape)),
                          ("the channels-last kernel reshaped to torch's layout",
                           _from_torch(kernel.reshape(torch_shape), rank))):
        if not np.array_equal(wrong, kernel):
            layer_variant("kernel-transpose", detail, weights={**weights, "kernel": wrong})
    if spec.kind == "conv" and any(k > 1 for k in spec.kernel_size):
        flipped = kernel[tuple(slice(None, None, -1) for _ in range(rank))]
        layer_variant("kernel-flip", "", weights={**weights, "kernel": flipped})
        spatial = _input_spatial(graph, index)
        pairs = spec.explicit_padding(spatial)
        swapped = tuple((hi, lo) for lo, hi in pairs)
        if swapped != pairs:
            layer_variant("same-padding-side", f"padding {swapped} instead of {pairs}",
                          spec=spec.with_(padding=swapped))
        if any(lo or hi for lo, hi in pairs):
            layer_variant("padding-dropped", f"no padding instead of {pairs}", spec=spec.with_(padding="valid"))
    if spec.bias and np.any(np.asarray(weights["bias"]) != 0):
        layer_variant("bias-dropped", "", weights={**weights, "bias": np.zeros_like(weights["bias"])})
    for layer_number, other in enumerate(graph.layers(), start=1):
        theirs = graph.nodes[other].weights or {}
        if other != index and np.shape(theirs.get("kernel")) == kernel.shape \
                and ("bias" in theirs) == ("bias" in weights):
            layer_variant("tied-copy", f"layer {layer_number}'s weights", weights=dict(theirs))
    _, inside = segment(graph, index)
    for j in inside:
        op = graph.nodes[j]
        if op.op == "flatten" and len(graph.shapes[op.inputs[0]]) >= 2:
            ndim = len(graph.shapes[op.inputs[0]]) + 1
            for detail, perm in (("flattened channels-last", (0, *range(2, ndim), 1)),
                                 ("flattened channels-first", (0, ndim - 1, *range(1, ndim - 1)))):
                changed, mapping = _insert_before(graph, j, lambda src, p=perm: Node("permute", "hypothesis", (src,),
                                                                                     perm=p))
                out.append(Hypothesis("flatten-order", detail, changed, mapping[index], mapping))
        if op.op == "permute":
            changed = _with_node(graph, j, Node("reshape", op.name, op.inputs, shape=graph.shapes[j]))
            out.append(Hypothesis("view-not-permute", f"at {op.name}", changed, index, same))
        if op.op == "act" and op.activation in ("gelu", "gelu_tanh"):
            other_form = "gelu_tanh" if op.activation == "gelu" else "gelu"
            changed = _with_node(graph, j, replace(op, activation=other_form))
            out.append(Hypothesis("gelu-approximation", f"{other_form} at {op.name}", changed, index, same))
    if graph.dtype == "float32" and device != "cpu":  # the declared modes a float32 layer may compute in on a GPU
        for mode in ("tf32", "bf16-pass"):
            out.append(Hypothesis(mode, "", graph, index, same, DECLARED_ROUNDOFF[mode]))
    if graph.dtype == "float64":
        out.append(Hypothesis("float32-compute", "", graph, index, same, UNIT_ROUNDOFF["float32"]))
    return out


def _input_spatial(graph: ModelGraph, index: int) -> tuple[int, ...]:
    node = graph.nodes[index]
    shape = graph.shapes[node.inputs[0]]
    return tuple(shape[1:]) if node.channels_first else tuple(shape[:-1])


def judge(hypothesis: Hypothesis, given: Mapping[int, np.ndarray],
          observed: tuple[np.ndarray | None, np.ndarray]) -> float:
    """The bound ratio of the port's values at the layer's output and, where given, input (canonical layout)
    under one hypothesis; inf where it cannot hold."""
    graph = hypothesis.graph
    mapped = {hypothesis.mapping[i]: v for i, v in given.items()}
    frontier, nodes = segment(graph, hypothesis.index)
    if not set(frontier) <= set(mapped):
        return float("inf")
    try:
        values, bounds = propagate(graph, {i: mapped[i] for i in frontier}, nodes, hypothesis.u_eff)
    except (ValueError, SpecError):
        return float("inf")
    node = graph.nodes[hypothesis.index]
    worst = 0.0
    for at, seen in zip((node.inputs[0], hypothesis.index), observed):
        if seen is None:
            continue
        expected, bound = canonical_of(node, values[at]), canonical_of(node, bounds[at])
        if expected.shape != seen.shape or not np.all(np.isfinite(bound)):
            return float("inf")  # an infinite bound explains anything: such a hypothesis is not judged
        error = np.abs(seen.astype(np.float64) - expected)
        error = np.where(np.isfinite(error), error, np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(error == 0, 0.0, error / bound)
        worst = max(worst, float(np.nanmax(ratio)) if ratio.size else 0.0)
    return worst


def diagnose(graph: ModelGraph, index: int, given: Mapping[int, np.ndarray],
             observed: tuple[np.ndarray | None, np.ndarray], device: str = "cpu") -> list[Verdict]:
    """Every hypothesis's ratio, the best first; one verdict per mistake (its best variant)."""
    best: dict[str, Verdict] = {}
    for hypothesis in hypotheses(graph, index, device):
        ratio = judge(hypothesis, given, observed)
        if hypothesis.mistake not in best or ratio < best[hypothesis.mistake].ratio:
            best[hypothesis.mistake] = Verdict(hypothesis.mistake, hypothesis.title, ratio)
    # a precision mode widens the bound of every output, so it "explains" more than a specific mistake does:
    # among the hypotheses that match, the specific mistakes come first
    return sorted(best.values(), key=lambda v: (not v.ratio <= 1.0, v.mistake in PRECISION, v.ratio, v.mistake))
