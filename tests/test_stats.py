"""The init check's statistics: calibrated when the distribution is right, powerful when it is wrong.

The KS test must accept draws from the documented law at about its nominal false-alarm rate and
reject the initializers one plausibly gets instead (another framework's bound, fan_out for fan_in,
a normal for the truncated normal, a non-zero bias). A planted wrong initializer must fail the real
check through an adapter.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from layer_conformance import adapters
from layer_conformance.adapters import FRAMEWORKS, LayerSpec, get_adapter
from layer_conformance.suites.catalog import CLAIMS_BY_ID
from layer_conformance.suites.stats import (JAX_TRUNCATED_NORMAL_STD, Dist, documented_init, fans, kolmogorov_sf, ks_statistic,
                          ks_test, outside_support, point_mass_zero, truncated_normal_std, uniform_cdf)
from layer_conformance.suites.checks.init import ALPHA, MIN_SAMPLES
from layer_conformance.suites.harness import Case, ClaimRunner

# the xfw-dense row: fan_in 8, fan_out 32; its 4 variants x 2 tensors bound the Bonferroni factor
FAN_IN, FAN_OUT = 8, 32
LECUN = math.sqrt(1 / FAN_IN)
TORCH = 1 / math.sqrt(FAN_IN)
GLOROT = math.sqrt(6 / (FAN_IN + FAN_OUT))
THRESHOLD = ALPHA / 8
POWER_SEEDS = range(20)  # every one of these must reject, not just the lucky one


def check_init(claim, record: dict) -> None:
    """The init check as the suite's test_init runs it: the runner fills `record`; AssertionError on a mismatch."""
    ClaimRunner(Case(claim, "float32", "cpu"), record, check="init").check_init()


# ---- the KS machinery ------------------------------------------------------------------------------

@pytest.mark.parametrize("t, p", [(1.3581, 0.05), (1.6276, 0.01), (1.9495, 0.001), (0.8276, 0.5)])
def test_kolmogorov_sf_matches_the_tabulated_critical_values(t, p):
    assert kolmogorov_sf(t) == pytest.approx(p, rel=2e-3)


def test_kolmogorov_sf_branches_agree_at_the_switch():
    below, above = kolmogorov_sf(1.18 - 1e-12), kolmogorov_sf(1.18)
    assert below == pytest.approx(above, rel=1e-9)
    assert kolmogorov_sf(0.0) == 1.0 and kolmogorov_sf(0.1) == pytest.approx(1.0) and kolmogorov_sf(10.0) < 1e-80


def test_ks_statistic_by_hand():
    cdf = uniform_cdf(1.0)
    assert ks_statistic(np.array([0.0]), cdf) == pytest.approx(0.5)
    # ECDF steps at -0.5 (F = 0.25) and 0.5 (F = 0.75): the gaps are 0.25 on every side
    assert ks_statistic(np.array([0.5, -0.5]), cdf) == pytest.approx(0.25)
    assert ks_statistic(np.array([0.99, 0.98, 0.97]), cdf) == pytest.approx(0.985)


def test_truncated_normal_constant_is_the_one_jax_uses():
    assert truncated_normal_std(2.0) == pytest.approx(JAX_TRUNCATED_NORMAL_STD, rel=1e-15)
    jax_init = pytest.importorskip("jax._src.nn.initializers")
    assert "87962566103423978" in Path(jax_init.__file__).read_text()


@pytest.mark.parametrize("dist", [Dist("uniform", 1.0), Dist("truncated_normal", LECUN), Dist("normal", 0.3)],
                         ids=lambda d: d.family)
def test_false_alarm_rate_is_about_alpha(dist):
    """200 samples of 500 from the right law at alpha = 0.05: about 10 rejections (binomial sd 3.1)."""
    rejected = sum(ks_test(dist.sample(np.random.default_rng(seed), 500), dist.cdf())[1] < 0.05
                   for seed in range(200))
    assert 3 <= rejected <= 20, rejected


