"""The precision a framework really computes a float32 layer in, read from its own settings.

Under `--conformance-numerics strict` every framework computes float32 in float32 (TF32 off, highest
matmul precision: the adapters' `set_numerics`), and the bound's u is float32's. Under `default` the
frameworks keep their own settings, and on NVIDIA GPUs from Ampere on (compute capability 8.0) those
compute float32 convolutions and matrix products in a lower precision:

- torch: `torch.backends.cudnn.allow_tf32` (True by default) for convolutions; for matrix products
  `torch.backends.cuda.matmul.allow_tf32` or `torch.get_float32_matmul_precision()` ("highest" by default;
  "high": TF32; "medium": bfloat16 operands, which torch may use where fast kernels exist);
- TensorFlow: `tf.config.experimental.tensor_float_32_execution_enabled()` (True by default);
- JAX (Flax and Keras on jax): `jax_default_matmul_precision` (unset by default: XLA's DEFAULT precision,
  TF32 on such GPUs; "high"/"tensorfloat32"/"bfloat16_3x": TF32 there; "highest"/"float32": float32).

Each function returns the declared precision mode (a key of
`layer_conformance.suites.bounds.DECLARED_ROUNDOFF`) that the layer's float32 computation on `device` is
judged under, or None: the dtype's own unit roundoff. It reads the framework's settings as they are in this
process (the truth, whichever mode set them), and imports the framework only when asked about a GPU. On the
CPU every framework computes float32 in float32: None. A declared mode is a u_eff for the derived bound,
never a widened tolerance (suites/bounds.py).
"""
from __future__ import annotations

from .spec import LayerSpec

TF32_MIN_CAPABILITY = 8  # NVIDIA Ampere: the first GPUs with TF32 tensor cores


def torch_declared(spec: LayerSpec, dtype: str, device: str) -> str | None:
    """The declared mode of a torch float32 layer on `device` (also Keras on the torch backend)."""
    if dtype != "float32" or device == "cpu":
        return None
    import torch

    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < TF32_MIN_CAPABILITY:
        return None
    if spec.kind == "conv":
        return "tf32" if torch.backends.cudnn.allow_tf32 else None
    precision = torch.get_float32_matmul_precision()
    if precision == "medium":
        return "bf16-pass"
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 or precision == "high" else None


def tensorflow_declared(spec: LayerSpec, dtype: str, device: str) -> str | None:
    """The declared mode of a Keras float32 layer on the tensorflow backend on `device`."""
    if dtype != "float32" or device == "cpu":
        return None
    import tensorflow as tf

    if not tf.config.experimental.tensor_float_32_execution_enabled():
        return None
    gpus = tf.config.list_physical_devices("GPU")
    details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
    capability = details.get("compute_capability") or (0, 0)
    return "tf32" if capability[0] >= TF32_MIN_CAPABILITY else None


JAX_FLOAT32_PRECISIONS = ("highest", "float32")  # jax_default_matmul_precision values that keep float32


def jax_declared(spec: LayerSpec, dtype: str, device: str) -> str | None:
    """The declared mode of a JAX float32 layer (Flax, Keras on jax) on `device`."""
    if dtype != "float32" or device == "cpu":
        return None
    import jax

    precision = jax.config.jax_default_matmul_precision
    if precision is not None and str(precision).lower() in JAX_FLOAT32_PRECISIONS:
        return None
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        return None
    capability = getattr(gpus[0], "compute_capability", None) if gpus else None
    major = int(str(capability).split(".")[0]) if capability else 0
    return "tf32" if major >= TF32_MIN_CAPABILITY else None
