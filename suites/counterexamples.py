"""Failing examples saved so that people can act on them: one `.npz` plus standalone scripts.

For a failing example of test `nodeid` the folder gets

* ``<stem>.npz``: every array as float64 (values of the dtype under test are exact in float64; the
  dtype is in the metadata), so ``np.load(path, allow_pickle=False)`` always works. ``meta`` is a
  0-d unicode array holding a JSON document; ``x``, ``kernel`` and ``bias`` are the claim-level
  example; ``v{i}_x``, ``v{i}_kernel``, ``v{i}_bias``, ``v{i}_reference``, ``v{i}_bound`` and
  ``v{i}_observed`` are what variant i's layer was given, the float64 reference of that layer, the
  derived error bound and the framework's output, in the canonical (channels-last) layout.
* ``<stem>.<framework>.py`` for each framework with a failing variant: numpy and that framework
  only, so it can be attached to a bug report for the framework. It rebuilds the layers, runs them
  on the saved inputs and exits 1 if any output leaves the saved bound.

Hypothesis calls the test again and again while it shrinks; the last failing call is the minimal
example, so every call overwrites the files of its nodeid (stable names, atomic replacement).
"""
from __future__ import annotations

import glob
import json
import os
import shlex
import string
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from layer_conformance.adapters.spec import DTYPES, SpecError
from layer_conformance.suites.serialize import counterexample_stem, dims_from_json, dims_to_json, spec_from_json, spec_to_json
from layer_conformance.suites.strategies import describe_dims

if TYPE_CHECKING:
    from layer_conformance.suites.outcomes import Case, ExampleOutcome

# v2: specs store every LayerSpec field (v1 dropped padding_mode, so a circular, reflect or replicate layer
# came back with zero padding); `conformance repro` re-runs only the version written here
SCHEMA = "layer-conformance/counterexample/v2"
FRAMEWORK_ORDER = ("torch", "keras", "flax.linen", "flax.nnx")


class CounterexampleError(ValueError):
    """A counterexample file that cannot be used; the message is one line naming the file and the fix."""


# ---- saving -------------------------------------------------------------------------------------

def script_name(stem: str, framework: str) -> str:
    return f"{stem}.{framework.replace('.', '_')}.py"


def _f64(array: Any) -> np.ndarray:
    return np.asarray(np.asarray(array).astype(np.float64))


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None  # JSON has no inf/nan


def _write_atomic(path: Path, write: Callable[[Any], None], mode: int) -> None:
    """Write through a temporary file in the same folder: a reader sees the old file or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # mkstemp creates 0600; these files are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _keras_backend(outcome: "ExampleOutcome") -> str | None:
    if not any(v.framework == "keras" for v in outcome.variants):
        return None
    from layer_conformance.adapters import keras_backend

    return keras_backend()


def _meta(nodeid: str, case: "Case", outcome: "ExampleOutcome", message: str,
          keras_backend: str | None) -> dict[str, Any]:
    from layer_conformance.adapters import class_name, get_adapter
    from layer_conformance.suites.bounds import bound_ratio

    claim, dtype, device = case
    variants = []
    for i, v in enumerate(outcome.variants):
        layer_error, layer_ratio, _ = bound_ratio(v.layer_y, v.layer_reference, v.layer_bound)
        variants.append({
            "index": i, "label": v.label, "framework": v.framework, "class": class_name(v.framework, v.spec),
            "spec": spec_to_json(v.spec), "failed": v.failure is not None, "failure": v.failure,
            "max_abs_error": _finite(v.error), "bound_ratio": _finite(v.ratio),
            "layer_max_abs_error": _finite(layer_error), "layer_bound_ratio": _finite(layer_ratio),
        })
    frameworks = sorted({v.framework for v in outcome.variants}, key=FRAMEWORK_ORDER.index)
    return {
        "schema": SCHEMA, "nodeid": nodeid, "claim": claim.id, "title": claim.title, "relation": claim.relation,
        "dtype": dtype, "device": device, "dims": dims_to_json(outcome.dims), "message": message,
        "failures": list(outcome.failures), "skipped": dict(outcome.skipped), "keras_backend": keras_backend,
        "versions": {fw: get_adapter(fw).versions() for fw in frameworks}, "variants": variants,
    }


def save_counterexample(folder: Path, *, nodeid: str, case: "Case", outcome: "ExampleOutcome",
                        message: str) -> dict[str, Any]:
    """Write (overwrite) the .npz and the per-framework scripts of this test's failing example.

    Returns the report row's `counterexample`: paths relative to the folder's parent (where the
    report lives), and the `conformance repro` command for the .npz as the folder was given.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    backend = _keras_backend(outcome)
    stem = counterexample_stem(nodeid, backend)
    meta = _meta(nodeid, case, outcome, message, backend)

    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps(meta, allow_nan=False))}
    arrays["x"] = _f64(outcome.x)
    for name, value in outcome.weights.items():
        if value is not None:
            arrays[name] = _f64(value)
    for i, v in enumerate(outcome.variants):
        arrays[f"v{i}_x"] = _f64(v.layer_x)
        for name, value in v.layer_w.items():
            if value is not None:
                arrays[f"v{i}_{name}"] = _f64(value)
        arrays[f"v{i}_reference"] = _f64(v.layer_reference)
        arrays[f"v{i}_bound"] = _f64(v.layer_bound)
        arrays[f"v{i}_observed"] = _f64(v.layer_y)
    npz = folder / f"{stem}.npz"
    _write_atomic(npz, lambda handle: np.savez(handle, **arrays), 0o644)

    failing = {v.framework for v in outcome.variants if v.failure is not None}
    scripts = []
    for framework in (fw for fw in FRAMEWORK_ORDER if fw in failing):
        path = folder / script_name(stem, framework)
        text = render_script(framework, meta, npz.name, path.name)
        _write_atomic(path, lambda handle: handle.write(text.encode()), 0o755)
        scripts.append(path)
    for old in folder.glob(f"{glob.escape(stem)}.*.py"):  # a framework that failed only before shrinking
        if old not in scripts:
            old.unlink(missing_ok=True)

    base = folder.resolve().parent
    relative = [p.resolve().relative_to(base).as_posix() for p in (npz, *scripts)]
    result = {"npz": relative[0], "scripts": relative[1:],
              "command": f"conformance repro {shlex.quote(str(npz))}"}
    if scripts:  # the report writers link one script
        result["script"] = relative[1]
    return result


