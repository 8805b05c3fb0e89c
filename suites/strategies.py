"""Hypothesis strategies: layer geometry drawn together with the shapes it constrains, and data.

Dims are plain dicts (B, L, K, N for dense-like claims; a "spec" plus "shape" for convolutions),
so a claim's mappings read like the forum question they answer.
"""
from __future__ import annotations

import functools
import os
from collections import Counter
import zlib
from typing import Any

import numpy as np
from hypothesis import strategies as st

from layer_conformance.adapters.spec import LayerSpec, numpy_dtype
from layer_conformance.suites.features import CONV_FEATURES, example_features

Dims = dict[str, Any]
STYLES = ("normal", "uniform", "wide-range", "small-integers")


def sequence_dims(*, batch: tuple[int, int] = (1, 4), length: tuple[int, int] = (1, 8),
                  features: tuple[int, int] = (1, 48), out: tuple[int, int] = (1, 48)) -> st.SearchStrategy[Dims]:
    """B, L, K, N for a (B, L, K) input mapped to N features."""
    return _produces(st.fixed_dictionaries({
        "B": st.integers(*batch), "L": st.integers(*length), "K": st.integers(*features), "N": st.integers(*out),
    }), _dense_produces({"B": batch, "L": length, "K": features, "N": out}))


def _dense_produces(ranges: dict[str, tuple[int, int]]) -> frozenset[str]:
    """The dense features (layer_conformance.suites.features) that sizes drawn from these (low, high) ranges can have."""
    can = {"length-1": ("L", 1), "single-in-feature": ("K", 1), "single-out-feature": ("N", 1), "batch-1": ("B", 1)}
    names = {name for name, (key, value) in can.items() if key in ranges and ranges[key][0] <= value <= ranges[key][1]}
    return frozenset(names | ({"batch-many"} if "B" in ranges and ranges["B"][1] > 1 else set()))


def fixed(**values: int) -> st.SearchStrategy[Dims]:
    """Fixed sizes (a claim about specific numbers); only the batch is drawn if not given."""
    ranges = {"B": (1, 4), **{k: (v, v) for k, v in values.items()}}
    return _produces(st.fixed_dictionaries({"B": st.integers(1, 4), **{k: st.just(v) for k, v in values.items()}}),
                     _dense_produces(ranges))


# conv_dims draws a dozen values per geometry; a strategy object built anew for each draw cost about
# as much as the draw (a fresh conv_dims(1) geometry under @given: 1.09 ms per example, 0.93 ms cached)
cached_integers = functools.lru_cache(maxsize=None)(st.integers)
_sampled_from = functools.lru_cache(maxsize=None)(st.sampled_from)
_BOOLEANS = st.booleans()


# the features a strategy can produce (layer_conformance.suites.features), by strategy: the pool keeps a geometry of each
_PRODUCES: dict[int, tuple[st.SearchStrategy[Dims], frozenset[str]]] = {}


def _produces(strategy: st.SearchStrategy[Dims], names: Any) -> st.SearchStrategy[Dims]:
    _PRODUCES[id(strategy)] = (strategy, frozenset(names))
    return strategy


def strategy_features(strategy: st.SearchStrategy[Any]) -> frozenset[str] | None:
    """The features (layer_conformance.suites.features) that a dims strategy can produce; None when it does not say.

    conv_dims, sequence_dims, dense_dims and fixed say; st.one_of of strategies that say, the union.
    """
    known = _PRODUCES.get(id(strategy))
    if known is not None and known[0] is strategy:
        return known[1]
    branches = getattr(strategy, "original_strategies", None)
    if branches:
        parts = [strategy_features(branch) for branch in branches]
        if all(part is not None for part in parts):
            return frozenset().union(*parts)  # type: ignore[arg-type]
    return None


_PADDED = ("explicit", "causal", "flax-border")  # paddings under which an input may be shorter than the kernel


