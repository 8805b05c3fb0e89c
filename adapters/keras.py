"""Keras 3: Dense, Conv1D, Conv2D on whatever KERAS_BACKEND is set (tensorflow by default).

Keras already stores kernels in the canonical layout ((in, out) and (*spatial, in/groups, out))
and takes channels-last activations, so `_layout` is the identity; it stays the one place to change.
"""
from __future__ import annotations

import contextlib
import functools
import os
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter; errors still raise

import numpy as np

from .base import Adapter, Layer, canonical
from .compute import check_operands, check_output, first_time, jax_operand_dtypes, tf_operand_dtypes, \
    torch_operand_dtypes
from .spec import POLICY_COMPUTE, LayerSpec, Weights, numpy_dtype
from .spec import compute_dtype as _compute, variable_dtype as _variable


@contextlib.contextmanager
def _quiet_native_stderr():
    """TensorFlow's C++ start-up lines ignore TF_CPP_MIN_LOG_LEVEL: silence fd 2 for the import only.

    Python exceptions raised by the import are unaffected (they are objects, not stderr output).
    """
    try:
        saved = os.dup(2)
    except OSError:  # no real stderr (embedded interpreters): nothing to silence
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


with _quiet_native_stderr():
    import keras  # noqa: E402  (after the logging switch above)

    if keras.backend.backend() == "tensorflow":
        import tensorflow  # noqa: F401  (its C++ start-up runs here, while stderr is silenced)

BACKEND = keras.backend.backend()
if BACKEND == "tensorflow":
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # retracing notices for every new shape drown the test output
if BACKEND == "jax":
    import jax

    jax.config.update("jax_enable_x64", True)  # else float64 silently runs as float32


def _layout(array: Any, what: str, spec: LayerSpec, to_keras: bool) -> Any:
    """Keras layouts are the canonical ones: nothing to convert for activations, kernels or biases."""
    return array


def _to_tensor(array: np.ndarray, dtype: str) -> Any:
    host = array.astype(np.float64 if dtype == "float64" else np.float32)  # exact for every dtype tested
    return keras.ops.cast(keras.ops.convert_to_tensor(host), _compute(dtype))


def _to_numpy(tensor: Any, dtype: str) -> np.ndarray:
    return canonical(keras.ops.convert_to_numpy(keras.ops.cast(tensor, "float64")), dtype)


def _numpy_as(tensor: Any, dtype: str) -> np.ndarray:
    return canonical(keras.ops.convert_to_numpy(keras.ops.cast(tensor, "float64")), dtype)


def _stateless_call(native: Any, trainable: list[Any], x: Any) -> Any:
    """`native(x)` with these values for its trainable variables, the way a Keras Model calls its
    layers in training (Model.stateless_call, fit): Layer.__call__ inside a StatelessScope.

    Layer.stateless_call would call `call` directly: it skips __call__'s autocast, so under a mixed
    policy the float32 variables reach the matmul or convolution uncast (on the jax backend the layer
    then computes in float32; on the torch backend a convolution raises on the dtype mismatch).
    """
    mapping = list(zip(native.trainable_variables, trainable))
    mapping += [(v, v.value) for v in native.non_trainable_variables]
    with keras.StatelessScope(state_mapping=mapping):
        return native(x)


def _keras_device(device: str) -> str:
    return "gpu:0" if device == "gpu" else "cpu:0"


