"""Half-precision bounds that mean something: the float32-accumulator bound, its probe, and no vacuous pass.

layer_conformance.suites.bounds' worst-case bound is infinite from 256 bfloat16 terms; a comparison under it cannot fail.
These tests show that the wide bound (layer_conformance.suites.accumulation) holds for a float32 accumulator and not
for a half-precision one, that the probe tells the two apart, that a bfloat16 Linear(1024, N) with a
1 % error planted in one output fails while the correct layer passes 500 examples, and that no
`passed` result of a whole report rests on an infinite bound.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from layer_conformance.adapters.spec import LayerSpec, numpy_dtype
from layer_conformance.suites import accumulation
from layer_conformance.suites.accumulation import (WIDE, accumulator, gradient_accumulators, narrow_loss, probe_pattern,
                                                   sequential_sum)
from layer_conformance.suites.bounds import error_bound, layer_error_bound, vacuous, wide_error_bound
from layer_conformance.suites.strategies import STYLES, random_array

ROOT = Path(__file__).resolve().parent.parent


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(dtype=st.sampled_from(["bfloat16", "float16"]), terms=st.integers(1, 1100), style=st.sampled_from(STYLES),
       seed=st.integers(0, 2 ** 32 - 1))
def test_wide_bound_holds_for_a_float32_accumulator(dtype, terms, style, seed):
    """Products of half-precision values summed in float32 (in two orders), rounded to the dtype, with the bias
    added before or after that rounding: always within the wide bound."""
    rng = np.random.default_rng(seed)
    x = random_array(rng, (terms,), style, dtype).astype(np.float64)
    w = random_array(rng, (terms,), style, dtype).astype(np.float64)
    b = float(random_array(rng, (1,), style, dtype)[0])
    half = numpy_dtype(dtype).type
    products = (x * w).astype(np.float32)  # exact: at most 22 significant bits
    exact = float(np.dot(x, w)) + b
    magnitude = float(np.dot(np.abs(x), np.abs(w))) + abs(b)
    bound = float(wide_error_bound(terms + 1, magnitude, exact, abs(b), dtype))
    forward = np.float32(0)
    for p in products:
        forward = np.float32(forward + p)
    backward = np.float32(np.sum(products[::-1], dtype=np.float32))
    for total in (forward, backward):
        fused = float(half(np.float32(total + np.float32(b))))  # one rounding: the bias in the float32 sum
        separate = float(half(float(half(total)) + b))  # two: the product sum rounded, then the bias added
        assert abs(fused - exact) <= bound and abs(separate - exact) <= bound


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("terms", [4, 9, 64, 300, 1025])
def test_the_probe_pattern_summed_in_the_half_dtype_misses_the_wide_bound(dtype, terms):
    values = probe_pattern(terms, dtype)
    exact = float(np.sum(values))
    bound = float(wide_error_bound(terms, np.sum(np.abs(values)), exact, 0.0, dtype))
    assert abs(sequential_sum(values, dtype) - exact) > 2 * bound
    assert narrow_loss(terms, dtype) > 2 * bound
    assert abs(float(numpy_dtype(dtype).type(np.sum(values.astype(np.float32)))) - exact) <= bound


def test_a_probe_that_cannot_tell_is_not_used():
    """float16 over 4096 terms: float32's own gamma(n, 2^-24) |W||x| is as large as the probe's result, so a
    half-precision sum could pass it; the probe is not decisive and the worst-case bound stays (infinite:
    measured, not judged)."""
    assert narrow_loss(4096, "float16") == 0.0 and narrow_loss(4096, "bfloat16") > 0
    assert narrow_loss(3, "bfloat16") == 0.0 and narrow_loss(300, "float32") == 0.0


class _Sums:
    """A stand-in adapter whose dense layer sums its products in the half dtype (sequentially)."""

    def __init__(self, scale: float = 1.0):
        self.scale = scale

    def build(self, spec, weights, dtype, device):
        outer = self

        class Layer:
            def forward(self, x):
                kernel = np.asarray(weights["kernel"], np.float64)
                out = np.array([[sequential_sum(row * kernel[:, o], dtype) for o in range(kernel.shape[1])]
                                for row in np.asarray(x, np.float64)])
                return (out * outer.scale).astype(numpy_dtype(dtype))

        return Layer()


def test_the_probe_finds_a_half_precision_accumulator(monkeypatch):
    spec = LayerSpec.dense(300, 3, bias=False)
    monkeypatch.setattr(accumulation, "_FOUND", {})
    monkeypatch.setattr(accumulation, "get_adapter", lambda name: _Sums())
    assert accumulator("narrow", spec, "bfloat16", "cpu", np.zeros((2, 300))) == "bfloat16"
    assert accumulator("narrow", spec, "float16", "cpu", np.zeros((2, 300))) == "float16"
    assert accumulator("narrow", spec, "float32", "cpu", np.zeros((2, 300))) is None  # not half precision: no probe
    assert accumulator("narrow", LayerSpec.dense(3, 3), "bfloat16", "cpu", np.zeros((2, 3))) is None  # too few terms


def test_a_wrong_result_does_not_buy_the_worst_case_bound(monkeypatch):
    """A layer off by 1 % on the probe is no accumulator: it is judged by the wide bound, where its examples fail."""

    class Scaled:
        def build(self, spec, weights, dtype, device):
            class Layer:
                def forward(self, x):
                    y = np.asarray(x, np.float64) @ np.asarray(weights["kernel"], np.float64)
                    return (y * 1.01).astype(numpy_dtype(dtype))

            return Layer()

    monkeypatch.setattr(accumulation, "_FOUND", {})
    monkeypatch.setattr(accumulation, "get_adapter", lambda name: Scaled())
    assert accumulator("scaled", LayerSpec.dense(1024, 2, bias=False), "bfloat16", "cpu", np.zeros((1, 1024))) == WIDE


def test_torch_sums_bfloat16_and_float16_in_float32():
    pytest.importorskip("torch")
    for dtype in ("bfloat16", "float16", "mixed_bfloat16"):
        assert accumulator("torch", LayerSpec.dense(1024, 4), dtype, "cpu", np.zeros((2, 1024))) == WIDE
        conv = LayerSpec.conv(64, 8, (5,), padding="same")
        assert accumulator("torch", conv, dtype, "cpu", np.zeros((2, 7, 64))) == WIDE
        assert accumulator("torch", conv, dtype, "cpu", np.zeros((2, 64, 7)).transpose(0, 2, 1)) == WIDE  # permuted


def _torch_linear_bound_ratios(n_out: int, batch: int, style: str, seed: int, planted: bool) -> float:
    """The largest bound ratio of torch's bfloat16 Linear(1024, n_out) over one example, judged as the forward
    check judges it (the wide bound, from the probe); `planted`: output 0 is 1 % off."""
    from layer_conformance.adapters import get_adapter, reference

    spec = LayerSpec.dense(1024, n_out)
    rng = np.random.default_rng(seed)
    x = random_array(rng, (batch, 1024), style, "bfloat16")
    weights = {"kernel": random_array(rng, (1024, n_out), style, "bfloat16"),
               "bias": random_array(rng, (n_out,), style, "bfloat16")}
    y = get_adapter("torch").build(spec, weights, "bfloat16", "cpu").forward(x).astype(np.float64)
    if planted:
        y[:, 0] = (y[:, 0] * 1.01).astype(numpy_dtype("bfloat16")).astype(np.float64)
    w64 = {k: v.astype(np.float64) for k, v in weights.items()}
    expected, magnitude = reference.forward_and_magnitude(spec, x.astype(np.float64), w64)
    found = accumulator("torch", spec, "bfloat16", "cpu", x)
    bound = layer_error_bound(spec.reduction_length, magnitude, expected, np.abs(w64["bias"]), "bfloat16", found)
    assert found == WIDE and not vacuous(bound)
    assert vacuous(error_bound(spec.reduction_length, magnitude, "bfloat16"))  # what the worst-case bound says
    return float(np.max(np.abs(y - expected) / bound))


EXAMPLES = settings(max_examples=500, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))
LINEAR_EXAMPLES = dict(n_out=st.integers(1, 8), batch=st.integers(1, 4), style=st.sampled_from(STYLES),
                       seed=st.integers(0, 2 ** 32 - 1))


@EXAMPLES
@given(**LINEAR_EXAMPLES)
def test_bf16_linear_1024_passes_500_examples_under_the_wide_bound(n_out, batch, style, seed):
    pytest.importorskip("torch")
    assert _torch_linear_bound_ratios(n_out, batch, style, seed, planted=False) <= 1.0


def test_bf16_linear_1024_with_a_planted_1_percent_error_fails():
    pytest.importorskip("torch")
    worst = []

    @EXAMPLES
    @given(**LINEAR_EXAMPLES)
    def planted(n_out, batch, style, seed):
        ratio = _torch_linear_bound_ratios(n_out, batch, style, seed, planted=True)
        worst.append(ratio)
        assert ratio <= 1.0

    with pytest.raises(AssertionError):
        planted()
    assert max(worst) > 1.0


class _GradientSums:
    """A stand-in adapter whose dense layer's VJP sums the kernel and bias gradients in the half dtype
    (sequentially); `nan`: its kernel gradient is NaN instead."""

    def __init__(self, nan: bool = False):
        self.nan = nan

    def build(self, spec, weights, dtype, device):
        outer = self

        class Layer:
            def vjp(self, x, g):
                x64, g64 = np.asarray(x, np.float64), np.asarray(g, np.float64)
                kernel = np.array([[sequential_sum(x64[:, i] * g64[:, o], dtype) for o in range(g64.shape[1])]
                                   for i in range(x64.shape[1])])
                if outer.nan:
                    kernel[:] = np.nan
                bias = np.array([sequential_sum(g64[:, o], dtype) for o in range(g64.shape[1])])
                return np.zeros_like(x), {"kernel": kernel.astype(numpy_dtype(dtype)),
                                          "bias": bias.astype(numpy_dtype(dtype))}

        return Layer()


def test_the_gradient_probe_finds_a_half_precision_accumulator(monkeypatch):
    """Kernel and bias gradients summed in bfloat16 over 300 positions: the probe says so, and the gradient is
    judged by the worst-case bound (infinite there: measured, not judged); fewer positions: no probe."""
    spec = LayerSpec.dense(3, 2)
    monkeypatch.setattr(accumulation, "_FOUND", {})
    monkeypatch.setattr(accumulation, "get_adapter", lambda name: _GradientSums())
    found = gradient_accumulators("narrow", spec, "bfloat16", "cpu", np.zeros((300, 3)), (300, 2))
    assert found == {"kernel": "bfloat16", "bias": "bfloat16"}
    assert gradient_accumulators("narrow", spec, "bfloat16", "cpu", np.zeros((3, 3)), (3, 2)) == {}
    assert gradient_accumulators("narrow", spec, "float32", "cpu", np.zeros((300, 3)), (300, 2)) == {}


def test_a_nan_gradient_probe_does_not_buy_the_worst_case_bound(monkeypatch):
    """A NaN is no accumulator's rounding: the gradient is judged by the wide bound, where its examples fail."""
    monkeypatch.setattr(accumulation, "_FOUND", {})
    monkeypatch.setattr(accumulation, "get_adapter", lambda name: _GradientSums(nan=True))
    found = gradient_accumulators("nan", LayerSpec.dense(3, 2), "bfloat16", "cpu", np.zeros((300, 3)), (300, 2))
    assert found == {"kernel": WIDE, "bias": "bfloat16"}


