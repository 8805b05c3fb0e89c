"""Hypothesis strategies: layer geometry drawn together with the shapes it constrains, and data.

Dims are plain dicts (B, L, K, N for dense-like claims; a "spec" plus "shape" for convolutions),
so a claim's mappings read like the forum question they answer.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import strategies as st

from adapters.spec import LayerSpec, numpy_dtype

Dims = dict[str, Any]
STYLES = ("normal", "uniform", "wide-range", "small-integers")


def sequence_dims(*, batch: tuple[int, int] = (1, 4), length: tuple[int, int] = (1, 8),
                  features: tuple[int, int] = (1, 48), out: tuple[int, int] = (1, 48)) -> st.SearchStrategy[Dims]:
    """B, L, K, N for a (B, L, K) input mapped to N features."""
    return st.fixed_dictionaries({
        "B": st.integers(*batch), "L": st.integers(*length), "K": st.integers(*features), "N": st.integers(*out),
    })


def fixed(**values: int) -> st.SearchStrategy[Dims]:
    """Fixed sizes (a claim about specific numbers); only the batch is drawn if not given."""
    return st.fixed_dictionaries({"B": st.integers(1, 4), **{k: st.just(v) for k, v in values.items()}})


@st.composite
def conv_dims(draw: st.DrawFn, rank: int, *, max_groups: int = 3, max_kernel: int = 5, max_stride: int = 3,
              max_dilation: int = 3, max_channels_per_group: int = 4,
              paddings: tuple[str, ...] = ("valid", "same", "explicit"), padding_mode: str = "zeros",
              strides: int | None = None) -> Dims:
    """A convolution spec and an input shape it accepts, drawn together.

    groups divides both channel counts; every spatial size is at least the dilated kernel minus the padding.
    `paddings` may also hold "causal" and "flax-border" (Flax's CIRCULAR/REFLECT amounts,
    ((k_d - 1) // 2, k_d // 2)); reflect padding gets inputs longer than the pad.
    """
    groups = draw(st.integers(1, max_groups), label="groups")
    cin = groups * draw(st.integers(1, max_channels_per_group), label="in per group")
    cout = groups * draw(st.integers(1, max_channels_per_group), label="out per group")
    kernel = tuple(draw(st.integers(1, max_kernel), label="kernel") for _ in range(rank))
    strides_ = tuple(strides or draw(st.integers(1, max_stride), label="stride") for _ in range(rank))
    dilation = tuple(draw(st.integers(1, max_dilation), label="dilation") for _ in range(rank))
    mode = draw(st.sampled_from(paddings), label="padding")
    if mode == "explicit":
        padding: Any = tuple((draw(st.integers(0, k - 1 if k > 1 else 1)), draw(st.integers(0, k - 1 if k > 1 else 1)))
                             for k in kernel)
        pads = padding
    elif mode == "flax-border":
        padding = pads = tuple((((k - 1) * d) // 2, ((k - 1) * d + 1) // 2) for k, d in zip(kernel, dilation))
    elif mode == "causal":
        padding, pads = "causal", tuple(((k - 1) * d, 0) for k, d in zip(kernel, dilation))
    else:
        padding, pads = mode, ((0, 0),) * rank
    spatial = []
    for k, d, (lo, hi) in zip(kernel, dilation, pads):
        least = max(1, (k - 1) * d + 1 - lo - hi)
        if padding_mode == "reflect":
            least = max(least, lo + 1, hi + 1)
        elif padding_mode == "circular":  # torch wraps at most once around the input
            least = max(least, lo, hi)
        spatial.append(draw(st.integers(least, least + 8), label="spatial"))
    bias = draw(st.booleans(), label="bias")
    spec = LayerSpec.conv(cin, cout, kernel, strides=strides_, padding=padding, dilation=dilation,
                          groups=groups, bias=bias, padding_mode=padding_mode)
    batch = draw(st.integers(1, 3), label="batch")
    return {"spec": spec, "shape": (batch, *spatial, cin)}


def dense_dims() -> st.SearchStrategy[Dims]:
    """A dense spec (bias on or off) and a (B, L, K) input."""
    return st.builds(
        lambda d, bias: {**d, "spec": LayerSpec.dense(d["K"], d["N"], bias=bias), "shape": (d["B"], d["L"], d["K"])},
        sequence_dims(), st.booleans())


def random_array(rng: np.random.Generator, shape: tuple[int, ...], style: str, dtype: str) -> np.ndarray:
    """Data in the dtype under test: the reference later runs on exactly these rounded values."""
    if style == "normal":
        values = rng.standard_normal(shape)
    elif style == "uniform":
        values = rng.uniform(-1.0, 1.0, shape)
    elif style == "wide-range":  # magnitudes over decades: cancellation and large/small terms together
        decades = 1.0 if dtype in ("float16", "mixed_float16") else 2.0  # float16 overflows at 65504: keep sums representable
        values = rng.standard_normal(shape) * 10.0 ** rng.uniform(-decades, decades, shape)
    elif style == "small-integers":  # exactly representable: any exact implementation gives error 0
        values = rng.integers(-4, 5, shape).astype(np.float64)
    else:
        raise ValueError(f"unknown data style {style!r}; expected one of {STYLES}")
    return values.astype(numpy_dtype(dtype))


def data_source(*, styles: tuple[str, ...] = STYLES) -> st.SearchStrategy[tuple[str, int]]:
    """(style, seed): arrays come from a seeded generator, so large tensors cost nothing to draw."""
    return st.tuples(st.sampled_from(styles), st.integers(0, 2 ** 32 - 1))