class KerasLayer(Layer):
    def _pad(self, x: Any) -> Any:
        spec = self.spec
        if spec.kind == "conv" and spec.padding not in ("same", "causal"):
            pairs = spec.explicit_padding(tuple(x.shape[1:-1]))
            if any(lo or hi for lo, hi in pairs):
                x = keras.ops.pad(x, [(0, 0), *pairs, (0, 0)])
        return x

    def _call(self, x: Any) -> Any:
        return self.native(self._pad(x))

    def _stateless(self, x: Any, trainable: list[Any]) -> Any:
        """The layer as a pure function of its variables (what jax.vjp and torch.autograd need)."""
        return _stateless_call(self.native, trainable, self._pad(x))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        with keras.device(_keras_device(self.device)):
            xt = _to_tensor(_layout(x, "x", self.spec, True), self.dtype)
            call = _tf_grouped_program_for(self)[0] if _tf_grouped(self.spec) else self._call
            if self.dtype in POLICY_COMPUTE and first_time("keras", BACKEND, self.spec, self.dtype, tuple(xt.shape)):
                y = self._check_operands(call, xt)
            else:
                y = call(xt)
        check_output(self, keras.backend.standardize_dtype(y.dtype))
        return _to_numpy(_layout(y, "x", self.spec, False), self.dtype)

    def _check_operands(self, call: Any, xt: Any) -> Any:
        """call(xt), after checking that the policy's half type reached the matmul/convolution."""
        if BACKEND == "torch":
            y, seen = torch_operand_dtypes(lambda: call(xt))
            check_operands(self, seen, "the aten operations the torch backend ran")
            return y
        check_operands(self, tf_operand_dtypes(call, xt), "in the graph tf.function traced")
        return call(xt)

    def _vjp(self, x: np.ndarray, cotangent: np.ndarray) -> tuple[np.ndarray, Weights]:
        with keras.device(_keras_device(self.device)):
            xt = _to_tensor(x, self.dtype)
            ct = _to_tensor(cotangent, self.dtype)
            dx, dvars = _BACKEND_VJP[BACKEND](self, xt, ct)
        names = ["kernel", "bias"] if self.spec.bias else ["kernel"]
        # gradients of float32 variables stay float32 under a mixed policy, as Keras returns them
        grads = {n: _numpy_as(_layout(g, n, self.spec, False), _variable(self.dtype)) for n, g in zip(names, dvars)}
        return _to_numpy(dx, self.dtype), grads

    def weights(self) -> Weights:
        out = {"kernel": _to_numpy(_layout(self.native.kernel, "kernel", self.spec, False), self.dtype)}
        if self.spec.bias:
            out["bias"] = _to_numpy(self.native.bias, self.dtype)
        return out


def _tf_grouped(spec: LayerSpec) -> bool:
    """A convolution that Keras on tensorflow runs through XLA (see _tf_grouped_program)."""
    return BACKEND == "tensorflow" and spec.kind == "conv" and spec.groups > 1


@functools.lru_cache(maxsize=256)
def _tf_grouped_program(spec: LayerSpec, dtype: str, device: str) -> tuple[Any, Any, Any]:
    """(Keras layer, its call and its VJP, each traced by tf.function) for one grouped geometry.

    Keras on tensorflow computes a grouped convolution with a `tf.function(jit_compile=True)` that
    it defines anew on every call (keras/src/backend/tensorflow/nn.py, `conv`: "grouped convolutions
    are broken on CPU without XLA"), so every eager call is an XLA compilation (about 26 ms on CPU,
    more for a gradient). Called from one traced function per geometry, that inner XLA function is
    traced once per input shape and XLA's compilation cache serves later calls (0.5 ms). A layer of
    this geometry copies its weights into the program's layer (variable assignment) and calls it:
    the layer's own call, autocast under mixed policies included, in the same XLA computation,
    which tests/test_adapters.py checks bit for bit against the eager call and the eager tape.
    """
    import tensorflow as tf

    with keras.device(_keras_device(device)):
        native = ADAPTER._layer(spec, dtype, kernel_initializer="zeros", bias_initializer="zeros")
        native.build(KerasAdapter._input_shape(spec))
    program = KerasLayer(ADAPTER, spec, dtype, device, native)
    return (native, tf.function(program._call, autograph=False),
            tf.function(lambda x, cotangent: _vjp_tensorflow(program, x, cotangent, eager=True), autograph=False))


def _tf_grouped_program_for(layer: "KerasLayer") -> tuple[Any, Any]:
    """The geometry's (call, VJP), holding `layer`'s weights."""
    native, call, vjp = _tf_grouped_program(layer.spec, layer.dtype, layer.device)
    for mine, theirs in zip(native.weights, layer.native.weights, strict=True):
        mine.assign(theirs.value)
    return call, vjp


