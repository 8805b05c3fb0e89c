"""Distribution tests in plain NumPy, and each framework's documented default initializers as data.

The init check (suites/checks/init.py) draws a layer's default weights and tests them against the
distribution its framework documents: a one-sample Kolmogorov-Smirnov test for the random
initializers plus an exact support check for the bounded ones (KS alone barely tells a normal from
the truncated normal of the same std), and an exact point mass at 0 for the zero initializers.
Everything here is checked against the installed sources; the references name the function that
fixes each number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np

from layer_conformance.adapters import class_name
from layer_conformance.adapters.spec import LayerSpec

# ---- Kolmogorov-Smirnov ---------------------------------------------------------------------------


def ks_statistic(samples: np.ndarray, cdf: Callable[[np.ndarray], np.ndarray]) -> float:
    """D = sup_x |F_n(x) - F(x)| for the empirical CDF F_n of the samples."""
    x = np.sort(np.asarray(samples, dtype=np.float64).ravel())
    n = x.size
    if n == 0:
        raise ValueError("the KS statistic needs at least one sample")
    f = np.clip(cdf(x), 0.0, 1.0)
    steps = np.arange(1, n + 1) / n
    return float(max(np.max(steps - f), np.max(f - (steps - 1.0 / n))))


def kolmogorov_sf(t: float) -> float:
    """P(K > t) for the Kolmogorov distribution K = lim sqrt(n) D_n.

    Q(t) = 2 sum_{k>=1} (-1)^(k-1) exp(-2 k^2 t^2). That series converges slowly for small t, so
    below t = 1.18 the equivalent Jacobi-theta form 1 - sqrt(2 pi)/t sum_{k>=1} exp(-(2k-1)^2 pi^2 / (8 t^2))
    is summed instead; both need only a handful of terms to reach double precision on their side.
    """
    if t <= 0.0:
        return 1.0
    if t < 1.18:
        s = sum(math.exp(-(2 * k - 1) ** 2 * math.pi ** 2 / (8 * t * t)) for k in range(1, 8))
        return float(min(max(1.0 - math.sqrt(2 * math.pi) / t * s, 0.0), 1.0))
    s = 0.0
    for k in range(1, 101):
        term = math.exp(-2.0 * k * k * t * t)
        s += term if k % 2 else -term
        if term < 1e-17:
            break
    return float(min(max(2.0 * s, 0.0), 1.0))


def ks_pvalue(d: float, n: int) -> float:
    """Asymptotic p-value of a one-sample KS statistic D over n samples.

    Uses Stephens' (1970) finite-n correction t = D (sqrt(n) + 0.12 + 0.11/sqrt(n)), i.e.
    sqrt(n) D (1 + 0.12/sqrt(n) + 0.11/n), which keeps the Kolmogorov limit close to nominal from
    n of about 5 up (5.3% rejections at alpha = 5% for n = 5); the form of Numerical Recipes' `ksone`.
    """
    root = math.sqrt(n)
    return kolmogorov_sf(d * (root + 0.12 + 0.11 / root))


def ks_test(samples: np.ndarray, cdf: Callable[[np.ndarray], np.ndarray]) -> tuple[float, float]:
    """(D, p) of the one-sample KS test of `samples` against the continuous CDF `cdf`."""
    d = ks_statistic(samples, cdf)
    return d, ks_pvalue(d, int(np.size(samples)))


# ---- CDFs -----------------------------------------------------------------------------------------

_erf = np.frompyfunc(math.erf, 1, 1)


def standard_normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.asarray(_erf(np.asarray(z, dtype=np.float64) / math.sqrt(2.0)), dtype=np.float64))


def uniform_cdf(a: float) -> Callable[[np.ndarray], np.ndarray]:
    """CDF of U(-a, a)."""
    return lambda x: np.clip((np.asarray(x, dtype=np.float64) + a) / (2.0 * a), 0.0, 1.0)


def normal_cdf(s: float) -> Callable[[np.ndarray], np.ndarray]:
    """CDF of N(0, s^2)."""
    return lambda x: standard_normal_cdf(np.asarray(x, dtype=np.float64) / s)


def truncated_normal_std(limit: float = 2.0) -> float:
    """Standard deviation of N(0, 1) truncated to [-limit, limit]: sqrt(1 - 2 c phi(c) / (2 Phi(c) - 1))."""
    phi = math.exp(-0.5 * limit * limit) / math.sqrt(2.0 * math.pi)
    mass = math.erf(limit / math.sqrt(2.0))
    return math.sqrt(1.0 - 2.0 * limit * phi / mass)


# The constant JAX divides by in variance_scaling(..., "truncated_normal") (jax/_src/nn/initializers.py,
# "constant is stddev of standard normal truncated to (-2, 2)"); Keras uses the same one.
# truncated_normal_std(2.0) reproduces it to double precision (tests/test_stats.py).
JAX_TRUNCATED_NORMAL_STD = 0.87962566103423978
TRUNCATION = 2.0  # jax.random.truncated_normal(key, -2, 2, ...): in units of the untruncated std


def truncated_normal_cdf(std: float, limit: float = TRUNCATION) -> Callable[[np.ndarray], np.ndarray]:
    """CDF of a normal truncated to +-limit of its own (untruncated) sd, scaled so its TRUE std is `std`.

    This is what variance_scaling(scale, mode, "truncated_normal") draws: z ~ N(0, 1) on [-2, 2],
    times sqrt(scale / fan) / 0.8796..., so the result has standard deviation exactly sqrt(scale / fan).
    """
    sigma = std / truncated_normal_std(limit)  # sd of the normal before truncation
    low = float(standard_normal_cdf(np.array(-limit)))
    mass = 1.0 - 2.0 * low

    def cdf(x: np.ndarray) -> np.ndarray:
        z = np.clip(np.asarray(x, dtype=np.float64) / sigma, -limit, limit)
        return np.clip((standard_normal_cdf(z) - low) / mass, 0.0, 1.0)

    return cdf


# ---- distributions as data ------------------------------------------------------------------------

Family = Literal["uniform", "normal", "truncated_normal", "zeros"]


@dataclass(frozen=True)
class Dist:
    """A documented initializer distribution; `scale` is the bound a of U(-a, a), else the std."""

    family: Family
    scale: float = 0.0
    source: str = ""

    @property
    def continuous(self) -> bool:
        return self.family != "zeros"

    @property
    def std(self) -> float:
        return self.scale / math.sqrt(3.0) if self.family == "uniform" else self.scale

    def cdf(self) -> Callable[[np.ndarray], np.ndarray]:
        if self.family == "uniform":
            return uniform_cdf(self.scale)
        if self.family == "normal":
            return normal_cdf(self.scale)
        if self.family == "truncated_normal":
            return truncated_normal_cdf(self.scale)
        raise ValueError("zeros is a point mass; check it with point_mass_zero")

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Draws from the documented distribution (self-tests and planted faults)."""
        if self.family == "uniform":
            return rng.uniform(-self.scale, self.scale, n)
        if self.family == "normal":
            return rng.normal(0.0, self.scale, n)
        if self.family == "zeros":
            return np.zeros(n)
        out = np.empty(0)
        while out.size < n:  # rejection: keep the standard normals inside the truncation
            z = rng.standard_normal(2 * n)
            out = np.concatenate([out, z[np.abs(z) <= TRUNCATION]])
        return out[:n] * self.scale / truncated_normal_std(TRUNCATION)

    def describe(self) -> str:
        a = f"{self.scale:.4g}"
        if self.family == "uniform":
            return f"U(-{a}, {a})"
        if self.family == "normal":
            return f"N(0, sd={a})"
        if self.family == "truncated_normal":
            edge = f"{TRUNCATION * self.scale / truncated_normal_std(TRUNCATION):.4g}"
            return f"truncated N(0, sd={a}) on [-{edge}, {edge}]"
        return "zeros"

    @property
    def support(self) -> float:
        """Half-width of the support (inf for the normal): no draw may lie outside [-support, support]."""
        if self.family == "uniform":
            return self.scale
        if self.family == "truncated_normal":
            return TRUNCATION * self.scale / truncated_normal_std(TRUNCATION)
        return math.inf if self.family == "normal" else 0.0

    def same_as(self, other: "Dist") -> bool:
        return self.family == other.family and math.isclose(self.scale, other.scale, rel_tol=1e-12, abs_tol=0.0)


