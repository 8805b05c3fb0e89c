"""Flax: linen `Dense`/`Conv` and nnx `Linear`/`Conv` (channels-last, canonical kernel layouts).

Two adapters share this module: "flax.linen" and "flax.nnx".
"""
from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from .base import Adapter, Layer, canonical
from .compute import check_operands, check_output, first_time, jax_operand_dtypes
from .spec import POLICY_COMPUTE, LayerSpec, Weights, numpy_dtype
from .spec import compute_dtype as _compute, variable_dtype as _param

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # else float64 silently runs as float32

import jax.numpy as jnp  # noqa: E402
from flax import linen, nnx  # noqa: E402

_DTYPES = {"float64": jnp.float64, "float32": jnp.float32, "float16": jnp.float16, "bfloat16": jnp.bfloat16}


def _dtype_kw(dtype: str) -> dict[str, Any]:
    return dict(dtype=_DTYPES[_compute(dtype)], param_dtype=_DTYPES[_param(dtype)])


def _layout(array: Any, what: str, spec: LayerSpec, to_flax: bool) -> Any:
    """Flax layouts are the canonical ones: nothing to convert for activations, kernels or biases."""
    return array


def _device(device: str) -> Any:
    return jax.devices("gpu" if device == "gpu" else "cpu")[0]


def _array(array: np.ndarray, dtype: str, device: str) -> Any:
    # rounded on the host: an eager jnp cast would compile a program for every new shape
    return jax.device_put(np.asarray(array).astype(numpy_dtype(dtype)), _device(device))


def _numpy(array: Any, dtype: str) -> np.ndarray:
    return canonical(np.asarray(array).astype(np.float64), dtype)


