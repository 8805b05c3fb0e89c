"""Framework adapters behind one protocol, the float64 reference, and `convert`.

Frameworks are imported lazily, on first use of their adapter: importing `adapters` is cheap,
and a framework that is missing or broken only disables its own adapter (with the reason).
"""
from __future__ import annotations

import importlib

from .base import Adapter, Layer, UnavailableAdapter, forget_built_layers
from .spec import DTYPES, LayerSpec, SpecError, Weights

# framework name -> (module, attribute, extra that installs it, class names)
_REGISTRY: dict[str, tuple[str, str, str, dict[tuple[str, int], str]]] = {
    "torch": ("layer_conformance.adapters.torch", "ADAPTER", "torch",
              {("dense", 0): "Linear", ("conv", 1): "Conv1d", ("conv", 2): "Conv2d"}),
    "keras": ("layer_conformance.adapters.keras", "ADAPTER", "tensorflow",
              {("dense", 0): "Dense", ("conv", 1): "Conv1D", ("conv", 2): "Conv2D"}),
    "flax.linen": ("layer_conformance.adapters.flax", "LINEN", "jax",
                   {("dense", 0): "Dense", ("conv", 1): "Conv", ("conv", 2): "Conv"}),
    "flax.nnx": ("layer_conformance.adapters.flax", "NNX", "jax",
                 {("dense", 0): "Linear", ("conv", 1): "Conv", ("conv", 2): "Conv"}),
}
FRAMEWORKS = tuple(_REGISTRY)
_CACHE: dict[str, Adapter] = {}

__all__ = ["Adapter", "Layer", "LayerSpec", "SpecError", "Weights", "DTYPES", "FRAMEWORKS",
           "get_adapter", "class_name", "clear_programs", "convert", "keras_backend"]


def get_adapter(framework: str) -> Adapter:
    """The adapter for a framework; an UnavailableAdapter (with the reason) if it cannot be imported."""
    if framework not in _REGISTRY:
        raise SpecError(f"Unknown framework {framework!r}; expected one of {', '.join(FRAMEWORKS)}.")
    if framework not in _CACHE:
        module_name, attribute, extra, classes = _REGISTRY[framework]
        try:
            _CACHE[framework] = getattr(importlib.import_module(module_name), attribute)
        except ImportError as exc:
            reason = (f"{framework} is not installed or fails to import ({exc.__class__.__name__}: {exc}); "
                      f"install it with: pip install 'layer-conformance[{extra}]'")
            _CACHE[framework] = UnavailableAdapter(framework, reason, classes)
    return _CACHE[framework]


def keras_backend() -> str | None:
    """The backend Keras runs on in this process (importing Keras), or None when Keras cannot be imported."""
    try:
        from layer_conformance.adapters.keras import BACKEND
    except ImportError:
        return None
    return BACKEND


def clear_programs() -> None:
    """Drop every compiled layer program (Flax, Keras on jax) of the frameworks imported so far.

    Programs trace the framework's ops once per geometry; after monkeypatching those ops in a live
    process (a fault injected by layer_conformance.mutation.plugin) they must be traced again. Built layers kept
    for reuse go too.
    """
    import sys

    forget_built_layers()
    for module_name in ("layer_conformance.adapters.flax", "layer_conformance.adapters.keras"):
        module = sys.modules.get(module_name)
        if module is not None:
            module.clear_programs()


def class_name(framework: str, spec: LayerSpec) -> str:
    """`Linear`, `Conv1D`, ... without importing the framework."""
    return _REGISTRY[framework][3][(spec.kind, spec.rank)]


def _parse_target(to: str) -> tuple[str, str | None]:
    for framework in sorted(FRAMEWORKS, key=len, reverse=True):
        if to == framework:
            return framework, None
        if to.startswith(framework + "."):
            return framework, to[len(framework) + 1:]
    raise SpecError(f"Invalid value for argument `to`: {to!r}. Expected a framework ({', '.join(FRAMEWORKS)}) "
                    f"or a variant such as 'torch.Conv1d', 'keras.Dense', 'flax.linen.Conv', 'flax.nnx.Linear'.")


def _retarget(spec: LayerSpec, weights: Weights, framework: str, cls: str,
              rank: int | None) -> tuple[LayerSpec, Weights]:
    """Map a layer onto another layer class computing the same function on suitably shaped input."""
    classes = _REGISTRY[framework][3]
    matches = [key for key, name in classes.items() if name == cls]
    if not matches:
        raise SpecError(f"{framework} has no layer class {cls!r}; it has {', '.join(sorted(set(classes.values())))}.")
    kinds = {key[0] for key in matches}
    kind = spec.kind if spec.kind in kinds else kinds.pop()
    target_rank = rank if rank is not None else (spec.rank if (kind, spec.rank) in matches else
                                                 min(r for k, r in matches if k == kind))
    if (kind, target_rank) not in matches:
        raise SpecError(f"{framework}.{cls} has no {target_rank}-D form.")
    if (kind, target_rank) == (spec.kind, spec.rank):
        return spec, weights
    kernel = weights["kernel"]
    if kind == "conv":  # dense or conv -> 1x..x1 conv: the pointwise form
        pointwise = spec if spec.kind == "dense" else _pointwise_dense(spec)
        new = LayerSpec.conv(pointwise.in_features, pointwise.out_features, (1,) * target_rank, bias=spec.bias)
        kernel = kernel.reshape(new.kernel_shape())
    else:
        new = _pointwise_dense(spec)
        kernel = kernel.reshape(new.kernel_shape())
    return new, {**weights, "kernel": kernel}


def _pointwise_dense(spec: LayerSpec) -> LayerSpec:
    if spec.kind == "dense":
        return spec
    if any(k != 1 for k in spec.kernel_size) or spec.groups != 1 or any(s != 1 for s in spec.strides) \
            or spec.padding not in ("valid", "same") and any(lo or hi for lo, hi in spec.padding):
        raise SpecError(f"Only a pointwise convolution (kernel 1, stride 1, no padding, groups 1) is a dense layer; "
                        f"{spec.describe()} is not. Convert it to another convolution instead.")
    return LayerSpec.dense(spec.in_features, spec.out_features, bias=spec.bias)


def convert(layer: Layer, to: str, *, dtype: str | None = None, device: str | None = None,
            rank: int | None = None) -> Layer:
    """Move a live layer to another framework and/or layer class, with its weights.

    `to` is a framework ("torch", "keras", "flax.linen", "flax.nnx") keeping the layer kind, or a
    variant ("torch.Conv1d", "keras.Dense", "flax.nnx.Conv"; `rank` picks 1-D or 2-D for Flax `Conv`).
    Dense <-> pointwise convolution is exact; the caller reshapes inputs to match (a dense layer acts on
    the last axis, a 1x1 convolution on the channels of a channels-last tensor).
    """
    framework, cls = _parse_target(to)
    spec, weights = layer.spec, layer.weights()
    if cls is not None:
        spec, weights = _retarget(spec, weights, framework, cls, rank)
    return get_adapter(framework).build(spec, weights, dtype or layer.dtype, device or layer.device)
