"""What a layer sums half-precision products in, shown by a probe of its own compiled program.

The worst-case bound of layer_conformance.suites.bounds lets every addition round to the dtype: gamma(n, u) grows as
n u and is infinite once n u >= 1 (256 terms in bfloat16, 2048 in float16), and long before that it
allows errors larger than the result (gamma(100, 2^-8) = 0.64). CPU frameworks do not sum that way:
oneDNN, XLA and Eigen multiply bfloat16 and float16 operands exactly in float32 (8 + 8 or 11 + 11
significant bits fit float32's 24) and add the products in float32, rounding to the dtype at the
end. For such a layer layer_conformance.suites.bounds.wide_error_bound holds: float32's gamma(n, 2^-24) on |W| |x|, plus
one rounding of the result to the dtype and, where the bias is added by a separate operation in the
dtype, one more. It is finite for every n.

Which model a variant gets is not assumed: it is shown. `accumulator` runs the variant's layer (the
same framework, geometry, dtype, device and input shape as the example, so the same compiled
program) on an input of ones and a kernel whose every output channel sums a shuffled mix of +1 and
-1 (cancelling) and small terms eps (2^-10 in bfloat16, 2^-12 in float16: less than half an ulp of
1 in the dtype, exact in float32). Summed in float32, every eps survives; summed in the dtype in an
order that adds eps to partial sums near 1 (sequential and pairwise order are checked for the probe's
own pattern before it is used: `narrow_loss`), eps are lost and the result misses the wide bound by a wide
margin. A layer whose probe loses what a half-precision sum loses is judged by the worst-case bound,
and where that is infinite its comparison is measured but not judged (never passed); any other layer
is judged by the wide bound (a probe that is off by less is a wrong result, not an accumulator, and
must not buy the layer a looser bound).

The gradient programs are probed the same way (`gradient_accumulators`). The kernel and bias gradients of a
layer are sums over its output positions (batch included): d kernel[k, c, o] = sum_p x[p + k, c] g[p, o] and
d bias[o] = sum_p g[p, o]. The probe runs the variant's VJP program on an input of ones and a cotangent
whose every output channel is the probe pattern over the positions, so every bias element, and every kernel
element whose taps read no padding, sums exactly the pattern. The input gradient is not probed: its sums are
as long as the output channels times the kernel taps that meet an element, and no cotangent makes every
element's sum the pattern.

A probe is evidence for one program, not a proof for every input: it rules out accumulation in the
dtype, not, say, a float32 accumulator that is rounded to the dtype every few thousand terms. The
report names the accumulator found per variant ("accumulation") so a reader can see what was assumed.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from layer_conformance.adapters import get_adapter, reference
from layer_conformance.adapters.spec import LayerSpec, Weights, compute_dtype, numpy_dtype
from layer_conformance.suites.bounds import UNIT_ROUNDOFF, wide_error_bound

HALF = ("bfloat16", "float16")
PROBE_EPS = {"bfloat16": 2.0 ** -10, "float16": 2.0 ** -12}
MIN_TERMS = 4  # fewer products cannot tell the accumulators apart (see narrow_loss)
WIDE = "float32"  # what `accumulator` returns for a layer that sums in float32

_FOUND: dict[tuple[Any, ...], Any] = {}  # probe findings per program


def probe_pattern(terms: int, dtype: str, shift: int = 0) -> np.ndarray:
    """`terms` values: pairs of +1/-1 on about half the positions, eps elsewhere, shuffled (seeded by `terms`)."""
    pairs = terms // 4
    values = np.concatenate([np.tile([1.0, -1.0], pairs), np.full(terms - 2 * pairs, PROBE_EPS[compute_dtype(dtype)])])
    np.random.default_rng(terms).shuffle(values)
    return np.roll(values, shift)


@functools.lru_cache(maxsize=None)
def narrow_loss(terms: int, dtype: str) -> float:
    """How far the probe pattern's sum lands from the exact one when summed in the half dtype (the smaller of
    sequential and pairwise order); 0 when that is not beyond twice the wide bound (the probe cannot tell
    the accumulators apart: too few terms, or not a half-precision dtype)."""
    half = compute_dtype(dtype)
    if half not in HALF or terms < MIN_TERMS:
        return 0.0
    values = probe_pattern(terms, dtype)
    exact = float(np.sum(values))
    bound = float(wide_error_bound(terms, np.sum(np.abs(values)), exact, 0.0, dtype))
    loss = min(abs(total - exact) for total in (sequential_sum(values, half), _pairwise(values, half)))
    return loss if loss > 2 * bound else 0.0


def sequential_sum(values: np.ndarray, dtype: str) -> float:
    """The values summed left to right with every partial sum rounded to `dtype`."""
    cast = numpy_dtype(dtype).type
    total = cast(0.0)
    for value in values:
        total = cast(float(total) + float(value))
    return float(total)


def _pairwise(values: np.ndarray, dtype: str) -> float:
    cast = numpy_dtype(dtype).type
    level = [cast(v) for v in values]
    while len(level) > 1:
        pairs = [cast(float(level[i]) + float(level[i + 1])) for i in range(0, len(level) - 1, 2)]
        level = pairs + ([level[-1]] if len(level) % 2 else [])
    return float(level[0])


def probe_weights(spec: LayerSpec, dtype: str) -> Weights:
    """A kernel whose every output channel reduces over the probe pattern (rolled per channel); zero bias."""
    shape = spec.kernel_shape()
    terms = math.prod(shape[:-1])
    kernel = np.stack([probe_pattern(terms, dtype, shift=o).reshape(shape[:-1]) for o in range(shape[-1])], axis=-1)
    weights = {"kernel": kernel.astype(numpy_dtype(dtype))}
    if spec.bias:
        weights["bias"] = np.zeros(spec.out_features, numpy_dtype(dtype))
    return weights


def accumulator(framework: str, spec: LayerSpec, dtype: str, device: str, x: np.ndarray) -> str | None:
    """What the variant's layer sums this geometry's half-precision products in, from its probe:

    * WIDE ("float32") when the probe lands within layer_conformance.suites.bounds.wide_error_bound;
    * the half dtype's name when it is off by at least half of what summing the pattern in that dtype loses
      (`narrow_loss`): the layer is judged by the worst-case bound;
    * WIDE as well when it is off by less: that is no accumulator's rounding but a wrong result, which the
      wide bound lets the examples show rather than excuse;
    * None when no probe applies (not a half-precision dtype, or too few products to tell).

    `x` is the layer input the example hands the variant: the probe's ones have its shape and its memory
    order (`np.ones_like`), so that a framework that picks its kernel by layout (torch: channels-last for a
    permuted input) runs the same kernel. Run once per program (framework, geometry, dtype, device, input
    shape and memory order) and cached.
    """
    loss = narrow_loss(math.prod(spec.kernel_shape()[:-1]), dtype)
    if not loss:
        return None
    order = tuple(np.argsort([-abs(stride) for stride in x.strides], kind="stable"))
    key = (framework, repr(spec), dtype, device, x.shape, order)  # repr: an `extra` holding a dict is unhashable
    if key not in _FOUND:
        weights = probe_weights(spec, dtype)
        ones = np.ones_like(x, dtype=numpy_dtype(dtype))
        y = get_adapter(framework).build(spec, weights, dtype, device).forward(ones).astype(np.float64)
        expected, magnitude = reference.forward_and_magnitude(spec, ones.astype(np.float64),
                                                              {k: v.astype(np.float64) for k, v in weights.items()})
        bound = wide_error_bound(spec.reduction_length + 1, magnitude, expected, 0.0, dtype)
        _FOUND[key] = _verdict(y, expected, bound, np.ones(y.shape, bool), loss, dtype) or WIDE
    return _FOUND[key]


def _verdict(y: np.ndarray, expected: np.ndarray, bound: np.ndarray, decisive: np.ndarray, loss: float,
             dtype: str) -> str | None:
    """A probe's finding: WIDE when every element is within the wide bound; the half dtype when some
    `decisive` element (one that sums exactly the probe pattern) is off by at least half of what a
    half-precision sum of the pattern loses; WIDE when it is off otherwise (a wrong result, not an
    accumulator: a NaN or infinity included, which no rounding explains); None when no element is
    decisive and some is off (the probe cannot tell)."""
    error = np.abs(np.asarray(y, np.float64) - expected)
    if np.all(error <= bound):
        return WIDE
    if not np.any(decisive):
        return None
    if not np.all(np.isfinite(y)):
        return WIDE
    return compute_dtype(dtype) if float(np.max(error[decisive])) >= loss / 2 else WIDE


def probe_cotangent(out_shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """A cotangent whose every output channel is the probe pattern over the output positions (rolled per channel)."""
    positions = math.prod(out_shape[:-1])
    channels = [probe_pattern(positions, dtype, shift=o).reshape(out_shape[:-1]) for o in range(out_shape[-1])]
    return np.stack(channels, axis=-1).astype(numpy_dtype(dtype))


def gradient_accumulators(framework: str, spec: LayerSpec, dtype: str, device: str, x: np.ndarray,
                          out_shape: tuple[int, ...]) -> dict[str, str | None]:
    """What the variant's VJP program sums its kernel and bias gradients in ({"kernel", "bias"}: as
    `accumulator`, WIDE, the half dtype or None), from a probe of that program (see the module docstring):
    the same framework, geometry, dtype, device, input shape and memory order as the example. Empty when
    no probe applies (not a half-precision dtype, or too few output positions to tell). Cached per program."""
    positions = math.prod(out_shape[:-1])
    loss = narrow_loss(positions, dtype)
    if not loss:
        return {}
    order = tuple(np.argsort([-abs(stride) for stride in x.strides], kind="stable"))
    key = (framework, repr(spec), dtype, device, x.shape, order, "vjp")
    if key not in _FOUND:
        weights = {"kernel": np.zeros(spec.kernel_shape(), numpy_dtype(dtype)),
                   **({"bias": np.zeros(spec.out_features, numpy_dtype(dtype))} if spec.bias else {})}
        ones = np.ones_like(x, dtype=numpy_dtype(dtype))
        grads, expected, magnitude, counts = _vjp_probe(framework, spec, dtype, device, ones, weights,
                                                        probe_cotangent(out_shape, dtype))
        found = {name: _verdict(grads[name], expected[name],
                                wide_error_bound(positions, magnitude[name], expected[name], 0.0, dtype),
                                counts[name] == positions, loss, dtype)
                 for name in expected if name in grads}
        if WIDE in found.values():  # shown for the pattern: now for sums taken in blocks, then added in the dtype
            blocked = _cross_block_probe(framework, spec, dtype, device, ones, weights, out_shape)
            # WIDE only where the cross-block probe shows it too; None (the worst-case bound) where it cannot run
            found = {name: blocked.get(name) if verdict == WIDE else verdict for name, verdict in found.items()}
        _FOUND[key] = found
    return dict(_FOUND[key])


def _vjp_probe(framework: str, spec: LayerSpec, dtype: str, device: str, ones: np.ndarray, weights: Weights,
               cotangent: np.ndarray) -> tuple[Weights, Weights, Weights, Weights]:
    """The variant's VJP program on the probe (input `ones`, `cotangent`): its weight gradients, the float64
    reference's, their magnitudes, and how many positions each element sums (the same VJP on all-ones)."""
    _, grads = get_adapter(framework).build(spec, weights, dtype, device).vjp(ones, cotangent)
    wide64 = {k: v.astype(np.float64) for k, v in weights.items()}
    ones64, g64 = ones.astype(np.float64), cotangent.astype(np.float64)
    expected = reference.vjp(spec, ones64, wide64, g64)[1]
    magnitude = reference.vjp(spec, ones64, wide64, np.abs(g64))[1]
    counts = reference.vjp(spec, ones64, wide64, np.ones_like(g64))[1]
    return grads, expected, magnitude, counts