def _same_total(n: int, k: int, s: int, d: int) -> int:
    """Total padding of "same" along an axis (LayerSpec.explicit_padding's rule)."""
    return max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)


_RARE_CORNERS = ("padding-only-axis", "same-odd-padding", "same-even-padding")
_SAME_PARITY = {"same-odd-padding": lambda t: t % 2 == 1, "same-even-padding": lambda t: t > 0 and t % 2 == 0}


@functools.lru_cache(maxsize=None)
def _same_pairs(corner: str, max_kernel: int, s: int, d: int) -> tuple[tuple[int, int], ...]:
    """(kernel, length) pairs of an axis whose "same" total padding has the corner's parity."""
    return tuple((k, n) for k in range(1, max_kernel + 1) for n in range((k - 1) * d + 1, (k - 1) * d + 10)
                 if _SAME_PARITY[corner](_same_total(n, k, s, d)))


@functools.lru_cache(maxsize=None)
def _same_choices(corner: str, max_kernel: int, s: int, d: int) -> st.SearchStrategy[tuple[int, int]]:
    pairs = _same_pairs(corner, max_kernel, s, d)
    return st.sampled_from(pairs) if pairs else st.nothing()


def conv_corners(rank: int, *, max_groups: int = 3, max_kernel: int = 5, max_stride: int = 3, max_dilation: int = 3,
                 max_channels_per_group: int = 4, paddings: tuple[str, ...] = ("valid", "same", "explicit"),
                 padding_mode: str = "zeros", strides: int | None = None) -> tuple[str, ...]:
    """The features conv_dims can produce with these options, in layer_conformance.suites.features order."""
    stride_most = strides or max_stride
    can = {
        "length-1": True,
        "shorter-than-dilated-kernel": bool(set(paddings) & set(_PADDED)) and max_kernel >= 2,
        "single-in-channel": True, "single-out-channel": True,
        "single-out-multi-in": max_channels_per_group >= 2 and max_kernel >= 2,
        "per-axis-strides": rank == 2 and strides is None and max_stride >= 2,
        "stride-over-kernel": stride_most >= 2,
        "padding-only-output": "explicit" in paddings or ("flax-border" in paddings and padding_mode != "reflect"
                                                          and max_kernel >= 2 and max_dilation >= 2),
        "padding-only-axis": ("explicit" in paddings and padding_mode == "zeros" and max_dilation >= 2
                              and (strides == 2 or (strides is None and max_stride >= 2))
                              and (max_channels_per_group >= 2 or max_groups >= 2)),
        "depthwise": max_groups >= 2,
        "dilation-with-stride": stride_most >= 2 and max_dilation >= 2,
        "dilation-stride-1": (strides or 1) == 1 and max_dilation >= 2 and max_kernel >= 2,
        "batch-1": True, "batch-many": True,
    }
    for corner in _SAME_PARITY:
        can[corner] = "same" in paddings and any(
            _same_pairs(corner, max_kernel, s, 1) for s in ((strides,) if strides else range(1, max_stride + 1)))
    return tuple(f.name for f in CONV_FEATURES if can.get(f.name))


def conv_dims(rank: int, *, max_groups: int = 3, max_kernel: int = 5, max_stride: int = 3, max_dilation: int = 3,
              max_channels_per_group: int = 4, paddings: tuple[str, ...] = ("valid", "same", "explicit"),
              padding_mode: str = "zeros", strides: int | None = None) -> st.SearchStrategy[Dims]:
    """A convolution spec and an input shape it accepts, drawn together.

    groups divides both channel counts; every spatial size is at least the dilated kernel minus the padding.
    `paddings` may also hold "causal" and "flax-border" (Flax's CIRCULAR/REFLECT amounts,
    ((k_d - 1) // 2, k_d // 2)); reflect padding gets inputs longer than the pad.
    Most draws aim at a corner first (a feature of layer_conformance.suites.features that these options can produce:
    a length-1 axis, a single channel, groups == channels, stride over kernel, outputs that read only
    padding, ...), then draw the rest freely; "none" (the first choice, what examples shrink to)
    draws everything freely.
    """
    options = dict(max_groups=max_groups, max_kernel=max_kernel, max_stride=max_stride, max_dilation=max_dilation,
                   max_channels_per_group=max_channels_per_group, paddings=paddings, padding_mode=padding_mode,
                   strides=strides)
    produces = conv_corners(rank, **options)
    # the batch varies anyway; corners that free draws almost never meet are aimed at three times as often
    forced = ("none",) + tuple(c for c in produces if c not in ("batch-1", "batch-many")) \
        + 2 * tuple(c for c in produces if c in _RARE_CORNERS)
    return _produces(_conv_dims(rank, forced, **options), produces)


