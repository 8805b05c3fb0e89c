"""Read a live framework layer (a user's own object) into this project's terms: `read_native`.

The inverse of the adapters' build: a torch, Keras or Flax layer object becomes a `LayerSpec`,
canonical weights (``(in, out)`` dense kernels, ``(*spatial, in/groups, out)`` conv kernels) and a
dtype name, so that two live layers can be compared with this project's machinery.

The framework is recognised from the module names of the object's class (no import needed), and
only that framework is imported afterwards: reading a torch layer never imports TensorFlow or jax.

Padding reads back as the `LayerSpec` padding the project's adapter would have been given to build
the same native object. Where several specs build the same object, one is chosen: no padding at
all reads as ``"valid"`` with ``padding_mode="zeros"`` (the border mode of an unpadded layer is
irrelevant), and Flax ``'CIRCULAR'``/``'REFLECT'`` read as ``"same"`` when every stride is 1 and as
the (low, high) pairs Flax pads otherwise. Padding an adapter applies outside the native object
(torch asymmetric pairs, causal or strided "same"; Keras explicit pairs) is not part of that
object, which then computes, and reads as, a ``"valid"`` convolution.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from .spec import DTYPES, POLICY_COMPUTE, LayerSpec, SpecError, Weights, check_weights, numpy_dtype, \
    variable_dtype

__all__ = ["NativeLayer", "read_native", "framework_of", "SUPPORTED"]

SUPPORTED = ("torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d; keras.layers.Dense, Conv1D, Conv2D (built, "
             "data_format='channels_last'); flax.linen.Dense, flax.linen.Conv (with params=variables); "
             "flax.nnx.Linear, flax.nnx.Conv")


@dataclass(frozen=True, eq=False)
class NativeLayer:
    """A framework layer read into this project's terms.

    `weights` are canonical-layout NumPy arrays in the dtype of the layer's parameters (float32
    under a mixed policy); `dtype` is one of `spec.DTYPES`.
    """

    framework: str  # one of adapters.FRAMEWORKS
    spec: LayerSpec
    weights: Weights = field(repr=False)
    dtype: str
    description: str  # the layer as its framework would construct it, e.g. "torch.nn.Conv1d(4, 8, ...)"


def framework_of(layer: Any) -> str | None:
    """"torch", "keras", "flax.linen" or "flax.nnx" from the modules of the layer's classes; None if none."""
    for cls in type(layer).__mro__:
        module = getattr(cls, "__module__", "") or ""
        root = module.split(".")[0]
        if root in ("torch", "keras"):
            return root
        for framework in ("flax.linen", "flax.nnx"):
            if module == framework or module.startswith(framework + "."):
                return framework
    return None


def read_native(layer: Any, params: Mapping[str, Any] | None = None) -> NativeLayer:
    """Read a live torch, Keras 3 or Flax dense/conv layer into spec, canonical weights and dtype.

    `params` is for flax.linen only (its modules hold no weights): the variables from `init`,
    ``{"params": {"kernel": ..., "bias": ...}}``, or the inner ``{"kernel": ..., "bias": ...}``.
    Raises SpecError naming the object's type, what is supported and how to fix it, for anything
    this project cannot represent (other classes, unbuilt Keras layers, activations, masks, ...).
    """
    framework = framework_of(layer)
    if framework is None:
        from .base import Layer

        hint = ("it is already this project's layer: its spec is .spec and its weights .weights(); pass its "
                ".native to read the framework object" if isinstance(layer, Layer) else
                "pass one of those framework objects")
        raise _refusal(layer, "it is not a layer of a supported framework", hint)
    if framework == "flax.linen":
        return _read_linen(layer, params)
    if params is not None:
        raise _refusal(layer, f"params= is for flax.linen modules only; {framework} layers hold their own weights",
                       "call read_native(layer) without params")
    return _READERS[framework](layer)


# ---- shared helpers ---------------------------------------------------------------------------

def _type_name(layer: Any) -> str:
    return f"{type(layer).__module__}.{type(layer).__qualname__}"


def _refusal(layer: Any, why: str, fix: str) -> SpecError:
    return SpecError(f"read_native cannot read a {_type_name(layer)}: {why}. Supported: {SUPPORTED}. Fix: {fix}.")


