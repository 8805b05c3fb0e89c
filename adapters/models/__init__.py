"""Whole models: read a live model into a `ModelGraph`, build one in a framework, port one (`convert_model`).

One module per framework, each with the same four functions (imported lazily, so reading a torch model
never imports TensorFlow or jax):

* ``read(model, params, input_shape) -> ModelGraph``: the model's operations, in its own layout;
  UnsupportedModel names a module the port check does not cover and where it sits;
* ``build(graph, framework, device) -> live model``: a model of that framework computing the graph
  (torch ``nn.Module``; Keras ``keras.Model``; Flax linen ``(module, variables)``; Flax nnx ``nnx.Module``);
* ``run(model, x, params) -> np.ndarray``: the live model's own forward pass on a NumPy input;
* ``activation(framework, name, dtype) -> (forward, vjp)``: the framework's own activation on NumPy
  arrays of the dtype, and its vector-Jacobian product ``vjp(x, cotangent)``.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..graph import ModelGraph, UnsupportedModel, channels_last
from ..native import framework_of
from ..spec import SpecError

_MODULES = {"torch": "layer_conformance.adapters.models.torch", "keras": "layer_conformance.adapters.models.keras",
            "flax.linen": "layer_conformance.adapters.models.flax", "flax.nnx": "layer_conformance.adapters.models.flax"}
CHANNELS_FIRST = ("torch",)  # frameworks whose convolutions read (N, C, *spatial)

__all__ = ["read_model", "build_model", "convert_model", "run_model", "activation", "model_framework",
           "ModelGraph", "UnsupportedModel"]


def _module(framework: str) -> Any:
    if framework not in _MODULES:
        raise SpecError(f"unknown framework {framework!r}; expected one of {', '.join(_MODULES)}")
    return importlib.import_module(_MODULES[framework])


def model_framework(model: Any) -> str:
    """The framework of a live model (a linen model is given as the module; its variables go in `params`)."""
    if isinstance(model, ModelGraph):
        return model.framework
    framework = framework_of(model)
    if framework is None:
        raise UnsupportedModel(f"{type(model).__module__}.{type(model).__qualname__} is not a model of a framework the "
                               f"port check reads (torch nn.Module, keras.Model, flax linen Module with its "
                               f"variables, flax nnx Module)")
    return framework


def read_model(model: Any, params: Mapping[str, Any] | None = None, *,
               input_shape: Sequence[int] | None = None) -> ModelGraph:
    """A live model as a `ModelGraph` (a ModelGraph is returned as it is).

    input_shape: one example's shape, batch left out, in the model's own layout; needed where the model
    does not carry it (torch, flax); a Keras model that is built knows its own.
    """
    if isinstance(model, ModelGraph):
        return model
    framework = model_framework(model)
    return _module(framework).read(model, params, None if input_shape is None else tuple(int(n) for n in input_shape))


def build_model(graph: ModelGraph, framework: str, *, device: str = "cpu") -> Any:
    """A live model of `framework` computing `graph`, in `graph.dtype`; a graph with channels-first convolutions
    is laid out channels-last first (`channels_last`) for the frameworks whose convolutions are channels-last."""
    if framework not in CHANNELS_FIRST and any(graph.nodes[i].channels_first for i in graph.layers()):
        graph = channels_last(graph)
    return _module(framework).build(graph.replaced(framework=framework), framework, device)


def convert_model(model: Any, to: str, *, params: Mapping[str, Any] | None = None,
                  input_shape: Sequence[int] | None = None, device: str = "cpu") -> Any:
    """Port a live model to framework `to` ("torch", "keras", "flax.linen", "flax.nnx"), with its weights.

    Every layer goes through `convert` (layer_conformance.adapters.convert), the rest of the graph through
    the port's layout: a channels-first model becomes channels-last for Keras and Flax, with the permutes
    (before a flatten, for example) that keep its function. The port takes its input in its own framework's
    layout: (N, *spatial, C) for Keras and Flax.
    """
    from dataclasses import replace

    from .. import convert, get_adapter

    graph = read_model(model, params, input_shape=input_shape)
    nodes = list(graph.nodes)
    for index in graph.layers():  # every layer through convert(): the adapters' one weight transfer
        node = nodes[index]
        assert node.spec is not None and node.weights is not None
        layer = get_adapter(graph.framework).build(node.spec, node.weights, graph.dtype, device)
        nodes[index] = replace(node, weights=convert(layer, to, dtype=graph.dtype, device=device).weights())
    return build_model(ModelGraph(nodes, graph.framework, graph.dtype, graph.description), to, device=device)


def run_model(model: Any, x: np.ndarray, params: Mapping[str, Any] | None = None) -> np.ndarray:
    """The live model's own forward pass on a NumPy input in its layout (its output as NumPy)."""
    return _module(model_framework(model)).run(model, x, params)


def activation(framework: str, name: str, dtype: str) -> tuple[Callable[[np.ndarray], np.ndarray],
                                                                Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """The framework's own activation `name` (layer_conformance.adapters.graph.ACTIVATIONS) on NumPy arrays."""
    return _module(framework).activation(framework, name, dtype)
