"""Framework-level faults, as data: what a broken framework upgrade could do to a Dense/Conv layer.

Each `Fault.install()` monkeypatches functions of the framework itself (never the project's adapters)
and returns the callable that undoes it. Patch points, the functions the layers resolve at call time:

- torch: `torch.nn.functional.linear` (nn.Linear.forward) and `conv1d`/`conv2d` (Conv*d._conv_forward);
- Keras on TensorFlow: `keras.src.backend.tensorflow.numpy.matmul` (ops.matmul, Dense) and
  `keras.src.backend.tensorflow.nn.conv` (ops.conv, Conv1D/Conv2D);
- Flax: `jax.lax.dot_general` and `jax.lax.conv_general_dilated` (linen looks them up on `lax` at call
  time; nnx binds them as constructor defaults, so those defaults are patched too).

`kind` is "fault" (the suite must catch it) or "benign" (a legal implementation change the suite
must accept). `claims` and `checks` say which parts of the suite exercise the patched op, so
`conformance faults` only runs those.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal

Uninstall = Callable[[], None]

PRECISION_NOTE = "float32 ops only"
PERTURB_MIN_SIZE = 1000  # the one-element perturbation only fires on outputs at least this large
PERTURB_RELATIVE = 1e-3
GRAD_SCALE = 1 + 1e-3


@dataclass(frozen=True)
class Fault:
    id: str
    description: str
    framework: Literal["torch", "keras", "flax"]
    kind: Literal["fault", "benign"]
    install: Callable[[], Uninstall]
    claims: tuple[str, ...] = ()  # claim ids whose tests exercise the patched op (empty: every claim)
    checks: tuple[str, ...] = ("forward",)
    op: Literal["dense", "conv", "both"] = "both"  # which patched op(s); what the self-test calls

    @property
    def frameworks(self) -> tuple[str, ...]:
        """Adapter names (--conformance-frameworks) that use the patched framework."""
        return ("flax.linen", "flax.nnx") if self.framework == "flax" else (self.framework,)


# ---- framework-neutral array operations ----------------------------------------------------------

class _Ops:
    """The handful of array operations a fault needs, for one framework's tensors."""

    def flip(self, a, axes): raise NotImplementedError
    def take(self, a, axis, start, stop): raise NotImplementedError
    def concat(self, parts, axis): raise NotImplementedError
    def reshape(self, a, shape): raise NotImplementedError
    def transpose(self, a, order): raise NotImplementedError
    def is_float32(self, a) -> bool: raise NotImplementedError
    def is_floating(self, a) -> bool: raise NotImplementedError
    def cast(self, a, name): raise NotImplementedError  # name: "float64", "float32", "bfloat16", like a
    def tf32(self, a): raise NotImplementedError  # low 13 mantissa bits zeroed, gradient passed through
    def next_up(self, a): raise NotImplementedError  # one ulp toward +inf, gradient passed through
    def perturb_largest(self, a, relative): raise NotImplementedError
    def scale_grad(self, a, factor): raise NotImplementedError  # identity forward, cotangent * factor
    def zero_grad(self, a): raise NotImplementedError  # identity forward, zero cotangent

    def shape(self, a) -> tuple[int, ...]:
        return tuple(int(s) for s in a.shape)

    def shift(self, a, axis):
        """Move every element one step up `axis` (a zero enters at 0, the last one drops out)."""
        n = self.shape(a)[axis]
        zero = self.take(a, axis, 0, 1) * 0
        return self.concat([zero, self.take(a, axis, 0, n - 1)], axis) if n > 1 else zero

    def roll_blocks(self, a, axis, blocks):
        """Cyclically move the `blocks` equal blocks of `axis` by one block."""
        n = self.shape(a)[axis]
        size = n // blocks
        return self.concat([self.take(a, axis, size, n), self.take(a, axis, 0, size)], axis)

    def reverse_within_blocks(self, a, axis, blocks):
        size = self.shape(a)[axis] // blocks
        return self.concat([self.flip(self.take(a, axis, g * size, (g + 1) * size), [axis]) for g in range(blocks)], axis)

    def crop(self, a, axes, sizes):
        for axis, size in zip(axes, sizes):
            a = self.take(a, axis, 0, size)
        return a