# ---- loading ------------------------------------------------------------------------------------

def load_counterexample(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a saved counterexample (no pickles); CounterexampleError with a one-line reason otherwise.

    Returns {"path", "meta" (the JSON document), "dims" (LayerSpec and tuples restored), "x",
    "weights", "variants" (meta entries with "spec" as a LayerSpec and the layer arrays under
    "x", "kernel", "bias", "reference", "bound", "observed"), "arrays" (everything in the file)}.
    """
    path = Path(path)
    if not path.exists():
        raise CounterexampleError(f"{path}: no such file; pass the .npz path printed by the failing test")
    if path.is_dir():
        raise CounterexampleError(f"{path} is a directory; pass one counterexample .npz file in it")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
        if magic.startswith(b"\x93NUMPY"):
            raise CounterexampleError(f"{path}: a single .npy array, not a counterexample .npz")
        if not magic.startswith((b"PK\x03\x04", b"PK\x05\x06")):
            raise CounterexampleError(f"{path}: not an .npz file (no zip signature); pass a counterexample .npz")
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except CounterexampleError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CounterexampleError(f"{path}: not a readable counterexample .npz ({reason})") from None
    if "meta" not in arrays:
        raise CounterexampleError(f"{path}: an .npz without `meta`, so not a layer-conformance counterexample")
    try:
        meta = json.loads(str(arrays["meta"]))
        if not isinstance(meta, dict) or not str(meta.get("schema", "")).startswith(SCHEMA.rsplit("/", 1)[0]):
            raise CounterexampleError(f"{path}: `meta` is not a layer-conformance counterexample document")
        missing = [key for key in ("nodeid", "claim", "dtype", "device", "dims", "message", "variants")
                   if key not in meta]
        if missing:
            raise CounterexampleError(f"{path}: `meta` lacks {', '.join(missing)}; re-run the failing test to "
                                      f"save it again")
        if meta["dtype"] not in DTYPES:
            raise CounterexampleError(f"{path}: unknown dtype {meta['dtype']!r} in `meta`")
        dims = dims_from_json(meta["dims"])
        weights = {name: arrays[name] for name in ("kernel", "bias") if name in arrays}
        variants = []
        for i, entry in enumerate(meta["variants"]):
            layer = {name: arrays[f"v{i}_{name}"] for name in ("x", "kernel", "bias", "reference", "bound",
                                                               "observed") if f"v{i}_{name}" in arrays}
            variants.append({**entry, "spec": spec_from_json(entry["spec"]), **layer})
        x = arrays["x"]
    except CounterexampleError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, SpecError) as exc:
        raise CounterexampleError(f"{path}: damaged counterexample ({type(exc).__name__}: {exc}); "
                                  f"re-run the failing test to save it again") from None
    return {"path": path, "meta": meta, "dims": dims, "x": x, "weights": weights, "variants": variants,
            "arrays": arrays}


# ---- standalone scripts -------------------------------------------------------------------------

_HEADER = '''\
#!/usr/bin/env python3
"""Reproduce a layer-conformance failure with $title alone: needs only numpy and $requires.

Each $title layer below is rebuilt from the saved spec and weights in the saved dtype, run on the
saved input, and compared with the saved float64 reference. Any correct implementation stays within
the saved bound gamma(K+1, u) * (|W||x| + |b|) (Higham, Accuracy and Stability, ch. 3) at every
output element. Exit status 1 means at least one layer left its bound.

Usage: python $script [NPZ]
       (NPZ defaults to $npz next to this script)
"""
$comments
import json
import os
import sys

import numpy as np
'''

_FOOTER = '''

def check(label, y, reference, bound):
    """Print the largest error and the worst error/bound ratio; True when within the bound everywhere."""
    error = np.abs(y - reference)
    error = np.where(np.isfinite(error), error, np.inf)  # a NaN or inf output is a failure
    ratio = error / bound
    worst = np.unravel_index(np.argmax(ratio), ratio.shape) if ratio.size else ()
    ok = not ratio.size or bool(ratio[worst] <= 1.0)
    if ratio.size:
        print(f"{label}: max |y - reference| = {error.max():.3g}; worst at output index {tuple(map(int, worst))}: "
              f"|y - reference| = {error[worst]:.3g}, bound there {bound[worst]:.3g}, "
              f"ratio {ratio[worst]:.3g} -> {'PASS' if ok else 'FAIL'}")
    return ok


def main(path):
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        print(f"claim {meta['claim']} [{meta['dtype']}, {meta['device']}]: {VERSION}")
        ok = True
        for i, variant in enumerate(meta["variants"]):
            if variant["framework"] != FRAMEWORK:
                continue
            bias = data[f"v{i}_bias"] if f"v{i}_bias" in data.files else None
            y = forward(variant["spec"], meta["dtype"], meta["device"], data[f"v{i}_x"], data[f"v{i}_kernel"], bias)
            ok = check(variant["label"], y, data[f"v{i}_reference"], data[f"v{i}_bound"]) and ok
    print("PASS: every layer is within its bound" if ok else "FAIL: a layer exceeds its bound")
    return 0 if ok else 1


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, $npz_literal)))
'''

_BODIES = {
    "torch": '''
import torch
import torch.nn.functional as F

FRAMEWORK = "torch"
VERSION = f"torch {torch.__version__}"


PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def same_pads(size, k, s, d):
    """TF/JAX 'same' padding: output ceil(size / s), the odd extra on the high side."""
    total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def pad_pairs(spec, spatial):
    """(low, high) per spatial axis; 'causal' puts all of the dilated kernel's reach on the low side."""
    if spec["padding"] == "causal":
        return [((k - 1) * d, 0) for k, d in zip(spec["kernel_size"], spec["dilation"])]
    if spec["padding"] == "same":
        return [same_pads(*a) for a in zip(spatial, spec["kernel_size"], spec["strides"], spec["dilation"])]
    return [tuple(pair) for pair in spec["padding"]]


def module_padding(spec, spatial):
    """(padding nn.Conv takes itself, F.pad list for the rest: asymmetric pairs, causal, or 'same' with stride > 1)."""
    padding = spec["padding"]
    if padding == "same" and all(s == 1 for s in spec["strides"]):
        return "same", []
    if padding == "valid":
        return 0, []
    if padding not in ("same", "causal") and all(lo == hi for lo, hi in padding):
        return tuple(lo for lo, _ in padding), []
    return 0, [p for pair in reversed(pad_pairs(spec, spatial)) for p in pair]  # F.pad lists the last axis first


def forward(spec, dtype, device, x, kernel, bias):
    """The torch layer with these weights on channels-last x; channels-last float64 out."""
    dt, dev = getattr(torch, dtype), ("cuda" if device == "gpu" else "cpu")
    x = torch.tensor(x, dtype=dt, device=dev)
    if spec["kind"] == "dense":
        layer = torch.nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"])
        weight = kernel.T  # nn.Linear stores (out, in)
    else:
        r = len(spec["kernel_size"])
        x = x.permute(0, r + 1, *range(1, r + 1))  # (N, *spatial, C) -> (N, C, *spatial)
        weight = kernel.transpose(r + 1, r, *range(r))  # (*k, in/groups, out) -> (out, in/groups, *k)
        padding, pads = module_padding(spec, x.shape[2:])
        cls = torch.nn.Conv1d if r == 1 else torch.nn.Conv2d
        layer = cls(spec["in_features"], spec["out_features"], tuple(spec["kernel_size"]),
                    stride=tuple(spec["strides"]), padding=padding, dilation=tuple(spec["dilation"]),
                    groups=spec["groups"], bias=spec["bias"], padding_mode=spec["padding_mode"])
        if any(pads):
            x = F.pad(x, pads, mode=PAD_MODES[spec["padding_mode"]])
    layer = layer.to(device=dev, dtype=dt)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(np.ascontiguousarray(weight), dtype=dt, device=dev))
        if spec["bias"]:
            layer.bias.copy_(torch.tensor(bias, dtype=dt, device=dev))
        y = layer(x)
    if spec["kind"] == "conv":
        y = y.permute(0, *range(2, r + 2), 1)  # back to channels-last
    return y.to(torch.float64).cpu().numpy()
