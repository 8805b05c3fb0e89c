"""`bound_ratio`: is the difference between your output and a reference expected? (`conformance explain`
asks it from the command line: layer_conformance.cli.explain.)

The question a person porting a layer asks about their own arrays: their framework's output differs from
a reference in the last digits; is that rounding or a mistake? The answer is the suite's own derived
bound (`layer_conformance.suites.bounds.error_bound`): for a reduction of K products plus the bias in a
precision with unit roundoff u, a correct implementation stays within

    (gamma(K + 1, u) + 2u + gamma(K + 1, 2^-53)) * m + (K + 1) * smallest_normal,   m = |W| |x| + |b|

elementwise. m is the layer on absolute values and cannot be recovered from the outputs (|y| <= m, and
where terms cancel |y| is far smaller): it is computed from the layer's input and weights, or passed
ready-made. u is the dtype's, or a declared precision mode's (`DECLARED_ROUNDOFF`: tf32, bf16_3x,
xla-default, xla-high), or a number the caller declares.

A reference stored in less than float64 is judged as another implementation in its dtype: its own bound
is added. The bound is the worst case for any summation order; for half precision it is infinite from
1/u terms on, and then there is no verdict (`no bound`), never a pass.
"""
from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from layer_conformance.adapters.spec import LayerSpec, SpecError, check_weights
from layer_conformance.suites.bounds import (
    DECLARED_ROUNDOFF, DECLARED_STORAGE, UNIT_ROUNDOFF, error_bound, roundoff, vacuous,
)
from layer_conformance.suites.bounds import bound_ratio as _bound_ratio

WITHIN, EXCEEDS, NO_BOUND = "within", "exceeds", "no bound"
EXIT_CODES = {WITHIN: 0, EXCEEDS: 1, NO_BOUND: 3}  # 2: bad input
NARROW_REFERENCES = ("float32", "float16", "bfloat16")  # a reference in these is rounded itself


@dataclass(frozen=True)
class Explanation:
    """The verdict on one output: the worst element relative to its bound, and what the bound assumed."""

    max_abs_error: float  # max |output - reference| over all elements
    ratio: float  # max |output - reference| / bound, elementwise: <= 1 is explained by rounding
    index: tuple[int, ...]  # the element of the largest ratio
    error: float  # |output - reference| there
    bound: float  # the bound there
    u: float  # the unit roundoff the bound used
    u_label: str  # how it is written: "2^-24"
    precision: str  # what it is the roundoff of: a dtype, a declared mode, or "u_eff"
    reduction_length: int  # K: products summed per output element
    terms: int  # n = K + 1, the bias included: the bound's gamma(n, u)
    bias: bool
    reference_dtype: str  # "float64", or the narrower dtype whose own bound was added
    verdict: str  # within (ratio <= 1), exceeds, or no bound (the bound is infinite)

    @property
    def within(self) -> bool:
        return self.verdict == WITHIN

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def __str__(self) -> str:
        where = f" at {self.index}" if self.index else ""
        products = f"{self.reduction_length} product{'s' if self.reduction_length != 1 else ''}"
        sum_of = f"a sum of {products}{' and a bias' if self.bias else ''}"
        if self.verdict == NO_BOUND:
            return (f"max error {self.max_abs_error:.3g}: no verdict. The worst-case bound for {sum_of} with "
                    f"{self.precision} rounding (u = {self.u_label}) is infinite "
                    f"(n u = {self.terms * self.u:.3g} >= 1, n = {self.terms}), so rounding could explain any output.")
        text = (f"error {self.error:.3g}{where} is {self.ratio:.3g}x what {self.precision} rounding allows "
                f"for {sum_of} (u = {self.u_label}; bound {self.bound:.3g} there)")
        if self.max_abs_error > self.error:
            text += f"; the largest error anywhere is {self.max_abs_error:.3g}"
        if self.reference_dtype != "float64":
            text += f"; the {self.reference_dtype} reference is held to its own {self.reference_dtype} bound too"
        if self.verdict == WITHIN:
            return f"{text}: the difference is expected."
        return (f"{text}: not explained by {self.precision} rounding; look for a porting mistake (weight "
                f"layout, padding, stride, dilation, groups, a missing bias) or a precision lower than declared "
                f"(TF32 or a bfloat16 matmul pass: declare it with u_eff).")