class _TorchOps(_Ops):
    def __init__(self):
        import torch

        self.t = torch

        class ScaleGrad(torch.autograd.Function):
            @staticmethod
            def forward(ctx, a, factor):
                ctx.factor = factor
                return a.clone()

            @staticmethod
            def backward(ctx, g):
                return g * ctx.factor, None

        self._scale = ScaleGrad

    def flip(self, a, axes): return self.t.flip(a, list(axes))
    def take(self, a, axis, start, stop): return a.narrow(axis, start, stop - start)
    def concat(self, parts, axis): return self.t.cat(parts, axis)
    def reshape(self, a, shape): return a.reshape(shape)
    def transpose(self, a, order): return a.permute(*order)
    def is_float32(self, a): return a.dtype == self.t.float32
    def is_floating(self, a): return a.dtype in (self.t.float32, self.t.float64)
    def cast(self, a, name): return a.to(getattr(self.t, name))

    def tf32(self, a):
        d = a.detach()
        cut = (d.view(self.t.int32) & ~0x1FFF).view(self.t.float32)
        return a + (cut - d)

    def next_up(self, a):
        d = a.detach()
        return a + (self.t.nextafter(d, self.t.full_like(d, float("inf"))) - d)

    def perturb_largest(self, a, relative):
        mask = self.t.zeros(a.numel(), dtype=a.dtype, device=a.device)
        mask[int(a.detach().abs().argmax())] = relative
        return a * (1 + mask.view_as(a))

    def scale_grad(self, a, factor): return self._scale.apply(a, factor)
    def zero_grad(self, a): return self._scale.apply(a, 0.0)


class _TFOps(_Ops):
    def __init__(self):
        import tensorflow as tf

        self.tf = tf

    def flip(self, a, axes): return self.tf.reverse(a, axis=list(axes))

    def take(self, a, axis, start, stop):
        index = [slice(None)] * len(a.shape)
        index[axis] = slice(start, stop)
        return a[tuple(index)]

    def concat(self, parts, axis): return self.tf.concat(parts, axis)
    def reshape(self, a, shape): return self.tf.reshape(a, shape)
    def transpose(self, a, order): return self.tf.transpose(a, order)
    def is_float32(self, a): return a.dtype == self.tf.float32
    def is_floating(self, a): return a.dtype in (self.tf.float32, self.tf.float64)
    def cast(self, a, name): return self.tf.cast(a, getattr(self.tf, name))

    def tf32(self, a):
        tf = self.tf
        a = tf.convert_to_tensor(a)
        cut = tf.bitcast(tf.bitwise.bitwise_and(tf.bitcast(a, tf.int32), tf.constant(~0x1FFF, tf.int32)), tf.float32)
        return a + tf.stop_gradient(cut - a)

    def next_up(self, a):
        tf = self.tf
        return a + tf.stop_gradient(tf.math.nextafter(a, tf.fill(tf.shape(a), tf.constant(float("inf"), a.dtype))) - a)

    def perturb_largest(self, a, relative):
        tf = self.tf
        flat = tf.reshape(a, [-1])
        mask = tf.one_hot(tf.argmax(tf.abs(flat)), tf.size(flat), dtype=a.dtype) * relative
        return a * (1 + tf.reshape(mask, tf.shape(a)))

    def scale_grad(self, a, factor):
        @self.tf.custom_gradient
        def scaled(x):
            return self.tf.identity(x), lambda g: g * factor
        return scaled(self.tf.convert_to_tensor(a))

    def zero_grad(self, a): return self.scale_grad(a, 0.0)