''',
    "keras": '''
os.environ.setdefault("KERAS_BACKEND", $keras_backend)  # the backend the failure was seen on
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402

if keras.backend.backend() == "jax":
    import jax

    jax.config.update("jax_enable_x64", True)  # else float64 silently runs as float32

FRAMEWORK = "keras"
VERSION = f"keras {keras.__version__}, backend {keras.backend.backend()}"


def tensor(a, dtype):
    return keras.ops.cast(keras.ops.convert_to_tensor(a.astype(np.float64 if dtype == "float64" else np.float32)),
                          dtype)  # float32 holds every float16/bfloat16 value exactly


def forward(spec, dtype, device, x, kernel, bias):
    """The Keras layer with these weights on channels-last x; float64 out."""
    with keras.device("gpu:0" if device == "gpu" else "cpu:0"):
        if spec["kind"] == "dense":
            layer = keras.layers.Dense(spec["out_features"], use_bias=spec["bias"], dtype=dtype)
            layer.build((None, spec["in_features"]))
        else:
            r = len(spec["kernel_size"])
            cls = keras.layers.Conv1D if r == 1 else keras.layers.Conv2D
            layer = cls(spec["out_features"], tuple(spec["kernel_size"]), strides=tuple(spec["strides"]),
                        padding=spec["padding"] if spec["padding"] in ("same", "causal") else "valid",
                        dilation_rate=tuple(spec["dilation"]), groups=spec["groups"], use_bias=spec["bias"],
                        dtype=dtype)
            layer.build((None, *[None] * r, spec["in_features"]))
        layer.kernel.assign(tensor(kernel, dtype))  # Keras kernels are (in, out) / (*k, in/groups, out)
        if spec["bias"]:
            layer.bias.assign(tensor(bias, dtype))
        x = tensor(x, dtype)
        if spec["kind"] == "conv" and isinstance(spec["padding"], list) and any(map(any, spec["padding"])):
            x = keras.ops.pad(x, [(0, 0), *map(tuple, spec["padding"]), (0, 0)])  # explicit (low, high) pairs
        y = layer(x)
    return keras.ops.convert_to_numpy(keras.ops.cast(y, "float64"))