def cross_block_cotangent(out_shape: tuple[int, ...], dtype: str) -> np.ndarray | None:
    """A cotangent whose every output channel is, over the flattened positions (batch first): 1, then three
    eps, zeros, and -1 at the last position (None: fewer than 5 positions). Exact: 3 eps. Summed in float32 in
    any order it stays exact; any sum that rounds a partial sum holding the 1 to the dtype (a whole sequential
    or pairwise sum in the dtype, or float32 sums per block, such as per sample, added in the dtype) lands an
    ulp of 1 away from 3 eps, since 1 + 3 eps is not a half-precision number."""
    positions = math.prod(out_shape[:-1])
    if positions < 5:
        return None
    values = np.zeros(positions)
    values[0], values[1:4], values[-1] = 1.0, PROBE_EPS[compute_dtype(dtype)], -1.0
    return np.repeat(values.reshape(*out_shape[:-1], 1), out_shape[-1], axis=-1).astype(numpy_dtype(dtype))


def _cross_block_probe(framework: str, spec: LayerSpec, dtype: str, device: str, ones: np.ndarray,
                       weights: Weights, out_shape: tuple[int, ...]) -> dict[str, str | None]:
    """The gradients the pattern probe showed summing in float32, probed again with `cross_block_cotangent`:
    torch's CPU float16 convolution backward, for one, sums each sample's positions in float32 and adds the
    samples' sums in float16, which the pattern probe misses. Per gradient: WIDE when every element is within
    the wide bound; the half dtype when some element is off by more (finite: a half-precision partial sum
    shows; NaN: a wrong result, which the examples show); None when the probe cannot tell (the wide bound
    already allows an ulp of 1: very many positions) or has too few positions."""
    cotangent = cross_block_cotangent(out_shape, dtype)
    if cotangent is None:
        return {}
    positions = math.prod(out_shape[:-1])
    grads, expected, magnitude, counts = _vjp_probe(framework, spec, dtype, device, ones, weights, cotangent)
    ulp = 2 * UNIT_ROUNDOFF[compute_dtype(dtype)]  # what a half-precision partial sum holding the 1 loses, at least
    found: dict[str, str | None] = {}
    for name in expected:
        if name not in grads:
            continue
        bound = wide_error_bound(positions, magnitude[name], expected[name], 0.0, dtype)
        error = np.abs(np.asarray(grads[name], np.float64) - expected[name])
        decisive = counts[name] == positions  # every position: the 1, the eps and the -1 (exact sum 3 eps)
        if not np.all(np.isfinite(error)):
            found[name] = WIDE
        elif not np.all(error <= bound):
            found[name] = compute_dtype(dtype)
        else:  # within: decisive only where the wide bound is far below the ulp a half-precision sum loses
            found[name] = WIDE if np.any(decisive) and float(np.max(bound[decisive])) < ulp / 4 else None
    return found


def not_judged_reason(terms: int, dtype: str, accumulation: str | None, what: str = "") -> str:
    """Why a comparison is measured but not judged: its worst-case bound is infinite and no probe showed a float32
    accumulator (the only model under which a finite bound is derived)."""
    why = (f"its probe found it summing in {accumulation}" if accumulation
           else "no probe showed a float32 accumulator" + (f" ({what})" if what else ""))
    return f"the {dtype} worst-case bound is infinite for {terms} terms (n u >= 1), and {why}"