class _JaxOps(_Ops):
    def __init__(self):
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp

        from functools import partial

        @partial(jax.custom_vjp, nondiff_argnums=(1,))
        def scaled(x, factor):
            return x

        scaled.defvjp(lambda x, factor: (x, None), lambda factor, _, g: (g * factor,))
        self._scaled = scaled

    def flip(self, a, axes): return self.jnp.flip(a, tuple(axes))
    def take(self, a, axis, start, stop): return self.jax.lax.slice_in_dim(a, start, stop, axis=axis)
    def concat(self, parts, axis): return self.jnp.concatenate(parts, axis)
    def reshape(self, a, shape): return self.jnp.reshape(a, shape)
    def transpose(self, a, order): return self.jnp.transpose(a, order)
    def is_float32(self, a): return a.dtype == self.jnp.float32
    def is_floating(self, a): return a.dtype in (self.jnp.float32, self.jnp.float64)
    def cast(self, a, name): return a.astype(getattr(self.jnp, name))

    # the rounding is computed on a stop_gradient copy: jax.vjp must not need a derivative of
    # nextafter or of a bitcast (it has none), only of the pass-through `a + constant`
    def tf32(self, a):
        lax = self.jax.lax
        held = lax.stop_gradient(a)
        cut = lax.bitcast_convert_type(lax.bitcast_convert_type(held, self.jnp.int32) & ~0x1FFF, self.jnp.float32)
        return a + (cut - held)

    def next_up(self, a):
        held = self.jax.lax.stop_gradient(a)
        return a + (self.jnp.nextafter(held, self.jnp.inf) - held)

    def perturb_largest(self, a, relative):
        jnp = self.jnp
        mask = jnp.zeros(a.size, a.dtype).at[jnp.argmax(jnp.abs(a.ravel()))].set(relative)
        return a * (1 + mask.reshape(a.shape))

    def scale_grad(self, a, factor): return self._scaled(a, factor)
    def zero_grad(self, a): return self._scaled(a, 0.0)


# ---- one call of the patched op, in a framework-neutral form -------------------------------------

@dataclass
class DenseCall:
    """y = x @ W (+ b): W stored (in, out) or, for torch, (out, in)."""

    ops: _Ops
    x: Any
    w: Any
    b: Any
    w_in_axis: int  # the contracted axis of w
    run: Callable[["DenseCall"], Any]  # calls the original function with these fields

    def __call__(self) -> Any:
        return self.run(self)


@dataclass
class ConvCall:
    """One convolution with its layout: which axes of x, w and y are spatial, channels, in, out."""

    ops: _Ops
    x: Any
    w: Any
    b: Any
    strides: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int
    x_channel: int
    x_spatial: tuple[int, ...]
    w_in: int
    w_out: int
    w_spatial: tuple[int, ...]
    y_spatial: tuple[int, ...]
    run: Callable[["ConvCall"], Any]

    def __call__(self) -> Any:
        return self.run(self)

    def kernel_size(self) -> tuple[int, ...]:
        return tuple(self.ops.shape(self.w)[a] for a in self.w_spatial)


def _with(call, **changes):
    from dataclasses import replace

    return replace(call, **changes)


# ---- patching helpers ------------------------------------------------------------------------------

def _patch(target: Any, name: str, replacement: Callable) -> Uninstall:
    original = getattr(target, name)
    setattr(target, name, replacement)
    return lambda: setattr(target, name, original)


def _chain(*undo: Uninstall) -> Uninstall:
    def uninstall() -> None:
        for step in reversed(undo):
            step()
    return uninstall


_OPS: dict[str, _Ops] = {}


def _ops(framework: str) -> _Ops:
    if framework not in _OPS:
        _OPS[framework] = {"torch": _TorchOps, "keras": _TFOps, "flax": _JaxOps}[framework]()
    return _OPS[framework]