def _exact_class(layer: Any, classes: Mapping[type, str], framework: str) -> str:
    """The class name when `layer` is exactly one of `classes` (a subclass may compute something else)."""
    name = classes.get(type(layer))
    if name is None:
        subclass = any(isinstance(layer, cls) for cls in classes)
        why = (f"it is a subclass of a supported {framework} class, and a subclass may compute something else"
               if subclass else f"it is not one of the {framework} layers this project compares")
        raise _refusal(layer, why, f"pass a plain {', '.join(classes.values())} of {framework}")
    return name


def _host(array: Any, dtype: str) -> np.ndarray:
    """A canonical NumPy copy in the parameter dtype of `dtype` (float64 on the way holds every value)."""
    return np.asarray(array, dtype=np.float64).astype(numpy_dtype(variable_dtype(dtype)))


def _tuple(value: Any, rank: int) -> tuple[int, ...]:
    """An int, None (meaning 1) or a sequence, as `rank` ints (the broadcasting Flax does)."""
    if value is None:
        value = 1
    return (int(value),) * rank if isinstance(value, (int, np.integer)) else tuple(int(v) for v in value)


def _conv_spec(in_features: int, out_features: int, kernel_size: tuple[int, ...], *, strides: Any, padding: Any,
               dilation: Any, groups: int, bias: bool, padding_mode: str = "zeros") -> LayerSpec:
    """LayerSpec.conv with the read-back normal form: no padding at all is "valid" with zeros."""
    spec = LayerSpec.conv(in_features, out_features, kernel_size, rank=len(kernel_size), strides=strides,
                          padding=padding, dilation=dilation, groups=groups, bias=bias, padding_mode=padding_mode)
    if not isinstance(spec.padding, str) and not any(lo or hi for lo, hi in spec.padding):
        spec = spec.with_(padding="valid")
    return spec.with_(padding_mode="zeros") if spec.padding == "valid" else spec


def _finish(framework: str, spec: LayerSpec, weights: Weights, dtype: str, description: str) -> NativeLayer:
    check_weights(spec, weights)
    return NativeLayer(framework, spec, weights, dtype, description)


def _call_text(name: str, args: list[Any], kwargs: Mapping[str, Any]) -> str:
    return f"{name}({', '.join([repr(a) for a in args] + [f'{k}={v!r}' for k, v in kwargs.items()])})"


# ---- torch -------------------------------------------------------------------------------------

def _read_torch(layer: Any) -> NativeLayer:
    """torch.nn.Linear (weight (out, in)) and Conv1d/Conv2d (weight (out, in/groups, *k)), channels-first."""
    import torch

    name = _exact_class(layer, {torch.nn.Linear: "Linear", torch.nn.Conv1d: "Conv1d", torch.nn.Conv2d: "Conv2d"},
                        "torch")
    if layer._forward_hooks or layer._forward_pre_hooks:
        raise _refusal(layer, "it has forward hooks, which may change what it computes",
                       "remove the hooks (or read a copy of the layer without them)")
    weight, bias = layer.weight, layer.bias
    if weight.is_meta:
        raise _refusal(layer, "its weights are on the meta device and hold no values",
                       "materialise them first, e.g. layer.to_empty(device='cpu') and load a state dict")
    dtype = str(weight.dtype).removeprefix("torch.")
    if dtype not in DTYPES or (bias is not None and bias.dtype != weight.dtype):
        mixed = bias is not None and bias.dtype != weight.dtype
        raise _refusal(layer, f"its weight is {weight.dtype}{f' and its bias {bias.dtype}' if mixed else ''}",
                       "convert it, e.g. layer.to(torch.float32) (float64, float16 and bfloat16 are read too)")

    def host(tensor: Any) -> np.ndarray:
        return _host(tensor.detach().to("cpu", torch.float64).numpy(), dtype)

    if name == "Linear":
        spec = LayerSpec.dense(layer.in_features, layer.out_features, bias=bias is not None)
        kernel = host(weight).T
    else:
        rank = len(layer.kernel_size)
        padding = layer.padding  # "same", "valid" or a tuple of ints per spatial axis
        spec = _conv_spec(layer.in_channels, layer.out_channels, tuple(layer.kernel_size), strides=layer.stride,
                          padding=padding, dilation=layer.dilation, groups=layer.groups, bias=bias is not None,
                          padding_mode=layer.padding_mode)
        kernel = np.transpose(host(weight), (*range(2, rank + 2), 1, 0))  # (out, in/g, *k) -> (*k, in/g, out)
    weights = {"kernel": np.ascontiguousarray(kernel)}
    if bias is not None:
        weights["bias"] = host(bias)
    return _finish("torch", spec, weights, dtype, f"torch.nn.{layer!r}")