''',
    "flax.linen": '''
import jax

jax.config.update("jax_enable_x64", True)  # else float64 silently runs as float32
import flax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import linen  # noqa: E402

FRAMEWORK = "flax.linen"
VERSION = f"flax {flax.__version__}, jax {jax.__version__}"


def flax_padding(spec):
    """CIRCULAR/REFLECT for those padding modes (Flax then pads ((k_d - 1) // 2, k_d // 2) itself), else the
    padding as Flax spells it: 'SAME', 'VALID', 'CAUSAL' or (low, high) pairs."""
    if spec["padding_mode"] in ("circular", "reflect"):
        return spec["padding_mode"].upper()
    return spec["padding"].upper() if isinstance(spec["padding"], str) else [tuple(p) for p in spec["padding"]]


def forward(spec, dtype, device, x, kernel, bias):
    """The linen module with these params on channels-last x; float64 out."""
    dt, dev = getattr(jnp, dtype), jax.devices("gpu" if device == "gpu" else "cpu")[0]
    kw = dict(use_bias=spec["bias"], dtype=dt, param_dtype=dt)
    if spec["kind"] == "dense":
        module = linen.Dense(spec["out_features"], **kw)
    else:
        padding = flax_padding(spec)
        module = linen.Conv(spec["out_features"], tuple(spec["kernel_size"]), strides=tuple(spec["strides"]),
                            padding=padding, kernel_dilation=tuple(spec["dilation"]),
                            feature_group_count=spec["groups"], **kw)
    params = {"kernel": jax.device_put(jnp.asarray(kernel, dt), dev)}
    if spec["bias"]:
        params["bias"] = jax.device_put(jnp.asarray(bias, dt), dev)
    y = module.apply({"params": params}, jax.device_put(jnp.asarray(x, dt), dev))
    return np.asarray(jnp.asarray(y, jnp.float64))