def test_torch_sums_bfloat16_weight_gradients_in_float32():
    """bfloat16: float32 throughout. float16: each sample's sum in float32, the samples' sums added in float16
    (the cross-block probe shows it; the pattern probe alone misses it)."""
    pytest.importorskip("torch")
    conv = LayerSpec.conv(4, 8, (3, 3), padding="same")
    for dtype in ("bfloat16", "mixed_bfloat16"):
        assert gradient_accumulators("torch", conv, dtype, "cpu", np.zeros((2, 15, 17, 4)), (2, 15, 17, 8)) == \
            {"kernel": WIDE, "bias": WIDE}
    for dtype in ("float16", "mixed_float16"):
        assert gradient_accumulators("torch", conv, dtype, "cpu", np.zeros((2, 15, 17, 4)), (2, 15, 17, 8)) == \
            {"kernel": "float16", "bias": WIDE}


class _BlockSums:
    """A stand-in dense layer whose VJP sums each sample's positions in float32 and adds the samples' sums in
    the half dtype: what torch's CPU float16 convolution backward does."""

    def build(self, spec, weights, dtype, device):
        class Layer:
            def vjp(self, x, g):
                x64, g64 = np.asarray(x, np.float64), np.asarray(g, np.float64)
                half = numpy_dtype(dtype).type
                blocks = np.array_split(np.arange(len(x64)), 4)  # four samples
                kernel = np.zeros((x64.shape[1], g64.shape[1]))
                bias = np.zeros(g64.shape[1])
                for rows in blocks:
                    kernel = (kernel + (x64[rows].T @ g64[rows]).astype(np.float32).astype(numpy_dtype(dtype))
                              ).astype(numpy_dtype(dtype)).astype(np.float64)
                    bias = np.array([float(half(b + float(half(s)))) for b, s in zip(bias, g64[rows].sum(0))])
                return np.zeros_like(x), {"kernel": kernel.astype(numpy_dtype(dtype)),
                                          "bias": bias.astype(numpy_dtype(dtype))}

        return Layer()