def _tuple(value: Any, rank: int) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (int(value),) * rank


# torch ----------------------------------------------------------------------------------------------

def _torch_dense(transform: Callable[[DenseCall], Any]) -> Uninstall:
    import torch.nn.functional as F

    original = F.linear
    ops = _ops("torch")

    def linear(input, weight, bias=None):
        return transform(DenseCall(ops, input, weight, bias, 1, lambda c: original(c.x, c.w, c.b)))

    return _patch(F, "linear", linear)


def _torch_conv(transform: Callable[[ConvCall], Any]) -> Uninstall:
    import torch.nn.functional as F

    ops = _ops("torch")

    def wrap(name: str, rank: int) -> Uninstall:
        original = getattr(F, name)

        def conv(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
            def run(c: ConvCall) -> Any:
                return original(c.x, c.w, c.b, c.strides, padding, c.dilation, c.groups)

            spatial = tuple(range(2, 2 + rank))
            return transform(ConvCall(ops, input, weight, bias, _tuple(stride, rank), _tuple(dilation, rank), groups,
                                      1, spatial, 1, 0, spatial, spatial, run))

        return _patch(F, name, conv)

    return _chain(wrap("conv1d", 1), wrap("conv2d", 2))


# Keras on TensorFlow --------------------------------------------------------------------------------

def _keras_backend_modules() -> tuple[Any, Any]:
    import keras  # noqa: F401  (its backend modules exist only after import)
    from keras.src.backend.tensorflow import nn, numpy

    return numpy, nn


def _keras_dense(transform: Callable[[DenseCall], Any]) -> Uninstall:
    numpy_mod, _ = _keras_backend_modules()
    original = numpy_mod.matmul
    ops = _ops("keras")

    def matmul(x1, x2):
        if len(x2.shape) != 2:  # not a Dense kernel
            return original(x1, x2)
        return transform(DenseCall(ops, x1, x2, None, 0, lambda c: original(c.x, c.w)))

    return _patch(numpy_mod, "matmul", matmul)


def _keras_conv(transform: Callable[[ConvCall], Any]) -> Uninstall:
    _, nn_mod = _keras_backend_modules()
    original = nn_mod.conv
    ops = _ops("keras")

    def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
        rank = len(kernel.shape) - 2
        first = data_format == "channels_first"
        channel = 1 if first else rank + 1
        spatial = tuple(range(2, 2 + rank)) if first else tuple(range(1, 1 + rank))

        def run(c: ConvCall) -> Any:
            return original(c.x, c.w, c.strides, padding, data_format, c.dilation)

        groups = int(inputs.shape[channel]) // int(kernel.shape[-2])
        return transform(ConvCall(ops, inputs, kernel, None, _tuple(strides, rank), _tuple(dilation_rate, rank),
                                  groups, channel, spatial, rank, rank + 1, tuple(range(rank)), spatial, run))

    return _patch(nn_mod, "conv", conv)


# Flax (jax.lax) -------------------------------------------------------------------------------------

def _patch_lax(name: str, replacement: Callable) -> Uninstall:
    """jax.lax.<name>, plus the nnx constructors that took it as a default argument."""
    import jax
    from flax import nnx

    original = getattr(jax.lax, name)
    undo = [_patch(jax.lax, name, replacement)]
    for cls in (nnx.Linear, nnx.Conv, nnx.LinearGeneral, nnx.Einsum, nnx.ConvTranspose):
        defaults = cls.__init__.__kwdefaults__ or {}
        for key, value in list(defaults.items()):
            if value is original:
                defaults[key] = replacement
                undo.append(lambda d=defaults, k=key: d.__setitem__(k, original))
    return _chain(*undo)


def _flax_dense(transform: Callable[[DenseCall], Any]) -> Uninstall:
    import jax

    original = jax.lax.dot_general
    ops = _ops("flax")

    def dot_general(lhs, rhs, dimension_numbers, *args, **kwargs):
        (lhs_c, rhs_c), (lhs_b, rhs_b) = dimension_numbers
        if rhs.ndim != 2 or tuple(rhs_c) != (0,) or lhs_b or rhs_b:  # not a Dense kernel (in, out)
            return original(lhs, rhs, dimension_numbers, *args, **kwargs)
        return transform(DenseCall(ops, lhs, rhs, None, 0,
                                   lambda c: original(c.x, c.w, dimension_numbers, *args, **kwargs)))

    return _patch_lax("dot_general", dot_general)


def _flax_conv(transform: Callable[[ConvCall], Any]) -> Uninstall:
    import jax

    original = jax.lax.conv_general_dilated
    ops = _ops("flax")

    def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                             dimension_numbers=None, feature_group_count=1, batch_group_count=1, **kwargs):
        rank = rhs.ndim - 2
        dn = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        lhs_spec, rhs_spec, out_spec = dn

        def run(c: ConvCall) -> Any:
            return original(c.x, c.w, c.strides, padding, lhs_dilation, c.dilation, dimension_numbers, c.groups,
                            batch_group_count, **kwargs)

        return transform(ConvCall(ops, lhs, rhs, None, _tuple(window_strides, rank),
                                  _tuple(rhs_dilation if rhs_dilation is not None else 1, rank), feature_group_count,
                                  lhs_spec[1], tuple(lhs_spec[2:]), rhs_spec[1], rhs_spec[0], tuple(rhs_spec[2:]),
                                  tuple(out_spec[2:]), run))

    return _patch_lax("conv_general_dilated", conv_general_dilated)