def bound_ratio(output: Any, reference: Any, spec: LayerSpec, *, dtype: str | None = None,
                u_eff: float | str | None = None, x: Any = None, weights: Mapping[str, Any] | None = None,
                magnitude: Any = None) -> Explanation:
    """Judge `output` (what a framework gave) against `reference` (ideally float64) under the derived bound.

    spec: the layer (`LayerSpec.conv(...)`, `LayerSpec.dense(...)`); its `reduction_length` is K.
    dtype: the dtype the layer computed in (float32, float16, bfloat16, a mixed policy); u_eff: a declared
    mode from DECLARED_ROUNDOFF (tf32, bf16_3x, xla-default, xla-high), a dtype name, or a number. Give at
    least one; with both, u_eff sets u and dtype the subnormal term.
    The magnitude m = |W||x| + |b| comes from `magnitude=` (shaped like the output) or is computed from
    `x=` and `weights=` ({"kernel", "bias"}, the canonical channels-last layout of `LayerSpec`).
    Raises ValueError (a SpecError for a bad spec, input or weights) naming the problem and what to pass.
    """
    y = _real(output, "output")
    ref = _real(reference, "reference")
    if y.shape != ref.shape:
        raise ValueError(f"output has shape {y.shape} but reference has shape {ref.shape}; pass the same layer "
                         f"output twice, in the same layout")
    if y.size == 0:
        raise ValueError(f"output of shape {y.shape} holds no element; there is nothing to judge")
    u, label, precision, storage = _roundoff(dtype, u_eff)
    m = _magnitude(spec, y.shape, x, weights, magnitude)
    k = spec.reduction_length
    bound = error_bound(k, m, storage, u)
    ref_dtype = np.asarray(reference).dtype.name
    if ref_dtype in NARROW_REFERENCES:
        bound = bound + error_bound(k, m, ref_dtype)
    else:
        ref_dtype = "float64"
    max_error, ratio, index = _bound_ratio(y, ref, bound)
    error = float(abs(y[index] - ref[index])) if np.isfinite(y[index] - ref[index]) else math.inf
    verdict = NO_BOUND if vacuous(bound) else WITHIN if ratio <= 1 else EXCEEDS
    return Explanation(max_abs_error=max_error, ratio=ratio, index=index, error=error, bound=float(bound[index]),
                       u=u, u_label=label, precision=precision, reduction_length=k, terms=k + 1,
                       bias=spec.bias, reference_dtype=ref_dtype, verdict=verdict)


# ---- the arguments, checked ---------------------------------------------------------------------------

def _real(value: Any, name: str) -> np.ndarray:
    """A float64 copy of a real-valued array; ValueError for anything else (complex, text, raw bytes)."""
    array = np.asarray(value)
    if array.dtype.name == "bfloat16" or array.dtype.kind in "fiub":
        return array.astype(np.float64)
    hint = " (a bfloat16 .npy read without ml_dtypes: save it as float32, which holds it exactly)" \
        if array.dtype.kind == "V" else ""
    raise ValueError(f"{name} has dtype {array.dtype}{hint}; pass real numbers (a float array)")


def _power_of_two(u: float) -> str:
    exponent = math.log2(u)
    return f"2^{int(exponent)}" if exponent == int(exponent) else f"{u:.3g}"


def _roundoff(dtype: str | None, u_eff: float | str | None) -> tuple[float, str, str, str]:
    """(u, its label, what it is the roundoff of, the dtype of the subnormal term)."""
    if dtype is not None and dtype not in UNIT_ROUNDOFF:
        mode = f"; {dtype!r} is a precision mode, pass it as u_eff" if dtype in DECLARED_ROUNDOFF else ""
        raise ValueError(f"unknown dtype {dtype!r}: expected one of {', '.join(UNIT_ROUNDOFF)}{mode}")
    if u_eff is None:
        if dtype is None:
            raise ValueError("no precision given: pass dtype= (the dtype the layer computed in, e.g. 'float32') "
                             f"or u_eff= (a declared mode: {', '.join(DECLARED_ROUNDOFF)}; or a number)")
        return UNIT_ROUNDOFF[dtype], _power_of_two(UNIT_ROUNDOFF[dtype]), dtype, dtype
    if isinstance(u_eff, str):
        u = roundoff(u_eff)
        return u, _power_of_two(u), u_eff, dtype or DECLARED_STORAGE.get(u_eff, u_eff)
    if isinstance(u_eff, bool) or not isinstance(u_eff, (int, float, np.floating)) \
            or not 0 < float(u_eff) < 1:
        raise ValueError(f"u_eff={u_eff!r} is not a unit roundoff: pass a number in (0, 1) or a declared mode "
                         f"({', '.join(DECLARED_ROUNDOFF)})")
    u = float(u_eff)
    return u, _power_of_two(u), "u_eff", dtype or "float32"