def _vjp_tensorflow(layer: KerasLayer, x: Any, cotangent: Any, eager: bool = False) -> tuple[Any, list[Any]]:
    """The VJP by GradientTape; grouped convolutions through their program unless `eager` (the
    program's own body, and the self-test's reference)."""
    import tensorflow as tf

    if not eager and _tf_grouped(layer.spec):
        dx, dvars = _tf_grouped_program_for(layer)[1](x, cotangent)
        return dx, list(dvars)
    variables = [v.value for v in layer.native.trainable_variables]
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer._call(x)
    dx, *dvars = tape.gradient(y, [x, *variables], output_gradients=cotangent)
    return dx, dvars


def _vjp_torch(layer: KerasLayer, x: Any, cotangent: Any) -> tuple[Any, list[Any]]:
    import torch

    x = x.detach().requires_grad_(True)
    trainable = [v.value.detach().requires_grad_(True) for v in layer.native.trainable_variables]
    y = layer._stateless(x, trainable)
    dx, *dvars = torch.autograd.grad(y, [x, *trainable], grad_outputs=cotangent.to(y.dtype))
    return dx, dvars


# the jax backend has its own layer class (KerasJaxLayer, below): one jitted program per geometry
_BACKEND_VJP = {"tensorflow": _vjp_tensorflow, "torch": _vjp_torch}


# ---- the jax backend: one built layer and one jax.jit program per geometry ------------------------

def _jax_array(array: np.ndarray, dtype: str, device: str) -> Any:
    """Rounded to `dtype` on the host (round-to-nearest-even, as a device cast), then placed."""
    return jax.device_put(np.asarray(array).astype(numpy_dtype(dtype)), jax.devices(_jax_platform(device))[0])


def _jax_platform(device: str) -> str:
    return "gpu" if device == "gpu" else "cpu"


def _host_zeros(shape: tuple[int, ...], dtype: Any = None) -> Any:
    """An initializer computed by NumPy: its value is never used (weights are passed statelessly).

    Placed with device_put: Keras would convert a NumPy value with jnp.asarray, which compiles a
    program for every new shape (11 ms each, two per geometry); a jax array passes through as is.
    """
    return jax.device_put(np.zeros(shape, numpy_dtype(str(dtype)) if dtype else np.float32))


@functools.lru_cache(maxsize=512)
def _jax_program(spec: LayerSpec, dtype: str, device: str) -> tuple[Any, list[str], Any, Any]:
    """(Keras layer, its trainable variable names, jitted forward, jitted VJP) for one geometry.

    On the jax backend Keras runs layers under jax.jit (fit, predict); eager calls would compile
    every op for every new shape, and so would building a layer (its initializers). So a geometry
    is built once and called statelessly with each layer's own weights, as Keras' trainer does.
    """
    with keras.device(_keras_device(device)):  # host zeros: running initializers would compile them per shape
        native = ADAPTER._layer(spec, dtype, kernel_initializer=_host_zeros, bias_initializer=_host_zeros)
        native.build(KerasAdapter._input_shape(spec))
    names = ["kernel" if v.path.endswith("kernel") else "bias" for v in native.trainable_variables]
    padder = KerasLayer(ADAPTER, spec, dtype, device, native)

    def apply(trainable: list[Any], x: Any) -> Any:
        return _stateless_call(native, trainable, padder._pad(x))

    def vjp(trainable: list[Any], x: Any, cotangent: Any) -> Any:
        y, pullback = jax.vjp(lambda inputs, variables: apply(variables, inputs), x, trainable)
        return pullback(cotangent.astype(y.dtype))

    return native, names, jax.jit(apply), jax.jit(vjp)


