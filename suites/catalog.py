"""The claims, as data. One row per equivalence (or documented non-equivalence).

A claim relates variants: each variant is a framework layer plus how the claim's canonical input,
weights and output map onto that layer. variants[0] defines the claim's weights (its own mapping
is the identity) and, for `differ` rows, the computation the others are naively taken to equal.
The catalog is validated at import: unique ids, known frameworks, and every mapping is run once
through the float64 reference on the row's example sizes (equal rows must agree there exactly,
differ rows must really differ).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, NamedTuple

import numpy as np
from hypothesis import strategies as st

from layer_conformance.adapters import FRAMEWORKS, class_name
from layer_conformance.adapters import reference
from layer_conformance.adapters.spec import DTYPES, LayerSpec, Weights
from layer_conformance.suites.bounds import error_bound, layer_error_bound
from layer_conformance.suites.strategies import STYLES, Dims, conv_dims, dense_dims, fixed, sequence_dims

# every check a row may ask for: the `check` of a test function in suites/ (tests/test_catalog_names.py keeps
# the two in step)
CHECKS = ("forward", "gradient", "params", "init", "depth", "batch", "speed")


def _same(a: Any, dims: Dims) -> Any:
    return a


@dataclass(frozen=True)
class Variant:
    framework: str
    spec: Callable[[Dims], LayerSpec]
    x_in: Callable[[np.ndarray, Dims], np.ndarray] = _same  # claim input -> this layer's canonical input
    y_out: Callable[[np.ndarray, Dims], np.ndarray] = _same  # layer output -> claim output (linear, >= 0 coefficients)
    w_map: Callable[[Weights, Dims], Weights] = _same  # claim weights -> this layer's canonical weights
    how: str = ""  # what distinguishes this variant from others of the same class

    def name(self, dims: Dims) -> str:
        return f"{self.framework}.{class_name(self.framework, self.spec(dims))}"

    def label(self, dims: Dims) -> str:
        return f"{self.name(dims)} [{self.how}]" if self.how else self.name(dims)


@dataclass(frozen=True)
class Claim:
    id: str
    title: str
    relation: Literal["equal", "differ"]
    source: str
    dims: st.SearchStrategy[Dims]
    input_shape: Callable[[Dims], tuple[int, ...]]
    variants: tuple[Variant, ...]
    example: Dims  # sizes used to validate the row at import and always tried first
    dtypes: tuple[str, ...] = DTYPES
    dtype_note: str = ""  # why a dtype is left out, shown as the skip reason
    data_styles: tuple[str, ...] | None = None  # None: all; differ rows need generic (continuous) data
    checks: tuple[str, ...] = CHECKS
    extra: dict[str, Any] = field(default_factory=dict)


# ---- mappings shared by several rows ------------------------------------------------------------

def _dense(d: Dims) -> LayerSpec:
    return d["spec"] if "spec" in d else LayerSpec.dense(d["K"], d["N"])


def _pointwise(rank: int) -> Callable[[Dims], LayerSpec]:
    return lambda d: LayerSpec.conv(_dense(d).in_features, _dense(d).out_features, (1,) * rank, bias=_dense(d).bias)


def _kernel_reshape(rank: int) -> Callable[[Weights, Dims], Weights]:
    return lambda w, d: {**w, "kernel": w["kernel"].reshape((1,) * rank + w["kernel"].shape[-2:])}


def _seq_shape(d: Dims) -> tuple[int, ...]:
    return d.get("shape") or (d["B"], d["L"], d["K"])


def _full_kernel_conv(d: Dims) -> LayerSpec:
    return LayerSpec.conv(d["K"], d["N"], d["L"])


def _flatten_channels_first(x: np.ndarray, d: Dims) -> np.ndarray:
    """torch: (B, K, L).flatten(1) -> feature index k * L + l."""
    return x.transpose(0, 2, 1).reshape(x.shape[0], -1)


def _flatten_channels_last(x: np.ndarray, d: Dims) -> np.ndarray:
    """Keras/Flax: (B, L, K) reshaped to (B, L * K) -> feature index l * K + k."""
    return x.reshape(x.shape[0], -1)


def _tied_conv(d: Dims) -> LayerSpec:
    return LayerSpec.conv(1, d["N"], d["k"], strides=d["s"])


def _tied_weights(w: Weights, d: Dims) -> Weights:
    """The naive 'conversion' of Linear(L, N) into a k-tap convolution: block-mean of the rows.

    Conv1d shares its k taps across positions, so it can only represent periodically tied
    weights; this is the closest such layer, and it still is not the Linear.
    """
    blocks = w["kernel"].reshape(d["L"] // d["k"], d["k"], d["N"]).mean(axis=0)
    positions = (d["L"] - d["k"]) // d["s"] + 1
    return {"kernel": blocks.reshape(d["k"], 1, d["N"]), "bias": w["bias"] / positions}


def _equal_dense_claim(id: str, title: str, source: str, variants: tuple[Variant, ...], example: Dims,
                       dims: st.SearchStrategy[Dims] | None = None, stackable: bool = True) -> Claim:
    checks = Claim.checks if stackable else tuple(c for c in Claim.checks if c != "depth")
    return Claim(id, title, "equal", source, sequence_dims() if dims is None else dims, _seq_shape, variants, example,
                 checks=checks)


_TORCH_FULL_KERNEL = (
    Variant("torch", _full_kernel_conv, y_out=lambda y, d: y, how="kernel_size=L"),
    Variant("torch", lambda d: LayerSpec.dense(d["L"] * d["K"], d["N"]),
            x_in=_flatten_channels_first, y_out=lambda y, d: y[:, None, :],
            w_map=lambda w, d: {**w, "kernel": w["kernel"].transpose(1, 0, 2).reshape(-1, d["N"])},
            how="flattened (B, K*L)"),
)
_KERAS_FULL_KERNEL = (
    Variant("keras", _full_kernel_conv, how="kernel_size=L"),
    Variant("keras", lambda d: LayerSpec.dense(d["L"] * d["K"], d["N"]),
            x_in=_flatten_channels_last, y_out=lambda y, d: y[:, None, :],
            w_map=lambda w, d: {**w, "kernel": w["kernel"].reshape(-1, d["N"])}, how="flattened (B, L*K)"),
)


DIFFER_DTYPES = ("float64", "float32")
DIFFER_NOTE = ("a differ row shows two computations further apart than the error bound; in half precision the "
               "worst-case bound (gamma(K+1, u) with u = 2^-11 or 2^-8) comes within reach of the gap on generic "
               "data (measured: e.g. 0.86x for a 30-term float16 sum), so the row runs in float64 and float32")


def _half_precision_note(terms: int) -> str:
    from layer_conformance.suites.bounds import UNIT_ROUNDOFF, gamma

    g16, g8 = gamma(terms + 1, UNIT_ROUNDOFF["float16"]), gamma(terms + 1, UNIT_ROUNDOFF["bfloat16"])
    return (f"in half precision the worst-case bound of a {terms}-term sum is gamma = {g16:.2g} (float16) and "
            f"{g8:.2g} (bfloat16) times |W||x|+|b|, about as wide as the gap between the two computations on "
            f"generic data, so no bound-based check can tell them apart reliably; the row runs in float64 and float32")


def _tied_claim(id: str, title: str, L: int, k: int, s: int, N: int) -> Claim:
    return Claim(
        id, title, "differ", "forum question: replacing a Linear layer by a Conv1d with fewer parameters",
        fixed(L=L, k=k, s=s, N=N), lambda d: (d["B"], d["L"]),
        (Variant("torch", lambda d: LayerSpec.dense(d["L"], d["N"])),
         Variant("torch", _tied_conv, x_in=lambda x, d: x[:, :, None], y_out=lambda y, d: y.sum(axis=1),
                 w_map=_tied_weights, how=f"kernel_size={k}, stride={s}, summed over positions")),
        {"B": 2, "L": L, "k": k, "s": s, "N": N},
        dtypes=DIFFER_DTYPES, data_styles=("normal", "uniform"), checks=("forward",),
        dtype_note=_half_precision_note(L),
    )


def _xfw_conv(id: str, title: str, source: str, dims: st.SearchStrategy[Dims], example: Dims,
              frameworks: tuple[str, ...] = FRAMEWORKS, checks: tuple[str, ...] | None = None) -> Claim:
    extra = {"checks": ("forward", "gradient", "params", "init", "batch", "speed")} if checks is None \
        else {"checks": checks}
    return Claim(id, title, "equal", source, dims, _seq_shape,
                 tuple(Variant(fw, lambda d: d["spec"]) for fw in frameworks), example, **extra)


def _flatten_nchw(x: np.ndarray, d: Dims) -> np.ndarray:
    """PyTorch: conv features (B, C, H, W).flatten(1): feature index c*H*W + h*W + w."""
    return x.transpose(0, 3, 1, 2).reshape(x.shape[0], -1)


def _flatten_nhwc(x: np.ndarray, d: Dims) -> np.ndarray:
    """Keras/Flax: (B, H, W, C) flattened: feature index h*W*C + w*C + c."""
    return x.reshape(x.shape[0], -1)


def _rows_nchw_to_nhwc(w: Weights, d: Dims) -> Weights:
    """Move a torch Linear's input rows from NCHW-flatten order to NHWC-flatten order."""
    kernel = w["kernel"].reshape(d["C"], d["H"], d["W"], d["N"]).transpose(1, 2, 0, 3).reshape(-1, d["N"])
    return {**w, "kernel": kernel}