def _magnitude(spec: LayerSpec, shape: tuple[int, ...], x: Any, weights: Mapping[str, Any] | None,
               magnitude: Any) -> np.ndarray:
    """m = |W||x| + |b|, given or computed, shaped like the output."""
    given = magnitude is not None
    if given and (x is not None or weights is not None):
        raise ValueError("pass either magnitude= or x= and weights=, not both")
    if isinstance(magnitude, str):
        raise ValueError(f"magnitude={magnitude!r}: the bound needs m = |W||x| + |b|, which |reference| "
                         f"underestimates wherever terms cancel; pass x= and weights=, or m as an array")
    if given:
        m = _real(magnitude, "magnitude")
        what = "magnitude"
    elif x is not None and weights is not None:
        from layer_conformance.adapters import reference

        arrays = {name: _real(value, f"weights[{name!r}]") for name, value in dict(weights).items()}
        check_weights(spec, arrays)
        m = reference.magnitude(spec, _real(x, "x"), arrays)
        what = f"the layer's output for x of shape {np.shape(x)}"
    else:
        missing = "weights=" if x is not None else "x=" if weights is not None else "x= and weights="
        raise ValueError(f"the bound needs the magnitude m = |W||x| + |b|, which the outputs do not determine; "
                         f"pass {missing} (the layer's input and its {{'kernel', 'bias'}} weights), or "
                         f"magnitude= (m shaped like the output)")
    if m.shape != shape:
        raise ValueError(f"{what} has shape {m.shape} but output has shape {shape}; check the layout "
                         f"(channels-last) and the spec")
    if not np.all(m >= 0):  # NaN fails too
        raise ValueError("magnitude has negative or NaN entries; m = |W||x| + |b| is never negative")
    return m


# ---- a layer spec from text ----------------------------------------------------------------------------

def parse_spec(text: str) -> LayerSpec:
    """A LayerSpec from `conv(IN, OUT, KERNEL, keyword=value...)`/`dense(IN, OUT, bias=)`, a JSON object of
    the same keywords with "kind": "conv" or "dense" (a spec saved in a counterexample is one), or a .json file
    holding one; SpecError otherwise."""
    source = text.strip()
    try:
        is_file = not source.startswith("{") and Path(source).is_file()
    except OSError:  # a name too long for the file system is no file
        is_file = False
    if is_file:
        source = Path(source).read_text(encoding="utf-8").strip()
    if source.startswith("{"):
        try:
            obj = json.loads(source)
        except json.JSONDecodeError as exc:
            raise SpecError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict) or obj.get("kind") not in ("conv", "dense"):
            raise SpecError('a JSON spec is an object with "kind": "conv" or "dense"')
        kind, args, kwargs = obj["kind"], [], {key: value for key, value in obj.items() if key != "kind"}
        if kind == "dense":  # a saved spec holds every field; the empty conv ones mean nothing for dense
            for key, empty in (("kernel_size", []), ("strides", []), ("dilation", []), ("groups", 1),
                               ("padding", "valid"), ("padding_mode", "zeros")):
                if kwargs.get(key, empty) == empty:
                    kwargs.pop(key, None)
    else:
        kind, args, kwargs = _parse_call(source)
    kwargs.pop("extra", None)
    try:
        return (LayerSpec.conv if kind == "conv" else LayerSpec.dense)(*args, **kwargs)
    except SpecError:
        raise
    except (TypeError, ValueError) as exc:  # a missing or unknown argument, a number that is not one
        raise SpecError(f"{kind}(...): {exc}") from None


def _parse_call(source: str) -> tuple[str, list[Any], dict[str, Any]]:
    """conv(64, 128, 5, padding=same) -> ("conv", [64, 128, 5], {"padding": "same"}); names are strings."""
    try:
        call = ast.parse(source, mode="eval").body
    except SyntaxError:
        call = None
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.func.id not in ("conv", "dense"):
        raise SpecError(f"cannot read {source!r}")

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Name):
            return {"true": True, "false": False}.get(node.id.lower(), node.id)
        if isinstance(node, (ast.Tuple, ast.List)):
            return tuple(value(item) for item in node.elts)
        try:
            return ast.literal_eval(node)
        except ValueError:
            raise SpecError(f"cannot read {ast.unparse(node)!r} in {source!r}") from None

    if any(keyword.arg is None for keyword in call.keywords):
        raise SpecError(f"cannot read {source!r}")
    return call.func.id, [value(arg) for arg in call.args], {kw.arg: value(kw.value) for kw in call.keywords}
