"""Geometry features: the corners of a layer's geometry where convolution bugs live, by name.

A feature is a predicate over one example's dims (the dicts of `layer_conformance.suites.strategies`): a convolution
example has "spec" (a conv `LayerSpec`) and "shape" (the channels-last input shape, batch first);
a dense-like example has B (batch), L (length), K (in features), N (out features). The strategies
draw every feature deliberately (`layer_conformance.suites.strategies.conv_dims`), the `ci` geometry pool keeps a
geometry of every feature its strategy can produce (`layer_conformance.suites.strategies.geometry_pool`), every result
counts the examples that exercised each feature (`record["features"]`) and the report shows the
counts, so a corner that was never met shows as a zero rather than as nothing.

Convolution features:

- `length-1`: some spatial axis of the input has size 1.
- `shorter-than-dilated-kernel`: some spatial axis is shorter than the dilated kernel (k - 1) * d + 1
  (only the padding makes the layer valid).
- `single-in-channel`, `single-out-channel`: one input channel, one output channel.
- `single-out-multi-in`: one output channel from two or more input channels (no groups) through a
  kernel larger than 1 on some axis, without dilation: the geometry of the documented Keras-on-torch Conv2D gradient
  error (`torch-conv2d-single-output-grad-weight`), which `single-out-channel` met only by chance.
- `per-axis-strides`: 2-D only, the strides differ between the axes.
- `stride-over-kernel`: some axis with a stride larger than its kernel (input positions no tap reads).
- `padding-only-output`: some axis has an output position that reads only padding.
- `padding-only-axis`: an axis with stride >= 2, dilation >= 2 and equal explicit zero padding on both
  sides, two or more output positions, all reading only padding: the geometry of the torch bfloat16
  oneDNN crash (`layer_conformance.suites.known_crashes.torch_bf16_onednn_crash`, which is this predicate in bfloat16).
- `depthwise`: groups == in channels > 1.
- `dilation-with-stride`: some axis with dilation > 1 and stride > 1 (Keras refuses it; the other
  frameworks run it).
- `dilation-stride-1`: a dilated kernel (dilation > 1, kernel > 1) with every stride 1, the only
  dilation Keras runs, so the only one a Keras dilation bug can show in.
- `same-odd-padding`, `same-even-padding`: padding "same" whose total pad on some axis is odd /
  even and above 0 (odd: the extra goes to the high side).
- `batch-1`, `batch-many`: a batch of one, of more than one.

Dense features (B, L, K, N): `batch-1`, `batch-many`, `length-1` (L == 1), `single-in-feature`
(K == 1), `single-out-feature` (N == 1).

`permuted-layout` is a property of a claim's variants rather than of the geometry: a torch
convolution variant (channels-first) gets the canonical channels-last input as a permuted view, which
is a non-contiguous tensor when the layer input has more than one channel and more than one spatial
position. It applies to claims with a torch convolution variant (`claim_features`) and is counted
per example from the variants' own layer inputs (`layout_features`); the geometry pool, which sees
only the strategy, does not select for it (most convolution geometries have it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from layer_conformance.adapters.spec import LayerSpec

Dims = dict[str, Any]


# ---- geometry helpers (shared with layer_conformance.suites.known_crashes) -----------------------------------------
def padding_only_positions(n: int, low: int, high: int, kernel: int, stride: int, dilation: int) -> int:
    """How many output positions along an axis read only padding (every tap outside the input)."""
    out = (n + low + high - dilation * (kernel - 1) - 1) // stride + 1
    return sum(all(not low <= i * stride + j * dilation < low + n for j in range(kernel)) for i in range(max(out, 0)))


def padding_only_axis(n: int, low: int, high: int, kernel: int, stride: int, dilation: int) -> bool:
    """Along this axis there are two or more output positions and every one reads only zero padding."""
    out = (n + low + high - dilation * (kernel - 1) - 1) // stride + 1
    return out >= 2 and padding_only_positions(n, low, high, kernel, stride, dilation) == out


def onednn_padding_only_geometry(spec: LayerSpec, shape: Sequence[int]) -> bool:
    """The geometry of the torch bf16 oneDNN crash, whatever the dtype (`padding-only-axis`).

    A convolution whose zero padding torch's conv applies itself (explicit and equal on both sides:
    the torch adapter hands anything else to F.pad), on an input that torch sees as a channels-last
    view (not so with one channel and every spatial size 1: then it is plainly contiguous), and a
    spatial axis with stride >= 2 and dilation >= 2 whose output positions, two or more, all read only
    that padding.
    """
    if spec.kind != "conv" or spec.padding_mode != "zeros" or not isinstance(spec.padding, tuple):
        return False
    spatial = tuple(shape[1:-1])
    if spec.in_features == 1 and all(n == 1 for n in spatial):
        return False
    return any(low == high and s >= 2 and d >= 2 and padding_only_axis(n, low, high, k, s, d)
               for (low, high), s, d, n, k in zip(spec.padding, spec.strides, spec.dilation, spatial, spec.kernel_size))


def same_totals(spec: LayerSpec, spatial: Sequence[int]) -> tuple[int, ...]:
    """The total padding per axis of a "same" convolution (empty for any other padding)."""
    if spec.padding != "same":
        return ()
    return tuple(lo + hi for lo, hi in spec.explicit_padding(spatial))


# ---- the features ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Feature:
    """A named corner: `test` says whether one example's dims exercise it."""

    name: str
    kind: str  # "conv" (a conv spec and its input shape) or "dense" (B, L, K, N)
    doc: str
    test: Callable[[Dims], bool]
    key: str | None = None  # dense: the size it reads (the feature applies where the dims have it)
    min_rank: int = 1  # conv: spatial axes it needs


