"""Failing examples people can act on: the saved .npz, the standalone scripts and `conformance repro`.

Faults are planted in-process (a wrapped adapter), so the standalone scripts, which import the real
frameworks, see correct layers and pass; their power to detect a failure is tested by moving the
saved reference out of the bound instead. `conformance repro` runs in-process and sees the fault.
"""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st

from layer_conformance import adapters
from layer_conformance.mutation.planting import FaultyAdapter
from layer_conformance.adapters import get_adapter

from layer_conformance.adapters.spec import LayerSpec
from layer_conformance.cli import main as cli_main
from layer_conformance.suites.catalog import CLAIMS_BY_ID
from layer_conformance.suites.counterexamples import (
    CounterexampleError, counterexample_stem, dims_from_json, dims_to_json, load_counterexample,
    save_counterexample, spec_from_json,
)
from layer_conformance.suites.harness import Case, ClaimRunner, evaluate_example
from layer_conformance.suites.strategies import random_array

FRAMEWORK_MODULES = ("torch", "tensorflow", "keras", "jax", "flax")
# what a standalone script may import besides json, os, sys and numpy (Keras: jax too, for its jax backend)
SCRIPT_IMPORTS = {"torch": {"torch"}, "keras": {"keras", "jax"}, "flax.linen": {"jax", "flax"},
                  "flax.nnx": {"jax", "flax"}}


def _dropped_bias(spec, w):
    return {**w, "bias": np.zeros_like(w["bias"])} if "bias" in w else w


def _flipped_kernel(spec, w):
    return {**w, "kernel": w["kernel"][::-1].copy()}


@pytest.fixture
def plant(monkeypatch):
    """plant(framework, ...) wraps the real adapter; returns a function that takes the fault out again."""
    def plant(framework: str, fault: Callable | None = None, weights_fault: Callable | None = None):
        inner = get_adapter(framework)
        if inner.available():
            pytest.skip(inner.available())
        monkeypatch.setitem(adapters._CACHE, framework, FaultyAdapter(inner, (lambda layer, y: fault(y)) if fault else (lambda layer, y: y), weights_fault))
        return lambda: monkeypatch.setitem(adapters._CACHE, framework, inner)
    return plant