class KerasJaxLayer(Layer):
    """A Keras layer on the jax backend: the geometry's shared program, this layer's own weights."""

    def _program(self) -> tuple[Any, list[str], Any, Any]:
        return _jax_program(self.spec, self.dtype, self.device)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        apply, xa = self._program()[2], _jax_array(x, _compute(self.dtype), self.device)
        y = apply(self._trainable, xa)
        check_output(self, keras.backend.standardize_dtype(y.dtype))
        if self.dtype in POLICY_COMPUTE and first_time("keras", BACKEND, self.spec, self.dtype, tuple(xa.shape)):
            check_operands(self, jax_operand_dtypes(apply, self._trainable, xa), "in the jaxpr of the jitted call")
        return canonical(np.asarray(y).astype(np.float64), self.dtype)

    def _vjp(self, x: np.ndarray, cotangent: np.ndarray) -> tuple[np.ndarray, Weights]:
        _, names, _, vjp = self._program()
        dx, dvars = vjp(self._trainable, _jax_array(x, _compute(self.dtype), self.device),
                        _jax_array(cotangent, _compute(self.dtype), self.device))
        # gradients of float32 variables stay float32 under a mixed policy, as Keras returns them
        grads = {n: canonical(np.asarray(g).astype(np.float64), _variable(self.dtype)) for n, g in zip(names, dvars)}
        return canonical(np.asarray(dx).astype(np.float64), self.dtype), grads

    def weights(self) -> Weights:
        names = self._program()[1]
        return {n: canonical(np.asarray(v).astype(np.float64), self.dtype) for n, v in zip(names, self._trainable)}


def _assign(native: Any, spec: LayerSpec, weights: Weights, dtype: str) -> None:
    """The canonical weights into a built layer's variables (float32 ones under a mixed policy)."""
    variable = _variable(dtype)
    native.kernel.assign(_to_tensor(_layout(weights["kernel"], "kernel", spec, True), variable))
    if spec.bias:
        native.bias.assign(_to_tensor(weights["bias"], variable))


def clear_programs() -> None:
    """Forget the compiled layers (after patching the backend, e.g. to inject a fault, in a live process)."""
    _jax_program.cache_clear()
    _tf_grouped_program.cache_clear()
    if BACKEND == "jax":
        jax.clear_caches()


