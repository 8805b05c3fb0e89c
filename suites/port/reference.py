"""The float64 oracle of a whole model and its derived error bounds, forward and backward.

Forward, for every node i of a `ModelGraph`, the reference value a_i (float64, from the rounded
input and weights) and a bound e_i on |a_i^framework - a_i| that any correct implementation in the
dtype satisfies, composed through the graph as layer_conformance.suites.depth composes a stack:

* layer: |W| e + gamma(K+1, u) (|W| (|a| + e) + |b|) + (K+1) tiny (its input off by e, its own rounding);
* activation f: L_f e + c_f u (|f(a)| + L_f e + x_f (|a| + e)) + tiny, L_f the largest slope of f and
  c_f, x_f its declared allowance (`ACTIVATIONS`): the ulps a framework's elementary functions may be
  off, and for GELU an absolute term, since 1 + erf(x) cancels for negative x;
* max pool: the largest e of the pooled positions (max is exact and 1-Lipschitz); mean pool: the mean
  of e plus the rounding of an n-term sum and a division; add: e1 + e2 plus one rounding;
* flatten, reshape, permute: exact, e moves with the values.

Backward, for the gradient of the scalar <c, output> (c a drawn cotangent), the reference cotangent
g_i of every node and a bound eps_i on the framework's, through the same nodes in reverse:

* layer: dx: |W|^T eps + gamma(n, u) |W|^T (|g| + eps); dW: (|x| + e) (x) eps + e (x) |g| (the
  forward error of its input) + gamma(n, u) (|x| + e) (x) (|g| + eps); db likewise (n: the terms of
  each gradient element, layer_conformance.suites.gradients.term_counts);
* activation: (|f'(a)| + S_f e) eps + S_f e |g| + c_f u (...) (S_f the largest |f''|); ReLU's slope
  is a step: where |a| <= e the sign may differ, and the bound there is |g| + eps;
* max pool: where another position is within the forward errors of the maximum, the gradient may go
  to either, and the bound at every such candidate is |g| + eps;
* a node read by several others: the sum of their bounds plus the rounding of that sum.

Every bound is elementwise and finite, or infinite where no bound exists (gamma(n, u) with n u >= 1):
such a comparison is measured, never judged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from layer_conformance.adapters import reference
from layer_conformance.adapters.graph import ModelGraph, Node
from layer_conformance.adapters.spec import Weights, compute_dtype
from layer_conformance.suites.bounds import SMALLEST_NORMAL, UNIT_ROUNDOFF, bound_coefficient
from layer_conformance.suites.gradients import term_counts


def _erfc(x: np.ndarray) -> np.ndarray:
    try:
        from scipy.special import erfc
    except ImportError:  # scipy comes with jax; without it, the float64 erfc of the standard library
        return np.vectorize(math.erfc, otypes=[np.float64])(x)
    return erfc(x)


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _sigmoid(a: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-a), without the cancellation of 1 + tanh(a / 2) for negative a."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _phi(a: np.ndarray) -> np.ndarray:
    """The standard normal CDF through erfc: accurate in the far negative tail, where 1 + erf cancels."""
    return 0.5 * _erfc(-a / math.sqrt(2.0))


def _gelu_tanh_inner(a: np.ndarray) -> np.ndarray:
    return _SQRT_2_OVER_PI * (a + 0.044715 * a ** 3)


def _gelu_tanh(a: np.ndarray) -> np.ndarray:
    return a * _sigmoid(2.0 * _gelu_tanh_inner(a))  # 0.5 (1 + tanh z) = sigmoid(2 z)


def _gelu_tanh_slope(a: np.ndarray) -> np.ndarray:
    s = _sigmoid(2.0 * _gelu_tanh_inner(a))
    return s + a * 2.0 * s * (1.0 - s) * _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * a * a)


@dataclass(frozen=True)
class Activation:
    """An activation's float64 definition and its declared error allowance.

    slope: the largest |f'|; curvature: the largest |f''| (None: f' is a step, ReLU's); ulps: the units of
    roundoff a framework's implementation may be off, relative to |f(x)| (+ `absolute` |x|), and its
    derivative, relative to |f'(x)| + 1. Framework activations are not correctly rounded: torch (SLEEF) is
    within 1 to 2 ulps, but TensorFlow's float32 tanh and logistic (Eigen's rational approximations) and
    XLA's tanh are not documented to a bound, and measure up to 5.6, 8.4 and 4.4 ulps over the float32 range
    (tests/test_port_bounds.py measures every framework's against this allowance): a declared ceiling of 8
    ulps for tanh and GELU, 12 for the logistic (1.4 times the worst measured). A
    derivative is computed from the output (1 - y^2, y (1 - y)): y's relative error c u doubles in y^2 and
    two roundings follow, so its allowance is (2c + 2) u, relative to |f'(x)| + 1 since where f' is small
    (saturation) the error is absolute. absolute: GELU's 0.5 x (1 + erf) cancels for negative x.
    """

    f: Callable[[np.ndarray], np.ndarray]
    slope_of: Callable[[np.ndarray], np.ndarray]
    slope: float
    curvature: float | None
    ulps: float
    absolute: float


ULPS = 8.0
SIGMOID_ULPS = 12.0  # TensorFlow's float32 logistic: 8.4 u at x = -14.46 over the whole float32 range
ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(lambda a: np.maximum(a, 0.0), lambda a: (a > 0).astype(np.float64), 1.0, None, 0.0, 0.0),
    # max |gelu'| = 1.1289 (at x = 2.4), max |gelu''| = 2 phi(0) = 0.7979
    "gelu": Activation(lambda a: a * _phi(a), lambda a: _phi(a) + a * np.exp(-0.5 * a * a) / math.sqrt(2 * math.pi),
                       1.13, 0.80, ULPS, 1.0),
    "gelu_tanh": Activation(_gelu_tanh, _gelu_tanh_slope, 1.13, 0.81, ULPS, 1.0),
    # max |tanh''| = 4 / (3 sqrt 3) = 0.7698
    "tanh": Activation(np.tanh, lambda a: 1.0 - np.tanh(a) ** 2, 1.0, 0.77, ULPS, 0.0),
    # max |sigmoid'| = 1/4, max |sigmoid''| = 0.0962
    "sigmoid": Activation(_sigmoid, lambda a: _sigmoid(a) * (1.0 - _sigmoid(a)), 0.25, 0.0963, SIGMOID_ULPS, 0.0),
}


# ---- layout of a layer node's tensors --------------------------------------------------------------

def _to_last(ndim: int) -> tuple[int, ...]:
    return (0, *range(2, ndim), 1)


def _to_first(ndim: int) -> tuple[int, ...]:
    return (0, ndim - 1, *range(1, ndim - 1))


def canonical_of(node: Node, value: np.ndarray) -> np.ndarray:
    """A layer node's tensor (input or output) in the canonical channels-last layout."""
    return value.transpose(_to_last(value.ndim)) if node.channels_first else value


def layout_of(node: Node, value: np.ndarray) -> np.ndarray:
    """The inverse of `canonical_of`."""
    return value.transpose(_to_first(value.ndim)) if node.channels_first else value


def _f64(weights: Weights) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}


