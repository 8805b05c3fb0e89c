"""Documented divergences: where a framework genuinely disagrees with the reference, with evidence.

A divergence is data, matched per variant (framework, layer kind, dtype, Keras backend). A matching
variant is still run and measured; its excess over the bound is reported under `divergences`
instead of failing the row, so everything else in the row keeps its full power. If a documented
divergence is no longer observed in a run, the report says so (the framework may have fixed it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from adapters.spec import LayerSpec


@dataclass(frozen=True)
class Divergence:
    id: str
    framework: str
    applies: Callable[[LayerSpec, str, str | None, tuple[int, ...]], bool]  # (spec, dtype, keras backend, input shape)
    summary: str
    evidence: str
    checks: tuple[str, ...] = ("forward", "gradient")
    gradients: tuple[str, ...] = ("input", "kernel")  # which VJPs it affects in the gradient check
    crash: bool = False  # the framework aborts the process: the variant is not run there (skipped with this text)


DIVERGENCES: tuple[Divergence, ...] = (
    Divergence(
        id="keras-torch-float64-matmul",
        framework="keras",
        applies=lambda spec, dtype, backend, shape: backend == "torch" and dtype == "float64" and spec.kind == "dense",
        checks=("forward", "gradient", "batch", "depth"),
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
            backend == "tensorflow" and dtype in ("bfloat16", "mixed_bfloat16") and spec.kind == "conv"
            and any(s > 1 and n == 1 for s, n in zip(spec.strides, shape[1:-1]))),
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
        id="tf-float64-grouped-dilated-conv-grad-abort",
        framework="keras",
        applies=lambda spec, dtype, backend, shape: (
            backend == "tensorflow" and dtype == "float64" and spec.kind == "conv" and spec.groups > 1
            and any(d > 1 and lo + hi > n for d, (lo, hi), n in
                    zip(spec.dilation, spec.explicit_padding(shape[1:-1]), shape[1:-1]))),
        summary="TensorFlow aborts the whole process (Fatal Python error: Aborted, in the Slice of _PadGrad) when "
                "differentiating a float64 grouped, dilated Keras Conv1D/Conv2D whose padding exceeds the input "
                "length; the variant's gradient is therefore not run for such layers.",
        evidence="tensorflow-cpu 2.21.0, keras 3.15.1: Conv1D(4, 5, dilation_rate=3, groups=2, padding='causal') "
                 "(or explicit (12, 0) padding) on float64 input (2, 8, 2): GradientTape.gradient aborts; the same "
                 "with groups=1, dilation 1, float32, or input length 16 with padding 2 works; raw "
                 "tf.nn.convolution float64 grouped gradients raise 'Gradients for grouped convolutions are not "
                 "supported on CPU'.",
        checks=("gradient",),
        gradients=("input", "kernel", "bias"),
        crash=True,
    ),
    Divergence(
        id="torch-conv2d-single-output-grad-weight",
        framework="keras",
        applies=lambda spec, dtype, backend, shape: (
            backend == "torch" and spec.kind == "conv" and spec.rank == 2 and spec.out_features == 1
            and spec.in_features > 1 and math.prod(spec.kernel_size) > 1 and set(spec.dilation) == {1}
            and (dtype in ("float64", "float16") or (dtype == "float32" and shape[:1] == (1,)))),
        summary="On the torch backend, the gradient of a Keras Conv2D with one output channel, more than one input "
                "channel, a kernel larger than 1x1 and no dilation raises 'RuntimeError: slow_conv2d: grad_weight "
                "must be contiguous' in float64 and float16 (float32: batch of 1): Keras hands torch's conv2d a "
                "permuted, non-contiguous view of its (kh, kw, in, out) kernel, and torch's CPU slow_conv2d backward "
                "refuses the gradient buffer shaped like it. The forward pass works; the gradient is not run there.",
        evidence="torch 2.13.0+cpu alone: F.conv2d(x, w) with w = randn(kh, kw, cin, 1).permute(3, 2, 0, 1) and x a "
                 "permuted NHWC tensor, then torch.autograd.grad, raises for every cin > 1 and kernel > 1x1 tried "
                 "(float64, float16: 27 of 27 shapes; float32 with batch 1: 9 of 9; bfloat16, batch > 1 in "
                 "float32, cout > 1, conv1d, a contiguous w: never). keras 3.15.1: Conv2D(1, (5, 2), strides=3) "
                 "on float64 (1, 8, 6, 2) raises it 300 of 300 times; over 1296 Keras Conv2D geometries (padding "
                 "valid/same/explicit, stride 1-2, dilation 1-2, four dtypes, batch 1-2) it raised exactly where "
                 "this rule says (dilation 2 takes torch's slow_conv_dilated2d and works).",
        checks=("gradient",),
        gradients=("input", "kernel", "bias"),
        crash=True,
    ),
    Divergence(
        id="keras-torch-mixed-policy-stateless-vjp",
        framework="keras",
        applies=lambda spec, dtype, backend, shape: backend == "torch" and dtype.startswith("mixed_"),
        summary="On the torch backend, Keras Layer.stateless_call under a mixed_float16/mixed_bfloat16 policy "
                "raises 'RuntimeError: expected scalar type Half but found Float' (the float32 variable values "
                "are not autocast), so the gradient of Keras layers under mixed policies is not measured there.",
        evidence="keras 3.15.1, torch 2.13.0: Dense(N, dtype='mixed_float16').stateless_call(trainable_values, [], "
                 "float16 input) inside torch.autograd raises the RuntimeError; the forward call and the jax and "
                 "tensorflow backends work.",
        checks=("gradient",),
        gradients=("input", "kernel", "bias"),
        crash=True,
    ),
)


def keras_backend() -> str | None:
    from adapters.keras import BACKEND

    return BACKEND


def divergence_for(framework: str, spec: LayerSpec, dtype: str, check: str = "forward",
                   shape: tuple[int, ...] = (), gradient: str | None = None) -> Divergence | None:
    """The documented divergence this variant (with this layer-input shape) falls under in this check, if any."""
    for divergence in DIVERGENCES:
        if divergence.framework == framework and check in divergence.checks \
                and (gradient is None or gradient in divergence.gradients):
            backend = keras_backend() if framework == "keras" else None
            if divergence.applies(spec, dtype, backend, tuple(shape)):
                return divergence
    return None
