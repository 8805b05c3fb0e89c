"""`conformance explain` and `bound_ratio`: is the difference between your output and a reference expected?

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

import argparse
import ast
import json
import math
import sys
import zipfile
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


# ---- the command ---------------------------------------------------------------------------------------

SPEC_EXAMPLE = 'write e.g. conv(64, 128, 5, padding=same) or dense(512, 10), or a JSON object with "kind"'
SPEC_HELP = ("the layer: conv(IN, OUT, KERNEL, strides=, padding=valid|same|causal|N, dilation=, groups=, "
             "bias=true|false, padding_mode=zeros|reflect|replicate|circular) or dense(IN, OUT, bias=), "
             "e.g. 'conv(64, 128, 5, padding=same)', 'conv(3, 16, (3, 3), strides=2)', 'dense(512, 10)'; or "
             "a JSON object of the same keywords with \"kind\": \"conv\" or \"dense\" (a spec saved in a "
             "counterexample is one), inline or in a .json file")


def parse_spec(text: str) -> LayerSpec:
    """A LayerSpec from `conv(...)`/`dense(...)`, a JSON object or a .json file holding one (SPEC_HELP)."""
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


def _parser() -> argparse.ArgumentParser:
    from layer_conformance.reports.arguments import ArgumentParser

    parser = ArgumentParser(
        prog="conformance explain",
        description="Is this difference expected? Judge a layer output from your framework against a reference "
                    "(ideally float64) under the suite's derived rounding-error bound, and say why. Arrays are "
                    "channels-last, weights in the canonical layout (dense kernel (in, out), conv kernel "
                    "(*kernel, in/groups, out), bias (out,)).",
        epilog="exit status: 0 within the bound (rounding explains it), 1 exceeds it, 2 bad input, 3 no verdict "
               "(the worst-case bound is infinite for this many terms in this precision)")
    parser.add_argument("--output", required=True, metavar="OUT.npy", help="the output your framework gave")
    parser.add_argument("--reference", required=True, metavar="REF.npy", help="what to compare it with")
    parser.add_argument("--spec", required=True, metavar="SPEC", help=SPEC_HELP)
    parser.add_argument("--x", metavar="X.npy", help="the layer's input (for the magnitude |W||x| + |b|)")
    parser.add_argument("--weights", metavar="W.npz", help="the layer's weights: arrays 'kernel' and 'bias' "
                        "(a saved counterexample .npz has them)")
    parser.add_argument("--magnitude", metavar="M.npy", help="|W||x| + |b| itself, instead of --x and --weights")
    parser.add_argument("--dtype", choices=list(UNIT_ROUNDOFF), help="the dtype the layer computed in")
    parser.add_argument("--u-eff", metavar="MODE|NUMBER",
                        help=f"a declared precision mode ({', '.join(DECLARED_ROUNDOFF)}) or unit roundoff; "
                             f"with --dtype, u_eff sets u and the dtype only the subnormal term")
    return parser


def _load(path: str, option: str, archive: bool = False) -> Any:
    """An array (.npy) or a mapping of arrays (.npz); ValueError naming the option and the fix."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise ValueError(f"{option} {path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{option} {path}: is a directory; pass the file") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{option} {path}: not a readable NumPy file ({' '.join(str(exc).split())}); save it "
                         f"with numpy.save{'z' if archive else ''}") from None
    if archive:
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError(f"{option} {path}: expected a .npz with arrays 'kernel' and 'bias'; save it with "
                             f"numpy.savez(path, kernel=..., bias=...)")
        with loaded:
            return {name: loaded[name] for name in ("kernel", "bias") if name in loaded.files}
    if isinstance(loaded, np.lib.npyio.NpzFile):
        loaded.close()
        raise ValueError(f"{option} {path}: is a .npz archive, expected one array; save it with numpy.save")
    return loaded


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    u_eff: float | str | None = args.u_eff
    if u_eff is not None and u_eff not in UNIT_ROUNDOFF and u_eff not in DECLARED_ROUNDOFF:
        try:
            u_eff = float(u_eff)
        except ValueError:
            parser.error(f"--u-eff {args.u_eff!r}: unknown; give a declared mode "
                         f"({', '.join(DECLARED_ROUNDOFF)}), a dtype or a number in (0, 1)")
    if args.dtype is None and u_eff is None:
        parser.error("give --dtype (the dtype the layer computed in) or --u-eff (a declared precision mode)")
    if args.magnitude is None and (args.x is None or args.weights is None):
        parser.error("the bound needs |W||x| + |b|: give --x and --weights, or --magnitude")
    if args.magnitude is not None and (args.x is not None or args.weights is not None):
        parser.error("give either --magnitude or --x and --weights, not both")
    try:
        spec = parse_spec(args.spec)
    except (SpecError, OSError, UnicodeDecodeError) as exc:
        parser.error(f"--spec: {exc}; {SPEC_EXAMPLE}")
    try:
        explanation = bound_ratio(
            _load(args.output, "--output"), _load(args.reference, "--reference"), spec, dtype=args.dtype,
            u_eff=u_eff, x=None if args.x is None else _load(args.x, "--x"),
            weights=None if args.weights is None else _load(args.weights, "--weights", archive=True),
            magnitude=None if args.magnitude is None else _load(args.magnitude, "--magnitude"))
    except ValueError as exc:  # SpecError included: the input or weights do not fit the spec
        print(f"{parser.prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(explanation)
    return explanation.exit_code


if __name__ == "__main__":
    sys.exit(main())
