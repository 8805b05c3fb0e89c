"""The oracle: dense and convolution layers in plain float64 NumPy, canonical layout."""
from __future__ import annotations

import itertools
import math
from typing import Mapping

import numpy as np

from .spec import LayerSpec


def forward(spec: LayerSpec, x: np.ndarray, weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """The layer's output in float64, computed from the (already rounded) inputs and weights."""
    return _evaluate(spec, x, weights, absolute=False)[0]


def forward_many(spec: LayerSpec, xs: list[np.ndarray], kernels: list[np.ndarray],
                 biases: list[np.ndarray | None]) -> list[np.ndarray]:
    """The layer (bias `None`: without one) on several (x, kernel, bias) at once, float64: one pass over the
    kernel's taps for all of them (a model's reference value and its bound's terms)."""
    x64 = np.stack([np.asarray(x, dtype=np.float64) for x in xs])
    k64 = np.stack([np.asarray(k, dtype=np.float64) for k in kernels])
    spec.check_input(x64.shape[1:])
    if spec.kind == "dense":
        ys = np.matmul(x64.reshape(len(xs), -1, x64.shape[-1]), k64).reshape(len(xs), *x64.shape[1:-1], -1)
    else:
        ys = _conv(spec, x64, k64)
    return [y if b is None else y + np.asarray(b, dtype=np.float64) for y, b in zip(ys, biases)]


def magnitude(spec: LayerSpec, x: np.ndarray, weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """``|W| * |x| + |b|``: the same layer on absolute values; scales the rounding-error bound."""
    return _evaluate(spec, np.abs(np.asarray(x, dtype=np.float64)),
                     {name: np.abs(np.asarray(value, dtype=np.float64)) for name, value in weights.items()},
                     absolute=False)[0]


def forward_and_magnitude(spec: LayerSpec, x: np.ndarray,
                          weights: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """`forward` and `magnitude` together: one pass over the kernel's taps serves both."""
    y, m = _evaluate(spec, x, weights, absolute=True)
    return y, m


def _evaluate(spec: LayerSpec, x: np.ndarray, weights: Mapping[str, np.ndarray],
              absolute: bool) -> list[np.ndarray]:
    """The layer on (x, W, b), and with `absolute` also on (|x|, |W|, |b|), stacked on a leading axis."""
    spec.check_input(x.shape)
    x64 = np.asarray(x, dtype=np.float64)
    kernel = np.asarray(weights["kernel"], dtype=np.float64)
    if absolute:
        xs, kernels = np.stack([x64, np.abs(x64)]), np.stack([kernel, np.abs(kernel)])
    else:
        xs, kernels = x64[None], kernel[None]
    if spec.kind == "dense":  # (P, rows, K) @ (P, K, N), rows = every leading axis of x
        ys = np.matmul(xs.reshape(len(xs), -1, x64.shape[-1]), kernels)
        ys = ys.reshape(len(xs), *x64.shape[:-1], kernel.shape[-1])
    else:
        ys = _conv(spec, xs, kernels)
    if not spec.bias:
        return list(ys)
    bias = np.asarray(weights["bias"], dtype=np.float64)
    return [ys[0] + bias, ys[1] + np.abs(bias)] if absolute else [ys[0] + bias]


_NUMPY_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _pad(x: np.ndarray, pairs: list, mode: str) -> np.ndarray:
    """np.pad; zeros by slice assignment, several times faster than np.pad on the small arrays of a model."""
    if mode != "zeros":
        return np.pad(x, pairs, mode=_NUMPY_PAD[mode])
    if not any(lo or hi for lo, hi in pairs):
        return x
    out = np.zeros(tuple(n + lo + hi for n, (lo, hi) in zip(x.shape, pairs)), dtype=x.dtype)
    out[tuple(slice(lo, lo + n) for n, (lo, _) in zip(x.shape, pairs))] = x
    return out


def _conv(spec: LayerSpec, xs: np.ndarray, kernels: np.ndarray) -> np.ndarray:
    """Convolutions of P inputs (P, B, *spatial, C_in) with P kernels (P, *k, C_in/groups, C_out).

    The padded input's windows, one per kernel tap, are laid side by side (im2col), so each group
    is one matrix product over taps x input channels: the float64 sum of the same K products in
    another order, within the reference's own gamma(K, 2^-53).
    """
    pads = spec.explicit_padding(xs.shape[2:-1])
    xs = _pad(xs, [(0, 0), (0, 0), *pads, (0, 0)], spec.padding_mode)
    pairs, batch, spatial = xs.shape[0], xs.shape[1], xs.shape[2:-1]
    groups, cin_g, cout_g = spec.groups, spec.in_features // spec.groups, spec.out_features // spec.groups
    out_spatial = [(n - (k - 1) * d - 1) // s + 1
                   for n, k, s, d in zip(spatial, spec.kernel_size, spec.strides, spec.dilation)]
    taps = list(itertools.product(*(range(k) for k in spec.kernel_size)))
    cols = np.stack([xs[(slice(None), slice(None), *(slice(o * d, o * d + (n - 1) * s + 1, s) for o, d, n, s
                                                       in zip(offsets, spec.dilation, out_spatial, spec.strides)))]
                     for offsets in taps], axis=-2)  # (P, B, *out, taps, C_in)
    rows, depth = batch * math.prod(out_spatial), len(taps) * cin_g
    cols = cols.reshape(pairs, rows, len(taps), groups, cin_g).transpose(0, 3, 1, 2, 4)
    cols = cols.reshape(pairs, groups, rows, depth)
    w = kernels.reshape(pairs, len(taps), cin_g, groups, cout_g).transpose(0, 3, 1, 2, 4)
    w = w.reshape(pairs, groups, depth, cout_g)
    y = np.matmul(cols, w)  # (P, groups, rows, C_out/groups)
    return y.transpose(0, 2, 1, 3).reshape(pairs, batch, *out_spatial, spec.out_features)


def vjp(spec: LayerSpec, x: np.ndarray, weights: Mapping[str, np.ndarray],
        cotangent: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Vector-Jacobian product in float64: (d input, {"kernel", "bias"}), all canonical."""
    x64 = np.asarray(x, dtype=np.float64)
    g = np.asarray(cotangent, dtype=np.float64)
    kernel = np.asarray(weights["kernel"], dtype=np.float64)
    if spec.padding_mode != "zeros" and spec.kind == "conv":
        raise NotImplementedError("the reference VJP covers zero padding only")
    if spec.kind == "dense":
        dx = g @ kernel.T
        dk = x64.reshape(-1, spec.in_features).T @ g.reshape(-1, spec.out_features)
    else:
        dx, dk = _conv_vjp(spec, x64, kernel, g)
    grads = {"kernel": dk}
    if spec.bias:
        grads["bias"] = g.reshape(-1, spec.out_features).sum(axis=0)
    return dx, grads


def _conv_vjp(spec: LayerSpec, x: np.ndarray, kernel: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The adjoint of `_conv` in x and in the kernel: the same windows, scattered instead of gathered."""
    pads = spec.explicit_padding(x.shape[1:-1])
    xp = _pad(x, [(0, 0), *pads, (0, 0)], "zeros")
    batch, spatial = xp.shape[0], xp.shape[1:-1]
    groups, cin_g = spec.groups, spec.in_features // spec.groups
    out_spatial = g.shape[1:-1]
    xg = xp.reshape(batch, *spatial, groups, cin_g)
    wg = kernel.reshape(*spec.kernel_size, cin_g, groups, spec.out_features // groups)
    gg = g.reshape(batch, *out_spatial, groups, spec.out_features // groups)
    dxg = np.zeros_like(xg)
    dwg = np.zeros_like(wg)
    for offsets in itertools.product(*(range(k) for k in spec.kernel_size)):
        window = (slice(None), *(slice(o * d, o * d + (n - 1) * s + 1, s)
                                 for o, d, n, s in zip(offsets, spec.dilation, out_spatial, spec.strides)))
        dxg[window] += np.einsum("...go,cgo->...gc", gg, wg[offsets])
        dwg[offsets] = np.einsum("ngc,ngo->cgo", xg[window].reshape(-1, groups, cin_g),
                                 gg.reshape(-1, groups, spec.out_features // groups))
    dx = dxg.reshape(xp.shape)
    interior = (slice(None), *(slice(lo, lo + n) for (lo, _), n in zip(pads, x.shape[1:-1])), slice(None))
    return dx[interior], dwg.reshape(kernel.shape)