def _conv(dims: Dims) -> tuple[LayerSpec, tuple[int, ...], tuple[tuple[int, int], ...]]:
    spec, spatial = dims["spec"], tuple(dims["shape"][1:-1])
    return spec, spatial, spec.explicit_padding(spatial)


def _axes(dims: Dims) -> Iterable[tuple[int, int, int, int, int, int]]:
    """(n, low, high, kernel, stride, dilation) per spatial axis."""
    spec, spatial, pads = _conv(dims)
    return ((n, lo, hi, k, s, d) for n, (lo, hi), k, s, d in
            zip(spatial, pads, spec.kernel_size, spec.strides, spec.dilation))


CONV_FEATURES: tuple[Feature, ...] = (
    Feature("length-1", "conv", "some spatial axis of the input has size 1",
            lambda d: any(n == 1 for n in d["shape"][1:-1])),
    Feature("shorter-than-dilated-kernel", "conv", "some spatial axis is shorter than the dilated kernel",
            lambda d: any(n < (k - 1) * dl + 1 for n, _, _, k, _, dl in _axes(d))),
    Feature("single-in-channel", "conv", "one input channel", lambda d: d["spec"].in_features == 1),
    Feature("single-out-channel", "conv", "one output channel", lambda d: d["spec"].out_features == 1),
    Feature("single-out-multi-in", "conv", "one output channel from two or more input channels (no groups) "
            "through a kernel larger than 1 on some axis, without dilation",
            lambda d: d["spec"].out_features == 1 and d["spec"].in_features >= 2 and d["spec"].groups == 1
            and max(d["spec"].kernel_size) > 1 and set(d["spec"].dilation) == {1}),
    Feature("per-axis-strides", "conv", "the strides differ between the axes (2-D)",
            lambda d: len(set(d["spec"].strides)) > 1, min_rank=2),
    Feature("stride-over-kernel", "conv", "some axis with a stride larger than its kernel",
            lambda d: any(s > k for k, s in zip(d["spec"].kernel_size, d["spec"].strides))),
    Feature("padding-only-output", "conv", "some output position reads only padding",
            lambda d: any(padding_only_positions(*axis) > 0 for axis in _axes(d))),
    Feature("padding-only-axis", "conv", "stride >= 2, dilation >= 2, equal explicit zero padding, and every "
            "output position (two or more) of the axis reads only padding (the torch bf16 oneDNN crash geometry)",
            lambda d: onednn_padding_only_geometry(d["spec"], d["shape"])),
    Feature("depthwise", "conv", "groups == in channels > 1",
            lambda d: d["spec"].groups == d["spec"].in_features > 1),
    Feature("dilation-with-stride", "conv", "some axis with dilation > 1 and stride > 1",
            lambda d: any(dl > 1 and s > 1 for s, dl in zip(d["spec"].strides, d["spec"].dilation))),
    Feature("dilation-stride-1", "conv", "some axis with dilation > 1 and kernel > 1, every stride 1 (the only "
            "dilation Keras runs)",
            lambda d: all(s == 1 for s in d["spec"].strides)
            and any(dl > 1 and k > 1 for k, dl in zip(d["spec"].kernel_size, d["spec"].dilation))),
    Feature("same-odd-padding", "conv", "padding 'same' with an odd total pad on some axis",
            lambda d: any(t % 2 == 1 for t in same_totals(d["spec"], d["shape"][1:-1]))),
    Feature("same-even-padding", "conv", "padding 'same' with an even total pad above 0 on some axis",
            lambda d: any(t > 0 and t % 2 == 0 for t in same_totals(d["spec"], d["shape"][1:-1]))),
    Feature("batch-1", "conv", "a batch of one", lambda d: d["shape"][0] == 1),
    Feature("batch-many", "conv", "a batch of more than one", lambda d: d["shape"][0] > 1),
)
DENSE_FEATURES: tuple[Feature, ...] = (
    Feature("length-1", "dense", "L == 1", lambda d: d["L"] == 1, key="L"),
    Feature("single-in-feature", "dense", "K == 1", lambda d: d["K"] == 1, key="K"),
    Feature("single-out-feature", "dense", "N == 1", lambda d: d["N"] == 1, key="N"),
    Feature("batch-1", "dense", "B == 1", lambda d: d["B"] == 1, key="B"),
    Feature("batch-many", "dense", "B > 1", lambda d: d["B"] > 1, key="B"),
)
PERMUTED_LAYOUT = "permuted-layout"
FEATURE_NAMES: tuple[str, ...] = tuple(dict.fromkeys(
    [f.name for f in CONV_FEATURES] + [f.name for f in DENSE_FEATURES] + [PERMUTED_LAYOUT]))