def test_the_cross_block_probe_finds_sums_added_in_the_half_dtype(monkeypatch):
    """Per-sample float32 sums added in float16: the pattern probe is fooled (its sums per block are exact), the
    cross-block probe is not, so the gradient is judged by the worst-case bound, not the wide one."""
    spec = LayerSpec.dense(3, 2)
    monkeypatch.setattr(accumulation, "_FOUND", {})
    monkeypatch.setattr(accumulation, "get_adapter", lambda name: _BlockSums())
    found = gradient_accumulators("blocks", spec, "float16", "cpu", np.zeros((400, 3)), (400, 2))
    assert found == {"kernel": "float16", "bias": "float16"}
    monkeypatch.setattr(accumulation, "_FOUND", {})
    # the pattern probe alone (a cross-block probe that agrees with whatever it is asked about) is fooled
    monkeypatch.setattr(accumulation, "_cross_block_probe", lambda *args: {"kernel": WIDE, "bias": WIDE})
    assert gradient_accumulators("blocks", spec, "float16", "cpu", np.zeros((400, 3)), (400, 2)) == \
        {"kernel": WIDE, "bias": WIDE}


class _ExactSums:
    """A stand-in dense layer whose VJP is exact, rounded once to the dtype (a float32 accumulator)."""

    def build(self, spec, weights, dtype, device):
        class Layer:
            def vjp(self, x, g):
                x64, g64 = np.asarray(x, np.float64), np.asarray(g, np.float64)
                return np.zeros_like(x), {"kernel": (x64.T @ g64).astype(numpy_dtype(dtype)),
                                          "bias": g64.sum(0).astype(numpy_dtype(dtype))}

        return Layer()


