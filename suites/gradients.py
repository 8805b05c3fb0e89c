"""The gradient check: vector-Jacobian products of every variant, mapped back to the claim's layout.

A claim's input, weight and output mappings are gathers (transpose, reshape, indexing), so their
adjoints are scatter-adds; applying a mapping to an array of indices tells where each element
came from. The float64 reference VJP of the same layer gives the expected gradient, and the
same VJP on absolute values gives the magnitude that scales each bound (DESIGN.md, "Tolerance is derived, not guessed"): for d input
the sum runs over out/groups * prod(kernel) terms, for d kernel and d bias over the output positions.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from layer_conformance.adapters import get_adapter, reference
from layer_conformance.adapters.spec import LayerSpec, Weights
from layer_conformance.suites.accumulation import WIDE, gradient_accumulators, not_judged_reason
from layer_conformance.suites.bounds import bound_ratio, sum_bound, wide_error_bound
from layer_conformance.suites.catalog import Claim, Variant
from layer_conformance.suites.strategies import Dims

GRADIENTS = ("input", "kernel", "bias")


class NotAGather(ValueError):
    """A mapping that mixes values (e.g. a mean): it has no index adjoint; the row gets no gradient check."""


def _source_index(fn: Callable[[Any, Dims], Any], shape: tuple[int, ...], dims: Dims) -> np.ndarray:
    index = fn(np.arange(math.prod(shape)).reshape(shape), dims)
    index = np.asarray(index)
    if index.dtype.kind not in "iu":
        raise NotAGather("mapping is not a gather")
    return index


def _scatter(values: np.ndarray, index: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Adjoint of `gather by index`: sums values into the positions they were taken from."""
    flat = np.bincount(index.ravel(), weights=np.asarray(values, np.float64).ravel(), minlength=math.prod(shape))
    return flat.reshape(shape)


def _weight_index(variant: Variant, weights: Weights, dims: Dims) -> dict[str, np.ndarray]:
    names = {k: np.arange(v.size).reshape(v.shape) for k, v in weights.items()}
    mapped = variant.w_map(names, dims)
    for value in mapped.values():
        if np.asarray(value).dtype.kind not in "iu":
            raise NotAGather("weight mapping is not a gather")
    return mapped


def has_gradient_adjoints(claim: Claim) -> bool:
    """True when every mapping of the row is a gather (checked on the row's example sizes)."""
    base = claim.variants[0].spec(claim.example)
    weights = {"kernel": np.zeros(base.kernel_shape()), **({"bias": np.zeros(base.out_features)} if base.bias else {})}
    x_shape = claim.input_shape(claim.example)
    try:
        for v in claim.variants:
            spec = v.spec(claim.example)
            layer_x = _source_index(v.x_in, x_shape, claim.example)
            _weight_index(v, weights, claim.example)
            out_shape = reference.forward(spec, np.zeros(layer_x.shape), v.w_map(weights, claim.example)).shape
            _source_index(v.y_out, out_shape, claim.example)
    except NotAGather:
        return False
    return True


def term_counts(spec: LayerSpec, out_shape: tuple[int, ...]) -> dict[str, int]:
    """Terms per gradient element: the n of gamma(n, u).

    An input element of a convolution meets, along each spatial axis, at most one kernel tap per
    output position and one output position per tap: min(k_d, out_len_d) products per output channel
    of its group. (A kernel as long as the input, e.g. Conv1D(kernel_size=K) on (B*L, K, 1), gives
    every input element one product per channel, not K.)
    """
    positions = math.prod(out_shape[:-1])
    per_input = spec.out_features if spec.kind == "dense" else \
        spec.out_features // spec.groups * math.prod(min(k, n) for k, n in zip(spec.kernel_size, out_shape[1:-1]))
    return {"input": per_input, "kernel": positions, "bias": positions}


