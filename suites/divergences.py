"""Documented divergences: where a framework genuinely disagrees with the reference, with evidence.

A divergence is data, matched per variant (framework, layer kind, dtype, Keras backend). A matching
variant is still run and measured; its excess over the bound is reported under `divergences`
instead of failing the row, so everything else in the row keeps its full power. If a documented
divergence is no longer observed in a run, the report says so (the framework may have fixed it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from adapters.spec import LayerSpec


@dataclass(frozen=True)
class Divergence:
    id: str
    framework: str
    applies: Callable[[LayerSpec, str, str | None], bool]  # (spec, dtype, keras backend)
    summary: str
    evidence: str


DIVERGENCES: tuple[Divergence, ...] = (
    Divergence(
        id="keras-torch-float64-matmul",
        framework="keras",
        applies=lambda spec, dtype, backend: backend == "torch" and dtype == "float64" and spec.kind == "dense",
        summary="Keras Dense in float64 on the torch backend computes in float32: keras.ops.matmul casts both "
                "float64 operands to keras.backend.result_type(float64, float64), which is float32 on every "
                "backend but tensorflow (keras/src/backend/common/dtypes.py, BIT64_TO_BIT32_DTYPE), then casts "
                "the product back to float64.",
        evidence="keras 3.15.1, torch 2.13.0: Dense(2) on float64 inputs differs from the float64 reference by "
                 "5.8e-8 (bound 5e-15, ratio ~1e7); torch.matmul on the same float64 tensors is exact "
                 "(2.2e-16); keras.backend.result_type('float64', 'float64') == 'float32' with KERAS_BACKEND=torch.",
    ),
)


def keras_backend() -> str | None:
    from adapters.keras import BACKEND

    return BACKEND


def divergence_for(framework: str, spec: LayerSpec, dtype: str) -> Divergence | None:
    """The documented divergence this variant falls under, if any."""
    for divergence in DIVERGENCES:
        if divergence.framework == framework:
            backend = keras_backend() if framework == "keras" else None
            if divergence.applies(spec, dtype, backend):
                return divergence
    return None
