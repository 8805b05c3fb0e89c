"""The derived error bound (DESIGN.md, "Tolerance is derived, not guessed").

For a reduction of length K plus a bias, any correct implementation in a dtype with unit
roundoff u satisfies |y - y_ref| <= gamma(K + 1, u) * m, where m = |W| * |x| + |b| is the same layer
on absolute values (Higham, Accuracy and Stability of Numerical Algorithms, ch. 3:
gamma(n, u) = n u / (1 - n u)). The float64 reference adds its own gamma(K + 1, 2^-53), and
an absolute term (K + 1) * smallest-normal lets implementations flush subnormals to zero.

One more term, 2u * m, allows a result one unit in the last place away from a correctly
rounded one (ulp(y) <= 2u |y| <= 2u m): a last-bit difference is declared benign (different
hardware or a final conversion), and without it a single-product layer (K = 1, bound 2u m)
would fail a 1-ulp perturbation. It changes the bound by 2u out of (K + 1) u.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24, "float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}
SMALLEST_NORMAL = {"float64": float(np.finfo(np.float64).tiny), "float32": float(np.finfo(np.float32).tiny),
                   "float16": float(np.finfo(np.float16).tiny), "bfloat16": float(np.finfo(np.float32).tiny)}
ROUNDOFF_LABEL = {"float64": "2^-53", "float32": "2^-24", "float16": "2^-11", "bfloat16": "2^-8"}
# Keras mixed policies compute in the half type: their declared u_eff is that type's unit roundoff
for _policy, _compute in (("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")):
    UNIT_ROUNDOFF[_policy], SMALLEST_NORMAL[_policy] = UNIT_ROUNDOFF[_compute], SMALLEST_NORMAL[_compute]
    ROUNDOFF_LABEL[_policy] = f"{ROUNDOFF_LABEL[_compute]} (u_eff of the {_policy} policy)"

# Declared effective unit roundoffs of precision modes that compute a float32 layer in less precision. Each
# is a u_eff for `error_bound` (the bound above with u = u_eff), never a widened tolerance: a u for which
# every product and sum the mode performs stays within gamma(K + 1, u_eff) m + 2 u_eff m (K >= 1). All of
# them take float32 data and give float32 results (DECLARED_STORAGE: the dtype of the subnormal term).
DECLARED_ROUNDOFF: dict[str, float] = {
    # TensorFloat-32 (NVIDIA Ampere and later; torch allow_tf32, TensorFlow's TF32 execution, the default
    # there): the float32 operands are "rounded from 23 bits of precision to 10 bits"
    # (tf.config.experimental.enable_tensor_float_32_execution docs), 10 explicit mantissa bits, so u = 2^-11,
    # and the products are summed in float32. Two roundings per product (2u + u^2) and float32 sums fit in
    # (K + 3) u. (A truncating conversion would err by up to 2u per operand: covered for K >= 2 only.)
    "tf32": 2.0 ** -11,
    # bf16_3x (jax.lax.Precision.HIGH on TPU, alias 'bfloat16_3x': "float32 computations in 3 bfloat16
    # passes", jax.lax.Precision docstring; the split of Henry, Tang & Heinecke, "Leveraging the bfloat16
    # artificial intelligence datatype for higher-precision computations", ARITH 2019): each operand
    # a = hi + lo with hi = bf16(a), lo = bf16(a - hi), and a*b ~ hi*hi + hi*lo + lo*hi, each exact in float32,
    # summed in float32. TPUs convert to bfloat16 by round to nearest even (Cloud TPU bfloat16 docs), so
    # hi + lo = a (1 + d) with |d| <= 2^-16 and |lo*lo| <= 2^-16 (1 + 2^-8)^2 |ab|: every product is within
    # 3.008 * 2^-16 |ab|, and the float32 sum of its 3K + 1 partial terms (absolute sum <= 1.016 m) adds at most
    # 1.016 (3K + 1) 2^-24 m. Derived: with u = 2^-16 the bound allows at least (K + 3) u m, which exceeds
    # (3.012 + 0.012 K) u m for every K >= 1.
    "bf16_3x": 2.0 ** -16,
    # jax.lax.Precision.DEFAULT ('default', 'fastest', 'bfloat16', and jax_default_matmul_precision unset) for
    # float32 on an accelerator: one bfloat16 pass on TPU (operands rounded to bfloat16, u = 2^-8, float32
    # accumulation), TF32 on NVIDIA GPUs that have it (2^-11) (JAX "Matmul precision" docs). Declared as the
    # looser of the two, 2^-8, so that it holds on both. No effect on CPU (float32 there). The worst-case
    # bound at 2^-8 is infinite from 255 products on: no verdict there.
    "xla-default": 2.0 ** -8,
    # jax.lax.Precision.HIGH ('high', 'bfloat16_3x', 'tensorfloat32'): bf16_3x on TPU (2^-16, above), TF32 on
    # NVIDIA GPUs (2^-11) (jax.lax.Precision docstring; JAX "Matmul precision" docs). Declared as the looser,
    # 2^-11, so that it holds on both; name bf16_3x for a result known to come from a TPU.
    "xla-high": 2.0 ** -11,
    # torch.set_float32_matmul_precision("medium") on CUDA: "bfloat16 as the internal computation data type"
    # where fast matrix multiplication algorithms with it are available (torch docs), float32 accumulation:
    # one bfloat16 pass, u = 2^-8, as xla-default.
    "bf16-pass": 2.0 ** -8,
}
DECLARED_STORAGE: dict[str, str] = {mode: "float32" for mode in DECLARED_ROUNDOFF}


def roundoff(name_or_dtype: str) -> float:
    """The unit roundoff of a dtype (UNIT_ROUNDOFF, mixed policies included) or of a declared precision mode
    (DECLARED_ROUNDOFF); ValueError naming the known names for anything else."""
    if isinstance(name_or_dtype, str):
        if name_or_dtype in UNIT_ROUNDOFF:
            return UNIT_ROUNDOFF[name_or_dtype]
        if name_or_dtype in DECLARED_ROUNDOFF:
            return DECLARED_ROUNDOFF[name_or_dtype]
    raise ValueError(f"unknown dtype or precision mode {name_or_dtype!r}: expected a dtype "
                     f"({', '.join(UNIT_ROUNDOFF)}) or a declared mode ({', '.join(DECLARED_ROUNDOFF)})")


def gamma(n: int, u: float) -> float:
    """Higham's gamma_n = n u / (1 - n u); infinite once n u >= 1 (no bound exists)."""
    nu = n * u
    return nu / (1.0 - nu) if nu < 1.0 else math.inf


