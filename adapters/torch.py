"""PyTorch: nn.Linear, nn.Conv1d, nn.Conv2d (channels-first, kernel (out, in/groups, *spatial))."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .base import Adapter, Layer, canonical
from .compute import check_operands, check_output, first_time, torch_operand_dtypes
from .spec import POLICY_COMPUTE, LayerSpec, Weights
from .spec import variable_dtype as _param  # float32 module and input under autocast, as in training

_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_DEVICES = {"cpu": "cpu", "gpu": "cuda"}


def _layout(array: Any, what: str, spec: LayerSpec, to_torch: bool) -> Any:
    """The one place that converts between canonical (channels-last) and PyTorch layouts.

    what: "x" (activations), "kernel" or "bias". Dense tensors share the canonical layout except the
    kernel, stored (out, in) by nn.Linear.
    """
    if what == "bias":
        return array
    if spec.kind == "dense":
        return array.T if what == "kernel" else array
    r = spec.rank
    if what == "kernel":  # canonical (*k, in/g, out) <-> torch (out, in/g, *k)
        order = (r + 1, r, *range(r)) if to_torch else (*range(2, r + 2), 1, 0)
    else:  # canonical (N, *s, C) <-> torch (N, C, *s)
        order = (0, r + 1, *range(1, r + 1)) if to_torch else (0, *range(2, r + 2), 1)
    return array.permute(*order) if isinstance(array, torch.Tensor) else np.transpose(array, order)


def _tensor(array: np.ndarray, dtype: str, device: str) -> torch.Tensor:
    # torch.from_numpy has no bfloat16: go through float32, which holds every bfloat16 value exactly.
    host = torch.from_numpy(np.ascontiguousarray(array.astype(np.float64 if dtype == "float64" else np.float32)))
    return host.to(device=_DEVICES[device], dtype=_DTYPES[dtype])


def _numpy(tensor: torch.Tensor, dtype: str) -> np.ndarray:
    return canonical(tensor.detach().to("cpu", torch.float64).numpy(), dtype)


_PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def _module_padding(spec: LayerSpec) -> Any:
    """Padding the torch module takes itself (with its padding_mode); the rest is applied by F.pad."""
    if spec.padding == "same" and all(s == 1 for s in spec.strides):
        return "same"
    if spec.padding == "valid":
        return 0
    if isinstance(spec.padding, tuple) and all(lo == hi for lo, hi in spec.padding):
        return tuple(lo for lo, _ in spec.padding)
    return 0  # asymmetric pairs, `causal`, or `same` with strides > 1, which torch refuses


class TorchLayer(Layer):
    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        if spec.kind == "dense" or self.native.padding != (0,) * spec.rank:
            return x
        pairs = spec.explicit_padding(x.shape[2:])
        flat = [p for lo_hi in reversed(pairs) for p in lo_hi]  # F.pad wants the last axis first
        return F.pad(x, flat, mode=_PAD_MODES[spec.padding_mode]) if any(flat) else x

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        call = lambda: self.native(self._pad(_layout(x, "x", self.spec, True)))  # noqa: E731
        half = POLICY_COMPUTE.get(self.dtype)
        if half is None:
            y = call()
        else:  # float32 module and input, half-precision compute: torch.autocast, as in training
            with torch.autocast(_DEVICES[self.device], dtype=_DTYPES[half]):
                if first_time("torch", self.spec, self.dtype, tuple(x.shape)):
                    y, seen = torch_operand_dtypes(call)
                    check_operands(self, seen, "the aten operations autocast dispatched")
                else:
                    y = call()
        check_output(self, y.dtype)
        return y

    def _forward(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            y = self._run(_tensor(x, _param(self.dtype), self.device))
        return _numpy(_layout(y, "x", self.spec, False), self.dtype)

    def _vjp(self, x: np.ndarray, cotangent: np.ndarray) -> tuple[np.ndarray, Weights]:
        self.native.zero_grad(set_to_none=True)
        xt = _tensor(x, _param(self.dtype), self.device).requires_grad_(True)
        y = self._run(xt)
        y.backward(_layout(_tensor(cotangent, POLICY_COMPUTE.get(self.dtype, self.dtype), self.device), "x",
                           self.spec, True))
        # gradients of float32 parameters stay float32 under a mixed policy
        grads = {"kernel": _numpy(_layout(self.native.weight.grad, "kernel", self.spec, False), _param(self.dtype))}
        if self.spec.bias:
            grads["bias"] = _numpy(self.native.bias.grad, _param(self.dtype))
        return _numpy(xt.grad, self.dtype), grads

    def weights(self) -> Weights:
        out = {"kernel": _numpy(_layout(self.native.weight, "kernel", self.spec, False), self.dtype)}
        if self.spec.bias:
            out["bias"] = _numpy(self.native.bias, self.dtype)
        return out


class TorchAdapter(Adapter):
    name = "torch"
    distributions = ("torch",)
    policies = tuple(POLICY_COMPUTE)  # torch.autocast with float32 parameters
    classes = {("dense", 0): "Linear", ("conv", 1): "Conv1d", ("conv", 2): "Conv2d"}

    def devices(self) -> list[str]:
        return ["cpu", "gpu"] if torch.cuda.is_available() else ["cpu"]

    def _module(self, spec: LayerSpec) -> torch.nn.Module:
        if spec.kind == "dense":
            return torch.nn.Linear(spec.in_features, spec.out_features, bias=spec.bias)
        cls = torch.nn.Conv1d if spec.rank == 1 else torch.nn.Conv2d
        return cls(spec.in_features, spec.out_features, spec.kernel_size, stride=spec.strides,
                   padding=_module_padding(spec), dilation=spec.dilation, groups=spec.groups, bias=spec.bias,
                   padding_mode=spec.padding_mode)

    def _build(self, spec: LayerSpec, weights: Weights, dtype: str, device: str) -> Layer:
        param = _param(dtype)
        module = self._module(spec).to(device=_DEVICES[device], dtype=_DTYPES[param])
        with torch.no_grad():
            module.weight.copy_(_layout(_tensor(weights["kernel"], param, device), "kernel", spec, True))
            if spec.bias:
                module.bias.copy_(_tensor(weights["bias"], param, device))
        return TorchLayer(self, spec, dtype, device, module)

    def default_weights(self, spec: LayerSpec, seed: int) -> Weights:
        torch.manual_seed(seed)
        return TorchLayer(self, spec, "float32", "cpu", self._module(spec)).weights()

    def native_refusal(self, spec: LayerSpec) -> str | None:
        """The error torch raises for this spec with its own keywords (padding='same' and stride > 1)."""
        if spec.kind != "conv" or spec.padding != "same":
            return None
        cls = torch.nn.Conv1d if spec.rank == 1 else torch.nn.Conv2d
        try:
            cls(spec.in_features, spec.out_features, spec.kernel_size, stride=spec.strides, padding="same",
                dilation=spec.dilation, groups=spec.groups)
        except ValueError as exc:
            return str(exc)
        return None

    def declared_roundoff(self, spec: LayerSpec, dtype: str, device: str) -> str | None:
        from .precision import torch_declared

        return torch_declared(spec, dtype, device)

    def set_numerics(self, mode: str) -> None:
        if mode == "strict":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.set_float32_matmul_precision("highest")

    def environment(self) -> dict[str, Any]:
        modes = {
            "torch.backends.cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "torch.backends.cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "torch.float32_matmul_precision": torch.get_float32_matmul_precision(),
            "torch.num_threads": torch.get_num_threads(),
            "torch.mkldnn": torch.backends.mkldnn.is_available(),
        }
        devices = ["cpu"] + [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())]
        return {"devices": devices, "numeric_modes": modes}


ADAPTER = TorchAdapter()
