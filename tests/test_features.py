"""Geometry features (layer_conformance.suites.features): the predicates, and that the suite meets every corner on purpose.

The coverage tests run no framework: they drive the suite's own test functions (suites/test_forward.py,
test_gradient.py, test_batch.py) through hypothesis with the ci settings (derandomized, so the same
seed as a ci run) and a runner that only draws, as ClaimRunner does (the same `_draw_dims`, pool and
data draws), and read the counts ClaimRunner records.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from layer_conformance.adapters.spec import LayerSpec
from layer_conformance.suites.catalog import CLAIMS_BY_ID, Claim
from layer_conformance.suites.features import (CONV_FEATURES, DENSE_FEATURES, FEATURE_NAMES, PERMUTED_LAYOUT, claim_features,
                             example_features, is_conv, layout_features, padding_only_axis, padding_only_positions)
from layer_conformance.suites.harness import Case, ClaimRunner
from layer_conformance.suites.strategies import SEEDS, CI_GEOMETRIES, geometry_pool, pool_strategy, strategy_features

DTYPES = ("float64", "float32", "float16", "bfloat16", "mixed_float16", "mixed_bfloat16")
CONV_CLAIMS = tuple(c.id for c in CLAIMS_BY_ID.values() if is_conv(c.example))  # convolution geometries
CHECKS = ("forward", "gradient", "batch")
CI_LEAST, THOROUGH_LEAST = 3, 20


def conv(cin: int, cout: int, kernel: Any, shape: tuple[int, ...], **options: Any) -> dict[str, Any]:
    return {"spec": LayerSpec.conv(cin, cout, kernel, **options), "shape": shape}


# ---- the predicates, on hand-made geometries --------------------------------------------------------------
PLAIN_1D = conv(3, 4, 3, (2, 8, 3))  # none of the conv features but batch-many
CASES = {
    "length-1": (conv(3, 4, 1, (2, 1, 3)), PLAIN_1D),
    "shorter-than-dilated-kernel": (conv(3, 4, 3, (2, 4, 3), padding=((1, 1),), dilation=2),
                                    conv(3, 4, 3, (2, 5, 3), padding=((1, 1),), dilation=2)),
    "single-in-channel": (conv(1, 4, 3, (2, 8, 1)), PLAIN_1D),
    "single-out-channel": (conv(3, 1, 3, (2, 8, 3)), PLAIN_1D),
    "single-out-multi-in": (conv(2, 1, (1, 3), (1, 8, 8, 2)), conv(2, 1, (1, 3), (1, 8, 8, 2), dilation=(1, 2))),
    "per-axis-strides": (conv(3, 4, (3, 3), (2, 8, 8, 3), strides=(1, 2)),
                         conv(3, 4, (3, 3), (2, 8, 8, 3), strides=(2, 2))),
    "stride-over-kernel": (conv(3, 4, 1, (2, 8, 3), strides=2), conv(3, 4, 2, (2, 8, 3), strides=2)),
    "padding-only-output": (conv(3, 4, 1, (2, 8, 3), padding=((1, 0),)),
                            conv(3, 4, 3, (2, 8, 3), padding=((1, 1),))),
    "padding-only-axis": (conv(3, 12, 1, (2, 1, 3), strides=2, padding=1, dilation=2),
                          conv(3, 12, 1, (2, 1, 3), strides=2, padding=1)),  # dilation 1: not the crash geometry
    "depthwise": (conv(4, 8, 3, (2, 8, 4), groups=4), conv(4, 8, 3, (2, 8, 4), groups=2)),
    "dilation-with-stride": (conv(3, 4, 3, (2, 9, 3), strides=2, dilation=2),
                             conv(3, 4, 3, (2, 9, 3), strides=(2,), dilation=1)),
    "dilation-stride-1": (conv(3, 4, 3, (2, 9, 3), dilation=2), conv(3, 4, 1, (2, 9, 3), dilation=2)),
    "same-odd-padding": (conv(3, 4, 2, (2, 8, 3), padding="same"), conv(3, 4, 3, (2, 8, 3), padding="same")),
    "same-even-padding": (conv(3, 4, 3, (2, 8, 3), padding="same"), conv(3, 4, 1, (2, 8, 3), padding="same")),
    "batch-1": (conv(3, 4, 3, (1, 8, 3)), PLAIN_1D),
    "batch-many": (PLAIN_1D, conv(3, 4, 3, (1, 8, 3))),
}
DENSE_CASES = {
    "length-1": ({"B": 2, "L": 1, "K": 3, "N": 4}, {"B": 2, "L": 2, "K": 3, "N": 4}),
    "single-in-feature": ({"B": 2, "L": 2, "K": 1, "N": 4}, {"B": 2, "L": 2, "K": 3, "N": 4}),
    "single-out-feature": ({"B": 2, "L": 2, "K": 3, "N": 1}, {"B": 2, "L": 2, "K": 3, "N": 4}),
    "batch-1": ({"B": 1, "L": 2, "K": 3, "N": 4}, {"B": 2, "L": 2, "K": 3, "N": 4}),
    "batch-many": ({"B": 2, "L": 2, "K": 3, "N": 4}, {"B": 1, "L": 2, "K": 3, "N": 4}),
}


def test_every_feature_has_hand_made_cases():
    assert set(CASES) == {f.name for f in CONV_FEATURES} and set(DENSE_CASES) == {f.name for f in DENSE_FEATURES}
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES) and all(n == n.lower() and " " not in n for n in FEATURE_NAMES)


@pytest.mark.parametrize("name", list(CASES))
def test_conv_feature_predicate(name):
    positive, negative = CASES[name]
    assert name in example_features(positive), positive["spec"].describe()
    assert name not in example_features(negative), negative["spec"].describe()


def test_plain_geometry_has_no_corner():
    assert example_features(PLAIN_1D) == {"batch-many"}
    assert "per-axis-strides" not in example_features(conv(3, 4, 3, (2, 8, 3), strides=2))  # 1-D: not applicable


@pytest.mark.parametrize("name", list(DENSE_CASES))
def test_dense_feature_predicate(name):
    positive, negative = DENSE_CASES[name]
    assert name in example_features(positive) and name not in example_features(negative)
    assert name in example_features({**positive, "spec": LayerSpec.dense(positive["K"], positive["N"]),
                                     "shape": (positive["B"], positive["L"], positive["K"])})


def test_padding_only_helpers():
    # Conv1d(k=1, stride 2, padding 1) on length 1: both outputs read padding (the crash geometry's axis)
    assert padding_only_positions(1, 1, 1, 1, 2, 2) == 2 and padding_only_axis(1, 1, 1, 1, 2, 2)
    # one of three outputs reads only padding: a padding-only output, not a padding-only axis
    assert padding_only_positions(2, 1, 0, 1, 1, 1) == 1 and not padding_only_axis(2, 1, 0, 1, 1, 1)
    # taps on both sides of a short input: the window straddles it
    assert padding_only_positions(2, 1, 1, 2, 1, 3) == 1
    assert padding_only_positions(8, 1, 1, 3, 1, 1) == 0


def test_padding_only_axis_is_the_known_crash_rule_in_bfloat16():
    from layer_conformance.suites.known_crashes import torch_bf16_onednn_crash

    crash = CASES["padding-only-axis"][0]
    assert torch_bf16_onednn_crash(crash["spec"], "bfloat16", crash["shape"])
    assert not torch_bf16_onednn_crash(crash["spec"], "float32", crash["shape"])
    plain = conv(1, 12, 1, (2, 1, 1), strides=2, padding=1, dilation=2)  # one channel, length 1: contiguous
    assert "padding-only-axis" not in example_features(plain)


def test_permuted_layout_comes_from_the_variants():
    xfw = CLAIMS_BY_ID["xfw-conv1d"]
    assert claim_features(xfw) == {PERMUTED_LAYOUT}
    assert not claim_features(CLAIMS_BY_ID["keras-dense-conv1d-methods"])  # Keras only: channels-last throughout
    assert layout_features(xfw.variants, PLAIN_1D, PLAIN_1D["shape"]) == {PERMUTED_LAYOUT}
    one_channel = conv(1, 4, 3, (2, 8, 1))
    assert not layout_features(xfw.variants, one_channel, one_channel["shape"])  # (N, 1, L) is contiguous
    pointwise = CLAIMS_BY_ID["torch-conv1d-conv2d-1x1"]  # dense sizes; the Conv2d variants get (B, 1, L, K)
    dims = {"B": 2, "L": 5, "K": 3, "N": 4}
    assert layout_features(pointwise.variants, dims, pointwise.input_shape(dims)) == {PERMUTED_LAYOUT}


# ---- what the suite's own tests draw -------------------------------------------------------------------
class _DrawingRunner:
    """Just enough of ClaimRunner for its draws: the same pool, `_draw_dims` (which counts the features) and
    `draw`; every variant counts as runnable and nothing is computed."""

    _draw_dims = ClaimRunner._draw_dims
    _count_features = ClaimRunner._count_features
    draw = ClaimRunner.draw

    def __init__(self, claim: Claim, dtype: str, device: str, check: str, geometries: int | None):
        self.case, self.check, self.geometries = Case(claim, dtype, device), check, geometries
        self.record: dict[str, Any] = {"examples": 0}
        self.runnable = list(claim.variants)
        self.dims = pool_strategy(claim.dims, geometries, self.case.id) if geometries else claim.dims
        self._geometries_seen: set = set()
        self.pool = None if geometries is None else geometry_pool(claim.dims, geometries, self.case.id)

    def forward_example(self, data: st.DataObject) -> None:
        self.draw(data)
        self.record["examples"] += 1

    def batch_example(self, data: st.DataObject) -> None:
        self.forward_example(data)

    def gradient_example(self, data: st.DataObject) -> None:
        self.draw(data)
        data.draw(SEEDS, label="cotangent seed")
        self.record["examples"] += 1


def _suite_test(check: str) -> Any:
    """The undecorated body of the suite's test of a check (hypothesis seeds a derandomized run from it)."""
    from layer_conformance.suites import test_batch, test_forward, test_gradient

    module = {"forward": test_forward, "gradient": test_gradient, "batch": test_batch}[check]
    return getattr(module, f"test_{check}").hypothesis.inner_test


