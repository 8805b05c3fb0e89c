"""The oracle: dense and convolution layers in plain float64 NumPy, canonical layout."""
from __future__ import annotations

import itertools
from typing import Mapping

import numpy as np

from .spec import LayerSpec


def forward(spec: LayerSpec, x: np.ndarray, weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """The layer's output in float64, computed from the (already rounded) inputs and weights."""
    spec.check_input(x.shape)
    x64 = np.asarray(x, dtype=np.float64)
    kernel = np.asarray(weights["kernel"], dtype=np.float64)
    bias = np.asarray(weights["bias"], dtype=np.float64) if spec.bias else None
    y = _dense(x64, kernel) if spec.kind == "dense" else _conv(spec, x64, kernel)
    return y if bias is None else y + bias


def magnitude(spec: LayerSpec, x: np.ndarray, weights: Mapping[str, np.ndarray]) -> np.ndarray:
    """``|W| * |x| + |b|``: the same layer on absolute values; scales the rounding-error bound."""
    absolute = {name: np.abs(np.asarray(value, dtype=np.float64)) for name, value in weights.items()}
    return forward(spec, np.abs(np.asarray(x, dtype=np.float64)), absolute)


def _dense(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return x @ kernel


_NUMPY_PAD = {"zeros": "constant", "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _pad(spec: LayerSpec, x: np.ndarray) -> np.ndarray:
    pads = spec.explicit_padding(x.shape[1:-1])
    return np.pad(x, [(0, 0), *pads, (0, 0)], mode=_NUMPY_PAD[spec.padding_mode])


def _conv(spec: LayerSpec, x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    x = _pad(spec, x)
    batch, spatial = x.shape[0], x.shape[1:-1]
    groups, cin_g = spec.groups, spec.in_features // spec.groups
    out_spatial = [(n - (k - 1) * d - 1) // s + 1
                   for n, k, s, d in zip(spatial, spec.kernel_size, spec.strides, spec.dilation)]
    xg = x.reshape(batch, *spatial, groups, cin_g)
    wg = kernel.reshape(*spec.kernel_size, cin_g, groups, spec.out_features // groups)
    y = np.zeros((batch, *out_spatial, groups, spec.out_features // groups))
    for offsets in itertools.product(*(range(k) for k in spec.kernel_size)):
        window = tuple(slice(o * d, o * d + (n - 1) * s + 1, s)
                       for o, d, n, s in zip(offsets, spec.dilation, out_spatial, spec.strides))
        y += np.einsum("...gc,cgo->...go", xg[(slice(None), *window)], wg[offsets])
    return y.reshape(batch, *out_spatial, spec.out_features)


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
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
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
