"""Planting faults for self-tests: a wrapper around a real adapter whose layers compute something else.

The wrapper changes what a layer computes (outputs, weights, backward), never the harness, so a
check that fails under it has shown that it can catch that fault.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from layer_conformance.adapters.base import Adapter, Layer

Fault = Callable[[Layer, np.ndarray], np.ndarray]


class FaultyAdapter(Adapter):
    """Delegates to a real adapter; its layers' outputs go through `fault`."""

    def __init__(self, inner: Adapter, fault: Fault, weights_fault: Callable | None = None,
                 vjp_fault: Callable | None = None):
        self.inner, self.fault, self.weights_fault, self.vjp_fault = inner, fault, weights_fault, vjp_fault
        self.name, self.classes, self.distributions = inner.name, inner.classes, inner.distributions

    def available(self):
        return self.inner.available()

    def devices(self):
        return self.inner.devices()

    def _supports(self, spec, dtype, device):
        return self.inner._supports(spec, dtype, device)

    def _build(self, spec, weights, dtype, device):
        if self.weights_fault:
            weights = self.weights_fault(spec, dict(weights))
        layer = self.inner._build(spec, weights, dtype, device)
        original, fault = layer._forward, self.fault
        layer._forward = lambda x: fault(layer, original(x))  # type: ignore[method-assign]
        if self.vjp_fault:
            original_vjp, vjp_fault = layer._vjp, self.vjp_fault
            layer._vjp = lambda x, g: vjp_fault(*original_vjp(x, g))  # type: ignore[method-assign]
        return layer

    def default_weights(self, spec, seed):
        return self.inner.default_weights(spec, seed)
