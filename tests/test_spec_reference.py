"""LayerSpec validation, the `same` padding rule, and the float64 reference against brute force."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from layer_conformance.adapters import reference
from layer_conformance.adapters.spec import LayerSpec, SpecError, check_weights
from layer_conformance.suites.strategies import conv_dims


def brute_force_conv(spec: LayerSpec, x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """Textbook cross-correlation, one output element at a time (slow, obviously right)."""
    pads = spec.explicit_padding(x.shape[1:-1])
    xp = np.pad(x, [(0, 0), *pads, (0, 0)])
    out_sp = spec.output_spatial(x.shape[1:-1])
    cin_g, cout_g = spec.in_features // spec.groups, spec.out_features // spec.groups
    y = np.zeros((x.shape[0], *out_sp, spec.out_features))
    for n, o in itertools.product(range(x.shape[0]), range(spec.out_features)):
        g = o // cout_g
        for pos in itertools.product(*(range(s) for s in out_sp)):
            total = 0.0
            for k in itertools.product(*(range(s) for s in spec.kernel_size)):
                src = tuple(p * s + kk * d for p, s, kk, d in zip(pos, spec.strides, k, spec.dilation))
                for c in range(cin_g):
                    total += xp[(n, *src, g * cin_g + c)] * w[(*k, c, o)]
            y[(n, *pos, o)] = total + (b[o] if b is not None else 0.0)
    return y


@settings(max_examples=40, deadline=None)
@given(dims=st.one_of(conv_dims(1), conv_dims(2, max_kernel=3)), seed=st.integers(0, 2**16))
def test_reference_conv_matches_brute_force(dims, seed):
    spec, shape = dims["spec"], dims["shape"]
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal(shape), rng.standard_normal(spec.kernel_shape())
    b = rng.standard_normal(spec.out_features) if spec.bias else None
    weights = {"kernel": w, **({"bias": b} if spec.bias else {})}
    got = reference.forward(spec, x, weights)
    np.testing.assert_allclose(got, brute_force_conv(spec, x, w, b), rtol=1e-12, atol=1e-12)
    assert got.shape[1:-1] == spec.output_spatial(shape[1:-1])
    # the fused pass used by the harness: the same output, and the magnitude |W| |x| + |b| by brute force
    y, m = reference.forward_and_magnitude(spec, x, weights)
    np.testing.assert_array_equal(y, got)
    np.testing.assert_array_equal(m, reference.magnitude(spec, x, weights))
    np.testing.assert_allclose(m, brute_force_conv(spec, np.abs(x), np.abs(w), None if b is None else np.abs(b)),
                               rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(st.integers(1, 4), min_size=1, max_size=3), k=st.integers(1, 9), n=st.integers(1, 9),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_reference_dense_and_magnitude_match_the_definition(rows, k, n, bias, seed):
    """Dense on any number of leading axes: y = x W + b and m = |x| |W| + |b|, element by element."""
    spec = LayerSpec.dense(k, n, bias=bias)
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((*rows, k)), rng.standard_normal((k, n)), rng.standard_normal(n)
    weights = {"kernel": w, **({"bias": b} if bias else {})}
    y, m = reference.forward_and_magnitude(spec, x, weights)
    expected_y = np.einsum("...k,kn->...n", x, w) + (b if bias else 0.0)
    expected_m = np.einsum("...k,kn->...n", np.abs(x), np.abs(w)) + (np.abs(b) if bias else 0.0)
    np.testing.assert_allclose(y, expected_y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m, expected_m, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(y, reference.forward(spec, x, weights))


@settings(max_examples=30, deadline=None)
@given(dims=conv_dims(1), seed=st.integers(0, 2**16))
def test_reference_vjp_is_the_adjoint(dims, seed):
    """<g, J v> = <J^T g, v> for the input and the kernel (the layer is linear in each)."""
    spec, shape = dims["spec"].with_(bias=False), dims["shape"]
    rng = np.random.default_rng(seed)
    w = {"kernel": rng.standard_normal(spec.kernel_shape())}
    x = rng.standard_normal(shape)
    g = rng.standard_normal(reference.forward(spec, x, w).shape)
    dx, dw = reference.vjp(spec, x, w, g)
    v = rng.standard_normal(shape)
    assert np.isclose(np.sum(g * reference.forward(spec, v, w)), np.sum(dx * v), rtol=1e-10, atol=1e-10)
    u = rng.standard_normal(spec.kernel_shape())
    assert np.isclose(np.sum(g * reference.forward(spec, x, {"kernel": u})), np.sum(dw["kernel"] * u),
                      rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("n, k, s, expected", [
    (8, 3, 2, (0, 1)),   # total 1: the odd extra goes on the high side (TF/JAX/Keras rule)
    (7, 3, 2, (1, 1)),
    (8, 4, 1, (1, 2)),   # even kernel, stride 1: total 3
    (5, 1, 1, (0, 0)),
    (4, 5, 3, (2, 2)),
])
def test_same_padding_rule(n, k, s, expected):
    spec = LayerSpec.conv(1, 1, k, strides=s, padding="same")
    assert spec.explicit_padding((n,)) == (expected,)
    assert spec.output_spatial((n,)) == (-(-n // s),)


@pytest.mark.parametrize("build, message", [
    (lambda: LayerSpec.conv(6, 4, 3, groups=4), "in_features=6 is not divisible by groups=4"),
    (lambda: LayerSpec.conv(4, 4, 0), "kernel_size"),
    (lambda: LayerSpec.conv(4, 4, 3, padding="full"), "padding"),
    (lambda: LayerSpec.conv(4, 4, 3, padding=((1, -1),)), "padding"),
    (lambda: LayerSpec.dense(0, 3), "in_features"),
    (lambda: LayerSpec.conv(4, 4, 3, strides=(1, 1)), "strides"),
])
def test_invalid_specs_name_the_parameter(build, message):
    with pytest.raises(SpecError, match=message):
        build()


def test_kernel_larger_than_padded_input_is_refused():
    spec = LayerSpec.conv(2, 2, 5, dilation=2)
    with pytest.raises(SpecError, match="larger than the padded input"):
        spec.check_input((1, 6, 2))


def test_weights_are_checked_against_the_canonical_shape():
    spec = LayerSpec.conv(4, 6, 3)
    with pytest.raises(SpecError, match=r"expected canonical shape \(3, 4, 6\)"):
        check_weights(spec, {"kernel": np.zeros((6, 4, 3)), "bias": np.zeros(6)})  # a PyTorch-layout kernel
    with pytest.raises(SpecError, match="bias"):
        check_weights(spec, {"kernel": np.zeros((3, 4, 6))})


def test_reference_memo_evaluates_each_distinct_layer_once(monkeypatch):
    """xfw-dense hands four frameworks one layer: one oracle call. A moved value is a new layer."""
    from layer_conformance.suites.catalog import CLAIMS_BY_ID, ReferenceMemo, evaluate_reference

    calls = []
    evaluate = reference.forward_and_magnitude
    monkeypatch.setattr(reference, "forward_and_magnitude", lambda *a: calls.append(a) or evaluate(*a))
    claim = CLAIMS_BY_ID["xfw-dense"]
    rng = np.random.default_rng(0)
    x = rng.normal(size=claim.input_shape(claim.example))
    base = claim.variants[0].spec(claim.example)
    weights = {"kernel": rng.normal(size=base.kernel_shape()), "bias": rng.normal(size=base.out_features)}
    memo = ReferenceMemo()
    refs = [evaluate_reference(v, claim.example, x, weights, memo) for v in claim.variants]
    assert len(claim.variants) >= 3 and len(memo) == 1
    assert len(calls) == 1  # forward and magnitude, in one pass, once
    unshared = [evaluate_reference(v, claim.example, x, weights) for v in claim.variants]
    for a, b in zip(refs, unshared):
        np.testing.assert_array_equal(a.y, b.y)
        np.testing.assert_array_equal(a.magnitude, b.magnitude)
    moved = dict(weights, bias=weights["bias"].copy())
    moved["bias"][-1] = np.nextafter(moved["bias"][-1], np.inf)
    evaluate_reference(claim.variants[0], claim.example, x, moved, memo)
    x2 = x.copy()
    x2.flat[0] += 1.0
    evaluate_reference(claim.variants[0], claim.example, x2, weights, memo)
    assert len(memo) == 3
