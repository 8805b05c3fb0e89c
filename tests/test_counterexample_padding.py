"""Counterexamples keep every LayerSpec field, and their scripts rebuild every padding kind.

A saved spec that lost a field (v1 dropped `padding_mode`) makes `conformance repro` and the
standalone scripts run a different layer than the one that failed. Here: a drawn spec of every
claim survives the JSON round trip; `conformance repro` re-runs a fault that only a circular layer
has; and for each padding kind (valid, same, causal, explicit pairs, circular, reflect, replicate)
the generated script of every installed framework passes on a correct example and fails on one
whose saved reference is moved out of the bound.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from layer_conformance import adapters
from layer_conformance.adapters import get_adapter
from layer_conformance.adapters.spec import LayerSpec
from layer_conformance.cli import main as cli_main
from layer_conformance.mutation.planting import FaultyAdapter
from layer_conformance.suites.bounds import error_bound
from layer_conformance.suites.catalog import CLAIMS, CLAIMS_BY_ID, evaluate_reference
from layer_conformance.suites.counterexamples import (
    SCHEMA, dims_from_json, dims_to_json, load_counterexample, save_counterexample, spec_from_json, spec_to_json,
)
from layer_conformance.suites.harness import Case, ExampleOutcome, VariantOutcome, evaluate_example
from layer_conformance.suites.strategies import conv_dims, random_array

FAST = settings(max_examples=5, derandomize=True, database=None, deadline=None,
                suppress_health_check=list(HealthCheck))


def _json_round_trip(spec: LayerSpec) -> LayerSpec:
    return spec_from_json(json.loads(json.dumps(spec_to_json(spec))))


# ---- the JSON round trip ------------------------------------------------------------------------

def test_spec_json_holds_every_field() -> None:
    """A field added to LayerSpec later is saved too (spec_to_json walks the dataclass fields)."""
    spec = LayerSpec.conv(2, 4, 3, padding=((1, 1),), padding_mode="reflect")
    spec = spec.with_(extra={"note": "kept", "pairs": (1, 2)})
    assert set(spec_to_json(spec)) == {f.name for f in fields(LayerSpec)}
    back = _json_round_trip(spec)
    assert back == spec and back.padding_mode == "reflect" and back.extra == spec.extra
    assert "extra" not in spec_to_json(LayerSpec.dense(2, 3))  # empty: not written


@pytest.mark.parametrize("claim_id", [claim.id for claim in CLAIMS])
def test_drawn_spec_of_every_claim_round_trips(claim_id: str) -> None:
    claim = CLAIMS_BY_ID[claim_id]

    @FAST
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        dims = data.draw(claim.dims, label="dims")
        for variant in claim.variants:
            spec = variant.spec(dims)
            back = _json_round_trip(spec)
            assert back == spec, f"{variant.label(dims)}: {spec} came back as {back}"
        assert dims_from_json(json.loads(json.dumps(dims_to_json(dims)))) == dims

    check()


@pytest.mark.parametrize("mode", ["circular", "reflect", "replicate"])
def test_padding_mode_is_not_lost(mode: str) -> None:
    """The v1 fault: any padding mode came back as 'zeros'."""
    spec = LayerSpec.conv(2, 4, (3, 3), padding=((1, 1), (1, 1)), padding_mode=mode)
    assert _json_round_trip(spec).padding_mode == mode


def test_spec_from_json_refuses_an_unknown_field() -> None:
    entry = {**spec_to_json(LayerSpec.dense(2, 3)), "activation": "relu"}
    with pytest.raises(ValueError, match="unknown LayerSpec field.*activation.*upgrade"):
        spec_from_json(entry)


# ---- conformance repro re-runs the saved padding mode ---------------------------------------------

def _inputs(claim_id: str, dims: dict[str, Any], seed: int) -> tuple[Any, np.ndarray, dict[str, np.ndarray]]:
    """The claim, a float32 input and weights for `dims`, drawn from `seed`."""
    claim = CLAIMS_BY_ID[claim_id]
    rng = np.random.default_rng(seed)
    x = random_array(rng, claim.input_shape(dims), "normal", "float32")
    base = claim.variants[0].spec(dims)
    weights = {"kernel": random_array(rng, base.kernel_shape(), "normal", "float32")}
    if base.bias:
        weights["bias"] = random_array(rng, (base.out_features,), "normal", "float32")
    return claim, x, weights


def _example(claim_id: str, dims: dict[str, Any], frameworks: set[str] | None = None) -> tuple[Any, Case]:
    claim, x, weights = _inputs(claim_id, dims, seed=3)
    case = Case(claim, "float32", "cpu")
    variants = [v for v in claim.variants if frameworks is None or v.framework in frameworks]
    return evaluate_example(case, dims, x, weights, variants), case


def test_repro_reruns_a_circular_failure_as_circular(monkeypatch, tmp_path, capsys) -> None:
    """A fault only circular torch layers have: saved with zero padding, repro said 'no longer reproduces'."""
    inner = get_adapter("torch")
    if inner.available():
        pytest.skip(inner.available())
    circular_only = FaultyAdapter(inner, lambda layer, y: y + 1 if layer.spec.padding_mode == "circular" else y)
    monkeypatch.setitem(adapters._CACHE, "torch", circular_only)
    claim = CLAIMS_BY_ID["torch-flax-circular-padding"]
    outcome, case = _example(claim.id, claim.example, {"torch"})
    assert outcome.failures
    example = save_counterexample(tmp_path / "ce", nodeid="t::circular", case=case, outcome=outcome,
                                  message=outcome.message())
    assert load_counterexample(tmp_path / example["npz"])["dims"]["spec"].padding_mode == "circular"
    code = cli_main(["repro", str(tmp_path / example["npz"])])
    out = capsys.readouterr().out
    assert code == 1 and "the failure reproduces" in out and "mode=circular" in out, out


def test_repro_refuses_a_v1_file(monkeypatch, tmp_path, capsys) -> None:
    """v1 files saved padding modes as zeros: re-running one could pass a layer that never failed."""
    claim = CLAIMS_BY_ID["torch-replicate-padding"]
    if get_adapter("torch").available():
        pytest.skip(get_adapter("torch").available())
    outcome, case = _example(claim.id, claim.example, {"torch"})
    outcome.variants[0].failure = "planted"
    npz = tmp_path / save_counterexample(tmp_path / "ce", nodeid="t::v1", case=case, outcome=outcome,
                                         message="m")["npz"]
    with np.load(npz, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "schema": SCHEMA.replace("/v2", "/v1")}))
    np.savez(npz, **arrays)
    assert cli_main(["repro", str(npz)]) == 2
    assert "unsupported counterexample schema" in capsys.readouterr().err


# ---- the standalone scripts, one saved example per padding kind -----------------------------------

# (claim, a geometry every framework of the claim accepts, a strategy for more of that padding kind). Torch's
# script pads in two ways (nn.Conv's own padding, or F.pad for asymmetric pairs, causal and strided 'same'):
# the fixed geometries take the path that tests/test_counterexamples.py does not, the drawn ones both.
PADDING_KINDS: dict[str, tuple[str, dict[str, Any], st.SearchStrategy]] = {
    "valid": ("xfw-conv2d", {"spec": LayerSpec.conv(4, 6, (3, 2), strides=(2, 1), groups=2), "shape": (2, 7, 5, 4)},
              st.one_of(conv_dims(1, paddings=("valid",)), conv_dims(2, paddings=("valid",)))),
    "same": ("xfw-conv2d", {"spec": LayerSpec.conv(2, 4, (4, 3), padding="same", dilation=(2, 1)),
                            "shape": (2, 6, 5, 2)},
             st.one_of(conv_dims(1, paddings=("same",)), conv_dims(2, paddings=("same",)))),
    "causal": ("xfw-conv1d-causal", {"spec": LayerSpec.conv(3, 4, 3, padding="causal", dilation=2),
                                     "shape": (2, 7, 3)}, conv_dims(1, paddings=("causal",))),
    "explicit pairs": ("xfw-conv1d", {"spec": LayerSpec.conv(4, 2, 3, padding=((2, 2),), groups=2),
                                      "shape": (1, 5, 4)},
                       st.one_of(conv_dims(1, paddings=("explicit",)), conv_dims(2, paddings=("explicit",)))),
    "circular": ("torch-flax-circular-padding", {"spec": LayerSpec.conv(2, 4, 4, padding=((1, 2),),
                                                                        padding_mode="circular"), "shape": (2, 6, 2)},
                 conv_dims(2, max_kernel=3, paddings=("flax-border",), padding_mode="circular")),
    "reflect": ("torch-flax-reflect-padding", {"spec": LayerSpec.conv(2, 4, (3, 3), padding=((1, 1), (1, 1)),
                                                                      padding_mode="reflect"), "shape": (1, 4, 5, 2)},
                conv_dims(1, paddings=("flax-border",), padding_mode="reflect")),
    "replicate": ("torch-replicate-padding", {"spec": LayerSpec.conv(2, 3, 3, padding=((2, 1),),
                                                                     padding_mode="replicate"), "shape": (2, 6, 2)},
                  conv_dims(2, paddings=("explicit",), padding_mode="replicate")),
}
DRAWN_PER_KIND = 3  # torch only: its scripts run in milliseconds, while Keras and Flax compile every new shape

# Runs the given scripts as __main__ (exactly `python script.py NPZ`) in one process, so that a framework is
# imported once for all of them; prints [[exit code or the exception, stdout], ...] as its last line.
DRIVER = r'''
import contextlib, io, json, runpy, sys
results = []
for script, npz in json.loads(sys.argv[1]):
    sys.argv, out = [script, npz], io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code
    except BaseException as exc:
        code = f"{type(exc).__name__}: {exc}"
    results.append([code, out.getvalue()])
print("\n" + json.dumps(results))
'''


def _installed(frameworks: tuple[str, ...]) -> list[str]:
    return [fw for fw in frameworks if not get_adapter(fw).available()]


def _planted(claim_id: str, dims: dict[str, Any], frameworks: tuple[str, ...]) -> tuple[ExampleOutcome, Case]:
    """The example as the harness would save it, every variant that can run here marked failed.

    Built from the float64 reference alone (observed = reference): a script never reads the observed
    output, so no framework layer needs building or compiling here.
    """
    claim, x, weights = _inputs(claim_id, dims, seed=5)
    case = Case(claim, "float32", "cpu")
    outcome = ExampleOutcome(case, dims, x, weights)
    for variant in claim.variants:
        spec = variant.spec(dims)
        if variant.framework not in frameworks or get_adapter(variant.framework).supports(spec, "float32", "cpu"):
            continue
        ref = evaluate_reference(variant, dims, x, weights)
        bound = error_bound(spec.reduction_length, ref.layer_magnitude, "float32")
        outcome.variants.append(VariantOutcome(
            variant.label(dims), variant.framework, spec, ref.layer_x, ref.layer_w, ref.layer_y, ref.layer_y, bound,
            ref.y, variant.y_out(bound, dims), 0.0, 0.0, failure=f"planted failure of {variant.label(dims)}"))
    return outcome, case


def _save_all_failed(kind: str, claim_id: str, dims: dict[str, Any], folder: Path,
                     frameworks: tuple[str, ...] = adapters.FRAMEWORKS) -> list[tuple[str, Path, Path]]:
    """The planted example saved; (framework, script, npz) for each script written."""
    outcome, case = _planted(claim_id, dims, tuple(_installed(frameworks)))
    nodeid = f"t::{kind}-{len(list(folder.glob('*.npz')))}"
    example = save_counterexample(folder, nodeid=nodeid, case=case, outcome=outcome, message=f"planted {kind}")
    npz = folder.parent / example["npz"]
    by_file = {Path(s).name: s for s in example["scripts"]}
    return [(v.framework, folder.parent / by_file[name], npz) for v in outcome.variants
            if (name := f"{npz.stem}.{v.framework.replace('.', '_')}.py") in by_file]


def _moved(npz: Path) -> Path:
    """A copy whose saved references lie 3 bounds away from the real layer's output: a planted failure."""
    with np.load(npz, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    for name in [n for n in arrays if n.endswith("_reference")]:
        arrays[name] = arrays[name] + 3 * arrays[name.replace("_reference", "_bound")]
    target = npz.with_name(npz.stem + "-moved.npz")
    np.savez(target, **arrays)
    return target


def _run_group(jobs: list[tuple[Path, Path]], cwd: Path) -> list[list[Any]]:
    """The scripts in a fresh interpreter outside the project (no PYTHONPATH), as a user would run them."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([[str(s), str(n)] for s, n in jobs])],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _saved_examples(folder: Path) -> dict[str, list[tuple[str, Path, Path]]]:
    """Per padding kind: its fixed geometry (every framework) and DRAWN_PER_KIND drawn ones (torch), each saved
    with every variant failed."""
    saved: dict[str, list[tuple[str, Path, Path]]] = {}
    for kind, (claim_id, fixed_dims, strategy) in PADDING_KINDS.items():
        saved[kind] = _save_all_failed(kind, claim_id, fixed_dims, folder)

        @settings(FAST, max_examples=DRAWN_PER_KIND)
        @given(dims=strategy)
        def more(dims: dict[str, Any]) -> None:
            saved[kind].extend(_save_all_failed(kind, claim_id, dims, folder, ("torch",)))

        more()
    return saved


def test_scripts_reproduce_a_planted_fault_for_every_padding_kind(tmp_path: Path) -> None:
    saved = _saved_examples(tmp_path / "ce")
    for kind, (claim_id, _, _) in PADDING_KINDS.items():  # the fixed geometry reached every framework installed
        claim_frameworks = tuple(dict.fromkeys(v.framework for v in CLAIMS_BY_ID[claim_id].variants))
        assert {fw for fw, _, _ in saved[kind]} == set(_installed(claim_frameworks)), kind
    jobs = [(kind, fw, script, npz, want) for kind, entries in saved.items() for fw, script, npz in entries
            for npz, want in ((npz, 0), (_moved(npz), 1))]
    groups: dict[str, list] = {}  # one process for torch, one for keras, one for flax (linen and nnx)
    for job in jobs:
        groups.setdefault(job[1].split(".")[0], []).append(job)
    with ThreadPoolExecutor(max_workers=2) as pool:  # framework imports dominate; two CPUs are common
        ran = list(pool.map(lambda group: _run_group([(j[2], j[3]) for j in group], tmp_path), groups.values()))
    failures = []
    for group, results in zip(groups.values(), ran):
        for (kind, fw, script, npz, want), (code, out) in zip(group, results):
            verdict = "-> FAIL" if want else "-> PASS"
            if code != want or verdict not in out or (not want and "-> FAIL" in out):
                failures.append(f"{kind}, {fw}, {npz.name}: exit {code!r}, expected {want}\n{out}")
    assert not failures, f"{len(failures)} of {len(jobs)} script runs wrong:\n" + "\n".join(failures[:5])
