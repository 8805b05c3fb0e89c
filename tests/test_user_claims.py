"""User claims: validated exactly like the catalog (an error names the row and the fix), run by the suites
under every check, dtype and device, and written into the same reports."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings

from layer_conformance import CatalogError, Claim, LayerSpec, Variant, conformance_suite, layer_claim, register_claims
from layer_conformance.suites import user_claims
from layer_conformance.suites.parametrize import cases_for


@pytest.fixture(autouse=True)
def _forget():
    yield
    user_claims.unregister_all()


def test_layer_claim_draws_inputs_the_layer_accepts():
    spec = LayerSpec.conv(2, 3, (3, 2), strides=(2, 1), dilation=(2, 1), padding="valid")
    claim = layer_claim(spec, ("torch", "flax.linen"), id="mine")

    @settings(max_examples=60, database=None)
    @given(claim.dims)
    def check(dims):
        batch, height, width, channels = dims["shape"]
        assert dims["spec"] == spec and channels == 2 and 1 <= batch <= 3
        assert height >= 5 and width >= 2  # the dilated kernel: (3 - 1) * 2 + 1 rows, 2 columns

    check()
    assert claim.checks == user_claims.CONV_CHECKS and "depth" not in claim.checks


@pytest.mark.parametrize("call, problem, fix", [
    (lambda: layer_claim(LayerSpec.dense(3, 4), ("torch",)), "at least two frameworks", "got ['torch']"),
    (lambda: layer_claim(LayerSpec.dense(3, 4), ("torch", "torch")), "named twice", "torch"),
    (lambda: layer_claim("dense(3, 4)", ("torch", "keras")), "expected a LayerSpec", "LayerSpec.dense"),
    (lambda: register_claims([layer_claim(LayerSpec.dense(3, 4), ("torch", "keras"), id="xfw-dense")]),
     "'xfw-dense' is a built-in claim's", "give yours another id"),
    (lambda: register_claims([layer_claim(LayerSpec.dense(3, 4), ("torch", "keras"), id="a"),
                              layer_claim(LayerSpec.dense(5, 4), ("torch", "keras"), id="a")]),
     "'a' is used twice", "its own id"),
    (lambda: register_claims([LayerSpec.dense(3, 4)]), "item 0 is a LayerSpec, not a Claim", "layer_claim"),
    (lambda: register_claims([layer_claim(LayerSpec.dense(3, 4), ("torch", "keras"), id="c", checks=("fast",))]),
     "claim c: unknown checks 'fast'", "known checks: forward"),
    (lambda: layer_claim(LayerSpec.conv(3, 4, 2), ("torch", "keras"), lengths=[(1, 4), (1, 4)]),
     "2 length ranges for a 1-D convolution", "one (low, high) pair per spatial axis"),
    (lambda: conformance_suite([layer_claim(LayerSpec.dense(3, 4), ("torch", "keras"), id="d")], checks=("quick",)),
     "unknown checks ['quick']", "choose from forward"),
    (lambda: conformance_suite([]), "no claims given", "layer_claim"),
])
def test_bad_claims_are_refused_naming_the_row_and_the_fix(call, problem, fix):
    with pytest.raises(CatalogError) as error:
        call()
    assert problem in str(error.value) and fix in str(error.value), str(error.value)
    assert not user_claims.registered_claims()  # nothing half-registered


def test_a_claim_whose_variants_disagree_in_float64_is_refused():
    """The catalog's own check: every mapping runs once through the float64 reference at registration."""
    spec = LayerSpec.dense(3, 4)
    wrong = Claim("scaled", "a scaled copy", "equal", "test", layer_claim(spec, ("torch", "keras")).dims,
                  lambda d: d["shape"],
                  (Variant("torch", lambda d: d["spec"]),
                   Variant("keras", lambda d: d["spec"], w_map=lambda w, d: {**w, "kernel": 1.01 * w["kernel"]})),
                  layer_claim(spec, ("torch", "keras")).example)
    with pytest.raises(CatalogError, match=r"claim scaled: keras.Dense disagrees with torch.Linear in float64.*"
                                           r"the mapping is wrong"):
        register_claims([wrong])


def test_registered_claims_run_under_every_check_dtype_and_device(pytestconfig):
    claim = register_claims([layer_claim(LayerSpec.dense(6, 2), ("torch", "flax.nnx"), id="my-head")])[0]
    from layer_conformance.suites import test_batch, test_forward, test_gradient

    for function, check in ((test_forward.test_forward, "forward"), (test_gradient.test_gradient, "gradient"),
                            (test_batch.test_batch, "batch")):
        cases = [case for case in cases_for(function, pytestconfig) if case.claim is claim]
        dtypes = [d for d in pytestconfig.getoption("--conformance-dtypes") if not d.startswith("mixed_")]
        assert [(c.dtype, c.device) for c in cases] == [(d, v) for d in dtypes
                                                        for v in pytestconfig.getoption("--conformance-devices")], check


def test_conformance_run_runs_a_users_claims_module_into_the_report(tmp_path):
    """`conformance run --claims FILE.py` from the user's folder: the claim's rows are in report.json."""
    pytest.importorskip("torch", reason="the claim compares torch with Flax")
    pytest.importorskip("flax", reason="the claim compares torch with Flax")
    (tmp_path / "my_claims.py").write_text(
        "from layer_conformance import LayerSpec, layer_claim\n"
        "CLAIMS = [layer_claim(LayerSpec.conv(2, 3, 3, strides=2, padding='same'), ('torch', 'flax.nnx'),"
        " id='my-stem')]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CONFORMANCE_"))}
    done = subprocess.run([sys.executable, "-m", "layer_conformance", "run", "--out", "out", "--claims", "my_claims.py",
                           "--frameworks", "torch,flax.nnx", "--dtypes", "float32", "--devices", "cpu", "--no-speed",
                           "-n", "1", "--", "-k", "my-stem and (forward or gradient) and not params", "--conformance-geometries", "3"],
                          cwd=tmp_path, env=dict(env, CONFORMANCE_EXAMPLES="6"), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads((tmp_path / "out" / "report.json").read_text())["results"]
    assert {(r["claim"], r["check"], r["status"]) for r in rows} == {("my-stem", "forward", "passed"),
                                                                      ("my-stem", "gradient", "passed")}
    assert all(r["examples"] == 6 and 0 < r["max_bound_ratio"] <= 1 for r in rows)


@pytest.mark.parametrize("module, problem", [
    ("no_such_claims_module", "cannot import it (ModuleNotFoundError"),
    ("empty_claims", "the module registers no claims; call layer_conformance.register_claims"),
])
def test_a_bad_claims_module_is_a_usage_error_before_anything_runs(tmp_path, module, problem):
    (tmp_path / "empty_claims.py").write_text("X = 1\n")
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CONFORMANCE_"))}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--conformance-claims", module],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error
    assert f"--conformance-claims {module}: {problem}" in done.stderr, done.stderr