def is_conv(dims: Dims) -> bool:
    spec = dims.get("spec")
    return isinstance(spec, LayerSpec) and spec.kind == "conv" and dims.get("shape") is not None


def features_for(dims: Dims) -> tuple[Feature, ...]:
    """The features that can apply to geometries like this one (by kind, rank and the sizes it names)."""
    if is_conv(dims):
        return tuple(f for f in CONV_FEATURES if dims["spec"].rank >= f.min_rank)
    return tuple(f for f in DENSE_FEATURES if f.key in dims)


def example_features(dims: Dims) -> frozenset[str]:
    """The geometry features this example exercises."""
    return frozenset(f.name for f in features_for(dims) if f.test(dims))


# ---- the claim's variants: permuted-layout ---------------------------------------------------------
def _torch_conv_variants(variants: Iterable[Any], dims: Dims) -> list[Any]:
    return [v for v in variants if v.framework == "torch" and v.spec(dims).kind == "conv"]


def claim_features(claim: Any) -> frozenset[str]:
    """Features of a claim's variants: `permuted-layout` where a torch convolution variant gets a permuted view."""
    return frozenset({PERMUTED_LAYOUT}) if _torch_conv_variants(claim.variants, claim.example) else frozenset()


def layout_features(variants: Iterable[Any], dims: Dims, input_shape: Sequence[int]) -> frozenset[str]:
    """`permuted-layout` when a torch convolution variant's layer input (channels-last, as the variant maps the
    claim's input) has more than one channel and more than one spatial position: the permuted channels-first
    view torch then computes on is not contiguous."""
    for variant in _torch_conv_variants(variants, dims):
        shape = variant.x_in(np.zeros(tuple(input_shape), np.float32), dims).shape
        if shape[-1] > 1 and math.prod(shape[1:-1]) > 1:
            return frozenset({PERMUTED_LAYOUT})
    return frozenset()