def test_false_alarm_rate_holds_for_small_samples():
    """Stephens' correction keeps the rate near alpha for bias-sized samples (n = 20)."""
    dist = Dist("uniform", 0.3)
    rejected = sum(ks_test(dist.sample(np.random.default_rng(seed), 20), dist.cdf())[1] < 0.05
                   for seed in range(1000))
    assert 30 <= rejected <= 75, rejected


def test_sampler_matches_the_documented_moments():
    dist = Dist("truncated_normal", LECUN)
    x = dist.sample(np.random.default_rng(0), 200_000)
    assert x.std() == pytest.approx(LECUN, rel=5e-3) and outside_support(x, dist) == 0
    assert np.abs(x).max() > 0.99 * dist.support


# ---- power: the plausible wrong initializers, at the sample size the check uses ---------------------

def _rejections(draw: Callable[[np.random.Generator, int], np.ndarray], dist: Dist, n: int = MIN_SAMPLES) -> list[float]:
    return [ks_test(draw(np.random.default_rng(seed), n), dist.cdf())[1] for seed in POWER_SEEDS]


@pytest.mark.parametrize("drawn, documented", [(TORCH, GLOROT), (GLOROT, TORCH)],
                         ids=["torch bound where glorot is documented", "glorot bound where torch's is documented"])
def test_ks_rejects_a_uniform_with_the_wrong_bound(drawn, documented):
    """The bounds differ by 9% only (fan_in 8 vs fan_out 32); KS alone still rejects."""
    p = _rejections(lambda rng, n: rng.uniform(-drawn, drawn, n), Dist("uniform", documented))
    assert max(p) < THRESHOLD, max(p)


def test_ks_rejects_truncated_normal_with_fan_out_for_fan_in():
    p = _rejections(lambda rng, n: Dist("truncated_normal", math.sqrt(1 / FAN_OUT)).sample(rng, n),
                    Dist("truncated_normal", LECUN))
    assert max(p) < THRESHOLD, max(p)


def test_ks_rejects_truncated_normal_without_the_std_correction():
    """Truncating N(0, sqrt(1/fan_in)) without dividing by 0.8796 leaves the std 12% short."""
    p = _rejections(lambda rng, n: Dist("truncated_normal", LECUN * JAX_TRUNCATED_NORMAL_STD).sample(rng, n),
                    Dist("truncated_normal", LECUN))
    assert max(p) < THRESHOLD, max(p)


def test_normal_instead_of_truncated_normal_is_caught_by_the_support():
    """Same std, untruncated: KS needs far more values than the check draws, the support check none.

    At MIN_SAMPLES the KS p-value is only ~1e-3 (not below the row threshold every time); 2.3% of
    normal draws lie beyond the truncation, so the exact support check catches every draw. KS alone
    gets there at 8x the samples.
    """
    documented = Dist("truncated_normal", LECUN)
    for seed in POWER_SEEDS:
        assert outside_support(np.random.default_rng(seed).normal(0, LECUN, MIN_SAMPLES), documented) > 100
    p = _rejections(lambda rng, n: rng.normal(0, LECUN, n), documented, n=8 * MIN_SAMPLES)
    assert max(p) < THRESHOLD, max(p)


def test_support_check_has_no_false_alarms_on_float32_draws():
    for dist in (Dist("uniform", TORCH), Dist("truncated_normal", LECUN)):
        x = dist.sample(np.random.default_rng(0), 100_000).astype(np.float32)
        edge = np.float32(dist.support)
        assert outside_support(np.concatenate([x, [edge, -edge]]), dist) == 0


@pytest.mark.parametrize("bias", [np.full(32, 1e-30), np.eye(1, 32)[0] * 1e-3,
                                  np.random.default_rng(0).uniform(-TORCH, TORCH, 32)],
                         ids=["tiny everywhere", "one entry", "torch-style bias"])
