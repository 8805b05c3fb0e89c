"""Porting mistakes, planted: a correct port's graph with one mistake people make when they port by hand.

The port check (layer_conformance.suites.port) must find each at the layer where it is made and
diagnose it; its self-tests, and `conformance port --plant`, build ports with these.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from layer_conformance.adapters.graph import ModelGraph, Node, channels_last
from layer_conformance.adapters.spec import SpecError

PLANTS = ("kernel-transpose", "kernel-flip", "same-padding-side", "padding-dropped", "flatten-order",
          "view-not-permute", "bias-dropped", "tied-copy", "gelu-approximation")


def _torch_kernel(kernel: np.ndarray, rank: int) -> np.ndarray:
    return np.transpose(kernel, (rank + 1, rank, *range(rank)))


def port_graph(source: ModelGraph, channels_first: bool) -> ModelGraph:
    """The correct port's graph: the source's, channels-last where the target framework is."""
    if channels_first or not any(source.nodes[i].channels_first for i in source.layers()):
        return source
    return channels_last(source)


def plant(source: ModelGraph, mistake: str, layer: int, *, channels_first: bool) -> ModelGraph:
    """The port of `source` (channels-first or -last) with `mistake` made at layer `layer` (1-based; for
    flatten-order, view-not-permute and gelu-approximation: in the operations leading to that layer)."""
    if mistake == "flatten-order":
        if not any(n.op == "flatten" and len(source.shapes[n.inputs[0]]) >= 2 for n in source.nodes):
            raise SpecError("flatten-order needs a model that flattens a tensor with spatial axes")
        if channels_first:
            raise SpecError("flatten-order is a mistake of a port between channels-first and channels-last frameworks")
        return channels_last(source, flatten_fix=False)
    if mistake == "view-not-permute":
        if not any(n.op == "permute" for n in source.nodes):
            raise SpecError("view-not-permute needs a model with a permute (or transpose)")
        if channels_first:
            nodes = [Node("reshape", n.name, n.inputs, shape=source.shapes[i]) if n.op == "permute" else n
                     for i, n in enumerate(source.nodes)]
            return ModelGraph(nodes, source.framework, source.dtype, source.description)
        return channels_last(source, permute_as_view=True)
    graph = port_graph(source, channels_first)
    layers = graph.layers()
    if not 1 <= layer <= len(layers):
        raise SpecError(f"layer {layer}: the model has layers 1 to {len(layers)}")
    index = layers[layer - 1]
    node = graph.nodes[index]
    nodes = list(graph.nodes)
    spec, weights = node.spec, dict(node.weights or {})
    assert spec is not None
    kernel = np.asarray(weights["kernel"])
    if mistake == "kernel-transpose":
        weights["kernel"] = _torch_kernel(kernel, spec.rank).reshape(kernel.shape)
    elif mistake == "kernel-flip":
        weights["kernel"] = kernel[tuple(slice(None, None, -1) for _ in range(spec.rank))]
    elif mistake == "bias-dropped":
        weights["bias"] = np.zeros_like(weights["bias"])
    elif mistake == "tied-copy":
        other = next((j for j in layers if j != index and np.shape((graph.nodes[j].weights or {}).get("kernel"))
                      == kernel.shape), None)
        if other is None:
            raise SpecError(f"tied-copy: no other layer has layer {layer}'s kernel shape {kernel.shape}")
        weights = dict(graph.nodes[other].weights or {})
    elif mistake == "same-padding-side":
        shape = graph.shapes[node.inputs[0]]
        spatial = shape[1:] if node.channels_first else shape[:-1]
        pairs = spec.explicit_padding(spatial)
        swapped = tuple((hi, lo) for lo, hi in pairs)
        if swapped == pairs:
            raise SpecError(f"same-padding-side: layer {layer} pads both sides alike ({pairs})")
        nodes[index] = replace(node, spec=spec.with_(padding=swapped))
        return ModelGraph(nodes, graph.framework, graph.dtype, graph.description)
    elif mistake == "padding-dropped":
        if spec.kind != "conv" or spec.padding == "valid":
            raise SpecError(f"padding-dropped: layer {layer} has no padding to drop")
        nodes[index] = replace(node, spec=spec.with_(padding="valid"))
        return ModelGraph(nodes, graph.framework, graph.dtype, graph.description)  # may refuse: lengths change
    elif mistake == "gelu-approximation":
        for j, other in enumerate(graph.nodes):
            if other.op == "act" and other.activation in ("gelu", "gelu_tanh"):
                nodes[j] = replace(other, activation="gelu_tanh" if other.activation == "gelu" else "gelu")
                return ModelGraph(nodes, graph.framework, graph.dtype, graph.description)
        raise SpecError("gelu-approximation needs a model with a GELU")
    else:
        raise SpecError(f"unknown porting mistake {mistake!r}; expected one of {', '.join(PLANTS)}")
    nodes[index] = replace(node, weights=weights)
    return ModelGraph(nodes, graph.framework, graph.dtype, graph.description)
