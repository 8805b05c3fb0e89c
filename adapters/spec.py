"""Framework-neutral description of a layer (`LayerSpec`), canonical weights and dtypes.

Everything that crosses an adapter boundary is NumPy in one layout:
activations channels-last, dense kernel ``(in, out)``, conv kernel
``(*spatial, in/groups, out)``, bias ``(out,)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping, Sequence, Union

import numpy as np

Padding = Union[Literal["valid", "same", "causal"], tuple[tuple[int, int], ...]]
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")  # what the padded border holds
Weights = dict[str, np.ndarray]  # {"kernel": ..., "bias": ...}; "bias" absent when bias=False

DTYPES = ("float64", "float32", "float16", "bfloat16", "mixed_float16", "mixed_bfloat16")
# Keras mixed policies: float32 variables, compute (and data here) in the half type
POLICY_COMPUTE = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}


def compute_dtype(dtype: str) -> str:
    """The dtype a layer of `dtype` computes in: a mixed policy's half type, else the dtype itself."""
    return POLICY_COMPUTE.get(dtype, dtype)


def variable_dtype(dtype: str) -> str:
    """The dtype of a layer's parameters: float32 under a mixed policy, as in mixed-precision training."""
    return "float32" if dtype in POLICY_COMPUTE else dtype