def _flax_border_pairs(spec: LayerSpec) -> tuple[tuple[int, int], ...]:
    """What Flax's 'CIRCULAR'/'REFLECT' pad: ((k_d - 1) // 2, k_d // 2) of the dilated kernel, any stride."""
    return tuple((((k - 1) * d) // 2, ((k - 1) * d + 1) // 2) for k, d in zip(spec.kernel_size, spec.dilation))


def _padding(spec: LayerSpec) -> Any:
    if spec.padding_mode in ("circular", "reflect"):
        return spec.padding_mode.upper()
    if spec.padding in ("same", "valid", "causal"):
        return spec.padding.upper()
    return [tuple(pair) for pair in spec.padding]


def _border_reason(spec: LayerSpec) -> str | None:
    if spec.kind != "conv" or spec.padding_mode == "zeros":
        return None
    if spec.padding_mode == "replicate":
        return "Flax has no replicate (edge) padding"
    same_stride1 = spec.padding == "same" and all(s == 1 for s in spec.strides)
    if not same_stride1 and spec.padding != _flax_border_pairs(spec):
        return (f"Flax '{spec.padding_mode.upper()}' always pads {_flax_border_pairs(spec)}; "
                f"this layer asks for {spec.padding}")
    return None


def _gpu_devices() -> list[Any]:
    try:
        return jax.devices("gpu")
    except RuntimeError:  # no GPU backend in this jaxlib
        return []


class _FlaxAdapter(Adapter):
    distributions = ("flax", "jax", "jaxlib")
    policies = tuple(POLICY_COMPUTE)  # float32 params, half-precision compute (dtype=, param_dtype=)

    def _supports(self, spec: LayerSpec, dtype: str, device: str) -> str | None:
        return _border_reason(spec)

    def devices(self) -> list[str]:
        return ["cpu", "gpu"] if _gpu_devices() else ["cpu"]

    def set_numerics(self, mode: str) -> None:
        if mode == "strict":
            jax.config.update("jax_default_matmul_precision", "highest")

    def declared_roundoff(self, spec: LayerSpec, dtype: str, device: str) -> str | None:
        from .precision import jax_declared

        return jax_declared(spec, dtype, device)

    def environment(self) -> dict[str, Any]:
        devices = [str(d) for d in jax.devices("cpu")] + [str(d) for d in _gpu_devices()]
        modes = {"jax_default_matmul_precision": str(jax.config.jax_default_matmul_precision),
                 "jax_enable_x64": bool(jax.config.jax_enable_x64),
                 "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "flax.execution": "jax.jit",
                 "jax.persistent_compilation_cache": "on" if jax.config.jax_compilation_cache_dir else "off"}
        return {"devices": devices, "numeric_modes": modes}


@functools.lru_cache(maxsize=512)
def _linen_program(spec: LayerSpec, dtype: str) -> tuple[Any, Any]:
    """jax.jit-compiled apply and VJP of one linen layer geometry (XLA compiles once per input shape).

    Flax layers run under jax.jit as they do in training: eager op-by-op dispatch compiles every
    primitive for every new shape, about six times the cost of one jit compile of the whole layer.
    """
    module = LINEN._module(spec, dtype)

    def apply(x: Any, params: dict[str, Any]) -> Any:
        return module.apply({"params": params}, x)

    def vjp(x: Any, params: dict[str, Any], cotangent: Any) -> Any:
        _, pullback = jax.vjp(apply, x, params)
        dx, dparams = pullback(cotangent)
        return dx, [dparams[k] for k in _param_names(spec)]

    return jax.jit(apply), jax.jit(vjp)


def _param_names(spec: LayerSpec) -> list[str]:
    """The order of the parameter gradients a VJP program returns (linen's and nnx's alike).

    Both return plain lists rather than their own pytrees: the programs then lower to the same
    module (result names included), so JAX's compilation cache compiles one program for the two APIs.
    """
    return ["kernel", "bias"] if spec.bias else ["kernel"]


def _check_compute(layer: Layer, apply: Any, y: Any, *args: Any) -> None:
    """The output in the compute dtype; under a mixed policy also the matmul/convolution operands
    (once per geometry and input shape, from the jitted program's jaxpr)."""
    check_output(layer, y.dtype)
    if layer.dtype in POLICY_COMPUTE and first_time(layer.adapter.name, layer.spec, layer.dtype, args[0].shape):
        check_operands(layer, jax_operand_dtypes(apply, *args), "in the jaxpr of the jitted call")


def clear_programs() -> None:
    """Forget the compiled layers (after patching jax.lax, e.g. to inject a fault, in a live process)."""
    _linen_program.cache_clear()
    _nnx_program.cache_clear()
    jax.clear_caches()


class LinenLayer(Layer):
    def _forward(self, x: np.ndarray) -> np.ndarray:
        apply, _ = _linen_program(self.spec, self.dtype)
        xa = _array(_layout(x, "x", self.spec, True), _compute(self.dtype), self.device)
        y = apply(xa, self._params_dict)
        _check_compute(self, apply, y, xa, self._params_dict)
        return _numpy(_layout(y, "x", self.spec, False), self.dtype)

    def _vjp(self, x: np.ndarray, cotangent: np.ndarray) -> tuple[np.ndarray, Weights]:
        _, vjp = _linen_program(self.spec, self.dtype)
        dx, dparams = vjp(_array(x, _compute(self.dtype), self.device), self._params_dict,
                          _array(cotangent, _compute(self.dtype), self.device))
        # gradients of float32 parameters stay float32 under a mixed policy
        return _numpy(dx, self.dtype), {k: _numpy(v, _param(self.dtype))
                                        for k, v in zip(_param_names(self.spec), dparams)}

    def weights(self) -> Weights:
        return {k: _numpy(_layout(v, k, self.spec, False), self.dtype) for k, v in self._params_dict.items()}


class LinenAdapter(_FlaxAdapter):
    name = "flax.linen"
    classes = {("dense", 0): "Dense", ("conv", 1): "Conv", ("conv", 2): "Conv"}

    def _module(self, spec: LayerSpec, dtype: str) -> linen.Module:
        kw = dict(use_bias=spec.bias, **_dtype_kw(dtype))
        if spec.kind == "dense":
            return linen.Dense(spec.out_features, **kw)
        return linen.Conv(spec.out_features, spec.kernel_size, strides=spec.strides, padding=_padding(spec),
                          kernel_dilation=spec.dilation, feature_group_count=spec.groups, **kw)

    def _wrap(self, spec: LayerSpec, dtype: str, device: str, params: dict[str, Any]) -> LinenLayer:
        layer = LinenLayer(self, spec, dtype, device, self._module(spec, dtype))
        layer._params_dict = params
        return layer

    def _build(self, spec: LayerSpec, weights: Weights, dtype: str, device: str) -> Layer:
        params = {k: _array(_layout(v, k, spec, True), _param(dtype), device) for k, v in weights.items()}
        return self._wrap(spec, dtype, device, params)

    def default_weights(self, spec: LayerSpec, seed: int) -> Weights:
        shape = (1, spec.in_features) if spec.kind == "dense" else (1, *(k for k in spec.kernel_size), spec.in_features)
        params = self._module(spec, "float32").init(jax.random.key(seed), jnp.zeros(shape, jnp.float32))["params"]
        return self._wrap(spec, "float32", "cpu", dict(params)).weights()


@functools.lru_cache(maxsize=512)
def _nnx_program(spec: LayerSpec, dtype: str) -> tuple[Any, Any, Any, Any]:
    """(graph, parameter template, jitted apply, jitted VJP) of one nnx layer geometry.

    The module is constructed once per geometry (its zero initializers are eager JAX ops, compiled
    per shape); layers are its graph merged with their own parameter arrays.
    """
    # abstract: shapes and dtypes only (running the initializers would compile them per shape)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: NNX._module(spec, dtype, 0, initialize=False)))

    def apply(x: Any, params: Any) -> Any:
        return nnx.merge(graphdef, params)(x)

    def vjp(x: Any, params: Any, cotangent: Any) -> Any:
        _, pullback = jax.vjp(apply, x, params)
        dx, dstate = pullback(cotangent)
        return dx, [_value(dstate[k]) for k in _param_names(spec)]

    return graphdef, state, jax.jit(apply), jax.jit(vjp)


class NnxLayer(Layer):
    def _state(self) -> Any:
        return nnx.split(self.native)[1]

    def _forward(self, x: np.ndarray) -> np.ndarray:
        apply = _nnx_program(self.spec, self.dtype)[2]
        xa, state = _array(_layout(x, "x", self.spec, True), _compute(self.dtype), self.device), self._state()
        y = apply(xa, state)
        _check_compute(self, apply, y, xa, state)
        return _numpy(_layout(y, "x", self.spec, False), self.dtype)

    def _vjp(self, x: np.ndarray, cotangent: np.ndarray) -> tuple[np.ndarray, Weights]:
        vjp = _nnx_program(self.spec, self.dtype)[3]
        dx, dparams = vjp(_array(x, _compute(self.dtype), self.device), self._state(),
                          _array(cotangent, _compute(self.dtype), self.device))
        grads = {k: _numpy(_layout(g, k, self.spec, False), _param(self.dtype))
                 for k, g in zip(_param_names(self.spec), dparams)}
        return _numpy(dx, self.dtype), grads

    def weights(self) -> Weights:
        return {k: _numpy(_layout(getattr(self.native, k).get_value(), k, self.spec, False), self.dtype)
                for k in _param_names(self.spec)}


def _value(leaf: Any) -> Any:
    """The array of a state leaf (a Variable, or already an array, depending on the Flax version)."""
    return leaf.get_value() if hasattr(leaf, "get_value") else getattr(leaf, "value", leaf)


class NnxAdapter(_FlaxAdapter):
    name = "flax.nnx"
    classes = {("dense", 0): "Linear", ("conv", 1): "Conv", ("conv", 2): "Conv"}

    def _module(self, spec: LayerSpec, dtype: str, seed: int, initialize: bool = True) -> nnx.Module:
        kw = dict(use_bias=spec.bias, **_dtype_kw(dtype), rngs=nnx.Rngs(seed))
        if not initialize:  # the weights are overwritten at once: skip the random draw (a JAX compile per shape)
            kw.update(kernel_init=nnx.initializers.zeros_init(), bias_init=nnx.initializers.zeros_init())
        if spec.kind == "dense":
            return nnx.Linear(spec.in_features, spec.out_features, **kw)
        return nnx.Conv(spec.in_features, spec.out_features, spec.kernel_size, strides=spec.strides,
                        padding=_padding(spec), kernel_dilation=spec.dilation, feature_group_count=spec.groups, **kw)

    def _build(self, spec: LayerSpec, weights: Weights, dtype: str, device: str) -> Layer:
        graphdef, template = _nnx_program(spec, dtype)[:2]
        module = nnx.merge(graphdef, template, copy=True)  # its own Variables: the arrays are replaced below
        for name, value in weights.items():
            getattr(module, name).set_value(_array(_layout(value, name, spec, True), _param(dtype), device))
        return NnxLayer(self, spec, dtype, device, module)

    def default_weights(self, spec: LayerSpec, seed: int) -> Weights:
        return NnxLayer(self, spec, "float32", "cpu", self._module(spec, "float32", seed)).weights()


LINEN = LinenAdapter()
NNX = NnxAdapter()
