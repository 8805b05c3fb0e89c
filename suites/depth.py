"""The depth check: stacks of equivalent layers with ReLU between them, under a composed bound.

For a stack a_l = relu(f_l(a_{l-1})) computed in a dtype, the error e_l = |a_l - a_l^ref| obeys
(ReLU is 1-Lipschitz and exact; |W| is the layer on absolute values, bias left out)

    e_l <= |W_l| e_{l-1} + gamma(K+1, u) * (|W_l| (|a_{l-1}^ref| + e_{l-1}) + |b_l|) + (K+1) * tiny,

the first term carrying earlier errors forward, the second the rounding of layer l itself (its
inputs may already be off by e_{l-1}); gamma carries the same last-bit allowance as layer_conformance.suites.bounds. Starting from e_0 = 0 this is evaluated in float64 through
the claim's own mappings, so every variant gets its composed bound at every depth.
"""
from __future__ import annotations

import math

import numpy as np

from layer_conformance.adapters import get_adapter, reference
from layer_conformance.adapters.spec import LayerSpec, Weights, numpy_dtype
from layer_conformance.suites.bounds import SMALLEST_NORMAL, bound_coefficient
from layer_conformance.suites.catalog import Claim, Variant
from layer_conformance.suites.strategies import Dims

MAX_DEPTH = 16
EXAMPLE_SHARE = 2  # a depth example is a stack of up to MAX_DEPTH layers per variant: it gets this share of a profile's examples


def depth_examples(profile_examples: int) -> int:
    """Examples per depth test: half the profile's (25 under ci, 250 under thorough), each up to 16 layers deep."""
    return max(1, profile_examples // EXAMPLE_SHARE)


def stackable(dims: Dims) -> Dims:
    """The same sizes with output == input, so that layers can be stacked."""
    dims = dict(dims)
    spec = dims.get("spec")
    if isinstance(spec, LayerSpec) and spec.kind == "conv":
        dims["spec"] = LayerSpec.conv(spec.in_features, spec.in_features, spec.kernel_size, padding="same",
                                      dilation=spec.dilation, groups=spec.groups, bias=spec.bias)
        return dims
    if "K" in dims:
        dims["N"] = dims["K"]
    if isinstance(spec, LayerSpec):
        dims["spec"] = LayerSpec.dense(dims["K"], dims["K"], bias=spec.bias)
    return dims


def layer_weights(rng: np.random.Generator, spec: LayerSpec, dtype: str) -> Weights:
    """Weights scaled by 1/sqrt(K) so activations stay O(1) through 16 layers, rounded to the dtype."""
    scale = 1.0 / math.sqrt(spec.reduction_length)
    weights = {"kernel": (rng.standard_normal(spec.kernel_shape()) * scale).astype(numpy_dtype(dtype))}
    if spec.bias:
        weights["bias"] = (rng.standard_normal(spec.out_features) * 0.1).astype(numpy_dtype(dtype))
    return weights


def _through(variant: Variant, dims: Dims, x: np.ndarray, weights: Weights, fn) -> np.ndarray:
    spec = variant.spec(dims)
    return variant.y_out(fn(spec, variant.x_in(x, dims), variant.w_map(weights, dims)), dims)


def reference_stack(base: Variant, dims: Dims, x: np.ndarray, stack: list[Weights],
                    dtype: str, u_eff: float | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Reference activations and composed bounds after each layer (claim layout, float64); `u_eff`: a declared
    precision mode's unit roundoff instead of the dtype's (layer_conformance.suites.numerics)."""
    spec = base.spec(dims)
    n = spec.reduction_length + 1
    coefficient = bound_coefficient(n, dtype, u_eff)
    a = np.asarray(x, np.float64)
    e = np.zeros_like(a)
    activations, bounds = [], []
    for weights in stack:
        no_bias = {"kernel": weights["kernel"]}
        carried = _through(base, dims, e, no_bias, lambda s, v, w: reference.magnitude(s.with_(bias=False), v, w))
        magnitude = _through(base, dims, np.abs(a) + e, weights, reference.magnitude)
        e = carried + coefficient * magnitude + n * SMALLEST_NORMAL[dtype]
        a = np.maximum(_through(base, dims, a, weights, reference.forward), 0.0)
        activations.append(a)
        bounds.append(e)
    return activations, bounds


def framework_stack(variant: Variant, dims: Dims, x: np.ndarray, stack: list[Weights], dtype: str,
                    device: str) -> list[np.ndarray]:
    """The variant's activations after each layer: each layer built by its framework, ReLU exact in the dtype."""
    adapter = get_adapter(variant.framework)
    spec = variant.spec(dims)
    a = x
    out = []
    for weights in stack:
        layer = adapter.build(spec, variant.w_map(weights, dims), dtype, device)
        y = variant.y_out(layer.forward(variant.x_in(a, dims)), dims)
        a = np.maximum(y, np.zeros((), y.dtype))
        out.append(a.astype(np.float64))
    return out


def depth_claims_ok(claim: Claim) -> bool:
    return claim.relation == "equal" and "depth" in claim.checks