def layer_forward(node: Node, x: np.ndarray) -> np.ndarray:
    assert node.spec is not None and node.weights is not None
    return layout_of(node, reference.forward(node.spec, canonical_of(node, x), _f64(node.weights)))


def _layer_abs(node: Node, x: np.ndarray, with_bias: bool) -> np.ndarray:
    """|W| x (+ |b|) for a non-negative x: the layer on absolute values."""
    assert node.spec is not None and node.weights is not None
    spec = node.spec if with_bias else node.spec.with_(bias=False)
    weights = {k: np.abs(np.asarray(v, dtype=np.float64)) for k, v in node.weights.items()
               if with_bias or k == "kernel"}
    return layout_of(node, reference.forward(spec, canonical_of(node, x), weights))


# ---- forward -----------------------------------------------------------------------------------

def unit_roundoff(dtype: str) -> float:
    return UNIT_ROUNDOFF[compute_dtype(dtype)]


def forward_node(graph: ModelGraph, index: int, ins: list[np.ndarray], errs: list[np.ndarray],
                 u_eff: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(reference value, bound) of node `index` from its inputs' reference values and bounds."""
    node = graph.nodes[index]
    dtype = compute_dtype(graph.dtype)
    u, tiny = UNIT_ROUNDOFF[dtype], SMALLEST_NORMAL[dtype]
    a = ins[0] if ins else None
    e = errs[0] if errs else None
    if node.op == "layer":
        assert node.spec is not None and node.weights is not None and a is not None and e is not None
        n = node.spec.reduction_length + 1
        w = _f64(node.weights)
        kernel, bias = w["kernel"], w.get("bias")
        y, m, carried = (layout_of(node, v) for v in reference.forward_many(
            node.spec, [canonical_of(node, a), canonical_of(node, np.abs(a)), canonical_of(node, e)],
            [kernel, np.abs(kernel), np.abs(kernel)], [bias, None if bias is None else np.abs(bias), None]))
        carried = np.where(np.isnan(carried), np.inf, carried)  # a zero weight times an infinite error
        with np.errstate(invalid="ignore"):  # |W| (|a| + e) + |b| = |W||a| + |b| + |W| e
            own = bound_coefficient(n, dtype, u_eff) * (m + carried)
        own = np.where(np.isnan(own), np.where(m + carried == 0, 0.0, np.inf), own)
        return y, carried + own + n * tiny
    if node.op == "act":
        assert a is not None and e is not None
        act = ACTIVATIONS[str(node.activation)]
        y = act.f(a)
        u = u if u_eff is None else max(u, u_eff)
        if not act.ulps:  # exact (ReLU): 0 * an infinite e would be NaN
            return y, act.slope * e
        own = act.ulps * u * (np.abs(y) + act.slope * e + (act.absolute * (np.abs(a) + e) if act.absolute else 0.0))
        return y, act.slope * e + own + tiny
    if node.op == "flatten":
        assert a is not None and e is not None
        return a.reshape(len(a), -1), e.reshape(len(e), -1)
    if node.op == "reshape":
        assert a is not None and e is not None and node.shape is not None
        return a.reshape(len(a), *node.shape), e.reshape(len(e), *node.shape)
    if node.op == "permute":
        assert a is not None and e is not None
        return np.transpose(a, node.perm), np.transpose(e, node.perm)
    if node.op == "pool":
        assert a is not None and e is not None and node.axes is not None
        if node.reduce == "max":
            return a.max(axis=node.axes), e.max(axis=node.axes)
        terms = math.prod(a.shape[i] for i in node.axes)
        y = a.mean(axis=node.axes)
        own = bound_coefficient(terms + 1, dtype) * (np.abs(a) + e).mean(axis=node.axes)
        return y, e.mean(axis=node.axes) + own + terms * tiny
    if node.op == "add":
        y = ins[0] + ins[1]
        return y, errs[0] + errs[1] + bound_coefficient(1, dtype) * (np.abs(ins[0]) + np.abs(ins[1]) + errs[0]
                                                                      + errs[1]) + tiny
    raise ValueError(f"no reference for op {node.op!r}")  # pragma: no cover - graphs are validated


def segment(graph: ModelGraph, index: int) -> tuple[list[int], list[int]]:
    """(frontier, nodes): what node `index` is computed from when every layer before it is taken as given.

    The frontier holds the input node and the layer nodes that the operations leading to `index` read;
    `nodes` are those operations, `index` last, in graph order.
    """
    frontier: set[int] = set()
    inside: set[int] = {index}
    stack = list(graph.nodes[index].inputs)
    while stack:
        j = stack.pop()
        node = graph.nodes[j]
        if node.op in ("layer", "input"):
            frontier.add(j)
        elif j not in inside:
            inside.add(j)
            stack.extend(node.inputs)
    return sorted(frontier), sorted(inside)


def propagate(graph: ModelGraph, given: Mapping[int, np.ndarray], nodes: list[int] | None = None,
              u_eff: float | None = None) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Reference values and bounds of `nodes` (default: every node but the given ones), starting from the
    `given` values (exact: bound 0)."""
    values = {i: np.asarray(v, dtype=np.float64) for i, v in given.items()}
    bounds = {i: np.zeros_like(v) for i, v in values.items()}
    order = [i for i in range(len(graph.nodes)) if i not in given] if nodes is None else nodes
    for i in order:
        node = graph.nodes[i]
        values[i], bounds[i] = forward_node(graph, i, [values[j] for j in node.inputs],
                                            [bounds[j] for j in node.inputs], u_eff)
    return values, bounds


# ---- backward ----------------------------------------------------------------------------------

def _pool_candidates(a: np.ndarray, e: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(argmax mask with ties split evenly, mask of positions that may be the framework's maximum)."""
    top = a.max(axis=axes, keepdims=True)
    ties = (a == top).astype(np.float64)
    share = ties / ties.sum(axis=axes, keepdims=True)
    e_top = np.where(a == top, e, 0.0).max(axis=axes, keepdims=True)
    near = a + e >= top - e_top
    return share, near


def backward(graph: ModelGraph, values: Mapping[int, np.ndarray], bounds: Mapping[int, np.ndarray],
             cotangent: np.ndarray, u_eff: float | None = None
             ) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray], dict[int, dict[str, np.ndarray]],
                        dict[int, dict[str, np.ndarray]]]:
    """Reference cotangents and bounds of every node's output, and of every layer's parameters
    ({layer node: {"kernel", "bias"}}, canonical layout), for the gradient of <cotangent, output>."""
    dtype = compute_dtype(graph.dtype)
    u, tiny = UNIT_ROUNDOFF[dtype], SMALLEST_NORMAL[dtype]
    last = len(graph.nodes) - 1
    g: dict[int, list[np.ndarray]] = {last: [np.asarray(cotangent, dtype=np.float64)]}
    eps: dict[int, list[np.ndarray]] = {last: [np.zeros(np.shape(cotangent))]}
    g_out: dict[int, np.ndarray] = {}
    eps_out: dict[int, np.ndarray] = {}
    grads: dict[int, dict[str, np.ndarray]] = {}
    grad_bounds: dict[int, dict[str, np.ndarray]] = {}

    def send(j: int, gj: np.ndarray, ej: np.ndarray) -> None:
        g.setdefault(j, []).append(gj)
        eps.setdefault(j, []).append(ej)

    for i in range(last, -1, -1):
        if i not in g:
            continue
        parts, part_bounds = g.pop(i), eps.pop(i)
        gi = sum(parts[1:], parts[0])
        ei = sum(part_bounds[1:], part_bounds[0])
        if len(parts) > 1:  # the framework sums the contributions in the dtype
            ei = ei + bound_coefficient(len(parts) - 1, dtype) * sum((np.abs(p) for p in parts), np.zeros_like(gi)) \
                + bound_coefficient(len(parts) - 1, dtype) * ei + tiny
        g_out[i], eps_out[i] = gi, ei
        node = graph.nodes[i]
        if node.op == "input":
            continue
        src = node.inputs[0]
        a, e = values[src], bounds[src]
        if node.op == "layer":
            assert node.spec is not None and node.weights is not None
            spec = node.spec
            x_c, e_c = canonical_of(node, a), canonical_of(node, e)
            g_c, eps_c = canonical_of(node, gi), canonical_of(node, ei)
            w = _f64(node.weights)
            w_abs = {k: np.abs(v) for k, v in w.items()}
            dx, dw = reference.vjp(spec, x_c, w, g_c)
            counts = term_counts(spec, g_c.shape)
            c_x, c_k = (_coefficient(counts[k], dtype, u_eff) for k in ("input", "kernel"))
            # every bound term in one more VJP, by linearity: the input gradient's |W|^T (eps + c (|g| + eps))
            # from rows whose x is 0, and the kernel's (|x| + e) (x) eps + e (x) |g| + c (|x| + e) (x) (|g| + eps)
            # summed over the rows of stacked (x, g) pairs
            x_abs, g_abs = np.abs(x_c) + e_c, np.abs(g_c) + eps_c
            with np.errstate(invalid="ignore"):
                xs = np.concatenate([x_abs, e_c, c_k * x_abs if np.isfinite(c_k) else x_abs * np.inf,
                                     np.zeros_like(x_c)])
                gs = np.concatenate([eps_c, np.abs(g_c), g_abs, eps_c + c_x * g_abs])
                bound_dx, bound_dw = reference.vjp(spec.with_(bias=False), xs, {"kernel": w_abs["kernel"]}, gs)
            bx = np.nan_to_num(bound_dx[-len(x_c):], nan=np.inf) + counts["input"] * tiny
            gb = {"kernel": np.nan_to_num(bound_dw["kernel"], nan=np.inf) + counts["kernel"] * tiny}
            if "bias" in dw:
                axes = tuple(range(g_c.ndim - 1))
                gb["bias"] = eps_c.sum(axis=axes) + _coefficient(counts["bias"], dtype, u_eff) * g_abs.sum(axis=axes) \
                    + counts["bias"] * tiny
            grads[i], grad_bounds[i] = dw, gb
            send(src, layout_of(node, dx), layout_of(node, bx))
        elif node.op == "act":
            act = ACTIVATIONS[str(node.activation)]
            slope = act.slope_of(a)
            gx = slope * gi
            if act.curvature is None:  # a step: where the sign may differ, anything from 0 to g
                unsure = np.abs(a) <= e
                bx = np.where(unsure, np.abs(gi) + ei, slope * ei)
            else:
                with np.errstate(invalid="ignore"):
                    reach = np.abs(slope) + act.curvature * e
                    extra = act.absolute * (np.abs(a) + e) if act.absolute else 0.0
                    own = (2 * act.ulps + 2) * u * (reach + 1.0 + extra) * (np.abs(gi) + ei)
                    bx = reach * ei + act.curvature * e * np.abs(gi) + own
                # a zero cotangent with an infinite forward error is 0 * inf: nothing flows back there
                bx = np.where(np.abs(gi) + ei == 0, 0.0, np.nan_to_num(bx, nan=np.inf)) + tiny
            send(src, gx, bx)
        elif node.op == "flatten" or node.op == "reshape":
            send(src, gi.reshape(a.shape), ei.reshape(a.shape))
        elif node.op == "permute":
            inverse = np.argsort(node.perm)
            send(src, np.transpose(gi, inverse), np.transpose(ei, inverse))
        elif node.op == "pool":
            axes = tuple(node.axes or ())
            gk, ek = np.expand_dims(gi, axes), np.expand_dims(ei, axes)
            if node.reduce == "max":
                share, near = _pool_candidates(a, e, axes)
                unsure = near.sum(axis=axes, keepdims=True) > 1
                bx = np.where(unsure, near * (np.abs(gk) + ek), share * ek)
                send(src, share * gk, np.broadcast_to(bx, a.shape))
            else:
                terms = math.prod(a.shape[k] for k in axes)
                gx = np.broadcast_to(gk / terms, a.shape)
                bx = np.broadcast_to(ek / terms + 2 * u * (np.abs(gk) + ek) / terms + tiny, a.shape)
                send(src, gx, bx)
        elif node.op == "add":
            send(node.inputs[0], gi, ei)
            send(node.inputs[1], gi, ei)
    return g_out, eps_out, grads, grad_bounds


def _coefficient(terms: int, dtype: str, u_eff: float | None) -> float:
    return bound_coefficient(max(int(terms), 1), dtype, u_eff)