# Float32 draws may overshoot a float64 edge by the rounding of the bound and of one product
# (a few units of 2^-24 relative); anything farther out is impossible under the documented law.
SUPPORT_RTOL = 1e-6


def outside_support(samples: np.ndarray, dist: Dist) -> int:
    """How many samples lie outside the distribution's support (beyond float32 rounding of the edge)."""
    x = np.abs(np.asarray(samples, dtype=np.float64).ravel())
    return int(np.count_nonzero(x > dist.support * (1.0 + SUPPORT_RTOL)))


def point_mass_zero(samples: np.ndarray) -> tuple[int, float]:
    """(number of non-zero values, largest |value|): a zeros initializer must give (0, 0.0) exactly."""
    x = np.asarray(samples, dtype=np.float64).ravel()
    return int(np.count_nonzero(x)), float(np.max(np.abs(x), initial=0.0))


# ---- fans, as each framework computes them --------------------------------------------------------

def fans(framework: str, spec: LayerSpec) -> tuple[int, int]:
    """(fan_in, fan_out) of the layer's kernel under the framework's own rule.

    torch  (torch/nn/init.py `_calculate_fan_in_and_fan_out`): weight (out, in/groups, *k);
           fan_in = size(1) * prod(k), fan_out = size(0) * prod(k).
    keras  (keras/src/initializers/random_initializers.py `compute_fans`): kernel (*k, in/groups, out);
           receptive = prod(shape[:-2]), fan_in = shape[-2] * receptive, fan_out = shape[-1] * receptive.
    flax   (jax/_src/nn/initializers.py `_compute_fans`, in_axis=-2, out_axis=-1, batch_axis=()):
           kernel (*k, in/groups, out); receptive = prod(shape) / in / out, fan = size * receptive.
    All three agree on dense and convolution kernels (groups included); they are kept apart so that
    each mirrors its source.
    """
    if framework == "torch":
        shape = (spec.out_features, spec.in_features // spec.groups, *spec.kernel_size) if spec.kind == "conv" \
            else (spec.out_features, spec.in_features)
        receptive = math.prod(shape[2:])
        return shape[1] * receptive, shape[0] * receptive
    shape = spec.kernel_shape()
    if framework == "keras":
        receptive = math.prod(shape[:-2])
        return shape[-2] * receptive, shape[-1] * receptive
    if framework in ("flax.linen", "flax.nnx"):
        receptive = math.prod(shape) // shape[-2] // shape[-1]
        return shape[-2] * receptive, shape[-1] * receptive
    raise ValueError(f"unknown framework {framework!r}")


def documented_init(framework: str, spec: LayerSpec) -> dict[str, Dist]:
    """The default kernel (and bias, when the layer has one) distributions the framework documents."""
    fan_in, fan_out = fans(framework, spec)
    cls = class_name(framework, spec)
    if framework == "torch":
        # kaiming_uniform_(a=sqrt(5)): gain sqrt(2/(1+a^2)) = sqrt(1/3), bound sqrt(3)*gain/sqrt(fan_in)
        bound = 1.0 / math.sqrt(fan_in)
        owner = f"torch.nn.{cls}" + (".reset_parameters" if spec.kind == "dense" else " (_ConvNd.reset_parameters)")
        out = {"kernel": Dist("uniform", bound, f"{owner}: kaiming_uniform_(a=sqrt(5)) -> U(+-1/sqrt(fan_in)), "
                                                f"fan_in={fan_in}"),
               "bias": Dist("uniform", bound, f"{owner}: bias U(+-1/sqrt(fan_in)), fan_in={fan_in}")}
    elif framework == "keras":
        owner = f"keras.layers.{cls}"
        out = {"kernel": Dist("uniform", math.sqrt(6.0 / (fan_in + fan_out)),
                              f"{owner}: kernel_initializer='glorot_uniform' -> U(+-sqrt(6/(fan_in+fan_out))), "
                              f"fan_in={fan_in}, fan_out={fan_out}"),
               "bias": Dist("zeros", 0.0, f"{owner}: bias_initializer='zeros'")}
    elif framework in ("flax.linen", "flax.nnx"):
        owner = f"{framework}.{cls}"
        out = {"kernel": Dist("truncated_normal", math.sqrt(1.0 / fan_in),
                              f"{owner}: kernel_init=lecun_normal() = variance_scaling(1, 'fan_in', "
                              f"'truncated_normal'): N(0,1) truncated to +-2, scaled to std sqrt(1/fan_in), "
                              f"fan_in={fan_in}"),
               "bias": Dist("zeros", 0.0, f"{owner}: bias_init=zeros_init()")}
    else:
        raise ValueError(f"unknown framework {framework!r}")
    if not spec.bias:
        del out["bias"]
    return out
