"""`bound_ratio` / `conformance explain` on a user's own arrays, and the declared roundoffs it judges by.

The layer under test is a float32 Conv1d computed here in NumPy float32 (im2col, one matmul), against
the float64 reference. Precision modes are simulated in NumPy: TF32 rounds both operands to 10 explicit
mantissa bits; bf16_3x splits each operand into two bfloat16 parts and sums three bfloat16 products in
float32. No framework is imported.
"""
from __future__ import annotations

import json

import ml_dtypes
import numpy as np
import pytest

from cli_helpers import run_cli
from layer_conformance.adapters import reference
from layer_conformance.adapters.spec import LayerSpec, SpecError
from layer_conformance.reports.explain import Explanation, bound_ratio, parse_spec
from layer_conformance.suites.bounds import DECLARED_ROUNDOFF, UNIT_ROUNDOFF, bound_coefficient, error_bound, roundoff
from layer_conformance.suites.counterexamples import spec_to_json

SPEC = LayerSpec.conv(8, 6, 12, padding="same")  # K = 8 * 12 = 96 products per output, plus the bias


def _data(seed: int = 0, spec: LayerSpec = SPEC, shape: tuple[int, ...] = (2, 20, 8)):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    weights = {"kernel": rng.standard_normal(spec.kernel_shape()).astype(np.float32)}
    if spec.bias:
        weights["bias"] = rng.standard_normal(spec.out_features).astype(np.float32)
    return x, weights


def _conv1d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, spec: LayerSpec = SPEC,
            dtype: type = np.float32) -> np.ndarray:
    """Conv1d (stride 1, no dilation) as one matmul in `dtype`: the windows side by side (im2col)."""
    (lo, hi), = spec.explicit_padding(x.shape[1:-1])
    padded = np.pad(x, [(0, 0), (lo, hi), (0, 0)])
    taps, length = spec.kernel_size[0], x.shape[1]
    cols = np.stack([padded[:, t:t + length, :] for t in range(taps)], axis=2).reshape(x.shape[0], length, -1)
    y = cols.astype(dtype) @ kernel.reshape(-1, spec.out_features).astype(dtype)
    return (y + bias.astype(dtype)).astype(np.float32)