_DENSE = {"torch": _torch_dense, "keras": _keras_dense, "flax": _flax_dense}
_CONV = {"torch": _torch_conv, "keras": _keras_conv, "flax": _flax_conv}


# ---- the transformations --------------------------------------------------------------------------

def _drop_bias(c):
    return c.run(_with(c, b=None))


def _dense_kernel_transposed(c: DenseCall):
    """W^T where W is square; otherwise the flattened kernel reversed (a wrong reshape)."""
    shape = c.ops.shape(c.w)
    if shape[0] == shape[1]:
        return c.run(_with(c, w=c.ops.transpose(c.w, (1, 0))))
    flat = c.ops.reshape(c.w, (-1,))
    return c.run(_with(c, w=c.ops.reshape(c.ops.flip(flat, [0]), shape)))


def _conv_kernel_flipped(c: ConvCall):
    return c.run(_with(c, w=c.ops.flip(c.w, c.w_spatial)))


def _conv_even_kernel_off_by_one(c: ConvCall):
    """Padding off by one where the kernel is even: the input sits one step late along that axis."""
    x = c.x
    for axis, k in zip(c.x_spatial, c.kernel_size()):
        if k % 2 == 0:
            x = c.ops.shift(x, axis)
    return c.run(_with(c, x=x))


def _conv_stride_ignored(c: ConvCall):
    """Stride 1 whatever was asked, cropped to the expected output size."""
    expected = c.ops.shape(c())
    y = c.run(_with(c, strides=(1,) * len(c.strides)))
    return c.ops.crop(y, c.y_spatial, [expected[a] for a in c.y_spatial])


def _conv_dilation_ignored(c: ConvCall):
    expected = c.ops.shape(c())
    y = c.run(_with(c, dilation=(1,) * len(c.dilation)))
    return c.ops.crop(y, c.y_spatial, [expected[a] for a in c.y_spatial])


def _conv_groups_permuted(c: ConvCall):
    """Group g's filters applied to group g+1's channels (the kernel's output blocks rolled by one)."""
    if c.groups == 1:
        return c()
    return c.run(_with(c, w=c.ops.roll_blocks(c.w, c.w_out, c.groups)))


def _inputs_f32(c) -> bool:
    return c.ops.is_float32(c.x)


