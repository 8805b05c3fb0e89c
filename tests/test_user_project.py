"""The plugin in a user's own project: a temporary folder that is not this repository, with only a test file.

The installed plugin (pytest11 entry point) must record the project's own conformance tests: an
`assert_conforms` on a torch Conv1d and a Flax nnx Conv that the user ported by hand, and a user claim
run by `conformance_suite`. A planted wrong weight transfer (a reshape where a permute belongs, the
classic porting mistake) must fail with the bound ratio, the counterexample and a repro command.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch", reason="the user project ports a torch Conv1d")
pytest.importorskip("flax", reason="the user project ports to a Flax nnx Conv")

pytest_plugins = ["pytester"]

USER_TESTS = '''
import os

import jax.numpy as jnp
import torch
from flax import nnx

from layer_conformance import LayerSpec, assert_conforms, conformance_suite, layer_claim


def ported_pair(mistake=False):
    torch.manual_seed(0)
    source = torch.nn.Conv1d(3, 5, 3, padding=1)
    target = nnx.Conv(3, 5, kernel_size=(3,), padding=((1, 1),), rngs=nnx.Rngs(0))
    weight = source.weight.detach().numpy()  # (out, in, k)
    kernel = weight.reshape(3, 3, 5) if mistake else weight.transpose(2, 1, 0)  # Flax wants (k, in, out)
    target.kernel[...] = jnp.asarray(kernel)
    target.bias[...] = jnp.asarray(source.bias.detach().numpy())
    return source, target


def test_ported_conv_conforms():
    source, target = ported_pair(mistake=os.environ.get("PLANT_MISTAKE") == "1")
    result = assert_conforms(source, target, examples=25)
    assert result.examples == 25 and 0 < result.max_bound_ratio <= 1


TestEncoderConv = conformance_suite(
    [layer_claim(LayerSpec.conv(3, 5, 3, padding="same"), ("torch", "flax.nnx"), id="encoder-conv")],
    checks=("forward", "gradient"))
'''


def _run(pytester: pytest.Pytester, *args: str, mistake: bool = False) -> subprocess.CompletedProcess[str]:
    """pytest in a child process, as a user runs it in their folder (the plugin comes from the entry point)."""
    env = dict(os.environ, PLANT_MISTAKE="1" if mistake else "0", CONFORMANCE_COUNTEREXAMPLES=str(pytester.path / "cx"))
    for name in ("CONFORMANCE_PROFILE", "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--hypothesis-profile", "ci",
                           "--conformance-dtypes", "float32", "--conformance-devices", "cpu", *args],
                          cwd=pytester.path, env=env, capture_output=True, text=True, timeout=900)


def test_plugin_records_a_user_projects_own_conformance_tests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_port=USER_TESTS)
    done = _run(pytester, "--conformance-report", "r.json")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    report = json.loads((pytester.path / "r.json").read_text())
    rows = {row["nodeid"]: row for row in report["results"]}
    conforms = rows["test_port.py::test_ported_conv_conforms"]
    assert conforms["check"] == "conforms" and conforms["status"] == "passed"
    assert conforms["examples"] == 25 and 0 < conforms["max_bound_ratio"] <= 1
    assert any("torch.nn.Conv1d" in v for v in conforms["variants"])
    assert any("flax.nnx.Conv" in v for v in conforms["variants"])
    claim_rows = [row for row in report["results"] if row["claim"] == "encoder-conv"]
    assert {row["check"] for row in claim_rows} == {"forward", "gradient"}
    assert all(row["status"] == "passed" and row["examples"] > 0 and row["max_bound_ratio"] <= 1 for row in claim_rows)
    assert report["complete"] is True


def test_a_wrong_weight_transfer_fails_with_a_readable_message(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_port=USER_TESTS)
    done = _run(pytester, "--conformance-report", "r.json", "-k", "ported", mistake=True)
    assert done.returncode == 1, done.stdout[-4000:]
    out = done.stdout
    assert "ConformanceError" in out and "exceeds the error bound" in out, out[-4000:]
    assert "x the bound at index" in out and "counterexample:" in out and "repro: " in out
    repro = next(line.split("repro: ", 1)[1].strip() for line in out.splitlines() if "repro: " in line)
    assert repro.split()[1:3] == ["-m", "layer_conformance.suites.conforms"]
    replay = subprocess.run([sys.executable, *repro.split()[1:]], capture_output=True, text=True, timeout=300)
    assert replay.returncode == 1 and "EXCEEDS" in replay.stdout, replay.stdout + replay.stderr
    row = json.loads((pytester.path / "r.json").read_text())["results"][0]
    assert row["status"] == "failed" and row["max_bound_ratio"] > 1