''',
    "flax.nnx": '''
import jax

jax.config.update("jax_enable_x64", True)  # else float64 silently runs as float32
import flax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

FRAMEWORK = "flax.nnx"
VERSION = f"flax {flax.__version__}, jax {jax.__version__}"


def flax_padding(spec):
    """CIRCULAR/REFLECT for those padding modes (Flax then pads ((k_d - 1) // 2, k_d // 2) itself), else the
    padding as Flax spells it: 'SAME', 'VALID', 'CAUSAL' or (low, high) pairs."""
    if spec["padding_mode"] in ("circular", "reflect"):
        return spec["padding_mode"].upper()
    return spec["padding"].upper() if isinstance(spec["padding"], str) else [tuple(p) for p in spec["padding"]]


def forward(spec, dtype, device, x, kernel, bias):
    """The nnx module with these params on channels-last x; float64 out."""
    dt, dev = getattr(jnp, dtype), jax.devices("gpu" if device == "gpu" else "cpu")[0]
    kw = dict(use_bias=spec["bias"], dtype=dt, param_dtype=dt, rngs=nnx.Rngs(0))
    if spec["kind"] == "dense":
        module = nnx.Linear(spec["in_features"], spec["out_features"], **kw)
    else:
        padding = flax_padding(spec)
        module = nnx.Conv(spec["in_features"], spec["out_features"], tuple(spec["kernel_size"]),
                          strides=tuple(spec["strides"]), padding=padding, kernel_dilation=tuple(spec["dilation"]),
                          feature_group_count=spec["groups"], **kw)
    module.kernel.set_value(jax.device_put(jnp.asarray(kernel, dt), dev))
    if spec["bias"]:
        module.bias.set_value(jax.device_put(jnp.asarray(bias, dt), dev))
    y = module(jax.device_put(jnp.asarray(x, dt), dev))
    return np.asarray(jnp.asarray(y, jnp.float64))
''',
}

_TITLES = {"torch": ("PyTorch", "torch"), "keras": ("Keras", "keras (and its backend)"),
           "flax.linen": ("Flax linen", "jax + flax"), "flax.nnx": ("Flax nnx", "jax + flax")}


def _comment(text: str) -> str:
    return "\n".join(f"# {line}".rstrip() for line in str(text).splitlines())


def render_script(framework: str, meta: Mapping[str, Any], npz_name: str, script: str) -> str:
    """The standalone script for one framework of a saved counterexample."""
    title, requires = _TITLES[framework]
    layers = [f"  {v['label']}: {v['class']} {spec_from_json(v['spec']).describe()}"
              + ("  <- failed" if v["failed"] else "") for v in meta["variants"] if v["framework"] == framework]
    failures = [f"  {v['failure']}" for v in meta["variants"] if v["framework"] == framework and v["failure"]]
    comments = _comment("\n".join([f"test:  {meta['nodeid']}",
                                   f"claim: {meta['claim']} [{meta['dtype']}, {meta['device']}]: {meta['title']}",
                                   f"dims:  {describe_dims(dims_from_json(meta['dims']))}",
                                   "layers:", *layers, "failure seen by the suite:", *failures]))
    header = string.Template(_HEADER).substitute(title=title, requires=requires, script=script, npz=npz_name,
                                                 comments=comments)
    body = string.Template(_BODIES[framework]).substitute(keras_backend=json.dumps(meta.get("keras_backend")
                                                                                   or "tensorflow"))
    footer = string.Template(_FOOTER).substitute(npz_literal=repr(npz_name))
    return header + body + footer