def error_bound(reduction_length: int, magnitude: np.ndarray, dtype: str, u_eff: float | None = None) -> np.ndarray:
    """Elementwise bound on |y - y_ref| for a layer output: K products plus the bias."""
    return sum_bound(reduction_length + 1, magnitude, dtype, u_eff)


def sum_bound(terms: int, magnitude: np.ndarray, dtype: str, u_eff: float | None = None) -> np.ndarray:
    """Elementwise bound for a sum of `terms` products whose absolute values sum to `magnitude`."""
    n = max(int(terms), 1)
    magnitude = np.asarray(magnitude, dtype=np.float64)
    # a zero magnitude means every product is zero: the sum is exact even where gamma(n, u) is infinite
    # (n*u >= 1), and inf * 0 must not turn the bound into NaN
    with np.errstate(invalid="ignore"):
        scaled = np.where(magnitude == 0, 0.0, bound_coefficient(n, dtype, u_eff) * magnitude)
    return scaled + n * SMALLEST_NORMAL[dtype]


def bound_coefficient(terms: int, dtype: str, u_eff: float | None = None) -> float:
    """gamma(n, u) + 2u (one last-bit allowance) + gamma(n, 2^-53) (the reference's own rounding)."""
    u = UNIT_ROUNDOFF[dtype] if u_eff is None else u_eff
    return gamma(terms, u) + 2 * u + gamma(terms, UNIT_ROUNDOFF["float64"])


ACCUMULATOR_ROUNDOFF = UNIT_ROUNDOFF["float32"]  # a float32 accumulator (layer_conformance.suites.accumulation)