def test_a_float32_accumulator_needs_both_probes(monkeypatch):
    """Exact sums: float32 where both probes run; with 4 positions the pattern probe says float32 but the
    cross-block probe cannot run, so there is no verdict (the worst-case bound, finite at 4 terms)."""
    monkeypatch.setattr(accumulation, "_FOUND", {})
    monkeypatch.setattr(accumulation, "get_adapter", lambda name: _ExactSums())
    spec = LayerSpec.dense(3, 2)
    assert gradient_accumulators("exact", spec, "float16", "cpu", np.zeros((400, 3)), (400, 2)) == \
        {"kernel": WIDE, "bias": WIDE}
    assert gradient_accumulators("exact", spec, "float16", "cpu", np.zeros((4, 3)), (4, 2)) == \
        {"kernel": None, "bias": None}


CONV_SPEC = LayerSpec.conv(3, 2, (5,), strides=(2,), padding="same")


def _torch_kernel_gradient_ratio(batch: int, length: int, style: str, seed: int, planted: bool) -> float:
    """The largest bound ratio of torch's bfloat16 Conv1d(3, 2, 5, stride 2) kernel and bias gradients over one
    example of 256 to 640 output positions (the worst-case bound: infinite), judged as the gradient check judges
    them (layer_conformance.suites.gradients.gradient_bounds); `planted`: one kernel element 1 % off."""
    from layer_conformance.adapters import get_adapter, reference
    from layer_conformance.suites.gradients import gradient_bounds, term_counts

    rng = np.random.default_rng(seed)
    x = random_array(rng, (batch, length, 3), style, "bfloat16")
    weights = {"kernel": random_array(rng, CONV_SPEC.kernel_shape(), style, "bfloat16"),
               "bias": random_array(rng, (2,), style, "bfloat16")}
    w64 = {k: v.astype(np.float64) for k, v in weights.items()}
    out_shape = reference.forward(CONV_SPEC, x.astype(np.float64), w64).shape
    g = random_array(rng, out_shape, "normal", "bfloat16")
    _, got = get_adapter("torch").build(CONV_SPEC, weights, "bfloat16", "cpu").vjp(x, g)
    got = {k: v.astype(np.float64) for k, v in got.items()}
    if planted:
        got["kernel"][2, 1, 0] = float(np.float64(got["kernel"][2, 1, 0] * 1.01).astype(numpy_dtype("bfloat16")))
    expected = reference.vjp(CONV_SPEC, x.astype(np.float64), w64, g.astype(np.float64))[1]
    magnitude = reference.vjp(CONV_SPEC, np.abs(x.astype(np.float64)), {k: np.abs(v) for k, v in w64.items()},
                              np.abs(g.astype(np.float64)))[1]
    counts = term_counts(CONV_SPEC, out_shape)
    assert counts["kernel"] * 2.0 ** -8 >= 1  # the worst-case bound is infinite here
    bounds, found = gradient_bounds("torch", CONV_SPEC, "bfloat16", "cpu", x, out_shape, counts, magnitude, expected)
    assert found == {"kernel": WIDE, "bias": WIDE} and not any(vacuous(bounds[k]) for k in found)
    return max(float(np.max(np.abs(got[k] - expected[k]) / bounds[k])) for k in found)