def run_failing(claim_id: str, folder: Path, frameworks: set[str], examples: int = 15) -> tuple[dict, str]:
    """Run the claim through hypothesis with shrinking, as the suite does; it must fail."""
    record: dict = {"nodeid": f"suites/test_forward.py::test_forward[{claim_id}-float32-cpu]"}
    runner = ClaimRunner(Case(CLAIMS_BY_ID[claim_id], "float32", "cpu"), record, frameworks=frameworks,
                         counterexamples=folder)

    @settings(max_examples=examples, database=None, derandomize=True, deadline=None, print_blob=False,
              phases=[Phase.explicit, Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        runner.forward_example(data)

    with pytest.raises(AssertionError) as info:
        check()
    return record, str(info.value)


def run_scripts(jobs: list[tuple[Path, Path | None]]) -> list[subprocess.CompletedProcess]:
    """Run standalone scripts (on their own .npz, or the one given) outside the project, two at a time."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"

    def one(job: tuple[Path, Path | None]) -> subprocess.CompletedProcess:
        script, npz = job
        return subprocess.run([sys.executable, str(script), *([str(npz)] if npz else [])], cwd=script.parent,
                              env=env, capture_output=True, text=True, timeout=180)

    with ThreadPoolExecutor(max_workers=2) as pool:  # framework imports dominate; two CPUs are common
        return list(pool.map(one, jobs))


def move_reference(npz: Path, target: Path) -> None:
    """A copy of the counterexample whose saved references lie 3 bounds away from the real outputs."""
    with np.load(npz, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    for name in [n for n in arrays if n.endswith("_reference")]:
        arrays[name] = arrays[name] + 3 * arrays[name.replace("_reference", "_bound")]
    np.savez(target, **arrays)


def repro(path: Path | str, capsys, *extra: str) -> tuple[int, str, str]:
    code = cli_main(["repro", str(path), *extra])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _check_saved(record: dict, message: str, folder: Path, claim_id: str, failing: str) -> dict:
    """What every saved counterexample must hold; returns the loaded file."""
    example = record["counterexample"]
    assert set(example) >= {"npz", "scripts", "command"}
    npz = folder.parent / example["npz"]
    assert npz.is_file() and example["npz"].startswith(f"{folder.name}/")
    assert re.fullmatch(r"[A-Za-z0-9._-]+", npz.name)
    assert example["command"] == f"conformance repro {folder / npz.name}"
    assert f"reproduce: {example['command']}" in message

    with np.load(npz, allow_pickle=False) as data:  # no pickles anywhere
        arrays = {name: data[name] for name in data.files}
    assert arrays["meta"].shape == () and arrays["meta"].dtype.kind == "U"
    assert all(a.dtype == np.float64 for name, a in arrays.items() if name != "meta")
    meta = json.loads(str(arrays["meta"]))
    assert meta["claim"] == claim_id and meta["dtype"] == "float32" and meta["device"] == "cpu"
    assert meta["nodeid"] == record["nodeid"] and meta["message"] in message  # the last (shrunk) call's files

    saved = load_counterexample(npz)
    dims = saved["dims"]
    assert dims_from_json(json.loads(json.dumps(dims_to_json(dims)))) == dims
    assert isinstance(dims["spec"], LayerSpec) and isinstance(dims["shape"], tuple)
    assert saved["x"].shape == CLAIMS_BY_ID[claim_id].input_shape(dims)
    assert saved["weights"]["kernel"].shape == dims["spec"].kernel_shape()
    bad = [v for v in saved["variants"] if v["failed"]]
    assert [v["framework"] for v in bad] == [failing]
    for v in saved["variants"]:
        assert v["spec"] == dims["spec"]  # these claims hand every framework the drawn spec
        assert {"x", "kernel", "reference", "bound", "observed"} <= set(v) and ("bias" in v) == v["spec"].bias
        ratio = np.max(np.abs(v["observed"] - v["reference"]) / v["bound"])
        assert (ratio > 1) == v["failed"]  # the stored layer-level arrays show the failure by themselves
    scripts = [folder.parent / s for s in example["scripts"]]
    assert [s.name for s in scripts] == [f"{npz.stem}.{failing.replace('.', '_')}.py"]
    return saved


def test_dense_failure_is_saved_shrunk_and_reproducible(plant, tmp_path, capsys):
    """xfw-dense, torch with the bias dropped: saved shrunk, the script judges the real torch, repro sees the fault."""
    unplant = plant("torch", weights_fault=_dropped_bias)
    folder = tmp_path / "counterexamples"
    record, message = run_failing("xfw-dense", folder, {"torch", "keras"})
    saved = _check_saved(record, message, folder, "xfw-dense", "torch")
    spec = saved["dims"]["spec"]
    assert spec.bias and (spec.in_features, spec.out_features) == (1, 1)  # shrunk: the smallest layer with a bias
    example = record["counterexample"]
    npz, script = folder.parent / example["npz"], folder.parent / example["scripts"][0]

    code, out, err = repro(example["command"].split(" ", 2)[2], capsys)  # the command exactly as printed
    assert code == 1 and "the failure reproduces" in out and not err
    assert "claim:   xfw-dense" in out and "dtype:   float32" in out and "spec=dense(1->1)" in out
    assert re.search(r"torch\.Linear .* FAIL", out) and re.search(r"keras\.Dense .* PASS", out)
    unplant()
    code, out, err = repro(npz, capsys)
    assert code == 0 and "the failure no longer reproduces" in out and not err
    assert "FAIL" not in out.split("re-run with")[1]

    moved = tmp_path / "moved.npz"
    move_reference(npz, moved)
    plain, edited = run_scripts([(script, None), (script, moved)])
    assert plain.returncode == 0 and re.search(r"torch\.Linear: .* -> PASS", plain.stdout), plain.stdout + plain.stderr
    assert edited.returncode == 1 and re.search(r"torch\.Linear: .* -> FAIL", edited.stdout), edited.stderr


def test_conv_failure_keras_script_and_repro(plant, tmp_path, capsys):
    """xfw-conv1d, Keras with a flipped kernel (convolution, not cross-correlation)."""
    unplant = plant("keras", weights_fault=_flipped_kernel)
    folder = tmp_path / "ce"
    record, message = run_failing("xfw-conv1d", folder, {"torch", "keras"})
    saved = _check_saved(record, message, folder, "xfw-conv1d", "keras")
    assert saved["dims"]["spec"].kernel_size == (2,)  # shrunk: the shortest kernel a flip changes
    assert saved["meta"]["keras_backend"] and saved["meta"]["keras_backend"] in record["counterexample"]["npz"]
    npz, script = folder.parent / record["counterexample"]["npz"], folder.parent / record["counterexample"]["scripts"][0]

    code, out, _ = repro(npz, capsys, "--frameworks", "keras,torch")
    assert code == 1 and re.search(r"keras\.Conv1D .* FAIL", out) and re.search(r"torch\.Conv1d .* PASS", out)
    unplant()
    code, out, _ = repro(npz, capsys, "--frameworks", "keras")
    assert code == 0 and "no longer reproduces" in out and "torch.Conv1d: torch not selected" in out

    moved = tmp_path / "moved.npz"
    move_reference(npz, moved)
    plain, edited = run_scripts([(script, None), (script, moved)])
    assert plain.returncode == 0 and re.search(r"keras\.Conv1D: .* -> PASS", plain.stdout), plain.stdout + plain.stderr
    assert edited.returncode == 1 and re.search(r"keras\.Conv1D: .* -> FAIL", edited.stdout), edited.stderr


GEOMETRIES = {
    "conv2d explicit asymmetric padding, groups, dilation": (
        "xfw-conv2d", LayerSpec.conv(4, 6, (3, 2), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2), (2, 7, 6, 4),
        "float32"),
    "conv1d same (asymmetric), stride 2, groups, bfloat16": (
        "xfw-conv1d", LayerSpec.conv(4, 6, 3, strides=2, padding="same", groups=2), (2, 10, 4), "bfloat16"),
    "conv2d same, stride 2, even kernel, no bias, float16": (
        "xfw-conv2d", LayerSpec.conv(2, 4, (2, 3), strides=2, padding="same", bias=False), (1, 7, 8, 2), "float16"),
}
# Keras and Flax take 'same' natively; torch's script pads by hand for strides > 1, so it gets every geometry.
SCRIPT_CASES = [(g, fw) for g in list(GEOMETRIES)[:2] for fw in adapters.FRAMEWORKS] + [(list(GEOMETRIES)[2], "torch")]


@pytest.mark.parametrize("geometry, framework", SCRIPT_CASES)
def test_script_rebuilds_the_layer(plant, tmp_path, geometry, framework):
    """On the real framework the script passes (the layer is rebuilt exactly); with the reference moved, it fails."""
    claim_id, spec, shape, dtype = GEOMETRIES[geometry]
    plant(framework, fault=lambda y: y + 1)
    outcome, case = _evaluate(claim_id, {"spec": spec, "shape": shape}, dtype, frameworks={framework})
    assert [v.framework for v in outcome.variants if v.failure] == [framework]
    example = save_counterexample(tmp_path / "ce", nodeid=f"t::{case.id}", case=case, outcome=outcome,
                                  message=outcome.message())
    assert len(example["scripts"]) == 1 and example["scripts"][0].endswith(f".{framework.replace('.', '_')}.py")
    script, npz = tmp_path / example["scripts"][0], tmp_path / example["npz"]
    move_reference(npz, tmp_path / "moved.npz")
    # TensorFlow's import dominates the Keras cases; its script's FAIL path is covered by the Keras test above
    jobs = [(script, None)] + ([(script, tmp_path / "moved.npz")] if framework != "keras" else [])
    plain, *edited = run_scripts(jobs)
    assert plain.returncode == 0, f"{script.name}:\n{plain.stdout}\n{plain.stderr}"
    assert f"[{dtype}, cpu]" in plain.stdout and "-> PASS" in plain.stdout and "FAIL" not in plain.stdout
    for done in edited:
        assert done.returncode == 1 and "-> FAIL" in done.stdout, done.stdout + done.stderr


def _evaluate(claim_id: str, dims: dict, dtype: str = "float32", frameworks: set[str] | None = None):
    claim = CLAIMS_BY_ID[claim_id]
    rng = np.random.default_rng(7)
    x = random_array(rng, claim.input_shape(dims), "normal", dtype)
    base = claim.variants[0].spec(dims)
    weights = {"kernel": random_array(rng, base.kernel_shape(), "normal", dtype)}
    if base.bias:
        weights["bias"] = random_array(rng, (base.out_features,), "normal", dtype)
    case = Case(claim, dtype, "cpu")
    variants = [v for v in claim.variants if frameworks is None or v.framework in frameworks]
    return evaluate_example(case, dims, x, weights, variants), case


def test_each_call_overwrites_its_files_and_drops_stale_scripts(plant, tmp_path):
    plant("torch", fault=lambda y: y + 1)
    plant("keras", fault=lambda y: y + 1)
    outcome, case = _evaluate("xfw-dense", CLAIMS_BY_ID["xfw-dense"].example, frameworks={"torch", "keras"})
    folder = tmp_path / "out" / "counterexamples"
    nodeid = "suites/test_forward.py::test_forward[xfw-dense-float32-cpu]"
    first = save_counterexample(folder, nodeid=nodeid, case=case, outcome=outcome, message="first")
    assert [Path(s).suffixes[-2:] for s in first["scripts"]] == [[".torch", ".py"], [".keras", ".py"]]
    assert first["script"] == first["scripts"][0]  # the single link the report writers show

    for path in first["scripts"]:  # standalone: numpy and the one framework, no pickles
        text = (folder.parent / path).read_text()
        imported = {alias.name.split(".")[0] for node in ast.walk(ast.parse(text))
                    if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in
                    (node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")])}
        framework = "torch" if path.endswith(".torch.py") else "keras"
        assert imported - {"json", "os", "sys", "numpy"} <= SCRIPT_IMPORTS[framework] and framework in imported
        assert "allow_pickle=False" in text and nodeid in text

    keras_variant = next(v for v in outcome.variants if v.framework == "keras")
    keras_variant.failure = None  # a later (shrunk) call where only torch fails
    second = save_counterexample(folder, nodeid=nodeid, case=case, outcome=outcome, message="second")
    assert second["npz"] == first["npz"] and second["scripts"] == first["scripts"][:1]
    assert not (folder.parent / first["scripts"][1]).exists()
    assert load_counterexample(folder.parent / second["npz"])["meta"]["message"] == "second"
    assert sorted(p.name for p in folder.iterdir()) == sorted(Path(p).name for p in (second["npz"], *second["scripts"]))


def test_dims_round_trip_through_json():
    cases = [
        {"B": 2, "L": 3, "K": 8, "N": 32, "spec": LayerSpec.dense(8, 32, bias=False), "shape": (2, 3, 8)},
        {"spec": LayerSpec.conv(4, 6, (3, 2), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2),
         "shape": (2, 7, 6, 4)},
        {"spec": LayerSpec.conv(1, 1, 5, strides=3, padding="same"), "shape": (1, 9, 1), "nested": ((1, 2), (3,))},
        {"L": np.int64(100), "k": 10},
    ]
    for dims in cases:
        back = dims_from_json(json.loads(json.dumps(dims_to_json(dims))))
        assert back == dims
        assert all(isinstance(back[k], tuple) for k, v in dims.items() if isinstance(v, tuple))
    assert dims_to_json(cases[1])["spec"] == {"__spec__": {
        "kind": "conv", "in_features": 4, "out_features": 6, "kernel_size": [3, 2], "strides": [1, 1],
        "padding": [[1, 2], [0, 1]], "dilation": [1, 2], "groups": 2, "bias": True, "padding_mode": "zeros"}}
    assert spec_from_json(dims_to_json(cases[1])["spec"]["__spec__"]).padding == ((1, 2), (0, 1))
    with pytest.raises(TypeError, match="dims entry x"):
        dims_to_json({"x": object()})


def test_stem_is_stable_sanitized_and_unique():
    a = counterexample_stem("suites/test_forward.py::test_forward[xfw-dense-float32-cpu]")
    assert a == counterexample_stem("suites/test_forward.py::test_forward[xfw-dense-float32-cpu]")
    assert a.startswith("test_forward_xfw-dense-float32-cpu-")
    odd = ["t::x[a/b c]", "t::x[a_b_c]", "t::x[a:b?c]", "t::" + "é" * 300, "../../etc/passwd", ""]
    stems = [counterexample_stem(n) for n in odd]
    assert len(set(stems)) == len(stems)
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", s) and len(s) <= 110 for s in stems)
    assert counterexample_stem("t::x", "jax") != counterexample_stem("t::x", "tensorflow")


@pytest.fixture
def saved_npz(plant, tmp_path) -> Path:
    """A real (torch-only, cheap) counterexample file to damage."""
    plant("torch", weights_fault=_dropped_bias)
    outcome, case = _evaluate("xfw-dense", CLAIMS_BY_ID["xfw-dense"].example, frameworks={"torch"})
    example = save_counterexample(tmp_path / "ce", nodeid="t::x", case=case, outcome=outcome, message="m")
    return tmp_path / example["npz"]


def _rewrite_meta(npz: Path, target: Path, change: Callable[[dict], object]) -> Path:
    with np.load(npz, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays["meta"]))
    changed = change(meta)
    arrays["meta"] = np.array(changed if isinstance(changed, str) else json.dumps(meta))
    np.savez(target, **arrays)
    return target


BAD_INPUTS: dict[str, tuple[Callable[[Path, Path], list[str]], str]] = {
    "missing file": (lambda npz, tmp: [str(tmp / "nope.npz")], "no such file"),
    "a directory": (lambda npz, tmp: [str(tmp)], "is a directory"),
    "a text file": (lambda npz, tmp: [str(_write(tmp / "x.npz", b"hello"))], "not an .npz file"),
    "an empty file": (lambda npz, tmp: [str(_write(tmp / "e.npz", b""))], "not an .npz file"),
    "a truncated npz": (lambda npz, tmp: [str(_write(tmp / "t.npz", npz.read_bytes()[:200]))], "not a readable"),
    "a .npy array": (lambda npz, tmp: [str(_save_npy(tmp / "a.npy"))], "single .npy array"),
    "an npz without meta": (lambda npz, tmp: [str(_savez(tmp / "b.npz"))], "without `meta`"),
    "meta not JSON": (lambda npz, tmp: [str(_rewrite_meta(npz, tmp / "j.npz", lambda m: "{oops"))], "damaged"),
    "meta of another tool": (lambda npz, tmp: [str(_rewrite_meta(npz, tmp / "o.npz", lambda m: m.update(schema="x")))],
                             "not a layer-conformance counterexample"),
    "unknown claim id": (lambda npz, tmp: [str(_rewrite_meta(npz, tmp / "c.npz", lambda m: m.update(claim="gone")))],
                         "claim 'gone' is not in this catalog"),
    "unknown framework": (lambda npz, tmp: [str(npz), "--frameworks", "theano"], "unknown framework(s) theano"),
    "failing variant not selected": (lambda npz, tmp: [str(npz), "--frameworks", "keras"], "cannot be re-run here"),
}


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _save_npy(path: Path) -> Path:
    np.save(path, np.zeros(3))
    return path


def _savez(path: Path) -> Path:
    np.savez(path, x=np.zeros(3))
    return path


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_repro_refuses_unusable_input_with_one_line(saved_npz, tmp_path, capsys, name):
    make, expected = BAD_INPUTS[name]
    args = make(saved_npz, tmp_path)
    code, _, err = repro(args[0], capsys, *args[1:])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("conformance repro: error: ") and expected in err, err
    assert "Traceback" not in err
    if name not in ("unknown framework", "failing variant not selected", "unknown claim id"):
        with pytest.raises(CounterexampleError):
            load_counterexample(args[0])


def test_repro_and_saving_import_no_framework(tmp_path):
    """`conformance repro --help` and bad input stay fast: frameworks load only to re-run."""
    code = (
        "import sys\n"
        "import layer_conformance.suites.counterexamples, layer_conformance.cli.repro\n"
        "from layer_conformance.cli import main\n"
        "try:\n"
        "    main(['repro', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert main(['repro', sys.argv[1]]) == 2\n"
        f"loaded = [m for m in {FRAMEWORK_MODULES!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing.npz")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "re-run a saved failing example" in subprocess.run(
        [sys.executable, "-m", "layer_conformance", "--help"], capture_output=True, text=True).stdout