def _tf32_inputs(c):
    if not _inputs_f32(c):
        return c()
    return c.run(_with(c, x=c.ops.tf32(c.x), w=c.ops.tf32(c.w)))


def _bf16_compute(c):
    if not _inputs_f32(c):
        return c()
    ops = c.ops
    b = None if c.b is None else ops.cast(c.b, "bfloat16")
    return ops.cast(c.run(_with(c, x=ops.cast(c.x, "bfloat16"), w=ops.cast(c.w, "bfloat16"), b=b)), "float32")


def _perturb_one(c):
    y = c()
    size = 1
    for s in c.ops.shape(y):
        size *= s
    return c.ops.perturb_largest(y, PERTURB_RELATIVE) if size >= PERTURB_MIN_SIZE else y


def _grad_dx_scaled(c):
    return c.run(_with(c, x=c.ops.scale_grad(c.x, GRAD_SCALE)))


def _grad_bias_dropped(c):
    return c() if c.b is None else c.run(_with(c, b=c.ops.zero_grad(c.b)))


def _benign_ulp(c):
    y = c()
    return c.ops.next_up(y) if c.ops.is_floating(y) else y


def _benign_reversed_dense(c: DenseCall):
    """The same dot products, summed over the input features in reverse order."""
    return c.run(_with(c, x=c.ops.flip(c.x, [len(c.ops.shape(c.x)) - 1]), w=c.ops.flip(c.w, [c.w_in_axis])))


def _benign_reversed_conv(c: ConvCall):
    """The same convolution, input channels of each group in reverse order (kernel reordered to match)."""
    ops = c.ops
    return c.run(_with(c, x=ops.reverse_within_blocks(c.x, c.x_channel, c.groups), w=ops.flip(c.w, [c.w_in])))


def _benign_float64(c):
    if not _inputs_f32(c):
        return c()
    ops = c.ops
    b = None if c.b is None else ops.cast(c.b, "float64")
    return ops.cast(c.run(_with(c, x=ops.cast(c.x, "float64"), w=ops.cast(c.w, "float64"), b=b)), "float32")


# ---- the catalog -----------------------------------------------------------------------------------

def _installer(framework: str, dense: Callable | None, conv: Callable | None) -> Callable[[], Uninstall]:
    def install() -> Uninstall:
        undo = []
        if dense is not None:
            undo.append(_DENSE[framework](dense))
        if conv is not None:
            undo.append(_CONV[framework](conv))
        return _chain(*undo)
    return install


# claims that exercise each op, per framework (the dense claims include the 1x1 equivalences)
DENSE_CLAIMS = {"torch": ("xfw-dense", "torch-linear-conv1d-k1", "torch-full-kernel-conv1d-linear"),
                "keras": ("xfw-dense", "keras-dense-conv1d-methods", "keras-full-kernel-conv1d-dense"),
                "flax": ("xfw-dense", "flax-dense-conv-1x1")}
CONV_CLAIMS = {fw: ("xfw-conv1d", "xfw-conv2d") for fw in ("torch", "keras", "flax")}
_NAMES = {"torch": "torch", "keras": "Keras (TensorFlow)", "flax": "Flax (jax.lax)"}
_OPNAMES = {"torch": ("F.linear", "F.conv1d/conv2d"), "keras": ("backend matmul", "backend conv"),
            "flax": ("lax.dot_general", "lax.conv_general_dilated")}


def _both(framework: str, id: str, text: str, kind: str, transform: Callable, checks=("forward",),
          claims: tuple[str, ...] | None = None, dense: Callable | None = None) -> Fault:
    ops = _OPNAMES[framework]
    return Fault(f"{framework}-{id}", f"{_NAMES[framework]} {ops[0]} and {ops[1]}: {text}", framework, kind,
                 _installer(framework, dense or transform, transform),
                 DENSE_CLAIMS[framework] + CONV_CLAIMS[framework] if claims is None else claims, checks, "both")