CONV_EXAMPLES = dict(batch=st.integers(1, 4), length=st.integers(512, 1280), style=st.sampled_from(STYLES),
                     seed=st.integers(0, 2 ** 32 - 1))


@EXAMPLES
@given(**CONV_EXAMPLES)
def test_bf16_conv_kernel_gradient_passes_500_examples_under_the_wide_bound(batch, length, style, seed):
    pytest.importorskip("torch")
    assert _torch_kernel_gradient_ratio(batch, length, style, seed, planted=False) <= 1.0


def test_bf16_conv_kernel_gradient_with_a_planted_1_percent_error_fails():
    pytest.importorskip("torch")
    worst = []

    @EXAMPLES
    @given(**CONV_EXAMPLES)
    def planted(batch, length, style, seed):
        ratio = _torch_kernel_gradient_ratio(batch, length, style, seed, planted=True)
        worst.append(ratio)
        assert ratio <= 1.0

    with pytest.raises(AssertionError):
        planted()
    assert max(worst) > 1.0


def vacuous_passes(report: dict) -> list[str]:
    """Passed results that rest on an infinite bound: an example with n u >= 1 for the worst-case bound (n: the
    terms of its longest sum, samples.reduction_length) whose variants are not all shown to accumulate in
    float32, or a non-finite bound ratio."""
    from layer_conformance.suites.bounds import UNIT_ROUNDOFF

    found = []
    for row in report["results"]:
        if row["status"] != "passed":
            continue
        ratio = row.get("max_bound_ratio")
        if ratio is not None and not math.isfinite(ratio):
            found.append(f"{row['nodeid']}: bound ratio {ratio}")
        u = UNIT_ROUNDOFF.get(row.get("dtype"), 0.0)
        lengths = (row.get("samples") or {}).get("reduction_length") or []
        infinite = [n for n in lengths if (n + 1) * u >= 1.0]
        wide = row.get("accumulation") or {}
        probed = row["check"] in ("forward", "batch", "gradient")  # the depth check uses the worst-case bound
        if infinite and (not probed or not wide or any(kinds != [WIDE] for kinds in wide.values())):
            found.append(f"{row['nodeid']}: passed with {len(infinite)} example(s) of {max(infinite) + 1} terms in "
                         f"{row['dtype']} (worst-case bound infinite), accumulation {wide or 'not probed'}")
        if row.get("not_judged"):
            found.append(f"{row['nodeid']}: passed with comparisons not judged: {row['not_judged']}")
    return found


def test_vacuous_passes_are_found_in_a_report():
    row = {"nodeid": "n", "status": "passed", "dtype": "bfloat16", "check": "forward", "max_bound_ratio": 0.1,
           "samples": {"reduction_length": [10, 300]}}
    assert vacuous_passes({"results": [row]})  # not probed
    assert not vacuous_passes({"results": [{**row, "accumulation": {"a": [WIDE], "b": [WIDE]}}]})
    assert vacuous_passes({"results": [{**row, "accumulation": {"a": [WIDE], "b": ["bfloat16"]}}]})
    assert vacuous_passes({"results": [{**row, "check": "depth", "accumulation": {"a": [WIDE], "b": [WIDE]}}]})
    assert not vacuous_passes({"results": [{**row, "status": "measured", "not_judged": {"b": "infinite"}}]})


def test_no_passed_result_rests_on_an_infinite_bound_in_a_whole_report(tmp_path):
    """A real run of the claims whose bfloat16 examples reach n u >= 1 (kernels as long as the input: up to
    345 terms), every check, both their frameworks."""
    pytest.importorskip("torch")
    report = tmp_path / "report.json"
    command = [sys.executable, "-m", "pytest", str(ROOT / "suites"), "-q", "-p", "no:cacheprovider", "-n", "2",
               "--rootdir", str(ROOT), "--hypothesis-profile", "ci", "--conformance-report", str(report),
               "--conformance-dtypes", "bfloat16,mixed_bfloat16", "-k", "full-kernel"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(report.read_text())["results"]
    judged = [r for r in results if r["check"] in ("forward", "batch", "gradient", "depth")]
    long = [r for r in judged
            if any((n + 1) * 2.0 ** -8 >= 1 for n in (r.get("samples") or {}).get("reduction_length") or [])]
    assert long, "the selection reached no example with an infinite worst-case bound: the test shows nothing"
    assert vacuous_passes({"results": results}) == []
