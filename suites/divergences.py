"""Documented divergences: where a framework genuinely disagrees with the reference, with evidence.

A divergence is data, matched per variant (framework, layer kind, dtype, Keras backend, input shape)
and scoped to the framework versions it was observed in (PEP 440 specifiers). Outside those versions
the variant is judged like any other. Inside them it is judged against its ceiling, what it is
allowed and nothing more:

- "numeric": the variant is run and measured; its excess over the normal bound is reported under
  `divergences`, and it fails the row only beyond the ceiling (e.g. the float32 bound, or NaN only);
- "exception": the variant is run and must raise the documented error (type and message), as
  `suites/test_refusals.py` asserts refusals; no error, or another one, fails the row;
- "crash": the framework kills the process, so the variant is not run in-process (skipped with the
  reason); `layer_conformance.suites.known_crashes` re-checks each crash in a child process every run.

`report_entries` turns the rows' observations into the report's top-level `divergences` list.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

import numpy as np
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from layer_conformance.adapters.spec import LayerSpec, compute_dtype
from layer_conformance.suites.bounds import UNIT_ROUNDOFF, bound_ratio
from layer_conformance.adapters import keras_backend
from layer_conformance.suites.known_crashes import (TF_GROUPED_DILATED_ABORT_SCRIPT, TORCH_BF16_ONEDNN_SCRIPT,
                                  TORCH_F32_ONEDNN_BIAS_SCRIPT, KnownCrash, installed_version,
                                  torch_bf16_onednn_crash, torch_f32_onednn_bias_crash)

Kind = Literal["numeric", "exception", "crash"]
KINDS = ("numeric", "exception", "crash")


@dataclass(frozen=True)
class Ceiling:
    """What a divergent variant is still allowed. `dtype`: judged against that dtype's bound (its unit
    roundoff) instead of the dtype under test's; `exempt_nan`: NaN outputs are allowed, every other value
    is judged against the bound; `exempt_unread`: any value is allowed where the reference's magnitude is 0
    (every product of the element reads zero padding, or zeros), every other element is judged against the
    bound."""

    text: str
    dtype: str | None = None
    exempt_nan: bool = False
    exempt_unread: bool = False

    def bound_dtype(self, dtype: str) -> str:
        return self.dtype or dtype

    def judge(self, y: np.ndarray, expected: np.ndarray, bound: np.ndarray,
              magnitude: np.ndarray | None = None) -> tuple[float, float, tuple[int, ...]]:
        """(max error, max ratio to the ceiling's bound, index) over the values the ceiling does not exempt
        (`magnitude`: the reference's, which `exempt_unread` needs; without it nothing is exempt that way)."""
        y = np.asarray(y, dtype=np.float64)
        if self.exempt_nan:
            y = np.where(np.isnan(y), np.asarray(expected, dtype=np.float64), y)
        if self.exempt_unread and magnitude is not None:
            y = np.where(np.asarray(magnitude) == 0, np.asarray(expected, dtype=np.float64), y)
        return bound_ratio(y, expected, bound)


@dataclass(frozen=True)
class Raises:
    """The error an "exception" divergence must raise: its type and a regex its message matches."""

    type: type[BaseException]
    message: str


@dataclass(frozen=True)
class Divergence:
    id: str
    framework: str
    applies: Callable[[LayerSpec, str, str | None, tuple[int, ...]], bool]  # (spec, dtype, keras backend, input shape)
    summary: str
    evidence: str
    versions: Mapping[str, str]  # package -> version specifier it was observed in, e.g. {"torch": "==2.13.0"}
    ceiling: Ceiling
    kind: Kind = "numeric"
    checks: tuple[str, ...] = ("forward", "gradient")
    gradients: tuple[str, ...] = ("input", "kernel")  # which VJPs it affects in the gradient check
    raises: Raises | None = None  # kind "exception": the documented error
    script: str | None = None  # kind "crash": a standalone script that shows it (re-checked every run)
    devices: tuple[str, ...] = ("cpu", "gpu")

    @property
    def crash(self) -> bool:
        return self.kind == "crash"

    def not_run_reason(self) -> str:
        return f"not run, documented divergence {self.id}: {self.summary}"


SEGFAULT_CEILING = Ceiling("not run in-process (the process dies with SIGSEGV); re-checked in a child process every run")

def _bf16_strided_length_one(spec: LayerSpec, dtype: str, shape: tuple[int, ...]) -> bool:
    """A bfloat16 (or mixed_bfloat16) convolution with a strided axis whose input length is 1: where the CPU
    bfloat16 backward-weights kernels of TensorFlow and of torch (both oneDNN) return NaN in some runs."""
    return (compute_dtype(dtype) == "bfloat16" and spec.kind == "conv"
            and any(s > 1 and n == 1 for s, n in zip(spec.strides, shape[1:-1])))


_TORCH_BF16_NAN_EVIDENCE = (
    "torch 2.13.0+cpu alone: Conv1d(8, 16, 5, stride=2, padding=2) in bfloat16 on a length-1 input, backward "
    "with a random cotangent: weight.grad has NaN in 62 of 200 runs on a channels-last view and 200 of 200 on a "
    "contiguous input (batch 1), 0 of 200 for lengths 2, 3 and 5 and in float32. A sweep of 1344 Conv1d "
    "geometries (1 or 8 input channels, 1 or 16 output, kernel 1/3/5, stride 1-3, padding 0 or 2, length 1/2/5, "
    "contiguous and channels-last, bfloat16 and autocast(bfloat16), batch 1 and 3; 10 runs each): NaN in 8 of "
    "the 256 geometries with a strided length-1 axis, in none of the other 1088. The thorough run saw it at "
    "conv2d(1->1, k=(1,1), s=(3,2)) on (3, 7, 1, 1) under mixed_bfloat16 (torch.Conv2d and Keras Conv2D on the "
    "torch backend), which hypothesis could not replay: it failed once and passed on replay. The same rule as "
    "tf-bf16-conv-backprop-filter-nan: both frameworks run oneDNN's bfloat16 backward-weights kernel on CPU. "
    "Not only NaN: autocast(bfloat16) Conv1d(3, 1, 2, stride=3, padding=1) on length-1 inputs, 600 runs: the "
    "kernel tap that reads only padding (exactly 0) held a finite nonzero value in 55 and NaN in 2, which "
    "looks like uninitialized memory; the ci run found -0.477 there.")

UNREAD_TAPS = Ceiling("any value (NaN or garbage) in kernel-gradient elements whose every product reads zero padding "
                      "(reference magnitude 0), every other element within the normal bound", exempt_unread=True)

DIVERGENCES: tuple[Divergence, ...] = (
    Divergence(
        id="keras-torch-float64-matmul",
        framework="keras",
        applies=lambda spec, dtype, backend, shape: backend == "torch" and dtype == "float64" and spec.kind == "dense",
        checks=("forward", "gradient", "batch", "depth"),
        versions={"keras": "==3.15.1", "torch": "==2.13.0"},
        ceiling=Ceiling("the float32 bound (u = 2^-24 instead of 2^-53): a float32 computation, nothing worse",
                        dtype="float32"),
        summary="Keras Dense in float64 on the torch backend computes in float32: keras.ops.matmul casts both "
                "float64 operands to keras.backend.result_type(float64, float64), which is float32 on every "
                "backend but tensorflow (keras/src/backend/common/dtypes.py, BIT64_TO_BIT32_DTYPE), then casts "
                "the product back to float64.",
        evidence="keras 3.15.1, torch 2.13.0: Dense(2) on float64 inputs differs from the float64 reference by "
                 "5.8e-8 (bound 5e-15, ratio ~1e7); torch.matmul on the same float64 tensors is exact "
                 "(2.2e-16); keras.backend.result_type('float64', 'float64') == 'float32' with KERAS_BACKEND=torch.",
    ),
    Divergence(
        id="tf-bf16-conv-backprop-filter-nan",
        framework="keras",
        applies=lambda spec, dtype, backend, shape: (
            backend == "tensorflow" and _bf16_strided_length_one(spec, dtype, shape)),
        versions={"tensorflow": "==2.21.0"},
        ceiling=Ceiling("NaN only: every finite value of the kernel gradient within the normal bound",
                        exempt_nan=True),
        summary="TensorFlow's CPU Conv2DBackpropFilter in bfloat16 returns NaN in some runs when a strided axis has "
                "input length 1 (the kernel gradient of Keras Conv1D/Conv2D under bfloat16 or mixed_bfloat16); "
                "the forward pass and the input gradient are right.",
        evidence="tensorflow-cpu 2.21.0: tf.raw_ops.Conv2DBackpropFilter(input=0.75 of shape (1, 1, 1, 1), "
                 "filter_sizes=[1, 1, 1, 1], out_backprop=ones, strides=[1, 1, 2, 1], padding='SAME') in bfloat16 "
                 "gave NaN in 7 of 20 runs (0.75 otherwise); stride 2 with length 1 and kernel 1 or 2, SAME or "
                 "VALID: 5-8 of 20; lengths 2, 3, 5 and stride 3: 0 of 20; float16 and float32: never.",
        checks=("gradient",),
        gradients=("kernel",),
    ),
    Divergence(
        id="torch-bf16-conv-backward-weights-nan",
        framework="torch",
        applies=lambda spec, dtype, backend, shape: _bf16_strided_length_one(spec, dtype, shape),
        versions={"torch": "==2.13.0"},
        devices=("cpu",),
        ceiling=UNREAD_TAPS,
        summary="torch's CPU bfloat16 convolution backward (bfloat16 and autocast(bfloat16)) returns NaN or a "
                "finite garbage value, in some runs, in the kernel-gradient elements whose taps read only zero "
                "padding (exactly 0), when a strided axis has input length 1; every other element, the forward "
                "pass and the input gradient are right.",
        evidence=_TORCH_BF16_NAN_EVIDENCE,
        checks=("gradient",),
        gradients=("kernel",),
    ),
    Divergence(
        id="keras-torch-bf16-conv-backward-weights-nan",
        framework="keras",
        applies=lambda spec, dtype, backend, shape: backend == "torch" and _bf16_strided_length_one(spec, dtype, shape),
        versions={"torch": "==2.13.0", "keras": "==3.15.1"},
        devices=("cpu",),
        ceiling=UNREAD_TAPS,
        summary="Keras Conv1D/Conv2D on the torch backend computes its gradient with torch's CPU bfloat16 "
                "convolution backward, which returns NaN in the kernel gradient in some runs when a strided axis "
                "has input length 1, in the kernel-gradient elements whose taps read only padding "
                "(torch-bf16-conv-backward-weights-nan).",
        evidence=_TORCH_BF16_NAN_EVIDENCE,
        checks=("gradient",),
        gradients=("kernel",),
    ),
    Divergence(
        id="tf-float64-grouped-dilated-conv-grad-abort",
        framework="keras",
        applies=lambda spec, dtype, backend, shape: (
            backend == "tensorflow" and dtype == "float64" and spec.kind == "conv" and spec.groups > 1
            and any(d > 1 and lo + hi > n for d, (lo, hi), n in
                    zip(spec.dilation, spec.explicit_padding(shape[1:-1]), shape[1:-1]))),
        versions={"tensorflow": "==2.21.0", "keras": "==3.15.1"},
        kind="crash",
        ceiling=Ceiling("not run in-process (the process aborts); re-checked in a child process every run"),
        script=TF_GROUPED_DILATED_ABORT_SCRIPT,
        summary="TensorFlow aborts the whole process (Fatal Python error: Aborted, in the Slice of _PadGrad) when "
                "differentiating a float64 grouped, dilated Keras Conv1D/Conv2D whose padding exceeds the input "
                "length; the variant's gradient is therefore not run for such layers.",
        evidence="tensorflow-cpu 2.21.0, keras 3.15.1: Conv1D(4, 5, dilation_rate=3, groups=2, padding='causal') "
                 "(or explicit (12, 0) padding) on float64 input (2, 8, 2): GradientTape.gradient aborts; the same "
                 "with groups=1, dilation 1, float32, or input length 16 with padding 2 works; raw "
                 "tf.nn.convolution float64 grouped gradients raise 'Gradients for grouped convolutions are not "
                 "supported on CPU'. The abort is glibc detecting heap corruption ('corrupted double-linked list', "
                 "'free(): invalid pointer', 'malloc(): unaligned tcache chunk detected'): 2 of 3 processes with one "
                 "gradient, 6 of 6 with 20 (the re-check script).",
        checks=("gradient",),
        gradients=("input", "kernel", "bias"),
    ),
    Divergence(
        id="torch-bf16-onednn-padding-only-segfault",
        framework="torch",
        applies=lambda spec, dtype, backend, shape: torch_bf16_onednn_crash(spec, dtype, shape),
        versions={"torch": "==2.13.0"},
        kind="crash",
        devices=("cpu",),
        ceiling=SEGFAULT_CEILING,
        script=TORCH_BF16_ONEDNN_SCRIPT,
        summary="torch's CPU bfloat16 convolution (oneDNN brg_conv_fwd:avx512_core_bf16, on CPUs with AVX-512 "
                "BF16) kills the process with SIGSEGV when, on a channels-last input view, a spatial axis with "
                "stride >= 2 and dilation >= 2 has two or more output positions that all read only the zero "
                "padding torch's conv applies itself (layer_conformance.suites.known_crashes.torch_bf16_onednn_crash).",
        evidence="torch 2.13.0+cpu alone (issue 13): Conv1d(3, 12, kernel_size=1, stride=2, padding=1, dilation=2, "
                 "bias=False) in bfloat16 on torch.zeros(2, 1, 3).permute(0, 2, 1) exits -11, 3 of 3 runs; "
                 "Conv2d(3, 12, 1, stride=(1, 2), padding=(0, 1), dilation=(1, 2)) on an NHWC-permuted (2, 3, 2, 1) "
                 "input likewise; float32 (without a bias: with one, see torch-f32-onednn-padding-only-bias-segfault), "
                 "float16, float64, contiguous NCL strides (for lengths above 1) and "
                 "torch.backends.mkldnn.enabled = False do not crash; with batch 1 it crashes only with one thread. "
                 "A float32 Conv1d on the float32 permuted view under torch.autocast('cpu', dtype=torch.bfloat16) "
                 "(the mixed_bfloat16 variant) exits -11 as well, 2 of 2 runs. "
                 "Sweeps through the torch adapter, one thread, one child process per crash: 1428 Conv1d geometries "
                 "(kernel, stride, dilation 1-3, symmetric padding 0-3, length 1-4, 1 or 3 channels, batch 1-2): 16 "
                 "crashed, all inside the rule, 8 inside it did not; 3000 random geometries (rank 1-2, groups, bias, "
                 "symmetric/asymmetric/same/causal padding, forward and VJP): 32 crashed, all inside the rule, 35 "
                 "inside it did not; 300 geometries where every output reads only padding: every crash (82) had two "
                 "or more output positions on that axis, none of the 146 with one. Stride 1, dilation 1, F.pad "
                 "padding (asymmetric, same with stride > 1, causal): no crash. Two threads, `python -m "
                 "layer_conformance.suites.known_crashes sweep 600 11 2`: 600 random geometries, 6 crashed, all inside the rule (7 "
                 "inside it did not); 600 geometries inside the rule: 240 crashed. The rule is a superset: the "
                 "crash looks like an out-of-bounds access whose effect depends on memory layout.",
        checks=("forward", "gradient", "batch", "depth"),
        gradients=("input", "kernel", "bias"),
    ),
    Divergence(
        id="torch-f32-onednn-padding-only-bias-segfault",
        framework="torch",
        applies=lambda spec, dtype, backend, shape: torch_f32_onednn_bias_crash(spec, dtype, shape),
        versions={"torch": "==2.13.0"},
        kind="crash",
        devices=("cpu",),
        ceiling=SEGFAULT_CEILING,
        script=TORCH_F32_ONEDNN_BIAS_SCRIPT,
        summary="torch's CPU float32 convolution with a bias kills the process with SIGSEGV on the geometry of "
                "torch-bf16-onednn-padding-only-segfault (a spatial axis with stride >= 2 and dilation >= 2 whose "
                "two or more output positions all read only the zero padding torch's conv applies itself); "
                "without a bias float32 does not crash (layer_conformance.suites.known_crashes.torch_f32_onednn_bias_crash).",
        evidence="Found by the ci pool's padding-only-axis corner: suites/test_forward.py::test_forward"
                 "[xfw-conv1d-float32-cpu] died with SIGSEGV in torch.Conv1d forward on conv1d(4->3, k=1, s=2, "
                 "pad=((1, 1),), d=3), input (3, 1, 4). torch 2.13.0+cpu alone, one child process each, "
                 "Conv1d(cin, cout, kernel_size=1, stride=2, padding=1, dilation=d) on randn(b, L, cin).permute(0, "
                 "2, 1): (cin, cout, d, b) = (3, 12, 2, 2), (4, 3, 3, 3), (4, 3, 2, 3), (8, 8, 2, 2) with L = 1 exit "
                 "-11 in float32 with bias=True (one and two threads) and exit 0 with bias=False; bfloat16 exits -11 "
                 "with and without a bias; float16 and float64 never crash; L = 2 (an output that reads the input) "
                 "and one input channel with every spatial size 1 do not crash.",
        checks=("forward", "gradient", "batch", "depth"),
        gradients=("input", "kernel", "bias"),
    ),
    Divergence(
        id="torch-conv2d-single-output-grad-weight",
        framework="keras",
        applies=lambda spec, dtype, backend, shape: (
            backend == "torch" and spec.kind == "conv" and spec.rank == 2 and spec.out_features == 1
            and spec.in_features > 1 and math.prod(spec.kernel_size) > 1 and set(spec.dilation) == {1}
            and (compute_dtype(dtype) in ("float64", "float16") or (dtype == "float32" and shape[:1] == (1,)))),
        versions={"torch": "==2.13.0", "keras": "==3.15.1"},
        kind="exception",
        raises=Raises(RuntimeError, r"slow_conv2d: grad_weight must be contiguous"),
        ceiling=Ceiling("raises RuntimeError 'slow_conv2d: grad_weight must be contiguous', nothing else; "
                        "the gradient is not compared"),
        summary="On the torch backend, the gradient of a Keras Conv2D with one output channel, more than one input "
                "channel, a kernel larger than 1x1 and no dilation raises 'RuntimeError: slow_conv2d: grad_weight "
                "must be contiguous' in float64, float16 and mixed_float16 (float32: batch of 1): Keras hands torch's conv2d a "
                "permuted, non-contiguous view of its (kh, kw, in, out) kernel, and torch's CPU slow_conv2d backward "
                "refuses the gradient buffer shaped like it. The forward pass works; the gradient is not compared.",
        evidence="torch 2.13.0+cpu alone: F.conv2d(x, w) with w = randn(kh, kw, cin, 1).permute(3, 2, 0, 1) and x a "
                 "permuted NHWC tensor, then torch.autograd.grad, raises for every cin > 1 and kernel > 1x1 tried "
                 "(float64, float16: 27 of 27 shapes; float32 with batch 1: 9 of 9; bfloat16, batch > 1 in "
                 "float32, cout > 1, conv1d, a contiguous w: never). keras 3.15.1: Conv2D(1, (5, 2), strides=3) "
                 "on float64 (1, 8, 6, 2) raises it 300 of 300 times; over 1296 Keras Conv2D geometries (padding "
                 "valid/same/explicit, stride 1-2, dilation 1-2, four dtypes, batch 1-2) it raised exactly where "
                 "this rule says (dilation 2 takes torch's slow_conv_dilated2d and works). The mixed_float16 "
                 "policy (float16 compute, float32 kernel) raises it too: found by a thorough run at "
                 "conv2d(2->1, k=(4,4), s=(3,3), pad=((1,3),(1,2))) on (1, 7, 8, 2); a sweep of 324 Keras Conv2D "
                 "geometries on the suite's adapter (1-3 input channels, kernels 1x1, 3x3, 1x3, stride and "
                 "dilation 1-2, batch 1-2, six dtypes and policies) raised in 56, exactly where this rule says.",
        checks=("gradient",),
        gradients=("input", "kernel", "bias"),
    ),
)


# ---- validation at import ---------------------------------------------------------------------------
def _validate(divergences: Sequence[Divergence]) -> None:
    """A malformed entry fails at import, naming the entry and the fix."""
    ids = [d.id for d in divergences]
    if len(ids) != len(set(ids)):
        raise ValueError(f"divergence ids must be unique: {sorted({i for i in ids if ids.count(i) > 1})}")
    for d in divergences:
        if d.kind not in KINDS:
            raise ValueError(f"divergence {d.id}: kind={d.kind!r}; use one of {KINDS}")
        if not d.versions:
            raise ValueError(f"divergence {d.id}: name the versions it was observed in, e.g. {{'torch': '==2.13.0'}}")
        for package, specifier in d.versions.items():
            try:
                SpecifierSet(specifier)
            except InvalidSpecifier:
                raise ValueError(f"divergence {d.id}: {package}={specifier!r} is not a version specifier; "
                                 f"write e.g. '==2.13.0' or '>=2.12,<2.14'") from None
        if (d.kind == "exception") != (d.raises is not None):
            raise ValueError(f"divergence {d.id}: give `raises` exactly when kind is 'exception'")
        if d.kind == "exception" and set(d.checks) != {"gradient"}:
            raise ValueError(f"divergence {d.id}: an exception divergence is asserted in the gradient check only "
                             f"(checks=('gradient',)); got checks={d.checks}")
        if d.ceiling.dtype is not None and d.ceiling.dtype not in UNIT_ROUNDOFF:
            raise ValueError(f"divergence {d.id}: ceiling dtype {d.ceiling.dtype!r} has no unit roundoff; use one "
                             f"of {sorted(UNIT_ROUNDOFF)}")
        if (d.kind == "crash") != (d.script is not None):
            raise ValueError(f"divergence {d.id}: give `script` (a standalone reproduction) exactly when kind is "
                             f"'crash'")


_validate(DIVERGENCES)


# ---- matching ---------------------------------------------------------------------------------------
def installed_versions(divergence: Divergence) -> dict[str, str | None]:
    return {package: installed_version(package) for package in divergence.versions}


def in_scope(divergence: Divergence) -> bool:
    """The installed versions are inside every specifier the divergence names."""
    return all(_contains(divergence.versions[p], v) for p, v in installed_versions(divergence).items())


def _contains(specifier: str, version: str | None) -> bool:
    try:
        return version is not None and SpecifierSet(specifier).contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def divergence_for(framework: str, spec: LayerSpec, dtype: str, check: str = "forward",
                   shape: tuple[int, ...] = (), gradient: str | None = None, device: str = "cpu") -> Divergence | None:
    """The documented divergence this variant (with this layer-input shape) falls under in this check, if any.

    Only inside the divergence's version scope: on other versions the variant is judged normally. Where
    several apply, the gravest kind wins (a crash, then an exception, then a numeric one), whatever their
    order: a variant that would kill the process is never run because a milder divergence matched first.
    """
    found = []
    for divergence in DIVERGENCES:
        if divergence.framework == framework and check in divergence.checks and device in divergence.devices \
                and (gradient is None or gradient in divergence.gradients):
            backend = keras_backend() if framework == "keras" else None
            if divergence.applies(spec, dtype, backend, tuple(shape)) and in_scope(divergence):
                found.append(divergence)
    return min(found, key=lambda d: _GRAVITY.index(d.kind), default=None)


_GRAVITY = ("crash", "exception", "numeric")


def by_id(divergence_id: str) -> Divergence:
    return next(d for d in DIVERGENCES if d.id == divergence_id)


# ---- exception divergences ----------------------------------------------------------------------------
def expect_raise(divergence: Divergence, label: str, call: Callable[[], Any]) -> tuple[str | None, str | None]:
    """Runs a call documented to raise. (the error it raised or None, a failure message or None)."""
    assert divergence.raises is not None, f"{divergence.id} is not an exception divergence"
    expected = divergence.raises
    try:
        call()
    except Exception as exc:
        got = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, expected.type) and re.search(expected.message, str(exc)):
            return got, None
        return got, (f"{label} raises a different error than documented divergence {divergence.id}: {got[:300]!r} "
                     f"(expected {expected.type.__name__} matching {expected.message!r}): update its `raises` in "
                     f"suites/divergences.py, or re-scope it, once the new error is understood")
    return None, (f"{label}: documented divergence {divergence.id} no longer raises: the divergence is fixed in "
                  f"{_installed_text(divergence)}, remove or re-scope it (suites/divergences.py, versions "
                  f"{dict(divergence.versions)})")


def ceiling_failure(divergence: Divergence, label: str, error: float, ratio: float, where: str = "") -> str:
    """The failure line of a divergent variant beyond its ceiling."""
    return (f"{label} exceeds the ceiling of documented divergence {divergence.id} ({divergence.ceiling.text}): "
            f"max error {error:.3g} is {ratio:.3g}x that bound{where}; it got worse or this is another bug: "
            f"investigate before widening the ceiling in suites/divergences.py")


def _installed_text(divergence: Divergence) -> str:
    return ", ".join(f"{p} {v or 'not installed'}" for p, v in installed_versions(divergence).items())


# ---- known crashes and the report ---------------------------------------------------------------------
def known_crashes() -> list[KnownCrash]:
    """Every crash divergence as a re-checkable script (all of them, in scope or not)."""
    return [KnownCrash(d.id, tuple(d.versions), d.script) for d in DIVERGENCES if d.script is not None]


def report_entries(results: Sequence[Mapping[str, Any]], rechecks: Mapping[str, str]) -> list[dict[str, Any]]:
    """The report's top-level `divergences`: every documented divergence, its scope and what this run saw.

    observed: True when a row saw it (numeric: beyond the normal bound; exception: raised), False when
    rows exercised it without seeing it, None when no row exercised it; a crash's comes from its re-check.
    """
    seen: dict[str, list[Mapping[str, Any]]] = {}
    rows: dict[str, set[int]] = {}
    for index, row in enumerate(results):
        for entry in _row_entries(row):
            seen.setdefault(entry["id"], []).append(entry)
            rows.setdefault(entry["id"], set()).add(index)
    return [_report_entry(d, seen.get(d.id, []), len(rows.get(d.id, ())), rechecks.get(d.id)) for d in DIVERGENCES]


def _row_entries(row: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A result row's `divergences` entries ({variant label: {id, observed, within_ceiling, ...}})."""
    entries = row.get("divergences")
    return [e for e in (entries.values() if isinstance(entries, dict) else ())
            if isinstance(e, dict) and isinstance(e.get("id"), str)]


def _report_entry(d: Divergence, entries: list[Mapping[str, Any]], rows: int, recheck: str | None) -> dict[str, Any]:
    if d.kind == "crash":
        observed = True if recheck and recheck.startswith("crashes") else \
            False if recheck and recheck.startswith("no crash") else None
    else:
        observed = any(e.get("observed") is True for e in entries) if entries else None
    entry = {"id": d.id, "framework": d.framework, "versions": dict(d.versions), "installed": installed_versions(d),
             "in_scope": in_scope(d), "kind": d.kind, "summary": d.summary, "evidence": d.evidence,
             "ceiling": d.ceiling.text, "observed": observed,
             "exceeded_ceiling": any(e.get("within_ceiling") is False for e in entries),
             "results": rows}
    if d.kind == "crash":
        entry["recheck"] = recheck or "not checked: no re-check ran in this session"
    return entry