class KerasAdapter(Adapter):
    name = "keras"
    distributions = ("keras",)
    classes = {("dense", 0): "Dense", ("conv", 1): "Conv1D", ("conv", 2): "Conv2D"}
    policies = tuple(POLICY_COMPUTE)

    def versions(self) -> dict[str, str | None]:
        versions = super().versions()
        backend_dist = {"tensorflow": "tensorflow-cpu", "jax": "jax", "torch": "torch"}[BACKEND]
        from .base import package_version

        versions[BACKEND] = package_version(backend_dist) or package_version(BACKEND)
        return versions

    def devices(self) -> list[str]:
        try:
            gpus = keras.distribution.list_devices("gpu")
        except Exception:  # a backend without GPU support raises instead of returning []
            gpus = []
        return ["cpu", "gpu"] if gpus else ["cpu"]

    def _supports(self, spec: LayerSpec, dtype: str, device: str) -> str | None:
        if spec.kind == "conv" and max(spec.strides) > 1 and max(spec.dilation) > 1:
            return "Keras refuses strides > 1 together with dilation_rate > 1"
        if spec.padding_mode != "zeros":
            return f"Keras convolutions pad with zeros only (no {spec.padding_mode} padding)"
        return None

    def native_refusal(self, spec: LayerSpec) -> str | None:
        """The error Keras raises when asked to build this spec natively."""
        if spec.kind != "conv":
            return None
        try:
            self._layer(spec.with_(padding_mode="zeros"), "float32")
        except ValueError as exc:
            return str(exc)
        return None

    def _layer(self, spec: LayerSpec, dtype: str, **init: Any) -> Any:
        if spec.kind == "dense":
            return keras.layers.Dense(spec.out_features, use_bias=spec.bias, dtype=dtype, **init)
        cls = keras.layers.Conv1D if spec.rank == 1 else keras.layers.Conv2D
        return cls(spec.out_features, spec.kernel_size, strides=spec.strides,
                   padding=spec.padding if spec.padding in ("same", "causal") else "valid",
                   dilation_rate=spec.dilation, groups=spec.groups, use_bias=spec.bias, dtype=dtype, **init)

    @staticmethod
    def _input_shape(spec: LayerSpec) -> tuple[Any, ...]:
        return (None, spec.in_features) if spec.kind == "dense" else (None, *([None] * spec.rank), spec.in_features)

    def _build(self, spec: LayerSpec, weights: Weights, dtype: str, device: str) -> Layer:
        if BACKEND == "jax":
            native, names, _, _ = _jax_program(spec, dtype, device)
            layer = KerasJaxLayer(self, spec, dtype, device, native)
            layer._trainable = [_jax_array(_layout(weights[n], n, spec, True), _variable(dtype), device) for n in names]
            return layer
        with keras.device(_keras_device(device)):
            layer = self._layer(spec, dtype)
            layer.build(self._input_shape(spec))
            _assign(layer, spec, weights, dtype)
        return KerasLayer(self, spec, dtype, device, layer)

    @property
    def reuses_natives(self) -> bool:  # type: ignore[override]
        """Eager backends build a layer in about 6 ms and assign its weights in 0.4 ms (the jax backend
        shares one program per geometry already)."""
        return BACKEND != "jax"

    def _rebuild(self, native: Any, spec: LayerSpec, weights: Weights, dtype: str, device: str) -> Layer:
        with keras.device(_keras_device(device)):
            _assign(native, spec, weights, dtype)
        return KerasLayer(self, spec, dtype, device, native)

    def default_weights(self, spec: LayerSpec, seed: int) -> Weights:
        keras.utils.set_random_seed(seed)
        layer = self._layer(spec, "float32")
        layer.build(self._input_shape(spec))
        return KerasLayer(self, spec, "float32", "cpu", layer).weights()

    def declared_roundoff(self, spec: LayerSpec, dtype: str, device: str) -> str | None:
        from .precision import jax_declared, tensorflow_declared, torch_declared

        declared = {"tensorflow": tensorflow_declared, "jax": jax_declared, "torch": torch_declared}[BACKEND]
        return declared(spec, dtype, device)

    def set_numerics(self, mode: str) -> None:
        if mode != "strict":
            return
        if BACKEND == "tensorflow":
            tf.config.experimental.enable_tensor_float_32_execution(False)
        elif BACKEND == "jax":
            jax.config.update("jax_default_matmul_precision", "highest")
        elif BACKEND == "torch":
            import torch

            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
            torch.set_float32_matmul_precision("highest")

    def environment(self) -> dict[str, Any]:
        modes: dict[str, Any] = {"keras.backend": BACKEND, "keras.floatx": keras.config.floatx(),
                                 "keras.dtype_policy": keras.config.dtype_policy().name}
        if BACKEND == "tensorflow":
            import tensorflow as tf

            modes["tf.config.tensor_float_32_execution"] = tf.config.experimental.tensor_float_32_execution_enabled()
            modes["tf.config.threading.intra_op_parallelism_threads"] = \
                tf.config.threading.get_intra_op_parallelism_threads() or os.environ.get("TF_NUM_INTRAOP_THREADS", "0 (TF default: all cores)")
            modes["TF_ENABLE_ONEDNN_OPTS"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (TF default: on for CPU)")
        elif BACKEND == "jax":
            modes["jax_default_matmul_precision"] = str(jax.config.jax_default_matmul_precision)
            modes["keras.execution"] = "jax.jit (Layer.__call__ in a StatelessScope, as Model.fit)"
            modes["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")
        elif BACKEND == "torch":
            import torch

            modes["torch.backends.cuda.matmul.allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
            modes["torch.backends.cudnn.allow_tf32"] = torch.backends.cudnn.allow_tf32
            modes["torch.float32_matmul_precision"] = torch.get_float32_matmul_precision()
        return {"devices": self.devices(), "numeric_modes": modes}


ADAPTER = KerasAdapter()
