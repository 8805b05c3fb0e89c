"""Running a `ModelGraph` in a framework: every layer in the framework's own layer class (through its
adapter), every activation in the framework's own function, forward and backward.

Tensors pass between operations as NumPy arrays in the dtype, as the framework would hold them
between its operations. Flatten, reshape, permute, max pooling and the routing of a residual add
are exact in any framework and run in NumPy; a mean pool and the sum of two tensors round once in
the dtype, as the framework's would. The time spent inside framework calls is kept
(`framework_seconds`): the port check's own cost is the rest.
"""
from __future__ import annotations

import math
import time
from typing import Any, Mapping

import numpy as np

from layer_conformance.adapters import get_adapter
from layer_conformance.adapters.graph import ModelGraph
from layer_conformance.adapters.models import activation
from layer_conformance.adapters.spec import Weights, numpy_dtype
from layer_conformance.suites.port.reference import canonical_of, layout_of


class Executor:
    """One graph in one framework, its layers built once."""

    def __init__(self, graph: ModelGraph, framework: str, device: str = "cpu"):
        self.graph, self.framework, self.device = graph, framework, device
        self.dtype = graph.dtype
        self.np_dtype = numpy_dtype(graph.dtype)
        self.framework_seconds = 0.0
        self.framework_calls = 0
        adapter = get_adapter(framework)
        started = time.perf_counter()
        self.layers: dict[int, Any] = {}
        for i in graph.layers():
            node = graph.nodes[i]
            assert node.spec is not None and node.weights is not None
            self.layers[i] = adapter.build(node.spec, node.weights, graph.dtype, device)
        names = {str(n.activation) for n in graph.nodes if n.op == "act"}
        self.activations = {name: activation(framework, name, graph.dtype) for name in names}
        self.build_seconds = time.perf_counter() - started

    def _call(self, fn: Any, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.framework_seconds += time.perf_counter() - started
            self.framework_calls += 1

    def _cast(self, value: np.ndarray) -> np.ndarray:
        return np.asarray(value).astype(self.np_dtype, copy=False)

    def node(self, index: int, ins: list[np.ndarray]) -> np.ndarray:
        """One node's output in the dtype."""
        node = self.graph.nodes[index]
        x = ins[0] if ins else None
        if node.op == "layer":
            layer = self.layers[index]
            y = self._call(layer.forward, canonical_of(node, x))
            return self._cast(layout_of(node, y))
        if node.op == "act":
            forward, _ = self.activations[str(node.activation)]
            return self._cast(self._call(forward, x))
        if node.op == "flatten":
            return x.reshape(len(x), -1)
        if node.op == "reshape":
            return x.reshape(len(x), *(node.shape or ()))
        if node.op == "permute":
            return np.ascontiguousarray(np.transpose(x, node.perm))
        if node.op == "pool":
            axes = tuple(node.axes or ())
            if node.reduce == "max":
                return x.max(axis=axes)
            wide = np.float64 if self.np_dtype == np.float64 else np.float32
            return self._cast(x.astype(wide).mean(axis=axes))
        if node.op == "add":
            return self._cast(ins[0] + ins[1])
        raise ValueError(f"cannot run op {node.op!r}")  # pragma: no cover - graphs are validated

    def forward(self, x: np.ndarray | None = None, *, given: Mapping[int, np.ndarray] | None = None,
                nodes: list[int] | None = None) -> dict[int, np.ndarray]:
        """Every node's output for input `x` (or only `nodes`, from the `given` outputs of others)."""
        values: dict[int, np.ndarray] = {i: self._cast(v) for i, v in (given or {}).items()}
        if x is not None:
            values[0] = self._cast(x)
        order = nodes if nodes is not None else [i for i in range(1, len(self.graph.nodes)) if i not in values]
        for i in order:
            values[i] = self.node(i, [values[j] for j in self.graph.nodes[i].inputs])
        return values

    def backward(self, values: Mapping[int, np.ndarray], cotangent: np.ndarray
                 ) -> tuple[np.ndarray, dict[int, Weights]]:
        """(gradient w.r.t. the input, {layer node: canonical parameter gradients}) of <cotangent, output>."""
        graph = self.graph
        last = len(graph.nodes) - 1
        pending: dict[int, np.ndarray] = {last: self._cast(cotangent)}
        grads: dict[int, Weights] = {}
        for i in range(last, 0, -1):
            if i not in pending:
                continue
            g = pending.pop(i)
            node = graph.nodes[i]
            src = node.inputs[0]
            x = values[src]
            if node.op == "layer":
                dx, dw = self._call(self.layers[i].vjp, canonical_of(node, x), canonical_of(node, g))
                grads[i] = dw
                self._send(pending, src, layout_of(node, self._cast(dx)))
            elif node.op == "act":
                _, vjp = self.activations[str(node.activation)]
                self._send(pending, src, self._cast(self._call(vjp, x, g)))
            elif node.op in ("flatten", "reshape"):
                self._send(pending, src, g.reshape(x.shape))
            elif node.op == "permute":
                self._send(pending, src, np.ascontiguousarray(np.transpose(g, np.argsort(node.perm))))
            elif node.op == "pool":
                axes = tuple(node.axes or ())
                gk = np.expand_dims(g, axes)
                if node.reduce == "max":
                    ties = x == x.max(axis=axes, keepdims=True)
                    share = ties / ties.sum(axis=axes, keepdims=True)
                    self._send(pending, src, self._cast(share * gk.astype(np.float64)))
                else:
                    terms = math.prod(x.shape[k] for k in axes)
                    self._send(pending, src, self._cast(np.broadcast_to(gk.astype(np.float64) / terms, x.shape)))
            elif node.op == "add":
                self._send(pending, node.inputs[0], g)
                self._send(pending, node.inputs[1], g)
        return pending.get(0, np.zeros(values[0].shape, self.np_dtype)), grads

    def _send(self, pending: dict[int, np.ndarray], index: int, g: np.ndarray) -> None:
        pending[index] = self._cast(pending[index] + g) if index in pending else g