_FLATTEN_DIMS = st.fixed_dictionaries({"B": st.integers(1, 3), "H": st.integers(1, 4), "W": st.integers(1, 4),
                                       "C": st.integers(1, 6), "N": st.integers(1, 8)})
_FLATTEN_DIFFER_DIMS = st.fixed_dictionaries({"B": st.integers(1, 3), "H": st.integers(1, 4), "W": st.integers(2, 4),
                                              "C": st.integers(2, 6), "N": st.integers(1, 8)})


def _flatten_claim(id: str, title: str, relation: str, w_map: Callable[[Weights, Dims], Weights], how: str,
                   dims: st.SearchStrategy[Dims]) -> Claim:
    return Claim(
        id, title, relation, "forum question: porting a CNN head from PyTorch (NCHW flatten) to Keras (NHWC flatten)",
        dims, lambda d: (d["B"], d["H"], d["W"], d["C"]),
        (Variant("torch", lambda d: LayerSpec.dense(d["C"] * d["H"] * d["W"], d["N"]), x_in=_flatten_nchw,
                 how="NCHW flatten"),
         Variant("keras", lambda d: LayerSpec.dense(d["C"] * d["H"] * d["W"], d["N"]), x_in=_flatten_nhwc,
                 w_map=w_map, how=how),
         Variant("flax.linen", lambda d: LayerSpec.dense(d["C"] * d["H"] * d["W"], d["N"]), x_in=_flatten_nhwc,
                 w_map=w_map, how=how)),
        {"B": 2, "H": 3, "W": 2, "C": 4, "N": 5},
        data_styles=None if relation == "equal" else ("normal", "uniform"),
        checks=("forward", "gradient", "params", "batch", "speed") if relation == "equal" else ("forward",),
        **({} if relation == "equal" else {"dtypes": DIFFER_DTYPES, "dtype_note": DIFFER_NOTE}))