class SpecError(ValueError):
    """An invalid layer description; the message names the parameter and the accepted values."""


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype for a dtype name; bfloat16 comes from ml_dtypes."""
    if name not in DTYPES:
        raise SpecError(f"Invalid value for argument `dtype`: expected one of {', '.join(DTYPES)}. Received dtype={name!r}.")
    name = POLICY_COMPUTE.get(name, name)
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _tuple(value: int | Sequence[int], rank: int, name: str) -> tuple[int, ...]:
    out = (value,) * rank if isinstance(value, (int, np.integer)) else tuple(value)
    if len(out) != rank or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in out):
        raise SpecError(f"Invalid value for argument `{name}`: expected a positive int or {rank} positive ints. "
                        f"Received {name}={value!r}.")
    return tuple(int(v) for v in out)


@dataclass(frozen=True)
class LayerSpec:
    """One dense or convolution layer, independent of any framework."""

    kind: Literal["dense", "conv"]
    in_features: int
    out_features: int
    kernel_size: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    padding: Padding = "valid"
    dilation: tuple[int, ...] = ()
    groups: int = 1
    bias: bool = True
    padding_mode: str = "zeros"
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    # ---- constructors -------------------------------------------------------------------------
    @classmethod
    def dense(cls, in_features: int, out_features: int, *, bias: bool = True) -> "LayerSpec":
        spec = cls("dense", int(in_features), int(out_features), bias=bool(bias))
        spec.validate()
        return spec

    @classmethod
    def conv(cls, in_features: int, out_features: int, kernel_size: int | Sequence[int], *,
             rank: int | None = None, strides: int | Sequence[int] = 1, padding: Any = "valid",
             dilation: int | Sequence[int] = 1, groups: int = 1, bias: bool = True,
             padding_mode: str = "zeros") -> "LayerSpec":
        if rank is None:
            rank = 1 if isinstance(kernel_size, (int, np.integer)) else len(tuple(kernel_size))
        if rank not in (1, 2):
            raise SpecError(f"Invalid value for argument `rank`: expected 1 or 2 spatial axes. Received rank={rank!r}.")
        spec = cls("conv", int(in_features), int(out_features), _tuple(kernel_size, rank, "kernel_size"),
                   _tuple(strides, rank, "strides"), _normalise_padding(padding, rank),
                   _tuple(dilation, rank, "dilation"), int(groups), bool(bias), padding_mode)
        spec.validate()
        return spec

    # ---- derived quantities -------------------------------------------------------------------
    @property
    def rank(self) -> int:
        """Number of spatial axes: 0 for dense."""
        return len(self.kernel_size)

    @property
    def reduction_length(self) -> int:
        """Terms summed per output element (before the bias): the K of the error bound."""
        if self.kind == "dense":
            return self.in_features
        return self.in_features // self.groups * math.prod(self.kernel_size)

    def kernel_shape(self) -> tuple[int, ...]:
        if self.kind == "dense":
            return (self.in_features, self.out_features)
        return (*self.kernel_size, self.in_features // self.groups, self.out_features)

    def param_count(self) -> int:
        return math.prod(self.kernel_shape()) + (self.out_features if self.bias else 0)

    def explicit_padding(self, spatial: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """Padding as (low, high) pairs for an input of this spatial size.

        ``same`` follows the TF/JAX/Keras rule: output size ceil(n / stride), the odd extra on the high side.
        """
        if self.padding == "valid":
            return ((0, 0),) * self.rank
        if self.padding == "causal":  # Keras/Flax: all of the dilated kernel's reach on the low side
            return tuple(((k - 1) * d, 0) for k, d in zip(self.kernel_size, self.dilation))
        if self.padding == "same":
            pairs = []
            for n, k, s, d in zip(spatial, self.kernel_size, self.strides, self.dilation):
                effective = (k - 1) * d + 1
                total = max((math.ceil(n / s) - 1) * s + effective - n, 0)
                pairs.append((total // 2, total - total // 2))
            return tuple(pairs)
        return self.padding  # type: ignore[return-value]

    def output_spatial(self, spatial: Sequence[int]) -> tuple[int, ...]:
        pads = self.explicit_padding(spatial)
        return tuple((n + lo + hi - ((k - 1) * d + 1)) // s + 1
                     for n, (lo, hi), k, s, d in zip(spatial, pads, self.kernel_size, self.strides, self.dilation))

    def with_(self, **changes: Any) -> "LayerSpec":
        spec = replace(self, **changes)
        spec.validate()
        return spec

    # ---- validation ---------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise SpecError naming the first bad parameter, before any framework is called."""
        if self.kind not in ("dense", "conv"):
            raise SpecError(f"Invalid value for argument `kind`: expected 'dense' or 'conv'. Received kind={self.kind!r}.")
        for name in ("in_features", "out_features"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise SpecError(f"Invalid value for argument `{name}`: expected a positive int. Received {name}={value!r}.")
        if self.kind == "dense":
            if self.kernel_size or self.strides or self.dilation or self.groups != 1:
                raise SpecError("A dense LayerSpec takes no kernel_size, strides, dilation or groups; "
                                "use LayerSpec.conv(...) for a convolution.")
            return
        if not isinstance(self.groups, int) or self.groups < 1:
            raise SpecError(f"Invalid value for argument `groups`: expected a positive int. Received groups={self.groups!r}.")
        for name in ("in_features", "out_features"):
            if getattr(self, name) % self.groups:
                raise SpecError(f"Invalid value for argument `groups`: {name}={getattr(self, name)} is not divisible "
                                f"by groups={self.groups}; choose groups dividing both in_features and out_features.")
        if self.padding_mode not in PADDING_MODES:
            raise SpecError(f"Invalid value for argument `padding_mode`: expected one of {', '.join(PADDING_MODES)}. "
                            f"Received padding_mode={self.padding_mode!r}.")
        if self.padding == "causal" and self.rank != 1:
            raise SpecError("Invalid value for argument `padding`: 'causal' is defined for 1-D convolutions only.")
        if not (len(self.strides) == len(self.dilation) == self.rank):
            raise SpecError("kernel_size, strides and dilation must have one entry per spatial axis; "
                            "build conv specs with LayerSpec.conv(...).")

    def check_input(self, shape: Sequence[int]) -> None:
        """Raise SpecError if an input of this (canonical, channels-last) shape cannot be fed to the layer."""
        expected_ndim = 2 if self.kind == "dense" else self.rank + 2
        if self.kind == "dense":
            if len(shape) < 2 or shape[-1] != self.in_features:
                raise SpecError(f"Invalid input shape {tuple(shape)} for a dense layer with in_features="
                                f"{self.in_features}: the last axis must be the features.")
            return
        if len(shape) != expected_ndim or shape[-1] != self.in_features:
            raise SpecError(f"Invalid input shape {tuple(shape)} for a {self.rank}-D convolution with in_features="
                            f"{self.in_features}: expected channels-last (N, {'H, W' if self.rank == 2 else 'W'}, "
                            f"{self.in_features}).")
        pads = self.explicit_padding(shape[1:-1])
        for axis, (n, (lo, hi), k, d) in enumerate(zip(shape[1:-1], pads, self.kernel_size, self.dilation)):
            if self.padding_mode == "reflect" and max(lo, hi) >= n:
                raise SpecError(f"Invalid value for argument `padding`: reflect padding of {max(lo, hi)} needs more "
                                f"than {max(lo, hi)} input positions on spatial axis {axis}, got {n}.")
            if n + lo + hi < (k - 1) * d + 1:
                raise SpecError(f"Invalid value for argument `kernel_size`: the dilated kernel ({(k - 1) * d + 1}) is "
                                f"larger than the padded input ({n + lo + hi}) on spatial axis {axis}; use a shorter "
                                f"kernel, less dilation or more padding.")

    def describe(self) -> str:
        if self.kind == "dense":
            return f"dense({self.in_features}->{self.out_features}{'' if self.bias else ', no bias'})"
        parts = [f"k={self.kernel_size}", f"s={self.strides}", f"pad={self.padding}", f"d={self.dilation}"]
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.padding_mode != "zeros":
            parts.append(f"mode={self.padding_mode}")
        if not self.bias:
            parts.append("no bias")
        return f"conv{self.rank}d({self.in_features}->{self.out_features}, {', '.join(parts)})"


def _normalise_padding(padding: Any, rank: int) -> Padding:
    if isinstance(padding, str):
        lowered = padding.lower()
        if lowered in ("valid", "same", "causal"):
            return lowered  # type: ignore[return-value]
        raise SpecError(f"Invalid value for argument `padding`: expected 'valid', 'same', 'causal', an int or (low, high) "
                        f"pairs per spatial axis. Received padding={padding!r}.")
    if isinstance(padding, (int, np.integer)):
        pairs = ((int(padding), int(padding)),) * rank
    else:
        items = tuple(padding)
        if len(items) != rank:
            raise SpecError(f"Invalid value for argument `padding`: expected {rank} entries (one per spatial axis). "
                            f"Received padding={padding!r}.")
        pairs = tuple((int(p), int(p)) if isinstance(p, (int, np.integer)) else tuple(int(v) for v in p) for p in items)
    if any(len(p) != 2 or min(p) < 0 for p in pairs):
        raise SpecError(f"Invalid value for argument `padding`: pairs must be (low, high) with non-negative ints. "
                        f"Received padding={padding!r}.")
    return pairs  # type: ignore[return-value]


def check_weights(spec: LayerSpec, weights: Mapping[str, np.ndarray]) -> None:
    """Raise SpecError unless the weights have the canonical shapes for the spec."""
    kernel = weights.get("kernel")
    if kernel is None or tuple(kernel.shape) != spec.kernel_shape():
        got = None if kernel is None else tuple(kernel.shape)
        raise SpecError(f"Invalid `kernel` for {spec.describe()}: expected canonical shape {spec.kernel_shape()}, "
                        f"received {got}.")
    if spec.bias:
        bias = weights.get("bias")
        if bias is None or tuple(bias.shape) != (spec.out_features,):
            raise SpecError(f"Invalid `bias` for {spec.describe()}: expected shape ({spec.out_features},), "
                            f"received {None if bias is None else tuple(bias.shape)}.")
    elif weights.get("bias") is not None:
        raise SpecError(f"{spec.describe()} has bias=False but a `bias` was given; drop it or use bias=True.")