def test_zeros_check_rejects_any_non_zero_bias(bias):
    assert point_mass_zero(bias)[0] > 0
    assert point_mass_zero(np.zeros(32)) == (0, 0.0) and point_mass_zero(-np.zeros(32)) == (0, 0.0)


# ---- the documented expectations ---------------------------------------------------------------------

SPECS = [LayerSpec.dense(8, 32), LayerSpec.conv(4, 6, 3, strides=2, padding="same", groups=2),
         LayerSpec.conv(4, 6, (3, 2), groups=2, bias=False), LayerSpec.conv(1, 256, 80)]


@pytest.mark.parametrize("spec", SPECS, ids=[s.describe() for s in SPECS])
def test_fans_match_each_frameworks_own_function(spec):
    """`fans` mirrors torch's, Keras' and JAX's fan computation; ask the installed functions."""
    checked = 0
    torch = _import("torch")
    if torch is not None:
        native = (spec.out_features, spec.in_features // spec.groups, *spec.kernel_size)
        assert fans("torch", spec) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(native))
        checked += 1
    keras_init = _import("keras.src.initializers.random_initializers")
    if keras_init is not None:
        assert fans("keras", spec) == keras_init.compute_fans(spec.kernel_shape())
        checked += 1
    jax_init = _import("jax._src.nn.initializers")
    if jax_init is not None:
        fan_in, fan_out = jax_init._compute_fans(spec.kernel_shape(), -2, -1, ())
        assert fans("flax.linen", spec) == fans("flax.nnx", spec) == (fan_in, fan_out)
        checked += 1
    if not checked:
        pytest.skip("no framework installed")


def _import(name: str):
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        return None


def test_documented_distributions():
    dense = LayerSpec.dense(FAN_IN, FAN_OUT)
    torch = documented_init("torch", dense)
    assert torch["kernel"].same_as(Dist("uniform", TORCH)) and torch["bias"].same_as(Dist("uniform", TORCH))
    keras = documented_init("keras", dense)
    assert keras["kernel"].same_as(Dist("uniform", GLOROT)) and keras["bias"].family == "zeros"
    for api in ("flax.linen", "flax.nnx"):
        flax = documented_init(api, dense)
        assert flax["kernel"].same_as(Dist("truncated_normal", LECUN)) and flax["bias"].family == "zeros"
        assert flax["kernel"].support == pytest.approx(2 * LECUN / JAX_TRUNCATED_NORMAL_STD)
    assert "bias" not in documented_init("keras", LayerSpec.conv(4, 6, 3, bias=False))
    # torch Linear(K, N) and Conv1d(K, N, 1) start alike; Keras Dense and Conv1D(kernel_size=K) on (B*L, K, 1) do not
    assert documented_init("torch", dense)["kernel"].same_as(documented_init("torch", LayerSpec.conv(8, 32, 1))["kernel"])
    method1 = documented_init("keras", LayerSpec.conv(1, 256, 80))["kernel"]
    assert method1.same_as(Dist("uniform", math.sqrt(6 / (80 + 256 * 80))))


# ---- through the real check ----------------------------------------------------------------------------

class WrongInit:
    """Delegates to a real adapter; its default weights go through `fault(spec, seed, weights)`."""

    def __init__(self, inner, fault):
        self.inner, self.fault = inner, fault

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def default_weights(self, spec, seed):
        return self.fault(spec, seed, dict(self.inner.default_weights(spec, seed)))


def _scaled(factor: Callable[[LayerSpec, str], float]):
    def fault(spec, seed, w):
        return {**w, "kernel": w["kernel"] * factor(spec, "kernel")}
    return fault


def _normal_kernel(spec, seed, w):
    fan_in = fans("flax.linen", spec)[0]
    return {**w, "kernel": np.random.default_rng(seed).normal(0, math.sqrt(1 / fan_in), w["kernel"].shape)}


def _torch_bias(spec, seed, w):
    bound = 1 / math.sqrt(fans("keras", spec)[0])
    return {**w, "bias": np.random.default_rng(seed).uniform(-bound, bound, w["bias"].shape).astype(np.float32)}


