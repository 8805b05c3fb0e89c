"""`assert_conforms(a, b)`: two live layers, from any supported frameworks, compute the same function.

The layers are read (layer_conformance.adapters.native: geometry, weights, dtype) and their weights
transferred into this project's adapter layers of the same frameworks. Hypothesis then draws inputs
around the layer's own geometry (batch 1-3; spatial lengths from the shortest the layer accepts to a
few strides past its dilated kernel) in every data style, and each layer's output and gradients (input,
kernel, bias, for a random cotangent) are judged against the float64 reference of `a`'s weights under
the derived bound (layer_conformance.suites.bounds). So a wrong weight transfer into `b` fails, with
the bound ratio, the counterexample and a command that replays it; so does `a` itself, if its
framework computes outside the bound.

A comparison whose bound is infinite (a half-precision sum too long for the worst-case bound, with no
float32 accumulator shown by the probe) is not judged: if nothing could be judged the call raises, and
it never passes on an infinite bound. Under the pytest plugin every call records itself into the
running test's report row (check `conforms`).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from layer_conformance.adapters import get_adapter, reference
from layer_conformance.adapters.native import NativeLayer, read_native
from layer_conformance.adapters.spec import POLICY_COMPUTE, LayerSpec, Weights
from layer_conformance.suites.bounds import ROUNDOFF_LABEL, bound_ratio, layer_error_bound, vacuous

CHECKS = ("forward", "gradient")
HALF = ("float16", "bfloat16", *POLICY_COMPUTE)
COUNTEREXAMPLES_ENV = "CONFORMANCE_COUNTEREXAMPLES"


class ConformanceError(AssertionError):
    """Two layers that should compute the same function do not, beyond what rounding allows.

    `result` holds the numbers; `counterexample` the saved example (.npz) and `repro` the command that
    replays it."""

    def __init__(self, message: str, result: "ConformsResult | None" = None, counterexample: Path | None = None,
                 repro: str | None = None):
        super().__init__(message)
        self.result, self.counterexample, self.repro = result, counterexample, repro


@dataclass
class Comparison:
    """One output or gradient of one layer against the reference: max error, bound ratio and where."""

    layer: str  # "a" or "b"
    what: str  # "output", "d input", "d kernel", "d bias"
    error: float
    ratio: float
    index: tuple[int, ...]
    got: float
    expected: float


@dataclass
class ConformsResult:
    """What assert_conforms measured: the worst bound ratio over every example and comparison."""

    a: str
    b: str
    spec: LayerSpec
    dtype: str
    device: str
    checks: tuple[str, ...]
    examples: int = 0
    max_bound_ratio: float = 0.0
    max_abs_error: float = 0.0
    worst: Comparison | None = None
    not_judged: dict[str, str] = field(default_factory=dict)

    def note(self, comparison: Comparison) -> None:
        if self.worst is None or not comparison.ratio <= self.max_bound_ratio:
            self.worst = comparison
        self.max_bound_ratio = max(self.max_bound_ratio, comparison.ratio) if np.isfinite(comparison.ratio) \
            else float("inf")
        self.max_abs_error = max(self.max_abs_error, comparison.error)


def _host_weights(weights: Weights) -> dict[str, np.ndarray]:
    return {name: np.asarray(value, dtype=np.float64) for name, value in weights.items()}


def compare_example(layers: Mapping[str, Any], spec: LayerSpec, dtype: str, device: str, weights: Weights,
                    x: np.ndarray, cotangent: np.ndarray | None, frameworks: Mapping[str, str],
                    checks: Sequence[str]) -> tuple[list[Comparison], dict[str, str]]:
    """Every layer's output (and gradients when `cotangent` is given) against the float64 reference of
    `weights` on input `x`: the comparisons, and what could not be judged (infinite bound) with why."""
    from layer_conformance.suites.accumulation import accumulator, not_judged_reason
    from layer_conformance.suites.gradients import gradient_bounds, not_judged_gradient, term_counts
    from layer_conformance.suites.numerics import declared_u_eff

    w64 = _host_weights(weights)
    x64 = x.astype(np.float64)
    expected, magnitude = reference.forward_and_magnitude(spec, x64, w64)
    bias_magnitude = np.abs(w64["bias"]) if spec.bias else 0.0
    comparisons: list[Comparison] = []
    not_judged: dict[str, str] = {}

    def judge(side: str, what: str, got: np.ndarray, want: np.ndarray, bound: np.ndarray, reason: str) -> None:
        if vacuous(bound):
            not_judged[f"{side} {what}"] = reason
            return
        error, ratio, index = bound_ratio(got, want, bound)
        comparisons.append(Comparison(side, what, error, ratio, index, float(np.asarray(got, np.float64)[index]),
                                      float(want[index])))

    if "forward" in checks:
        for side, layer in layers.items():
            found = accumulator(frameworks[side], spec, dtype, device, x) if dtype in HALF else None
            u_eff = declared_u_eff(frameworks[side], spec, dtype, device)[1]  # TF32 and kin, where in force
            bound = layer_error_bound(spec.reduction_length, magnitude, expected, bias_magnitude, dtype, found, u_eff)
            judge(side, "output", layer.forward(x), expected,
                  bound, not_judged_reason(spec.reduction_length + 1, dtype, found))
    if cotangent is not None and "gradient" in checks:
        g64 = cotangent.astype(np.float64)
        try:
            dx, dw = reference.vjp(spec, x64, w64, g64)
            mx, mw = reference.vjp(spec, np.abs(x64), {k: np.abs(v) for k, v in w64.items()}, np.abs(g64))
        except NotImplementedError as error:
            for side in layers:
                not_judged[f"{side} gradients"] = f"no float64 reference: {error}"
            return comparisons, not_judged
        counts = term_counts(spec, expected.shape)
        wanted = {"input": (dx, mx), **{name: (dw[name], mw[name]) for name in dw}}
        for side, layer in layers.items():
            got_dx, got_dw = layer.vjp(x, cotangent)
            got = {"input": got_dx, **got_dw}
            bounds, found = gradient_bounds(frameworks[side], spec, dtype, device, x, expected.shape, counts,
                                            {name: mag for name, (_, mag) in wanted.items()},
                                            {name: want for name, (want, _) in wanted.items()})
            for name, (want, _) in wanted.items():
                judge(side, f"d {name}", got[name], want, bounds[name],
                      not_judged_gradient(name, counts[name], dtype, found))
    return comparisons, not_judged


def assert_conforms(a: Any, b: Any, *, a_params: Mapping[str, Any] | None = None,
                    b_params: Mapping[str, Any] | None = None, checks: Iterable[str] = CHECKS,
                    examples: int | None = None, device: str = "cpu", batch: tuple[int, int] = (1, 3),
                    lengths: Sequence[tuple[int, int]] | None = None,
                    styles: Sequence[str] | None = None) -> ConformsResult:
    """Assert that live layers `a` and `b` compute the same function, within the derived error bound.

    a, b: torch `nn.Linear`/`Conv1d`/`Conv2d`, Keras `Dense`/`Conv1D`/`Conv2D` (built), Flax linen
    `Dense`/`Conv` (with `a_params`/`b_params`: the variables) or nnx `Linear`/`Conv`, of one geometry and
    dtype. `b` is judged against the float64 reference of `a`'s weights, so a wrong transfer fails.
    checks: "forward" and/or "gradient". examples: hypothesis examples (default: the active profile's).
    batch, lengths: the ranges inputs are drawn from (lengths: one (low, high) per spatial axis).
    styles: data styles (default: all of normal, uniform, wide-range, small-integers).

    Returns the measurements; raises ConformanceError (an AssertionError) with the bound ratio, the
    counterexample and a repro command when a comparison exceeds its bound, or when nothing could be judged.
    """
    __tracebackhide__ = True  # a failure shows the user's call and the message, not this function's source
    from hypothesis import HealthCheck, given, settings, strategies as st

    from layer_conformance.suites.strategies import STYLES, data_source, random_array
    from layer_conformance.suites.user_claims import layer_dims

    checks = tuple(checks)
    unknown = [c for c in checks if c not in CHECKS]
    if unknown or not checks:
        raise ValueError(f"assert_conforms: checks must name some of {', '.join(CHECKS)}; got {list(checks)}")
    native_a, native_b = read_native(a, a_params), read_native(b, b_params)
    if native_a.spec != native_b.spec:
        raise ConformanceError(f"assert_conforms: the layers differ in geometry, so they cannot compute the same "
                               f"function: a is {native_a.description} = {native_a.spec.describe()}, b is "
                               f"{native_b.description} = {native_b.spec.describe()}; build b with a's geometry")
    if native_a.dtype != native_b.dtype:
        raise ValueError(f"assert_conforms: a computes in {native_a.dtype} and b in {native_b.dtype}; compare layers "
                         f"of one dtype (their bound is the dtype's)")
    spec, dtype = native_a.spec, native_a.dtype
    layers = {"a": get_adapter(native_a.framework).build(spec, native_a.weights, dtype, device),
              "b": get_adapter(native_b.framework).build(spec, native_b.weights, dtype, device)}
    frameworks = {"a": native_a.framework, "b": native_b.framework}
    result = ConformsResult(native_a.description, native_b.description, spec, dtype, device, checks)
    failing: list[tuple[np.ndarray, np.ndarray | None, list[Comparison], str, int]] = []
    current = settings()
    draw_styles = tuple(styles or STYLES)

    @settings(current, max_examples=examples or current.max_examples, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.differing_executors])
    @given(dims=layer_dims(spec, batch=batch, lengths=lengths), source=data_source(styles=draw_styles),
           cotangent_seed=st.integers(0, 2 ** 32 - 1))
    def run(dims: dict, source: tuple[str, int], cotangent_seed: int) -> None:
        __tracebackhide__ = True
        style, seed = source
        x = random_array(np.random.default_rng(seed), dims["shape"], style, dtype)
        cotangent = None
        if "gradient" in checks:
            out_shape = reference.forward(spec, np.zeros(x.shape), _host_weights(native_a.weights)).shape
            cotangent = random_array(np.random.default_rng(cotangent_seed), out_shape, "normal", dtype)
        comparisons, not_judged = compare_example(layers, spec, dtype, device, native_a.weights, x, cotangent,
                                                  frameworks, checks)
        result.examples += 1
        result.not_judged.update(not_judged)
        for comparison in comparisons:
            result.note(comparison)
        bad = [c for c in comparisons if not c.ratio <= 1.0]
        if bad:
            failing.append((x, cotangent, bad, style, seed))
            raise AssertionError(_describe(bad, result))

    try:
        run()
    except AssertionError:
        if not failing:
            raise
        path, repro = save_counterexample(native_a, native_b, failing[-1], checks, device)
        _record(result, "failed")
        x, _, bad, style, seed = failing[-1]
        raise ConformanceError(f"assert_conforms: {_describe(bad, result)}\n  on input shape {x.shape} "
                               f"({style} data, seed {seed})\n  counterexample: {path}\n  repro: {repro}",
                               result, path, repro) from None
    if result.max_bound_ratio == 0.0 and result.worst is None:
        _record(result, "measured")
        raise ConformanceError(f"assert_conforms: nothing was judged: every comparison's bound is infinite "
                               f"({'; '.join(f'{k}: {v}' for k, v in sorted(result.not_judged.items()))}); "
                               f"this is never a pass", result)
    _record(result, "passed")
    return result


def _describe(bad: list[Comparison], result: ConformsResult) -> str:
    """The failing comparisons, outputs first: the worst in full, the others by their bound ratios."""
    order = sorted(bad, key=lambda c: (c.what != "output", -(c.ratio if np.isfinite(c.ratio) else np.inf)))
    first = order[0]
    name = result.a if first.layer == "a" else result.b
    text = (f"{first.layer} ({name}) {first.what} exceeds the error bound of {result.spec.describe()} in "
            f"{result.dtype} (u = {ROUNDOFF_LABEL.get(result.dtype, result.dtype)}): max error {first.error:.3g} is "
            f"{first.ratio:.3g}x the bound at index {first.index} (got {first.got:.9g}, float64 reference of a's "
            f"weights {first.expected:.9g})")
    if len(order) > 1:
        text += "; also " + ", ".join(f"{c.layer} {c.what} {c.ratio:.3g}x" for c in order[1:])
    return text


def _record(result: ConformsResult, status: str) -> None:
    """Under the plugin: the running test's report row (one per test; repeated calls keep the worst)."""
    from layer_conformance.reports.recorder import current_record

    record = current_record()
    if record is None:
        return
    old = record.get("max_bound_ratio") or 0.0
    ratio = result.max_bound_ratio
    record.update({
        "claim": record.get("claim") or f"conforms:{result.a} ~ {result.b}",
        "title": f"{result.b} computes what {result.a} computes",
        "relation": "equal", "check": "conforms", "source": "assert_conforms",
        "variants": sorted(set(record.get("variants") or []) | {result.a, result.b}),
        "dtype": result.dtype, "device": result.device,
        "examples": (record.get("examples") or 0) + result.examples,
        "max_bound_ratio": None if not np.isfinite(ratio) else max(old, ratio),
        "max_abs_error": max(record.get("max_abs_error") or 0.0, result.max_abs_error),
    })
    if result.not_judged:
        record.setdefault("not_judged", {}).update(result.not_judged)


def _folder() -> Path:
    from layer_conformance.reports.recorder import _RUNNING, counterexample_folder

    folder = counterexample_folder(_RUNNING[-1].config) if _RUNNING else None
    if folder is None:
        folder = Path(os.environ.get(COUNTEREXAMPLES_ENV) or Path(tempfile.gettempdir()) / "layer-conformance")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_counterexample(a: NativeLayer, b: NativeLayer, failing: tuple, checks: Sequence[str],
                        device: str) -> tuple[Path, str]:
    """The failing example as an .npz (input, both layers' weights, cotangent, geometry) and its repro command."""
    from layer_conformance.suites.serialize import spec_to_json

    x, cotangent, bad, style, seed = failing
    meta = {"schema": "layer-conformance/conforms/v1", "a": {"framework": a.framework, "description": a.description},
            "b": {"framework": b.framework, "description": b.description}, "spec": spec_to_json(a.spec),
            "dtype": a.dtype, "device": device, "checks": list(checks), "style": style, "seed": seed}
    arrays = {"x": x.astype(np.float64), **{f"a_{k}": np.asarray(v, np.float64) for k, v in a.weights.items()},
              **{f"b_{k}": np.asarray(v, np.float64) for k, v in b.weights.items()}}
    if cotangent is not None:
        arrays["cotangent"] = cotangent.astype(np.float64)
    key = json.dumps(meta, sort_keys=True).encode() + x.tobytes()
    import hashlib

    path = _folder() / f"conforms-{a.framework}-{b.framework}-{hashlib.sha256(key).hexdigest()[:10]}.npz"
    np.savez(path, meta=json.dumps(meta), **arrays)
    return path, f"{Path(sys.executable).name} -m layer_conformance.suites.conforms {path}"


def replay(path: str | os.PathLike[str]) -> int:
    """`python -m layer_conformance.suites.conforms FILE.npz`: the saved example again; 1 if it still fails."""
    from layer_conformance.adapters.spec import numpy_dtype
    from layer_conformance.suites.serialize import spec_from_json

    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        arrays = {name: data[name] for name in data.files if name != "meta"}
    spec, dtype, device = spec_from_json(meta["spec"]), meta["dtype"], meta["device"]
    weights = {side: {k[2:]: arrays[k].astype(numpy_dtype(dtype)) for k in arrays if k.startswith(f"{side}_")}
               for side in ("a", "b")}
    frameworks = {side: meta[side]["framework"] for side in ("a", "b")}
    layers = {side: get_adapter(frameworks[side]).build(spec, weights[side], dtype, device) for side in ("a", "b")}
    x = arrays["x"].astype(numpy_dtype(dtype))
    cotangent = arrays["cotangent"].astype(numpy_dtype(dtype)) if "cotangent" in arrays else None
    comparisons, not_judged = compare_example(layers, spec, dtype, device, weights["a"], x, cotangent, frameworks,
                                              meta["checks"])
    print(f"a = {meta['a']['description']}, b = {meta['b']['description']}: {spec.describe()} in {dtype} on {device}")
    for c in comparisons:
        print(f"  {c.layer} {c.what:<9} max error {c.error:.3g}, {c.ratio:.3g}x the bound at {c.index}"
              f"{'  EXCEEDS' if not c.ratio <= 1.0 else ''}")
    for what, why in sorted(not_judged.items()):
        print(f"  {what}: not judged ({why})")
    failed = any(not c.ratio <= 1.0 for c in comparisons)
    print("FAIL: a comparison exceeds its bound" if failed else "PASS: every comparison is within its bound")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m layer_conformance.suites.conforms COUNTEREXAMPLE.npz", file=sys.stderr)
        sys.exit(2)
    sys.exit(replay(sys.argv[1]))