def feature_counts(claim_id: str, dtype: str, check: str, examples: int, geometries: int | None,
                   device: str = "cpu") -> tuple[dict[str, int], _DrawingRunner]:
    """record["features"] of a derandomized run of the suite's test of `check` (the ci profile's settings)."""
    runner = _DrawingRunner(CLAIMS_BY_ID[claim_id], dtype, device, check, geometries)
    run = settings(settings.get_profile("ci"), max_examples=examples, database=None)(
        given(data=st.data())(_suite_test(check)))
    run(runner=runner)
    assert runner.record["examples"] >= examples
    return runner.record["features"], runner


def _checks(claim_id: str) -> list[str]:
    return [check for check in CHECKS if check in CLAIMS_BY_ID[claim_id].checks]


def _expected(claim_id: str) -> set[str]:
    claim = CLAIMS_BY_ID[claim_id]
    return set(strategy_features(claim.dims) or ()) | set(claim_features(claim))


def test_conv_claims_cover_one_and_two_dimensions():
    assert {"xfw-conv1d", "xfw-conv2d"} <= set(CONV_CLAIMS)
    assert "per-axis-strides" in _expected("xfw-conv2d") and "per-axis-strides" not in _expected("xfw-conv1d")
    for name in [f.name for f in CONV_FEATURES if f.name != "per-axis-strides"] + [PERMUTED_LAYOUT]:
        assert name in _expected("xfw-conv1d") and name in _expected("xfw-conv2d"), name