def _glorot_over_torch(spec, tensor):  # U(+-1/sqrt(fan_in)) -> U(+-sqrt(6/(fan_in+fan_out)))
    fan_in, fan_out = fans("torch", spec)
    return math.sqrt(6 / (fan_in + fan_out)) * math.sqrt(fan_in)


def _torch_over_glorot(spec, tensor):
    return 1 / _glorot_over_torch(spec, tensor)


def _fan_out_for_fan_in(spec, tensor):
    fan_in, fan_out = fans("flax.nnx", spec)
    return math.sqrt(fan_in / fan_out)


WRONG = {
    "torch Linear with glorot kernels": ("torch", "torch.Linear", "kernel", _scaled(_glorot_over_torch)),
    "Keras Dense with torch's narrower bound (inside the support: KS alone)": (
        "keras", "keras.Dense", "kernel", _scaled(_torch_over_glorot)),
    "flax.linen Dense with a normal, not truncated, kernel": ("flax.linen", "flax.linen.Dense", "kernel", _normal_kernel),
    "flax.nnx Linear scaled by fan_out": ("flax.nnx", "flax.nnx.Linear", "kernel", _scaled(_fan_out_for_fan_in)),
    "Keras Dense with a non-zero bias": ("keras", "keras.Dense", "bias", _torch_bias),
}


@pytest.mark.parametrize("name", list(WRONG))
def test_init_check_catches_planted_wrong_initializer(monkeypatch, name):
    framework, label, tensor, fault = WRONG[name]
    inner = get_adapter(framework)
    if inner.available():
        pytest.skip(inner.available())
    monkeypatch.setitem(adapters._CACHE, framework, WrongInit(inner, fault))
    record: dict = {}
    with pytest.raises(AssertionError) as info:
        check_init(CLAIMS_BY_ID["xfw-dense"], record)
    message = str(info.value)
    documented = documented_init(framework, LayerSpec.dense(FAN_IN, FAN_OUT))[tensor]
    assert f"{label} {tensor}: documented {documented.describe()}" in message
    if documented.continuous:
        assert "KS D = " in message and "p = " in message
    others = [f"{v.framework}" for v in CLAIMS_BY_ID["xfw-dense"].variants if v.framework != framework]
    assert not any(f"\n  {fw}." in message for fw in others), message  # only the planted variant fails
    assert record["init"][label][tensor]["distribution"] == documented.describe()


def test_init_check_passes_and_records_the_real_defaults():
    claim = CLAIMS_BY_ID["xfw-dense"]
    if any(get_adapter(fw).available() for fw in FRAMEWORKS):
        pytest.skip("needs all four frameworks")
    record: dict = {}
    check_init(claim, record)
    assert record["check"] == "init" and record["max_bound_ratio"] is None
    assert record["init_tests"] == 5 and record["init_threshold"] == pytest.approx(ALPHA / 5)
    assert record["init_differs"] is True and "keras.Dense U(-0.3873, 0.3873)" in record["init_note"]
    kernel = record["init"]["torch.Linear"]["kernel"]
    assert kernel["distribution"] == "U(-0.3536, 0.3536)" and kernel["n"] >= MIN_SAMPLES
    assert kernel["p"] >= record["init_threshold"] and kernel["outside_support"] == 0
    assert record["init"]["keras.Dense"]["bias"]["nonzero"] == 0
    assert record["examples"] == sum(t["n"] for v in record["init"].values() for t in v.values())


def test_init_differs_only_where_the_distributions_do():
    if get_adapter("torch").available() or get_adapter("keras").available():
        pytest.skip("needs torch and keras")
    record: dict = {}
    check_init(CLAIMS_BY_ID["torch-linear-conv1d-k1"], record)
    assert record["init_differs"] is False
    record = {}
    check_init(CLAIMS_BY_ID["keras-full-kernel-conv1d-dense"], record)
    assert record["init_differs"] is True and "U(-0.2887, 0.2887)" in record["init_note"]