# ---- Keras 3 -----------------------------------------------------------------------------------

def _read_keras(layer: Any) -> NativeLayer:
    """keras.layers.Dense / Conv1D / Conv2D: canonical layouts already; built and channels_last only."""
    import keras

    name = _exact_class(layer, {keras.layers.Dense: "Dense", keras.layers.Conv1D: "Conv1D",
                                keras.layers.Conv2D: "Conv2D"}, "keras")
    if not layer.built:
        raise _refusal(layer, "it is not built, so it has no weights yet",
                       "build it first: layer.build(input_shape), or call it once on an input")
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise _refusal(layer, f"it has data_format={layer.data_format!r}, and this project's layers are "
                              "channels-last", "construct it with data_format='channels_last'")
    if layer.activation is not keras.activations.linear:
        raise _refusal(layer, f"it applies activation={getattr(layer.activation, '__name__', layer.activation)!r} "
                              "after the affine map", "construct it with activation=None")
    if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
        raise _refusal(layer, "it is quantized or has LoRA enabled", "read the float layer before quantize() / "
                                                                     "enable_lora()")
    dtype = layer.dtype_policy.name
    if dtype not in DTYPES:
        raise _refusal(layer, f"its dtype policy {dtype!r} is not one of {', '.join(DTYPES)}",
                       "construct it with one of those as dtype=")
    wide = "float64" if variable_dtype(dtype) == "float64" else "float32"  # exact for every variable dtype

    def host(variable: Any) -> np.ndarray:
        return _host(keras.ops.convert_to_numpy(keras.ops.cast(variable, wide)), dtype)

    kernel = host(layer.kernel)
    if name == "Dense":
        spec = LayerSpec.dense(kernel.shape[0], layer.units, bias=layer.use_bias)
        args, kwargs = [layer.units], {}
    else:
        spec = _conv_spec(kernel.shape[-2] * layer.groups, layer.filters, tuple(layer.kernel_size),
                          strides=layer.strides, padding=layer.padding, dilation=layer.dilation_rate,
                          groups=layer.groups, bias=layer.use_bias)
        args = [layer.filters, tuple(layer.kernel_size)]
        kwargs = {k: v for k, v in (("strides", tuple(layer.strides)), ("padding", layer.padding),
                                    ("dilation_rate", tuple(layer.dilation_rate)), ("groups", layer.groups))
                  if v not in ((1,) * spec.rank, "valid", 1)}
    if not layer.use_bias:
        kwargs["use_bias"] = False
    if dtype != "float32":
        kwargs["dtype"] = dtype
    weights = {"kernel": kernel}
    if layer.use_bias:
        weights["bias"] = host(layer.bias)
    return _finish("keras", spec, weights, dtype, _call_text(f"keras.layers.{name}", args, kwargs))


# ---- Flax (linen and nnx) ----------------------------------------------------------------------

def _flax_dtype(layer: Any, param_dtype: Any, compute_dtype: Any) -> str:
    """The project's dtype for parameters in `param_dtype` computing in `compute_dtype` (None: promoted
    from the inputs and parameters, i.e. the parameters' dtype for inputs of that dtype)."""
    param = np.dtype(param_dtype).name
    compute = param if compute_dtype is None else np.dtype(compute_dtype).name
    if param == compute and param in DTYPES:
        return param
    for policy, half in POLICY_COMPUTE.items():
        if (param, compute) == ("float32", half):
            return policy
    raise _refusal(layer, f"it has float parameters in {param} and computes in {compute}, which matches none of "
                          f"{', '.join(DTYPES)}", "use equal dtype and param_dtype, or param_dtype=float32 with "
                                                  "dtype float16/bfloat16 (mixed precision)")