@pytest.mark.parametrize("claim_id", CONV_CLAIMS)
def test_ci_pool_holds_every_corner(claim_id):
    """Every feature the claim's strategy can produce is in the ci pool of every dtype and device."""
    claim = CLAIMS_BY_ID[claim_id]
    produced = strategy_features(claim.dims)
    for device in ("cpu", "cuda"):
        for dtype in DTYPES:
            pool = geometry_pool(claim.dims, CI_GEOMETRIES, f"{claim_id}-{dtype}-{device}")
            held = Counter(name for dims in pool for name in example_features(dims))
            assert len(pool) == CI_GEOMETRIES and not produced - set(held), (dtype, device, produced - set(held))


@pytest.mark.parametrize("claim_id", CONV_CLAIMS)
def test_ci_runs_every_corner(claim_id):
    """Under ci (a pool of 10, 50 derandomized examples) every feature the claim can exercise is met at least
    CI_LEAST times per dtype, in each of the forward, gradient and batch checks the claim has."""
    expected = _expected(claim_id)
    short = {}
    for dtype in DTYPES:
        for check in _checks(claim_id):
            counts, _ = feature_counts(claim_id, dtype, check, 50, CI_GEOMETRIES)
            assert set(counts) == expected  # zeros included, nothing the claim cannot exercise
            short.update({(dtype, check, name): n for name, n in counts.items() if n < CI_LEAST})
    assert not short, f"{claim_id}: features met fewer than {CI_LEAST} times under ci: {short}"


@pytest.mark.parametrize("claim_id", ["xfw-conv1d", "xfw-conv2d"])
def test_thorough_runs_every_corner(claim_id):
    """500 examples, each with a geometry of its own (no pool): every feature at least THOROUGH_LEAST times.

    Without a pool the draws do not depend on the dtype, so one dtype stands for all."""
    for check in _checks(claim_id):
        counts, _ = feature_counts(claim_id, "float32", check, 500, None)
        short = {name: n for name, n in counts.items() if n < THOROUGH_LEAST}
        assert not short, f"{claim_id} {check}: features met fewer than {THOROUGH_LEAST} times in 500: {short}"