def _tf32(a: np.ndarray) -> np.ndarray:
    """float32 rounded to TF32 (10 explicit mantissa bits), to nearest even, kept in float32."""
    bits = np.asarray(a, dtype=np.float32).view(np.uint32)
    rounded = (bits + np.uint32(0x0FFF) + ((bits >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000)
    return rounded.view(np.float32)


def _bf16_3x_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b as bf16_3x: hi*hi + hi*lo + lo*hi, bfloat16 parts, every product exact and summed in float32."""
    def split(v):
        hi = v.astype(ml_dtypes.bfloat16).astype(np.float32)
        lo = (v - hi).astype(ml_dtypes.bfloat16).astype(np.float32)
        return hi, lo
    (ah, al), (bh, bl) = split(a.astype(np.float32)), split(b.astype(np.float32))
    return ah @ bh + ah @ bl + al @ bh  # float32 matmuls of float32-exact products, summed in float32


def _float32_case(seed: int = 0):
    x, weights = _data(seed)
    return x, weights, _conv1d(x, weights["kernel"], weights["bias"]), reference.forward(SPEC, x, weights)


# ---- the declared roundoffs ---------------------------------------------------------------------------

def test_roundoff_knows_dtypes_and_declared_modes():
    assert roundoff("float32") == 2.0 ** -24 and roundoff("mixed_bfloat16") == 2.0 ** -8
    assert roundoff("tf32") == 2.0 ** -11  # 10 explicit mantissa bits
    assert roundoff("xla-default") == 2.0 ** -8 and roundoff("xla-high") == 2.0 ** -11
    assert roundoff("bf16_3x") == 2.0 ** -16
    assert set(DECLARED_ROUNDOFF).isdisjoint(UNIT_ROUNDOFF)
    with pytest.raises(ValueError, match="tf32") as info:
        roundoff("tf16")
    assert "float32" in str(info.value) and "xla-high" in str(info.value)
    with pytest.raises(ValueError):
        roundoff(2.0 ** -11)  # a number is not a name


def test_declared_modes_are_no_looser_than_what_they_declare():
    """xla-default and xla-high name a level, not a device: each declares the looser of its realizations."""
    assert DECLARED_ROUNDOFF["xla-default"] >= max(UNIT_ROUNDOFF["bfloat16"], DECLARED_ROUNDOFF["tf32"])
    assert DECLARED_ROUNDOFF["xla-high"] >= max(DECLARED_ROUNDOFF["bf16_3x"], DECLARED_ROUNDOFF["tf32"])


# ---- bound_ratio ---------------------------------------------------------------------------------------

def test_float32_conv1d_in_numpy_is_within_the_float32_bound():
    x, weights, y, ref = _float32_case()
    assert y.dtype == np.float32 and not np.array_equal(y, ref)  # a real rounding difference
    explanation = bound_ratio(y, ref, SPEC, dtype="float32", x=x, weights=weights)
    assert isinstance(explanation, Explanation)
    assert explanation.verdict == "within" and explanation.within and explanation.exit_code == 0
    assert 0 < explanation.ratio <= 1
    assert explanation.reduction_length == 96 and explanation.terms == 97
    assert explanation.u == 2.0 ** -24 and explanation.u_label == "2^-24"
    assert explanation.max_abs_error == pytest.approx(float(np.max(np.abs(y - ref))))
    text = str(explanation)
    assert "the difference is expected" in text and "float32" in text and "96 products and a bias" in text
    assert str(explanation.index) in text


def test_a_planted_one_percent_error_exceeds_and_is_located():
    x, weights, y, ref = _float32_case()
    planted = np.unravel_index(int(np.argmax(np.abs(ref))), ref.shape)
    y = y.copy()
    y[planted] *= np.float32(1.01)
    explanation = bound_ratio(y, ref, SPEC, dtype="float32", x=x, weights=weights)
    assert explanation.verdict == "exceeds" and explanation.exit_code == 1
    assert explanation.index == tuple(int(i) for i in planted)
    assert explanation.ratio > 1
    assert "not explained by float32 rounding" in str(explanation) and "porting mistake" in str(explanation)


def test_tf32_ratio_is_the_coefficient_ratio_smaller():
    x, weights, y, ref = _float32_case()
    f32 = bound_ratio(y, ref, SPEC, dtype="float32", x=x, weights=weights)
    tf32 = bound_ratio(y, ref, SPEC, u_eff="tf32", x=x, weights=weights)
    assert tf32.index == f32.index and tf32.u == 2.0 ** -11 and tf32.precision == "tf32"
    # the same data, the same m: the ratios differ exactly by the bound coefficients for n = K + 1 = 97 terms
    # (the subnormal term, 97 * float32's smallest normal, is the same in both and 30 orders smaller)
    coefficients = bound_coefficient(97, "float32", 2.0 ** -11) / bound_coefficient(97, "float32")
    assert f32.ratio / tf32.ratio == pytest.approx(coefficients, rel=1e-9)
    # about 2^13: (97 + 2) u each, and tf32's gamma(97, 2^-11) = 97u / (1 - 97u) is 5 % above 97u
    assert 2 ** 13 < coefficients < 2 ** 13 * 1.06


def test_tf32_rounded_inputs_exceed_float32_but_fit_tf32():
    x, weights = _data(1)
    y = _conv1d(_tf32(x), _tf32(weights["kernel"]), weights["bias"])
    ref = reference.forward(SPEC, x, weights)
    f32 = bound_ratio(y, ref, SPEC, dtype="float32", x=x, weights=weights)
    tf32 = bound_ratio(y, ref, SPEC, u_eff="tf32", x=x, weights=weights)
    assert f32.verdict == "exceeds", f32
    assert tf32.verdict == "within", tf32
    assert bound_ratio(y, ref, SPEC, u_eff="xla-high", x=x, weights=weights).within  # TF32 on GPUs


def test_tf32_worst_single_products_fit():
    """K = 1 is where two roundings per product come closest to the bound: (2u + u^2) against 4u."""
    spec = LayerSpec.dense(1, 400, bias=False)
    rng = np.random.default_rng(5)
    x = rng.uniform(1, 2, (500, 1)).astype(np.float32)
    weights = {"kernel": rng.uniform(1, 2, (1, 400)).astype(np.float32)}
    y = (_tf32(x).astype(np.float64) @ _tf32(weights["kernel"]).astype(np.float64)).astype(np.float32)
    explanation = bound_ratio(y, reference.forward(spec, x, weights), spec, u_eff="tf32", x=x, weights=weights)
    assert explanation.within and explanation.ratio > 0.25, explanation


@pytest.mark.parametrize("spec, shape, float32", [(LayerSpec.dense(1, 300, bias=False), (400, 1), "exceeds"),
                                                  (LayerSpec.dense(2, 100), (300, 2), "exceeds"),
                                                  (SPEC, (2, 20, 8), None)],
                         ids=["K=1", "K=2", "K=96"])
def test_bf16_3x_fits_its_derived_roundoff(spec, shape, float32):
    """The derivation in bounds.DECLARED_ROUNDOFF: 2^-16 covers bf16_3x at every K, the smallest included."""
    x, weights = _data(2, spec, shape)
    if spec.kind == "dense":
        y = _bf16_3x_matmul(x, weights["kernel"]) + weights.get("bias", np.float32(0))
    else:
        (lo, hi), = spec.explicit_padding(x.shape[1:-1])
        padded = np.pad(x, [(0, 0), (lo, hi), (0, 0)])
        cols = np.stack([padded[:, t:t + shape[1], :] for t in range(spec.kernel_size[0])], axis=2)
        y = _bf16_3x_matmul(cols.reshape(shape[0], shape[1], -1), weights["kernel"].reshape(-1, spec.out_features))
        y = y + weights["bias"]
    ref = reference.forward(spec, x, weights)
    assert bound_ratio(y, ref, spec, u_eff="bf16_3x", x=x, weights=weights).within
    if float32:  # the few-term sums show that it is not float32 (longer ones hide it in float32's K u)
        assert bound_ratio(y, ref, spec, dtype="float32", x=x, weights=weights).verdict == float32


def test_an_infinite_bound_gives_no_verdict():
    spec = LayerSpec.dense(300, 2)  # 301 terms: 301 * 2^-8 > 1
    x, weights = _data(3, spec, (4, 300))
    y = np.zeros((4, 2), np.float32) + 1e6  # wildly wrong, yet the worst-case bfloat16 bound cannot say so
    explanation = bound_ratio(y, reference.forward(spec, x, weights), spec, dtype="bfloat16", x=x, weights=weights)
    assert explanation.verdict == "no bound" and explanation.exit_code == 3 and not explanation.within
    assert "no verdict" in str(explanation) and "infinite" in str(explanation)


def test_a_narrower_reference_adds_its_own_bound():
    x, weights, y, ref = _float32_case()
    wide = bound_ratio(y, ref, SPEC, dtype="float32", x=x, weights=weights)
    narrow = bound_ratio(y, ref.astype(np.float32), SPEC, dtype="float32", x=x, weights=weights)
    assert narrow.reference_dtype == "float32" and "float32 reference" in str(narrow)
    # two float32 implementations may each be off by a float32 bound: twice the bound, element by element
    single = error_bound(96, reference.magnitude(SPEC, x, weights), "float32")
    assert narrow.bound == pytest.approx(2 * single[narrow.index], rel=1e-12)
    assert wide.bound == pytest.approx(single[wide.index], rel=1e-12)


def test_magnitude_given_equals_magnitude_computed():
    x, weights, y, ref = _float32_case()
    m = reference.magnitude(SPEC, x, weights)
    assert bound_ratio(y, ref, SPEC, dtype="float32", magnitude=m) == \
        bound_ratio(y, ref, SPEC, dtype="float32", x=x, weights=weights)


@pytest.mark.parametrize("kwargs, message", [
    ({"dtype": "float32"}, "pass x= and weights="),
    ({"dtype": "float32", "magnitude": "reference"}, "underestimates"),
    ({"dtype": "float32", "x": "X"}, "pass weights="),
    ({}, "no precision given"),
    ({"dtype": "tf32"}, "pass it as u_eff"),
    ({"u_eff": "tf16"}, "unknown dtype or precision mode"),
    ({"u_eff": 1.5}, "not a unit roundoff"),
    ({"dtype": "float32", "magnitude": np.ones((2, 20, 5))}, "(2, 20, 5)"),
    ({"dtype": "float32", "magnitude": -np.ones((2, 20, 6))}, "negative"),
])
def test_bad_arguments_name_what_to_pass(kwargs, message):
    x, weights, y, ref = _float32_case()
    kwargs = {key: (x if isinstance(value, str) and value == "X" else value) for key, value in kwargs.items()}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bound_ratio(y, ref, SPEC, **kwargs)


def test_shape_mismatch_names_both_shapes():
    x, weights, y, ref = _float32_case()
    with pytest.raises(ValueError, match=r"\(2, 20, 6\).*\(2, 19, 6\)"):
        bound_ratio(y, ref[:, 1:], SPEC, dtype="float32", x=x, weights=weights)
    with pytest.raises(SpecError):  # the input does not fit the layer
        bound_ratio(y, ref, SPEC, dtype="float32", x=x[..., :5], weights=weights)


def test_spec_syntax():
    assert parse_spec("conv(8, 6, 12, padding=same)") == SPEC
    assert parse_spec("conv(3, 16, (3, 3), strides=2, bias=false)") == LayerSpec.conv(3, 16, (3, 3), strides=2,
                                                                                        bias=False)
    assert parse_spec('{"kind": "dense", "in_features": 512, "out_features": 10}') == LayerSpec.dense(512, 10)
    for spec in (SPEC, LayerSpec.dense(4, 3, bias=False), LayerSpec.conv(4, 4, (2, 3), padding=((1, 0), (2, 1)),
                                                                          groups=2, padding_mode="circular")):
        assert parse_spec(json.dumps(spec_to_json(spec))) == spec  # a counterexample's saved spec
    for bad in ("conv(8)", "linear(3, 4)", "conv(8, 6, 12, padding=sideways)", "{not json", '{"kind": "rnn"}',
                "conv(8, 6, 12, **extra)", "conv(8, 6, 12, frobnicate=1)"):
        with pytest.raises(SpecError):
            parse_spec(bad)


# ---- the command ---------------------------------------------------------------------------------------

def _files(tmp_path, y, ref, x, weights):
    paths = {name: tmp_path / f"{name}.npy" for name in ("out", "ref", "x")}
    for name, array in (("out", y), ("ref", ref), ("x", x)):
        np.save(paths[name], array)
    paths["w"] = tmp_path / "w.npz"
    np.savez(paths["w"], **weights)
    return paths


def _explain(paths, capsys, *extra, spec="conv(8, 6, 12, padding=same)", inputs=True):
    argv = ["explain", "--output", str(paths["out"]), "--reference", str(paths["ref"]), "--spec", spec, *extra]
    if inputs and "--magnitude" not in extra:
        argv += ["--x", str(paths["x"]), "--weights", str(paths["w"])]
    return run_cli(argv, capsys)


def test_command_exit_0_when_within(tmp_path, capsys):
    x, weights, y, ref = _float32_case()
    code, out, err = _explain(_files(tmp_path, y, ref, x, weights), capsys, "--dtype", "float32")
    assert code == 0 and err == "" and "the difference is expected" in out


def test_command_exit_1_when_exceeding(tmp_path, capsys):
    x, weights, y, ref = _float32_case()
    y = y.copy()
    y[1, 7, 3] += np.float32(0.01) * max(abs(float(y[1, 7, 3])), 1.0)
    code, out, err = _explain(_files(tmp_path, y, ref, x, weights), capsys, "--dtype", "float32")
    assert code == 1 and err == "" and "(1, 7, 3)" in out and "porting mistake" in out


def test_command_declared_mode_and_magnitude_file(tmp_path, capsys):
    x, weights = _data(1)
    y = _conv1d(_tf32(x), _tf32(weights["kernel"]), weights["bias"])
    paths = _files(tmp_path, y, reference.forward(SPEC, x, weights), x, weights)
    assert _explain(paths, capsys, "--dtype", "float32")[0] == 1
    assert _explain(paths, capsys, "--u-eff", "tf32")[0] == 0
    np.save(tmp_path / "m.npy", reference.magnitude(SPEC, x, weights))
    code, out, _ = _explain(paths, capsys, "--u-eff", str(2.0 ** -11), "--magnitude", str(tmp_path / "m.npy"))
    assert code == 0 and "2^-11" in out
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec_to_json(SPEC)))
    assert _explain(paths, capsys, "--u-eff", "tf32", spec=str(spec_file))[0] == 0


@pytest.mark.parametrize("case, problem", [
    ("missing output", "no such file"),
    ("shape mismatch", "(2, 19, 6)"),
    ("bad spec", "--spec"),
    ("spec that does not fit", "Invalid `kernel` for conv1d(7->6"),
    ("no precision", "--dtype"),
    ("no magnitude", "--magnitude"),
    ("unknown mode", "--u-eff"),
    ("not numpy", "not a readable NumPy file"),
    ("weights not npz", "expected a .npz"),
])
def test_command_bad_input_is_one_line_exit_2(case, problem, tmp_path, capsys):
    x, weights, y, ref = _float32_case()
    paths = _files(tmp_path, y, ref, x, weights)
    extra, spec, inputs = ["--dtype", "float32"], "conv(8, 6, 12, padding=same)", True
    if case == "missing output":
        paths["out"] = tmp_path / "nope.npy"
    elif case == "shape mismatch":
        np.save(paths["ref"], ref[:, 1:])
    elif case == "bad spec":
        spec = "conv(8, 6"
    elif case == "spec that does not fit":
        spec = "conv(7, 6, 12, padding=same)"
    elif case == "no precision":
        extra = []
    elif case == "no magnitude":
        inputs = False
    elif case == "unknown mode":
        extra = ["--u-eff", "tf16"]
    elif case == "not numpy":
        paths["ref"].write_text("0.1 0.2\n")
    elif case == "weights not npz":
        paths["w"] = paths["x"]
    code, out, err = _explain(paths, capsys, *extra, spec=spec, inputs=inputs)
    assert code == 2, (code, out, err)
    assert out == "" and "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("conformance explain: error: ") and problem in err, err