def wide_error_bound(terms: int, magnitude: np.ndarray, expected: np.ndarray, bias_magnitude: np.ndarray | float,
                     dtype: str) -> np.ndarray:
    """Elementwise bound for a half-precision layer that sums its products in float32 (layer_conformance.suites.accumulation).

    The products of two bfloat16 or float16 values are exact in float32; summing `terms` of them (the
    bias included) in float32, in any order, errs by at most gamma(terms, 2^-24) * m, the float64
    reference by gamma(terms, 2^-53) * m, and flushed subnormals by terms * float32's smallest normal:
    together `acc`. Then the sum is rounded to the dtype, by at most u (|y_ref| + acc) (round to
    nearest), and where the bias is added by a separate operation in the dtype the product sum is
    rounded first, by at most u (|y_ref| + |b| + acc). So

        |y - y_ref| <= acc + u (1 + u) (2 |y_ref| + |b| + 3 acc) + 2 u * smallest normal of the dtype

    (the last term: a result in the dtype's subnormal range rounds to a spacing of 2 u * smallest normal,
    not to a relative u; a framework that flushes subnormal results to zero fails it, and that is a
    finding: float32 to half conversions on CPU keep subnormals). No last-bit allowance
    beyond these two roundings: a half-precision result one ulp off a correctly rounded one is what
    a 1 % error in bfloat16 looks like.
    """
    n = max(int(terms), 1)
    u = UNIT_ROUNDOFF[dtype]
    m = np.asarray(magnitude, dtype=np.float64)
    acc = (gamma(n, ACCUMULATOR_ROUNDOFF) + gamma(n, UNIT_ROUNDOFF["float64"])) * m + n * SMALLEST_NORMAL["float32"]
    rounding = u * (1 + u) * (2 * np.abs(np.asarray(expected, dtype=np.float64)) + np.abs(bias_magnitude) + 3 * acc)
    return acc + rounding + 2 * u * SMALLEST_NORMAL[dtype]


def layer_error_bound(reduction_length: int, magnitude: np.ndarray, expected: np.ndarray,
                      bias_magnitude: np.ndarray | float, dtype: str, accumulation: str | None,
                      u_eff: float | None = None) -> np.ndarray:
    """The bound a variant's layer output is judged by: `error_bound` (under `u_eff`, a declared precision
    mode's unit roundoff, where the framework computes in one: layer_conformance.suites.numerics), or, for a
    half-precision layer whose probe showed a float32 accumulator (layer_conformance.suites.accumulation), the
    smaller of it and `wide_error_bound`. Both hold for such a layer; the wide one is finite for every length."""
    worst = error_bound(reduction_length, magnitude, dtype, u_eff)
    if accumulation != "float32":
        return worst
    return np.minimum(worst, wide_error_bound(reduction_length + 1, magnitude, expected, bias_magnitude, dtype))


def vacuous(bound: np.ndarray) -> bool:
    """True when some element of a bound is infinite or NaN: a comparison under it cannot fail."""
    return not bool(np.all(np.isfinite(bound)))


def bound_ratios(ys: Sequence[np.ndarray], refs: Sequence[np.ndarray],
                 bounds: Sequence[np.ndarray]) -> list[tuple[float, float, tuple[int, ...]]]:
    """`bound_ratio` of every (y, y_ref, bound) triple, the same numbers in one array operation.

    A claim compares each of its variants, and every pair of them, on one output layout: stacking
    them costs one pass instead of one call per variant or pair. Triples of differing shapes fall
    back to `bound_ratio` one by one.
    """
    shapes = {np.shape(a) for group in (ys, refs, bounds) for a in group}
    if len(ys) < 2 or len(shapes) != 1:
        return [bound_ratio(y, r, b) for y, r, b in zip(ys, refs, bounds)]
    shape = shapes.pop()
    if math.prod(shape) == 0:
        return [(0.0, 0.0, ())] * len(ys)
    error = np.abs(_rows(ys) - _rows(refs))
    error[~np.isfinite(error)] = np.inf  # as in bound_ratio: a NaN on either side is an infinite error
    ratio = error / _rows(bounds)
    flat = np.argmax(ratio, axis=1)  # argmax: the first NaN where there is one, as in bound_ratio
    worst = ratio[np.arange(len(ys)), flat]
    return [(float(e), float(r), tuple(int(i) for i in np.unravel_index(int(f), shape)))
            for e, r, f in zip(error.max(axis=1), worst, flat)]


def _rows(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """(len(arrays), size) float64; one array repeated (every variant against one target) is not copied."""
    first = np.asarray(arrays[0], dtype=np.float64).reshape(1, -1)
    if all(a is arrays[0] for a in arrays):
        return np.broadcast_to(first, (len(arrays), first.shape[1]))
    return np.stack([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays])


def bound_ratio(y: np.ndarray, y_ref: np.ndarray, bound: np.ndarray) -> tuple[float, float, tuple[int, ...]]:
    """(max |y - y_ref|, max |y - y_ref| / bound, index of the worst ratio). Non-finite y gives inf."""
    error = np.abs(np.asarray(y, dtype=np.float64) - np.asarray(y_ref, dtype=np.float64))
    error = np.where(np.isfinite(error), error, np.inf)
    ratio = error / bound
    if ratio.size == 0:
        return 0.0, 0.0, ()
    worst = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return float(error.max()), float(ratio[worst]), tuple(int(i) for i in worst)
