"""What precision a layer really computes in: its output dtype and the operands of its matmul or convolution.

A mixed-precision layer (float32 parameters, a half-precision compute dtype: Keras mixed policies,
Flax `dtype=`/`param_dtype=`, torch `autocast`) is judged against the half type's bound. If the
framework quietly computed in float32 instead, every such result would pass for the wrong reason.
So under a mixed policy each adapter checks, once per geometry and input shape, which dtypes reached
the core operation, and on every call the dtype of the output. A mismatch raises ComputeDtypeError, which the
harness reports as a failure naming the layer and the dtypes seen.

Frameworks are imported inside the functions that need them.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

from .spec import POLICY_COMPUTE, compute_dtype

_CHECKED: set[tuple[Any, ...]] = set()


class ComputeDtypeError(AssertionError):
    """A layer computed in another dtype than the one it was built for."""


def _name(dtype: Any) -> str:
    text = str(getattr(dtype, "name", dtype))
    return text.replace("torch.", "").replace("<dtype: '", "").replace("'>", "")


def check_output(layer: Any, dtype: Any) -> None:
    """Under a mixed policy, the layer's output has the policy's half type.

    Plain dtypes are left to the numeric judgement: a layer that computes in a wider or narrower type
    than asked shows there as an error against the bound (or as a documented divergence with its own
    ceiling, such as Keras Dense in float64 on the torch backend, which computes in float32).
    """
    if layer.dtype not in POLICY_COMPUTE:
        return
    want = compute_dtype(layer.dtype)
    if _name(dtype) != want:
        raise ComputeDtypeError(f"{layer.adapter.name} {layer.adapter.class_name(layer.spec)} built for {layer.dtype} "
                                f"returned a {_name(dtype)} output; it should compute in {want}")


def first_time(*key: Any) -> bool:
    """True once per key (a geometry, dtype and input shape): the operand check runs once for each."""
    if key in _CHECKED:
        return False
    _CHECKED.add(key)
    return True


def check_operands(layer: Any, seen: Iterable[str], how: str) -> None:
    """Every operand of the layer's matmul or convolution had the compute dtype (and there was one)."""
    seen = sorted(set(seen))
    want = compute_dtype(layer.dtype)
    if seen != [want]:
        found = ", ".join(seen) if seen else "no matmul or convolution"
        raise ComputeDtypeError(f"{layer.adapter.name} {layer.adapter.class_name(layer.spec)} under {layer.dtype}: "
                                f"its matmul/convolution operands were {found} ({how}); the policy's compute dtype "
                                f"is {want}, so the layer did not compute in {want}")


# ---- per framework: the dtypes that reached the core operation --------------------------------------
_JAX_CORE = ("dot_general", "conv_general_dilated")


def jax_operand_dtypes(fn: Callable[..., Any], *args: Any) -> set[str]:
    """Operand dtypes of every dot_general / conv_general_dilated in fn's jaxpr (nested calls included)."""
    import jax

    found: set[str] = set()

    def walk(jaxpr: Any) -> None:
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in _JAX_CORE:
                found.update(_name(v.aval.dtype) for v in eqn.invars)
            for value in eqn.params.values():  # a nested program (pjit, custom_jvp, ...) is a ClosedJaxpr
                for item in value if isinstance(value, (list, tuple)) else (value,):
                    if hasattr(item, "jaxpr") and hasattr(item.jaxpr, "eqns"):
                        walk(item.jaxpr)
                    elif hasattr(item, "eqns"):
                        walk(item)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


_TORCH_CORE = ("convolution", "addmm", "mm", "bmm", "linear", "matmul", "baddbmm")


def torch_operand_dtypes(call: Callable[[], Any]) -> tuple[Any, set[str]]:
    """(call(), the dtypes of the tensor operands of every aten convolution/matmul it ran).

    A TorchDispatchMode sees the operations after autocast has cast their operands, so it reports
    the dtypes the kernel really received.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    found: set[str] = set()

    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            if func.__name__.split(".")[0] in _TORCH_CORE:
                found.update(_name(a.dtype) for a in args if isinstance(a, torch.Tensor))
            return func(*args, **(kwargs or {}))

    with Spy():
        result = call()
    return result, found


_TF_CORE = ("MatMul", "BatchMatMulV2", "BatchMatMulV3", "Conv2D", "Conv3D", "Conv", "DepthwiseConv2dNative",
            "Einsum", "_FusedMatMul", "_FusedConv2D")


def tf_operand_dtypes(fn: Callable[[Any], Any], x: Any) -> set[str]:
    """Dtypes (attribute T) of every matmul/convolution in the graph tf.function traces for fn(x),
    functions it calls (Keras' XLA-compiled grouped convolution) included."""
    import tensorflow as tf

    graph = tf.function(fn, autograph=False).get_concrete_function(
        tf.TensorSpec(x.shape, x.dtype)).graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    return {tf.dtypes.as_dtype(n.attr["T"].type).name for n in nodes if n.op in _TF_CORE and "T" in n.attr}