def test_ci_pool_meets_the_known_torch_crash():
    """The xfw-conv1d bfloat16 ci pool holds the geometry of the torch oneDNN crash (Conv1d(3, 12, kernel_size=1,
    stride=2, padding=1, dilation=2) on a length-1 input): a ci run meets the documented crash on purpose."""
    from layer_conformance.suites.known_crashes import torch_bf16_onednn_crash

    pool = geometry_pool(CLAIMS_BY_ID["xfw-conv1d"].dims, CI_GEOMETRIES, "xfw-conv1d-bfloat16-cpu")
    assert any(torch_bf16_onednn_crash(dims["spec"], "bfloat16", dims["shape"]) for dims in pool)
    counts, runner = feature_counts("xfw-conv1d", "bfloat16", "forward", 50, CI_GEOMETRIES)
    assert counts["padding-only-axis"] >= CI_LEAST


def test_ci_pool_meets_the_keras_torch_single_output_gradient_error():
    """The xfw-conv2d ci pools hold the geometry of the documented Keras-on-torch Conv2D gradient error (one
    output channel, several input channels, a kernel over 1, no dilation) in every dtype it is documented for,
    float32 included (where it needs a batch of one): a ci run meets it on purpose (the thorough run found it
    by chance in mixed_float16, and the float32 pools missed it)."""
    from layer_conformance.suites.divergences import by_id

    rule = by_id("torch-conv2d-single-output-grad-weight").applies
    for dtype in ("float64", "float32", "float16", "mixed_float16"):
        pool = geometry_pool(CLAIMS_BY_ID["xfw-conv2d"].dims, CI_GEOMETRIES, f"xfw-conv2d-{dtype}-cpu")
        assert any(rule(dims["spec"], dtype, "torch", dims["shape"]) for dims in pool), dtype


def test_pool_without_feature_selection_misses_corners(monkeypatch):
    """The guarantee comes from the selection: a pool that ignores the named features (the coarse pairs only)
    loses corners, and the coverage test then fails."""
    import layer_conformance.suites.strategies as strategies

    monkeypatch.setattr(strategies, "example_features", lambda dims: frozenset())
    monkeypatch.setattr(strategies, "POOL_ROUNDS", 1)
    monkeypatch.setattr(strategies, "_POOLS", {})  # pools chosen by features are not reused
    monkeypatch.delenv(strategies.POOL_DIR_ENV, raising=False)  # nor those the run's workers left on disk
    claim = CLAIMS_BY_ID["xfw-conv1d"]
    missing = set()
    for dtype in DTYPES:
        pool = geometry_pool(claim.dims, CI_GEOMETRIES, f"xfw-conv1d-{dtype}-cpu")
        missing |= strategy_features(claim.dims) - {name for dims in pool for name in example_features(dims)}
    assert missing
    with pytest.raises(AssertionError, match="fewer than 3 times under ci"):
        test_ci_runs_every_corner("xfw-conv1d")


# ---- the report's coverage tables -------------------------------------------------------------------------
def test_report_shows_coverage_per_claim_and_dtype():
    from layer_conformance.reports.html import render_html
    from layer_conformance.reports.markdown import coverage_tables, render_markdown

    row = {"claim": "xfw-conv1d", "status": "passed", "device": "cpu"}
    report = {"schema": "layer-conformance/report/v1", "results": [
        {**row, "nodeid": "f", "check": "forward", "dtype": "float32", "features": {"length-1": 5, "depthwise": 0}},
        {**row, "nodeid": "g", "check": "gradient", "dtype": "float32", "features": {"length-1": 3, "depthwise": 1}},
        {**row, "nodeid": "b", "check": "batch", "dtype": "bfloat16", "features": {"<i>x</i>": 2}},
        {**row, "nodeid": "p", "check": "params", "dtype": "float32"},
        {**row, "nodeid": "m", "check": "forward", "dtype": "float16", "features": "not a dict"}]}
    (table,) = coverage_tables(report)
    assert table["checks"] == ["forward", "gradient", "batch"] and table["columns"] == ["float32", "bfloat16"]
    cells = {r["feature"]: r["cells"] for r in table["rows"]}
    assert cells["length-1"]["float32"]["text"] == "5 / 3 / –" and cells["depthwise"]["float32"]["zero"]
    markdown = render_markdown(report)
    assert "## Geometry coverage" in markdown and "| `depthwise` | **0** / 1 / – | – / – / – |" in markdown
    page = render_html(report)
    assert '<td class="num zero">0 / 1 / –</td>' in page and "&lt;i&gt;x&lt;/i&gt;" in page and "<i>x</i>" not in page