def variant_gradients(variant: Variant, dims: Dims, x: np.ndarray, weights: Weights, cotangent: np.ndarray,
                      dtype: str, device: str, layer_fn: Callable | None = None) -> dict[str, dict[str, np.ndarray]]:
    """{"framework"|"reference"|"magnitude"|"bound": {input, kernel, bias}} in the claim's layout."""
    spec = variant.spec(dims)
    layer_x, layer_w = variant.x_in(x, dims), variant.w_map(weights, dims)
    x_index = _source_index(variant.x_in, x.shape, dims)
    w_index = _weight_index(variant, weights, dims)
    out = reference.forward(spec, layer_x, layer_w)
    y_index = _source_index(variant.y_out, out.shape, dims)
    g_layer = _scatter(cotangent, y_index, out.shape)  # exact: every claim output is one layer output

    def to_claim(dx: np.ndarray, dw: Weights) -> dict[str, np.ndarray]:
        grads = {"input": _scatter(dx, x_index, x.shape)}
        for name, value in dw.items():
            grads["kernel" if name == "kernel" else "bias"] = _scatter(value, w_index[name], weights[name].shape)
        return grads

    result = {"reference": to_claim(*reference.vjp(spec, layer_x, layer_w, g_layer)),
              "magnitude": to_claim(*reference.vjp(spec, np.abs(layer_x.astype(np.float64)),
                                                   {k: np.abs(v.astype(np.float64)) for k, v in layer_w.items()},
                                                   np.abs(g_layer)))}
    layer = get_adapter(variant.framework).build(spec, layer_w, dtype, device)
    dx, dw = layer.vjp(layer_x, g_layer.astype(x.dtype))
    result["framework"] = to_claim(dx.astype(np.float64), {k: v.astype(np.float64) for k, v in dw.items()})
    counts = term_counts(spec, out.shape)
    result["bound"], result["accumulation"] = gradient_bounds(  # type: ignore[assignment]
        variant.framework, spec, dtype, device, layer_x, out.shape, counts, result["magnitude"], result["reference"])
    result["terms"] = counts  # type: ignore[assignment]  (ints: what bound_in needs for another dtype)
    result["dtype"] = dtype  # type: ignore[assignment]
    return result


def gradient_bounds(framework: str, spec: LayerSpec, dtype: str, device: str, layer_x: np.ndarray,
                    out_shape: tuple[int, ...], counts: dict[str, int], magnitude: dict[str, np.ndarray],
                    expected: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, str | None]]:
    """The bound of every gradient (worst case: gamma(n, u) over its `counts` terms, u the declared u_eff of
    the framework's precision mode where it computes in one: layer_conformance.suites.numerics), and what the
    probe of the framework's VJP program found (layer_conformance.suites.accumulation.gradient_accumulators).

    A half-precision kernel or bias gradient whose program the probe shows summing in float32 is judged by
    the smaller of the worst-case and the wide bound (both hold for it): finite for every number of positions.
    """
    from layer_conformance.suites.numerics import declared_u_eff

    u_eff = declared_u_eff(framework, spec, dtype, device)[1]
    bounds = {name: sum_bound(counts[name], m, dtype, u_eff) for name, m in magnitude.items()}
    found = gradient_accumulators(framework, spec, dtype, device, layer_x, out_shape)
    for name, accumulation in found.items():
        if accumulation == WIDE and name in bounds:
            wide = wide_error_bound(counts[name], magnitude[name], expected[name], 0.0, dtype)
            bounds[name] = np.minimum(bounds[name], wide)
    return bounds, found


def not_judged(grads: dict[str, dict[str, Any]], name: str, dtype: str) -> str:
    """Why one gradient comparison is measured but not judged (its bound is infinite): what its probe found."""
    return not_judged_gradient(name, grads["terms"][name], dtype, grads.get("accumulation", {}))


def not_judged_gradient(name: str, terms: int, dtype: str, found: dict[str, str | None]) -> str:
    """`not_judged` from the gradient's name, its number of terms and the probe's findings."""
    if name == "input":
        what = "input-gradient programs are not probed"
    elif name not in found:
        what = "too few output positions for the probe"
    else:
        what = "the probes could not tell float32 from half-precision sums for this geometry"
    return not_judged_reason(terms, dtype, found.get(name), what)


def bound_in(grads: dict[str, dict[str, Any]], name: str, dtype: str) -> np.ndarray:
    """One gradient's bound as if computed in `dtype` (a divergence's ceiling): same terms, same magnitude. In the
    gradients' own dtype it is their bound (the probed wide bound included), never the looser worst case."""
    if dtype == grads.get("dtype"):
        return grads["bound"][name]
    return sum_bound(grads["terms"][name], grads["magnitude"][name], dtype)


def compare(grads: dict[str, dict[str, np.ndarray]], expected: dict[str, np.ndarray]) -> dict[str, tuple]:
    """Per gradient: (max abs error, bound ratio, index) of the framework against `expected`."""
    return {name: bound_ratio(grads["framework"][name], expected[name], grads["bound"][name])
            for name in grads["framework"]}
