"""Hypothesis strategies: layer geometry drawn together with the shapes it constrains, and data.

Dims are plain dicts (B, L, K, N for dense-like claims; a "spec" plus "shape" for convolutions),
so a claim's mappings read like the forum question they answer.
"""
from __future__ import annotations

import functools
import os
import zlib
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


# conv_dims draws a dozen values per geometry; a strategy object built anew for each draw cost about
# as much as the draw (a fresh conv_dims(1) geometry under @given: 1.09 ms per example, 0.93 ms cached)
cached_integers = functools.lru_cache(maxsize=None)(st.integers)
_sampled_from = functools.lru_cache(maxsize=None)(st.sampled_from)
_BOOLEANS = st.booleans()


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
    groups = draw(cached_integers(1, max_groups), label="groups")
    cin = groups * draw(cached_integers(1, max_channels_per_group), label="in per group")
    cout = groups * draw(cached_integers(1, max_channels_per_group), label="out per group")
    kernel = tuple(draw(cached_integers(1, max_kernel), label="kernel") for _ in range(rank))
    strides_ = tuple(strides or draw(cached_integers(1, max_stride), label="stride") for _ in range(rank))
    dilation = tuple(draw(cached_integers(1, max_dilation), label="dilation") for _ in range(rank))
    mode = draw(_sampled_from(paddings), label="padding")
    if mode == "explicit":
        padding: Any = tuple((draw(cached_integers(0, k - 1 if k > 1 else 1)),
                              draw(cached_integers(0, k - 1 if k > 1 else 1))) for k in kernel)
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
        spatial.append(draw(cached_integers(least, least + 8), label="spatial"))
    bias = draw(_BOOLEANS, label="bias")
    spec = LayerSpec.conv(cin, cout, kernel, strides=strides_, padding=padding, dilation=dilation,
                          groups=groups, bias=bias, padding_mode=padding_mode)
    batch = draw(cached_integers(1, 3), label="batch")
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


SEEDS = st.integers(0, 2 ** 32 - 1)  # one object, built once: see data_source


@functools.lru_cache(maxsize=None)
def data_source(*, styles: tuple[str, ...] = STYLES) -> st.SearchStrategy[tuple[str, int]]:
    """(style, seed): arrays come from a seeded generator, so large tensors cost nothing to draw.

    Cached: a strategy built anew for every example took 0.2 ms to build and draw, a built one
    0.08 ms (hypothesis validates and wraps a new strategy on its first draw).
    """
    return st.tuples(st.sampled_from(styles), SEEDS)


CI_GEOMETRIES = 10  # the ci profile's pool: 50 examples over 10 geometries, 5 data draws each


def pool_size(value: str | None, profile: str) -> int | None:
    """--conformance-geometries: a number, 'all' (None: no pool) or 'auto' (10 under ci, else all)."""
    value = (value or "auto").strip().lower()
    if value == "auto":
        return CI_GEOMETRIES if profile == "ci" else None
    if value == "all":
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"expected a whole number of at least 1, 'all' or 'auto', got {value!r}; "
                         f"e.g. --conformance-geometries 10")
    return int(value)


GEOMETRIES_ENV = "CONFORMANCE_GEOMETRIES"


def configured_pool_size(option: str | None) -> int | None:
    """--conformance-geometries, else $CONFORMANCE_GEOMETRIES, under the hypothesis profile in force."""
    from hypothesis import settings

    return pool_size(option or os.environ.get(GEOMETRIES_ENV), settings._current_profile)


def geometry_key(dims: Dims) -> tuple[tuple[str, Any], ...]:
    """What decides the compiled programs of an example: every size and the layer spec (hashable)."""
    return tuple(sorted(dims.items()))


POOL_CANDIDATES = 6  # candidates drawn per pool member


def geometry_pool(dims: st.SearchStrategy[Dims], size: int, key: str) -> list[Dims]:
    """`size` distinct geometries of `dims` that cover its features in pairs; the same for the same `key`.

    Hypothesis draws the candidates (seeded from `key`, generation phase only: its mix of the
    smallest sizes, boundaries and random ones), POOL_CANDIDATES per member. The first candidate
    (the simplest geometry) and the largest are kept (bugs that show only on large tensors need
    one); then each member is the candidate that covers the most feature pairs not yet covered
    (a feature: a size, or a layer field such as stride, dilation, groups, padding kind or bias,
    bucketed as 1, 2-4 or more). So the pool holds, e.g., a dilated convolution with stride 1 (the
    only dilation Keras accepts) next to strided ones, rather than whatever the first draws were.
    A test that draws from the pool (st.sampled_from) runs its examples over these geometries with
    fresh data, so a layer compiled for a geometry serves several examples. Fewer than `size` when
    the strategy has fewer distinct values.
    """
    import itertools

    from hypothesis import HealthCheck, Phase, given, seed, settings

    candidates: dict[tuple[tuple[str, Any], ...], Dims] = {}

    @seed(zlib.crc32(key.encode()))
    @settings(max_examples=POOL_CANDIDATES * size, database=None, deadline=None, derandomize=False,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck), print_blob=False)
    @given(dims)
    def collect(drawn: Dims) -> None:
        candidates.setdefault(geometry_key(drawn), drawn)

    collect()
    drawn = list(candidates.values())
    if not drawn:
        return []
    features = []
    for candidate in drawn:
        singles = _features(candidate)
        features.append(set(singles) | set(itertools.combinations(singles, 2)))
    largest = max(range(len(drawn)), key=lambda i: (_elements(drawn[i]), -i))
    chosen = [0] if largest == 0 else [0, largest]
    covered = set().union(*(features[i] for i in chosen))
    while len(chosen) < min(size, len(drawn)):
        best = max((i for i in range(len(drawn)) if i not in chosen), key=lambda i: len(features[i] - covered))
        chosen.append(best)
        covered |= features[best]
    return [drawn[i] for i in chosen]


def _elements(dims: Dims) -> int:
    """How large the example is: its input's size, or the product of its sizes (B*L*K*N)."""
    if dims.get("shape") is not None:
        return int(np.prod(dims["shape"]))
    return int(np.prod([v for v in dims.values() if isinstance(v, (int, np.integer)) and not isinstance(v, bool)]))


def _features(dims: Dims) -> list[tuple[str, Any]]:
    """A geometry's coarse features: every size and layer field, bucketed."""
    out: list[tuple[str, Any]] = []
    for name, value in sorted(dims.items()):
        if isinstance(value, LayerSpec):
            for field in ("in_features", "out_features", "kernel_size", "strides", "dilation", "groups", "padding",
                          "bias"):
                out.append((field, _bucket(getattr(value, field))))
            if value.kind == "conv":  # what frameworks treat differently (Keras: no stride with dilation)
                out.append(("strided", any(s > 1 for s in value.strides)))
                out.append(("dilated", any(d > 1 and k > 1 for d, k in zip(value.dilation, value.kernel_size))))
        else:
            out.append((name, _bucket(value)))
    return out


def _bucket(value: Any) -> Any:
    if isinstance(value, (bool, str)) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return 1 if value == 1 else "2-4" if value <= 4 else ">4"
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return "explicit"  # explicit (lo, hi) padding per axis
    if isinstance(value, tuple):
        return tuple(_bucket(v) for v in value)
    return type(value).__name__