def _flax_padding(layer: Any, padding: Any, kernel_size: tuple[int, ...], strides: tuple[int, ...],
                  dilation: tuple[int, ...]) -> tuple[Any, str]:
    """(LayerSpec padding, padding_mode) for a Flax padding: a string, an int or per-axis ints/pairs."""
    if not isinstance(padding, str):
        return padding, "zeros"  # an int or per-axis ints or (low, high) pairs: LayerSpec.conv normalises them
    if padding.upper() in ("SAME", "VALID"):  # lax upper-cases these itself
        return padding.lower(), "zeros"
    if padding == "CAUSAL":
        return "causal", "zeros"
    if padding in ("CIRCULAR", "REFLECT"):  # Flax pads ((k_d - 1) // 2, k_d // 2) of the dilated kernel
        if all(s == 1 for s in strides):
            return "same", padding.lower()
        pairs = tuple((((k - 1) * d) // 2, ((k - 1) * d + 1) // 2) for k, d in zip(kernel_size, dilation))
        return pairs, padding.lower()
    raise _refusal(layer, f"padding={padding!r} has no LayerSpec counterpart",
                   "use 'SAME', 'VALID', 'CAUSAL', 'CIRCULAR', 'REFLECT', an int or (low, high) pairs")


def _flax_plain(layer: Any, defaults: Mapping[str, Callable[[Any], bool]]) -> None:
    """Refuse a Flax layer whose options change what it computes beyond a LayerSpec (mask, input dilation...)."""
    for attribute, is_plain in defaults.items():
        value = getattr(layer, attribute, None)
        if not is_plain(value):
            shown = f"<array of shape {tuple(value.shape)}>" if hasattr(value, "shape") else repr(value)
            raise _refusal(layer, f"it has {attribute}={shown}, which changes what it computes beyond a plain "
                                  f"dense/convolution layer", f"construct it without {attribute}")


def _flax_conv_spec(layer: Any, kernel_shape: tuple[int, ...], out_features: int, bias: bool) -> LayerSpec:
    rank = len(kernel_shape) - 2
    kernel_size = tuple(int(k) for k in kernel_shape[:rank])
    strides, dilation = _tuple(layer.strides, rank), _tuple(layer.kernel_dilation, rank)
    padding, mode = _flax_padding(layer, layer.padding, kernel_size, strides, dilation)
    groups = int(layer.feature_group_count)
    return _conv_spec(int(kernel_shape[-2]) * groups, out_features, kernel_size, strides=strides, padding=padding,
                      dilation=dilation, groups=groups, bias=bias, padding_mode=mode)


def _flax_kwargs(layer: Any, rank: int) -> dict[str, Any]:
    """The constructor keywords of a Flax Dense/Linear/Conv that differ from their defaults."""
    kwargs: dict[str, Any] = {}
    if rank:
        for key in ("strides", "padding", "kernel_dilation", "feature_group_count"):
            value = getattr(layer, key)
            if key in ("strides", "kernel_dilation"):
                value = _tuple(value, rank)
                if all(v == 1 for v in value):
                    continue
            elif value == {"padding": "SAME", "feature_group_count": 1}[key]:
                continue
            kwargs[key] = value
    if not layer.use_bias:
        kwargs["use_bias"] = False
    if layer.dtype is not None:
        kwargs["dtype"] = np.dtype(layer.dtype).name
    if np.dtype(layer.param_dtype).name != "float32":
        kwargs["param_dtype"] = np.dtype(layer.param_dtype).name
    return kwargs


def _flax_defaults(conv: bool, nnx: bool) -> dict[str, Callable[[Any], bool]]:
    """attribute -> whether its value keeps the layer a plain dense/convolution layer."""
    import jax

    op = "conv_general_dilated" if conv else "dot_general"  # replaceable by quantized or custom ops
    checks: dict[str, Callable[[Any], bool]] = {}
    if conv:
        checks["mask"] = lambda v: v is None
        checks["input_dilation"] = lambda v: v is None or all(d == 1 for d in np.atleast_1d(v))
    if nnx:
        checks[op] = lambda v: v is None or v is getattr(jax.lax, op)
        checks["preferred_element_type"] = lambda v: v is None
    else:  # linen: None means jax.lax's own
        checks[op] = checks[op + "_cls"] = lambda v: v is None
    return checks


def _read_linen(layer: Any, params: Mapping[str, Any] | None) -> NativeLayer:
    """flax.linen.Dense / Conv with their variables (linen modules are stateless descriptions)."""
    from flax import linen

    name = _exact_class(layer, {linen.Dense: "Dense", linen.Conv: "Conv"}, "flax.linen")
    if params is None and getattr(layer, "scope", None) is not None:  # a bound module carries its variables
        params = layer.variables
    if params is None:
        raise _refusal(layer, "flax.linen modules hold no weights",
                       "pass the variables from init as well: read_native(module, params=variables)")
    inner = params.get("params", params) if isinstance(params, Mapping) else None
    keys = set(inner) if isinstance(inner, Mapping) else None
    if keys not in ({"kernel"}, {"kernel", "bias"}) or ("bias" in keys) != bool(layer.use_bias):
        raise _refusal(layer, f"params must be {{'params': {{'kernel': ..., 'bias': ...}}}} or the inner dict, "
                              f"with a bias exactly when use_bias=True (use_bias={layer.use_bias}); received "
                              f"{'keys ' + repr(sorted(keys)) if keys is not None else type(params).__name__}",
                       "pass the variables init returned for this module")
    _flax_plain(layer, _flax_defaults(name == "Conv", nnx=False))
    kernel_array = inner["kernel"]
    bias_array = inner.get("bias", kernel_array)
    if not (hasattr(kernel_array, "dtype") and hasattr(bias_array, "dtype")) or bias_array.dtype != kernel_array.dtype:
        raise _refusal(layer, "params' kernel and bias must be arrays of one dtype; received "
                              f"{getattr(kernel_array, 'dtype', type(kernel_array).__name__)} and "
                              f"{getattr(bias_array, 'dtype', type(bias_array).__name__)}",
                       "pass the variables init returned for this module")
    dtype = _flax_dtype(layer, kernel_array.dtype, layer.dtype)
    kernel = _host(kernel_array, dtype)
    if name == "Dense":
        if kernel.ndim != 2:
            raise _refusal(layer, f"its kernel has shape {kernel.shape}, not (in, out)", "pass this module's params")
        spec = LayerSpec.dense(kernel.shape[0], int(layer.features), bias=layer.use_bias)
        text = _call_text("flax.linen.Dense", [int(layer.features)], _flax_kwargs(layer, 0))
    else:
        expected = _tuple(layer.kernel_size, 1 if isinstance(layer.kernel_size, int) else len(layer.kernel_size))
        if kernel.shape[:-2] != expected:
            raise _refusal(layer, f"its kernel has shape {kernel.shape}, not ({expected}, in/groups, out)",
                           "pass this module's params")
        spec = _flax_conv_spec(layer, kernel.shape, int(layer.features), layer.use_bias)
        text = _call_text("flax.linen.Conv", [int(layer.features), expected], _flax_kwargs(layer, spec.rank))
    weights = {"kernel": kernel}
    if layer.use_bias:
        weights["bias"] = _host(bias_array, dtype)
    return _finish("flax.linen", spec, weights, dtype, text)


def _nnx_value(variable: Any) -> Any:
    """The array of an nnx Variable (get_value in newer Flax, .value in older)."""
    return variable.get_value() if hasattr(variable, "get_value") else variable.value


def _read_nnx(layer: Any) -> NativeLayer:
    """flax.nnx.Linear / Conv: stateful modules holding kernel and bias Params."""
    from flax import nnx

    name = _exact_class(layer, {nnx.Linear: "Linear", nnx.Conv: "Conv"}, "flax.nnx")
    _flax_plain(layer, _flax_defaults(name == "Conv", nnx=True))
    kernel_array = _nnx_value(layer.kernel)
    bias = layer.bias is not None
    dtype = _flax_dtype(layer, kernel_array.dtype, layer.dtype)
    kernel = _host(kernel_array, dtype)
    if name == "Linear":
        spec = LayerSpec.dense(int(layer.in_features), int(layer.out_features), bias=bias)
        text = _call_text("flax.nnx.Linear", [spec.in_features, spec.out_features], _flax_kwargs(layer, 0))
    else:
        spec = _flax_conv_spec(layer, kernel.shape, int(layer.out_features), bias)
        text = _call_text("flax.nnx.Conv", [spec.in_features, spec.out_features, spec.kernel_size],
                          _flax_kwargs(layer, spec.rank))
    weights = {"kernel": kernel}
    if bias:
        weights["bias"] = _host(_nnx_value(layer.bias), dtype)
    return _finish("flax.nnx", spec, weights, dtype, text)


_READERS: dict[str, Callable[[Any], NativeLayer]] = {"torch": _read_torch, "keras": _read_keras,
                                                    "flax.nnx": _read_nnx}
