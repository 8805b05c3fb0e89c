"""The unit roundoff a variant is judged under: its dtype's, or the declared u_eff of the precision mode its
framework computes in.

Under `--conformance-numerics strict` (the default) every framework computes float32 in float32, and every
bound uses the dtype's unit roundoff. Under `default`, frameworks keep their own settings, and a float32 layer
on an NVIDIA GPU from Ampere on is computed in TF32 by default (cuDNN in torch, TensorFlow, XLA):
`Adapter.declared_roundoff` reads which mode from the framework's settings (layer_conformance.adapters.precision),
and the checks judge that layer under the mode's declared u_eff (layer_conformance.suites.bounds.DECLARED_ROUNDOFF):
a TF32 result is measured against what TF32 allows, and one beyond it still fails. The report names the
mode per variant (`declared_roundoff`).
"""
from __future__ import annotations

from layer_conformance.adapters import get_adapter
from layer_conformance.adapters.spec import LayerSpec
from layer_conformance.suites.bounds import DECLARED_ROUNDOFF


def declared_u_eff(framework: str, spec: LayerSpec, dtype: str, device: str) -> tuple[str | None, float | None]:
    """(mode, u_eff) of the declared precision mode this framework computes the layer in, or (None, None): the
    dtype's own unit roundoff."""
    mode = get_adapter(framework).declared_roundoff(spec, dtype, device)
    if mode is None:
        return None, None
    if mode not in DECLARED_ROUNDOFF:  # an adapter naming a mode the bounds do not declare is a bug here
        raise ValueError(f"{framework} declares precision mode {mode!r}, which layer_conformance.suites.bounds."
                         f"DECLARED_ROUNDOFF does not define ({', '.join(DECLARED_ROUNDOFF)})")
    return mode, DECLARED_ROUNDOFF[mode]