def _odd_total_same(draw_k: st.SearchStrategy[int]) -> st.SearchStrategy[Dims]:
    """Stride 2, odd kernel, even length: the `same` total k - 2 is odd, so the halves cannot be equal."""
    return st.fixed_dictionaries({"B": st.integers(1, 3), "K": st.integers(1, 4), "N": st.integers(1, 4),
                                  "k": draw_k, "half": st.integers(3, 8)}).map(lambda d: {**d, "L": 2 * d["half"]})


CLAIMS: tuple[Claim, ...] = (
    _equal_dense_claim(
        "torch-linear-conv1d-k1",
        "torch Linear(K, N) on (B, L, K) == Conv1d(K, N, kernel_size=1) on the permuted (B, K, L)",
        "forum question: is Conv1d with kernel_size=1 the same as Linear?",
        (Variant("torch", _dense), Variant("torch", _pointwise(1), w_map=_kernel_reshape(1))),
        {"B": 2, "L": 5, "K": 8, "N": 32},
        dims=dense_dims()),
    _equal_dense_claim(
        "torch-conv1d-conv2d-1x1",
        "torch Conv1d(K, N, 1) == Conv2d(K, N, 1x1), with the unit spatial axis in either position",
        "forum question: is Conv1d(k=1) the same as Conv2d(1x1)?",
        (Variant("torch", _pointwise(1)),
         Variant("torch", _pointwise(2), x_in=lambda x, d: x[:, None], y_out=lambda y, d: y[:, 0],
                 w_map=_kernel_reshape(2), how="input (B, 1, L, K)"),
         Variant("torch", _pointwise(2), x_in=lambda x, d: x[:, :, None], y_out=lambda y, d: y[:, :, 0],
                 w_map=_kernel_reshape(2), how="input (B, L, 1, K)")),
        {"B": 2, "L": 5, "K": 8, "N": 32}),
    _equal_dense_claim(
        "torch-full-kernel-conv1d-linear",
        "torch Conv1d(K, N, kernel_size=L) on a length-L sequence == Linear(L*K, N) on the flattened input",
        "forum question: is a full-length Conv1d the same as Linear on the flattened input?",
        _TORCH_FULL_KERNEL, {"B": 2, "L": 6, "K": 4, "N": 8}, stackable=False),
    _equal_dense_claim(
        "torch-linear100-conv1d-k100",
        "torch Linear(100, 1) == Conv1d(1, 1, kernel_size=100) on a length-100 signal",
        "forum question: Linear(100, 1) versus Conv1d(1, 1, kernel_size=100)",
        _TORCH_FULL_KERNEL, {"B": 2, "L": 100, "K": 1, "N": 1}, dims=fixed(L=100, K=1, N=1), stackable=False),
    _equal_dense_claim(
        "keras-dense-conv1d-methods",
        "Keras Dense(N) on (B, L, K) == Conv1D(N, 1) on (B, L, K) (method 2) == Conv1D(N, kernel_size=K) on "
        "(B*L, K, 1) (method 1) == Dense(N) on (B*L, K)",
        "forum question: two ways to apply a 1-D convolution as a dense layer in Keras",
        (Variant("keras", _dense),
         Variant("keras", _pointwise(1), w_map=_kernel_reshape(1), how="method 2: kernel_size=1"),
         Variant("keras", lambda d: LayerSpec.conv(1, d["N"], d["K"]),
                 x_in=lambda x, d: x.reshape(-1, d["K"], 1), y_out=lambda y, d: y.reshape(d["B"], d["L"], d["N"]),
                 w_map=lambda w, d: {**w, "kernel": w["kernel"].reshape(d["K"], 1, d["N"])},
                 how="method 1: (B*L, K, 1), kernel_size=K"),
         Variant("keras", _dense, x_in=lambda x, d: x.reshape(-1, d["K"]),
                 y_out=lambda y, d: y.reshape(d["B"], d["L"], d["N"]), how="on (B*L, K)")),
        {"B": 2, "L": 3, "K": 80, "N": 256},
        dims=sequence_dims(features=(1, 96), out=(1, 96))),
    _equal_dense_claim(
        "keras-full-kernel-conv1d-dense",
        "Keras Conv1D(N, kernel_size=L) on (B, L, K) == Dense(N) on the flattened (B, L*K)",
        "forum question: is a full-length Conv1D the same as Dense on the flattened input?",
        _KERAS_FULL_KERNEL, {"B": 2, "L": 6, "K": 4, "N": 8}, stackable=False),
    _equal_dense_claim(
        "flax-dense-conv-1x1",
        "Flax Dense == Conv with kernel (1,) == Conv with kernel (1, 1); linen == nnx",
        "Flax documentation: Dense and Conv share the (in, out) kernel; a 1x1 Conv is a Dense over channels",
        tuple(v for api, dense in (("flax.linen", "Dense"), ("flax.nnx", "Linear")) for v in (
            Variant(api, _dense),
            Variant(api, _pointwise(1), w_map=_kernel_reshape(1), how="kernel (1,)"),
            Variant(api, _pointwise(2), x_in=lambda x, d: x[:, :, None], y_out=lambda y, d: y[:, :, 0],
                    w_map=_kernel_reshape(2), how="kernel (1, 1), input (B, L, 1, K)"))),
        {"B": 2, "L": 5, "K": 8, "N": 32}),
    Claim("xfw-dense", "torch Linear == Keras Dense == Flax linen Dense == Flax nnx Linear (same weights)",
          "equal", "weight transfer between frameworks", dense_dims(), _seq_shape,
          tuple(Variant(fw, _dense) for fw in FRAMEWORKS),
          {"B": 2, "L": 3, "K": 8, "N": 32, "spec": LayerSpec.dense(8, 32), "shape": (2, 3, 8)}),
    Claim("xfw-conv1d", "torch Conv1d == Keras Conv1D == Flax 1-D Conv (linen, nnx) over kernel, stride, padding, "
          "dilation and groups", "equal", "weight transfer between frameworks", conv_dims(1), _seq_shape,
          tuple(Variant(fw, lambda d: d["spec"]) for fw in FRAMEWORKS),
          {"spec": LayerSpec.conv(4, 6, 3, strides=2, padding="same", groups=2), "shape": (2, 9, 4)}),
    Claim("xfw-conv2d", "torch Conv2d == Keras Conv2D == Flax 2-D Conv (linen, nnx) over kernel, stride, padding, "
          "dilation and groups", "equal", "weight transfer between frameworks", conv_dims(2), _seq_shape,
          tuple(Variant(fw, lambda d: d["spec"]) for fw in FRAMEWORKS),
          {"spec": LayerSpec.conv(4, 6, (3, 2), padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2),
           "shape": (2, 7, 6, 4)}),
    _xfw_conv("xfw-conv1d-causal",
              "causal padding: Keras Conv1D(padding='causal') == Flax Conv(padding='CAUSAL') (linen, nnx) == torch "
              "Conv1d on F.pad(x, ((k-1)*d, 0)), against the rule 'all of the dilated kernel on the low side'",
              "Keras and Flax documentation of causal padding",
              conv_dims(1, paddings=("causal",)),
              {"spec": LayerSpec.conv(3, 4, 3, padding="causal", dilation=2), "shape": (2, 7, 3)}),
    _xfw_conv("xfw-conv1d-same-stride2",
              "stride-2 'same': Keras 'same' == Flax 'SAME' == torch Conv1d on F.pad(x, (lo, hi)) with the odd extra "
              "on the high side (torch itself refuses padding='same' with stride > 1)",
              "TF/JAX/Keras 'same' rule: output ceil(n / s), total pad split low = total // 2",
              conv_dims(1, paddings=("same",), strides=2, max_dilation=1),
              {"spec": LayerSpec.conv(3, 4, 3, strides=2, padding="same"), "shape": (2, 8, 3)}),
    _xfw_conv("torch-flax-circular-padding",
              "circular padding: torch Conv(padding_mode='circular') == Flax Conv(padding='CIRCULAR'), which always "
              "pads ((k_d - 1) // 2, k_d // 2)", "torch padding_mode and Flax 'CIRCULAR' documentation",
              st.one_of(conv_dims(1, paddings=("flax-border",), padding_mode="circular"),
                        conv_dims(2, max_kernel=3, paddings=("flax-border",), padding_mode="circular")),
              {"spec": LayerSpec.conv(2, 4, 4, padding=((1, 2),), padding_mode="circular"), "shape": (2, 6, 2)},
              frameworks=("torch", "flax.linen", "flax.nnx"), checks=("forward", "params")),
    _xfw_conv("torch-flax-reflect-padding",
              "reflect padding: torch Conv(padding_mode='reflect') == Flax Conv(padding='REFLECT')",
              "torch padding_mode and Flax 'REFLECT' documentation",
              st.one_of(conv_dims(1, paddings=("flax-border",), padding_mode="reflect"),
                        conv_dims(2, max_kernel=3, paddings=("flax-border",), padding_mode="reflect")),
              {"spec": LayerSpec.conv(2, 4, 3, padding=((1, 1),), padding_mode="reflect"), "shape": (2, 6, 2)},
              frameworks=("torch", "flax.linen", "flax.nnx"), checks=("forward", "params")),
    _xfw_conv("torch-replicate-padding",
              "replicate padding: torch Conv(padding_mode='replicate') repeats the edge value (Keras and Flax have "
              "no such mode)", "torch padding_mode documentation",
              conv_dims(1, paddings=("explicit",), padding_mode="replicate"),
              {"spec": LayerSpec.conv(2, 4, 3, padding=((2, 1),), padding_mode="replicate"), "shape": (2, 6, 2)},
              frameworks=("torch",), checks=("forward", "params")),
    _flatten_claim("flatten-nchw-vs-nhwc",
                   "torch Linear on the NCHW-flattened features == Keras/Flax Dense on the NHWC-flattened features, "
                   "with the Linear's rows permuted from (C, H, W) to (H, W, C) order",
                   "equal", _rows_nchw_to_nhwc, "NHWC flatten, rows permuted", _FLATTEN_DIMS),
    _flatten_claim("differ-flatten-naive-transfer",
                   "torch Linear on the NCHW-flattened features != Keras/Flax Dense on the NHWC-flattened features "
                   "when the Linear's weight is transferred without permuting its rows", "differ",
                   _same, "NHWC flatten, rows as in torch", _FLATTEN_DIFFER_DIMS),
    Claim("differ-same-stride2-symmetric",
          "stride-2 'same' (odd extra on the high side) != torch Conv1d(padding=k // 2, stride=2) when the total "
          "padding is odd (odd kernel, even length)", "differ",
          "forum question: porting TF/Keras 'same' to PyTorch with padding=k//2",
          _odd_total_same(st.sampled_from([3, 5])), lambda d: (d["B"], d["L"], d["K"]),
          (Variant("torch", lambda d: LayerSpec.conv(d["K"], d["N"], d["k"], strides=2, padding="same"),
                   how="'same' rule (F.pad)"),
           Variant("torch", lambda d: LayerSpec.conv(d["K"], d["N"], d["k"], strides=2,
                                                     padding=((d["k"] // 2, d["k"] // 2),)),
                   how="padding=k//2")),
          {"B": 2, "K": 3, "N": 4, "k": 3, "half": 4, "L": 8}, data_styles=("normal", "uniform"),
          checks=("forward",), dtypes=DIFFER_DTYPES, dtype_note=DIFFER_NOTE),
    _tied_claim("differ-linear100-conv1d-k10",
                "torch Linear(100, 10) != Conv1d(1, 10, kernel_size=10) on the same signal (only an approximation)",
                L=100, k=10, s=1, N=10),
    _tied_claim("differ-linear784-conv1d-k7s7",
                "torch Linear(784, 10) != Conv1d(1, 10, kernel_size=7, stride=7) on the same flattened image",
                L=784, k=7, s=7, N=10),
    Claim("differ-view-instead-of-permute",
          "torch Conv1d on x.view(B, K, L) != Conv1d on x.permute(0, 2, 1) for channels-last x (B, L, K)",
          "differ", "forum question: view/reshape used where permute is needed",
          sequence_dims(length=(2, 8), features=(2, 16), out=(1, 16)), _seq_shape,
          (Variant("torch", lambda d: LayerSpec.conv(d["K"], d["N"], 1), how="permute"),
           Variant("torch", lambda d: LayerSpec.conv(d["K"], d["N"], 1),
                   x_in=lambda x, d: x.reshape(d["B"], d["K"], d["L"]).transpose(0, 2, 1), how="view")),
          {"B": 2, "L": 5, "K": 3, "N": 4}, data_styles=("normal", "uniform"), dtypes=DIFFER_DTYPES,
          dtype_note=DIFFER_NOTE, checks=("forward",)),
)

CLAIMS_BY_ID: dict[str, Claim] = {}


class CatalogError(ValueError):
    """A malformed catalog row: raised at import, naming the row."""


def validate(claim: Claim, known: Any = None) -> None:
    """Check one row (the catalog's at import, a user's when registered); CatalogError names the row and the fix.
    known: the ids already taken (default: the catalog's)."""
    if claim.id in (CLAIMS_BY_ID if known is None else known):
        raise CatalogError(f"duplicate claim id {claim.id!r}")
    if claim.relation not in ("equal", "differ"):
        raise CatalogError(f"claim {claim.id}: relation must be 'equal' or 'differ', not {claim.relation!r}")
    if not claim.variants or (claim.relation == "differ" and len(claim.variants) < 2):
        raise CatalogError(f"claim {claim.id}: needs variants (a differ row needs a target and a naive variant)")
    unknown = {v.framework for v in claim.variants} - set(FRAMEWORKS)
    if unknown:
        raise CatalogError(f"claim {claim.id}: unknown frameworks {sorted(unknown)}; known: {FRAMEWORKS}")
    if not set(claim.dtypes) <= set(DTYPES):
        raise CatalogError(f"claim {claim.id}: unknown dtypes {sorted(set(claim.dtypes) - set(DTYPES))}")
    _check_names(claim.id, "checks", claim.checks, CHECKS)
    if claim.data_styles is not None:
        _check_names(claim.id, "data_styles", claim.data_styles, STYLES)
    labels = [v.label(claim.example) for v in claim.variants]
    if len(set(labels)) != len(labels):
        raise CatalogError(f"claim {claim.id}: two variants share the label {labels}; set `how` to tell them apart")
    rng = np.random.default_rng(0)
    x = rng.standard_normal(claim.input_shape(claim.example))
    base = claim.variants[0].spec(claim.example)
    weights = {"kernel": rng.standard_normal(base.kernel_shape())}
    if base.bias:
        weights["bias"] = rng.standard_normal(base.out_features)
    outputs = [evaluate_reference(v, claim.example, x, weights)[0] for v in claim.variants]
    for label, y in zip(labels[1:], outputs[1:]):
        if y.shape != outputs[0].shape:
            raise CatalogError(f"claim {claim.id}: {label} gives output shape {y.shape}, "
                               f"{labels[0]} gives {outputs[0].shape}; fix the variant's y_out")
        apart = np.max(np.abs(y - outputs[0]), initial=0.0) / max(np.max(np.abs(outputs[0]), initial=0.0), 1e-300)
        if claim.relation == "equal" and apart > 1e-12:
            raise CatalogError(f"claim {claim.id}: {label} disagrees with {labels[0]} in float64 ({apart:.1e}); "
                               f"the mapping is wrong or the claim is not an equality")
        if claim.relation == "differ" and apart < 1e-3:
            raise CatalogError(f"claim {claim.id}: {label} agrees with {labels[0]} on generic data; not a differ row")


def _check_names(claim_id: str, field_name: str, names: Any, known: tuple[str, ...]) -> None:
    """A row's `checks` or `data_styles`: a non-empty tuple of known names, else CatalogError naming the bad one."""
    if isinstance(names, str) or not isinstance(names, (tuple, list)):
        raise CatalogError(f"claim {claim_id}: `{field_name}` must be a tuple of names, not {names!r}; "
                           f"write {field_name}=({names!r},) for one name (known: {', '.join(known)})")
    unknown = [name for name in names if name not in known]
    if unknown:
        raise CatalogError(f"claim {claim_id}: unknown {field_name} {', '.join(map(repr, unknown))}; "
                           f"known {field_name}: {', '.join(known)}")
    if not names:
        raise CatalogError(f"claim {claim_id}: empty `{field_name}` runs nothing; name at least one of "
                           f"{', '.join(known)}" + (" (or None for all)" if field_name == "data_styles" else ""))


class Reference(NamedTuple):
    """A variant evaluated in float64: claim-layout output and magnitude, and the layer-level pieces."""

    y: np.ndarray
    magnitude: np.ndarray
    spec: LayerSpec
    layer_x: np.ndarray
    layer_w: Weights
    layer_y: np.ndarray
    layer_magnitude: np.ndarray


class ReferenceMemo:
    """The float64 layers already evaluated on one example, looked up by value.

    Variants of a claim often hand the same layer the same values (xfw-dense: four frameworks, one
    canonical spec, input and weights), so the oracle's output and magnitude are computed once per
    distinct (spec, input, weights) rather than once per variant. Lookup compares arrays exactly,
    so a variant whose mapping moves even one value gets its own evaluation.
    """

    def __init__(self) -> None:
        self._layers: list[tuple[LayerSpec, np.ndarray, Weights, np.ndarray, np.ndarray]] = []
        self._bounds: dict[tuple[int, int, str], np.ndarray] = {}

    def layer(self, spec: LayerSpec, layer_x: np.ndarray, layer_w: Weights) -> tuple[np.ndarray, np.ndarray]:
        for seen_spec, seen_x, seen_w, y, m in self._layers:
            if (seen_spec == spec and seen_x.shape == layer_x.shape and seen_w.keys() == layer_w.keys()
                    and _same_values(seen_x, layer_x) and all(_same_values(seen_w[k], layer_w[k]) for k in seen_w)):
                return y, m
        y, m = reference.forward_and_magnitude(spec, layer_x, layer_w)
        self._layers.append((spec, layer_x, layer_w, y, m))
        return y, m

    def error_bound(self, spec: LayerSpec, layer_magnitude: np.ndarray, dtype: str,
                    accumulation: str | None = None, u_eff: float | None = None) -> np.ndarray:
        """The bound of a layer this memo evaluated (`layer_conformance.suites.bounds.layer_error_bound`, with the accumulator a
        probe found, if any, and the declared u_eff of the framework's precision mode, if any), computed once
        per layer, dtype, accumulator and u_eff."""
        entry = next((i for i, seen in enumerate(self._layers) if seen[4] is layer_magnitude), None)
        if entry is None:  # not one of this memo's layers: nothing to share
            return error_bound(spec.reduction_length, layer_magnitude, dtype, u_eff)
        key = (entry, spec.reduction_length, dtype, accumulation, u_eff)
        if key not in self._bounds:
            _, _, weights, expected, _ = self._layers[entry]
            bias = np.abs(np.asarray(weights["bias"], np.float64)) if spec.bias and "bias" in weights else 0.0
            self._bounds[key] = layer_error_bound(spec.reduction_length, layer_magnitude, expected, bias, dtype,
                                                  accumulation, u_eff)
        return self._bounds[key]

    def __len__(self) -> int:
        return len(self._layers)


def _same_values(a: np.ndarray, b: np.ndarray) -> bool:
    """Identical arrays: the same object (identity mappings hand every variant the claim's own arrays)
    or equal values, NaN equal to NaN."""
    return a is b or (a.dtype == b.dtype and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"))


def evaluate_reference(variant: Variant, dims: Dims, x: np.ndarray, weights: Weights,
                       memo: ReferenceMemo | None = None) -> Reference:
    """The variant in float64: the layer's output and magnitude, from `memo` when it has them."""
    spec = variant.spec(dims)
    layer_x = variant.x_in(x, dims)
    layer_w = variant.w_map(weights, dims)
    layer_y, layer_m = (ReferenceMemo() if memo is None else memo).layer(spec, layer_x, layer_w)
    return Reference(variant.y_out(layer_y, dims), variant.y_out(layer_m, dims), spec, layer_x, layer_w,
                     layer_y, layer_m)


for _claim in CLAIMS:
    validate(_claim)
    CLAIMS_BY_ID[_claim.id] = _claim