@st.composite
def _conv_dims(draw: st.DrawFn, rank: int, corners: tuple[str, ...], *, max_groups: int, max_kernel: int,
               max_stride: int, max_dilation: int, max_channels_per_group: int, paddings: tuple[str, ...],
               padding_mode: str, strides: int | None) -> Dims:
    corner = draw(_sampled_from(corners), label="corner")
    axis = draw(cached_integers(0, rank - 1), label="corner axis") if corner != "none" and rank > 1 else 0
    per_group = cached_integers(1, max_channels_per_group)
    if corner == "depthwise":
        groups = draw(cached_integers(2, max_groups), label="groups")
        cin, cout = groups, groups * draw(per_group, label="out per group")
    elif corner in ("single-in-channel", "single-out-channel"):
        groups = 1
        cin = 1 if corner == "single-in-channel" else draw(per_group, label="in per group")
        cout = 1 if corner == "single-out-channel" else draw(per_group, label="out per group")
    elif corner == "single-out-multi-in":
        groups, cout = 1, 1
        cin = draw(cached_integers(2, max_channels_per_group), label="in per group")
    else:
        groups = draw(cached_integers(1, max_groups), label="groups")
        least_in = 2 if corner == "padding-only-axis" and groups == 1 else 1  # a view torch sees as channels-last
        cin = groups * draw(cached_integers(min(least_in, max_channels_per_group), max_channels_per_group),
                            label="in per group")
        if cin == 1 and least_in == 2:
            groups = cin = 2
        cout = groups * draw(per_group, label="out per group")
    kernel = [draw(cached_integers(1, max_kernel), label="kernel") for _ in range(rank)]
    strides_ = [strides or draw(cached_integers(1, max_stride), label="stride") for _ in range(rank)]
    dilation = [draw(cached_integers(1, max_dilation), label="dilation") for _ in range(rank)]
    if corner == "per-axis-strides":
        strides_[axis] = draw(_sampled_from(tuple(s for s in range(1, max_stride + 1) if s != strides_[1 - axis])),
                              label="stride")
    elif corner == "stride-over-kernel":
        kernel[axis] = draw(cached_integers(1, min(max_kernel, (strides or max_stride) - 1)), label="kernel")
        strides_[axis] = strides or draw(cached_integers(kernel[axis] + 1, max_stride), label="stride")
    elif corner == "dilation-with-stride":
        dilation[axis] = draw(cached_integers(2, max_dilation), label="dilation")
        strides_[axis] = strides or draw(cached_integers(2, max_stride), label="stride")
    elif corner == "dilation-stride-1":
        strides_ = [1] * rank
        kernel[axis] = draw(cached_integers(2, max_kernel), label="kernel")
        dilation[axis] = draw(cached_integers(2, max_dilation), label="dilation")
    elif corner == "padding-only-output" and "explicit" not in paddings:  # taps 0 and d around a short input
        kernel[axis] = 2
        dilation[axis] = draw(cached_integers(2, max_dilation), label="dilation")
    elif corner in ("padding-only-output", "padding-only-axis"):
        kernel[axis] = 1
        if corner == "padding-only-axis":  # length 1 between pads of 1: both outputs (stride 2) read only padding
            strides_[axis] = 2
            dilation[axis] = draw(cached_integers(2, max_dilation), label="dilation")
    elif corner == "shorter-than-dilated-kernel":
        kernel[axis] = draw(cached_integers(2, max_kernel), label="kernel")
    elif corner == "single-out-multi-in":
        kernel[axis] = draw(cached_integers(2, max_kernel), label="kernel")
        dilation = [1] * rank
    if corner in ("padding-only-output", "padding-only-axis"):
        mode = "explicit" if "explicit" in paddings else "flax-border"
    elif corner == "shorter-than-dilated-kernel":
        mode = draw(_sampled_from(tuple(p for p in paddings if p in _PADDED)), label="padding")
    elif corner in _SAME_PARITY:
        mode = "same"
    else:
        mode = draw(_sampled_from(paddings), label="padding")
    if corner == "length-1" and (mode in ("valid", "same") or padding_mode in ("reflect", "circular")
                                 or (mode == "explicit" and dilation[axis] > 2)):
        kernel[axis] = 1  # else the padding covers the dilated kernel (below)
    if corner in _SAME_PARITY:
        kernel[axis], same_length = draw(_same_choices(corner, max_kernel, strides_[axis], dilation[axis]),
                                         label="kernel and length")
    if mode == "explicit":
        padding: Any = []
        for i, k in enumerate(kernel):
            most = k - 1 if k > 1 else 1
            if i == axis and corner == "padding-only-axis":
                padding.append((1, 1))
            elif i == axis and corner == "padding-only-output":  # the first output reads only the low pad
                padding.append((1, draw(cached_integers(0, 1))))
            elif i == axis and corner == "length-1" and k > 1:  # (k - 1) * d <= 2 * (k - 1): d <= 2
                padding.append((k - 1, k - 1))
            elif i == axis and corner == "shorter-than-dilated-kernel":
                low = draw(cached_integers(0, most))
                padding.append((low, draw(cached_integers(0 if low else 1, most))))
            else:
                padding.append((draw(cached_integers(0, most)), draw(cached_integers(0, most))))
        padding = pads = tuple(padding)
    elif mode == "flax-border":
        padding = pads = tuple((((k - 1) * d) // 2, ((k - 1) * d + 1) // 2) for k, d in zip(kernel, dilation))
    elif mode == "causal":
        padding, pads = "causal", tuple(((k - 1) * d, 0) for k, d in zip(kernel, dilation))
    else:
        padding, pads = mode, ((0, 0),) * rank
    spatial = []
    for i, (k, d, (lo, hi)) in enumerate(zip(kernel, dilation, pads)):
        reach = (k - 1) * d + 1
        least = max(1, reach - lo - hi)
        if padding_mode == "reflect":
            least = max(least, lo + 1, hi + 1)
        elif padding_mode == "circular":  # torch wraps at most once around the input
            least = max(least, lo, hi)
        if i == axis and corner in ("length-1", "padding-only-axis") and least == 1:
            spatial.append(1)
        elif i == axis and corner == "padding-only-output" and mode == "flax-border":
            spatial.append(least)
        elif i == axis and corner == "shorter-than-dilated-kernel" and least < reach:
            spatial.append(draw(cached_integers(least, reach - 1), label="spatial"))
        elif i == axis and corner in _SAME_PARITY:
            spatial.append(same_length)
        else:
            spatial.append(draw(cached_integers(least, least + 8), label="spatial"))
    bias = draw(_BOOLEANS, label="bias")
    spec = LayerSpec.conv(cin, cout, tuple(kernel), strides=tuple(strides_), padding=padding,
                          dilation=tuple(dilation), groups=groups, bias=bias, padding_mode=padding_mode)
    batch = draw(cached_integers(1, 3), label="batch")
    return {"spec": spec, "shape": (batch, *spatial, cin)}


def dense_dims() -> st.SearchStrategy[Dims]:
    """A dense spec (bias on or off) and a (B, L, K) input."""
    sizes = sequence_dims()
    return _produces(st.builds(
        lambda d, bias: {**d, "spec": LayerSpec.dense(d["K"], d["N"], bias=bias), "shape": (d["B"], d["L"], d["K"])},
        sizes, st.booleans()), strategy_features(sizes))


def describe_dims(dims: Dims) -> str:
    """An example's sizes in one line: `B=2, L=5, spec=conv1d(...)`."""
    return ", ".join(f"{k}={v.describe() if isinstance(v, LayerSpec) else v}" for k, v in dims.items())


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
POOL_ROUNDS = 8  # at most this many rounds of candidates, while a corner the strategy can produce is held by < 2
_POOLS: dict[tuple[int, int, str], tuple[st.SearchStrategy[Dims], list[Dims]]] = {}  # (id(dims), size, key) ->


def geometry_pool(dims: st.SearchStrategy[Dims], size: int, key: str) -> list[Dims]:
    """`size` distinct geometries of `dims` that hold its corners and cover its features in pairs; the same
    for the same `key`.

    Hypothesis draws the candidates (seeded from `key`, generation phase only: its mix of the
    smallest sizes, boundaries and random ones), POOL_CANDIDATES per member. The first candidate
    (the simplest geometry) and the largest are kept (bugs that show only on large tensors need
    one); then each member is the candidate that holds the most corners no member holds yet (a
    feature of layer_conformance.suites.features: length 1, a single channel, depthwise, outputs that read only
    padding, ...), then the most corners only one member holds, then the most feature pairs not yet
    covered (a coarse feature: a size, or a layer field such as stride, dilation, groups, padding
    kind or bias, bucketed as 1, 2-4 or more). While some corner that the strategy can produce
    (`strategy_features`) is held by fewer than two members, another round of candidates is drawn
    and the pool chosen again (up to POOL_ROUNDS rounds). So every corner the strategy can produce
    is in the pool (twice where the rounds find it), and the pool holds, e.g., a dilated convolution
    with stride 1 (the only dilation Keras accepts) next to strided ones, rather than whatever the
    first draws were. A test that draws from the pool (st.sampled_from) runs its examples over these
    geometries with fresh data, so a layer compiled for a geometry serves several examples; the
    checks of one case ask for the same pool, which is built once per process. Fewer than `size`
    when the strategy has fewer distinct values.
    """
    known = _POOLS.get((id(dims), size, key))
    if known is None or known[0] is not dims:
        known = _POOLS[(id(dims), size, key)] = (dims, _shared_pool(dims, size, key))
    return [dict(member) for member in known[1]]


SCARCE = 3  # a corner held by fewer pool members than this is scarce: its members are drawn twice as often


def pool_strategy(dims: st.SearchStrategy[Dims], size: int, key: str) -> st.SearchStrategy[Dims]:
    """What a check draws its examples' geometries from under a pool: the members of `geometry_pool`, where a
    member that holds a scarce corner (held by fewer than SCARCE members) is listed twice.

    A member is drawn as (slot + turn) modulo the list's length, two draws. Hypothesis generates a new
    example by choosing a new first value (the slot) and continuing once with the simplest values (turn 0)
    and once at random: one index alone would run each drawn member twice and leave others undrawn (over 50
    gradient examples, 2 of 10 members were never drawn); the turn makes the second draw any member. Listing
    scarce members twice doubles their share. tests/test_features.py asserts the counts the suite's own tests
    draw. Shrinking takes both draws to 0: the pool's first, simplest member."""
    pool = geometry_pool(dims, size, key)
    held = Counter(name for member in pool for name in example_features(member))
    scarce = {name for name, count in held.items() if count < SCARCE}
    weighted = pool + [member for member in pool if example_features(member) & scarce]
    return _pool_member(tuple(weighted))


@st.composite
def _pool_member(draw: st.DrawFn, members: tuple[Dims, ...]) -> Dims:
    slot = draw(cached_integers(0, len(members) - 1), label="pool slot")
    turn = draw(cached_integers(0, len(members) - 1), label="pool turn")
    return dict(members[(slot + turn) % len(members)])


POOL_DIR_ENV = "CONFORMANCE_POOL_DIR"


def _shared_pool(dims: st.SearchStrategy[Dims], size: int, key: str) -> list[Dims]:
    """The pool, built once per run: in $CONFORMANCE_POOL_DIR (a folder the run's controller made for
    its worker processes, and `conformance run` for all its parts) the first process to build a pool
    leaves it for the others. Building is deterministic, so a process that finds no file, or one it
    cannot read, builds the same pool itself."""
    import hashlib
    import pickle

    folder = os.environ.get(POOL_DIR_ENV)
    if not folder:
        return _build_pool(dims, size, key)
    name = hashlib.sha256(f"{key}|{size}|{dims!r}".encode()).hexdigest()[:32]
    path = os.path.join(folder, f"{name}.pickle")
    try:
        with open(path, "rb") as handle:
            return pickle.load(handle)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError):
        pass
    pool = _build_pool(dims, size, key)
    try:
        partial = f"{path}.{os.getpid()}"
        with open(partial, "wb") as handle:
            pickle.dump(pool, handle)
        os.replace(partial, path)  # readers see a whole file or none
    except OSError:
        pass
    return pool


def _build_pool(dims: st.SearchStrategy[Dims], size: int, key: str) -> list[Dims]:
    candidates: dict[tuple[tuple[str, Any], ...], Dims] = {}
    wanted = strategy_features(dims) or frozenset()
    named: list[frozenset[str]] = []
    for extra in range(POOL_ROUNDS):
        _draw_candidates(dims, POOL_CANDIDATES * size, zlib.crc32(key.encode() if extra == 0 else
                                                                  f"{key}#{extra}".encode()), candidates)
        named += [example_features(candidate) for candidate in list(candidates.values())[len(named):]]
        chosen = _select(list(candidates.values()), named, size)
        held = Counter(name for i in chosen for name in named[i])
        if all(held[name] >= 2 for name in wanted):  # each corner twice: a pool member is drawn ~5 times in 50
            break
    drawn = list(candidates.values())
    return [drawn[i] for i in chosen]


def _select(drawn: list[Dims], named: list[frozenset[str]], size: int) -> list[int]:
    """The pool members' indices in `drawn` (see geometry_pool); `named`: each candidate's features."""
    import itertools

    if not drawn:
        return []
    pairs = []
    for candidate in drawn:
        singles = _features(candidate)
        pairs.append(set(singles) | set(itertools.combinations(singles, 2)))
    largest = max(range(len(drawn)), key=lambda i: (_elements(drawn[i]), -i))
    chosen = [0] if largest == 0 else [0, largest]
    held = Counter(name for i in chosen for name in named[i])
    covered = set().union(*(pairs[i] for i in chosen))

    def gain(i: int) -> tuple[int, int, int]:
        return (sum(held[name] == 0 for name in named[i]), sum(held[name] == 1 for name in named[i]),
                len(pairs[i] - covered))

    while len(chosen) < min(size, len(drawn)):
        best = max((i for i in range(len(drawn)) if i not in chosen), key=gain)
        chosen.append(best)
        covered |= pairs[best]
        held.update(named[best])
    return chosen


def _draw_candidates(dims: st.SearchStrategy[Dims], count: int, seed_: int,
                     into: dict[tuple[tuple[str, Any], ...], Dims]) -> None:
    """Up to `count` hypothesis draws of `dims` (generation phase only), added to `into` by geometry."""
    from hypothesis import HealthCheck, Phase, given, seed, settings

    @seed(seed_)
    @settings(max_examples=count, database=None, deadline=None, derandomize=False,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck), print_blob=False)
    @given(dims)
    def collect(drawn: Dims) -> None:
        into.setdefault(geometry_key(drawn), drawn)

    collect()


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