def _dense_only(framework: str, id: str, text: str, kind: str, transform: Callable, checks=("forward",)) -> Fault:
    return Fault(f"{framework}-{id}", f"{_NAMES[framework]} {_OPNAMES[framework][0]}: {text}", framework, kind,
                 _installer(framework, transform, None), DENSE_CLAIMS[framework], checks, "dense")


def _conv_only(framework: str, id: str, text: str, kind: str, transform: Callable, checks=("forward",)) -> Fault:
    return Fault(f"{framework}-{id}", f"{_NAMES[framework]} {_OPNAMES[framework][1]}: {text}", framework, kind,
                 _installer(framework, None, transform), CONV_CLAIMS[framework], checks, "conv")


def _catalog() -> tuple[Fault, ...]:
    faults: list[Fault] = [
        # the bias is an argument of the op only in torch (Keras and Flax add it in the layer)
        _both("torch", "bias-dropped", "the bias argument is ignored", "fault", _drop_bias),
        Fault("torch-linear-grad-bias-dropped",
              "torch F.linear: correct forward, but the bias gets a zero gradient", "torch", "fault",
              _installer("torch", _grad_bias_dropped, None), DENSE_CLAIMS["torch"], ("gradient",), "dense"),
    ]
    all_checks = ("forward", "gradient", "batch")
    for fw in ("torch", "keras", "flax"):
        faults += [
            _dense_only(fw, "kernel-transposed", "kernel used transposed (W^T where square, else the flattened "
                        "kernel reversed)", "fault", _dense_kernel_transposed),
            _conv_only(fw, "kernel-flipped", "kernel flipped: convolution instead of cross-correlation", "fault",
                       _conv_kernel_flipped),
            _conv_only(fw, "padding-off-by-one", "off-by-one padding along axes with an even kernel (input "
                       "shifted one step)", "fault", _conv_even_kernel_off_by_one),
            _conv_only(fw, "stride-ignored", "stride ignored (stride 1, cropped to the expected output size)",
                       "fault", _conv_stride_ignored),
            _conv_only(fw, "dilation-ignored", "dilation ignored (dilation 1, cropped to the expected output size)",
                       "fault", _conv_dilation_ignored),
            _conv_only(fw, "groups-permuted", "wrong group mapping: each group's filters applied to the next "
                       "group's channels", "fault", _conv_groups_permuted),
            _both(fw, "tf32-inputs", "float32 inputs and kernel truncated to TF32 (low 13 mantissa bits zeroed)",
                  "fault", _tf32_inputs),
            _both(fw, "bf16-compute", "float32 op computed in bfloat16, returned as float32", "fault",
                  _bf16_compute),
            _both(fw, "perturb-one-element", f"the largest output element scaled by 1+{PERTURB_RELATIVE:g} when the "
                  f"output has >= {PERTURB_MIN_SIZE} elements", "fault", _perturb_one, claims=()),
            _dense_only(fw, "grad-dx-scaled", f"correct forward, but the input gradient scaled by {GRAD_SCALE:g}",
                        "fault", _grad_dx_scaled, checks=("gradient",)),
            _both(fw, "benign-ulp", "output moved 1 ulp toward +inf, elementwise", "benign", _benign_ulp,
                  checks=all_checks),
            _both(fw, "benign-reversed-sum", "the reduction summed in reverse input-channel order", "benign",
                  _benign_reversed_conv, checks=all_checks, dense=_benign_reversed_dense),
            _both(fw, "benign-float64-accumulation", "float32 op computed in float64, rounded to float32",
                  "benign", _benign_float64, checks=all_checks),
        ]
    return tuple(faults)


FAULTS: tuple[Fault, ...] = _catalog()
FAULTS_BY_ID: dict[str, Fault] = {f.id: f for f in FAULTS}
assert len(FAULTS_BY_ID) == len(FAULTS), "duplicate fault ids"
