"""Configurations a framework refuses: the refusal is asserted (with its message), never skipped silently.

Each row: the framework, the layer, the message the framework gives, and what the suite does instead
(torch: explicit F.pad reproduces the 'same' rule; Keras: the variant is skipped with this reason).
"""
from __future__ import annotations

import re
from typing import Any, NamedTuple

import pytest

from layer_conformance.adapters import get_adapter
from layer_conformance.adapters.spec import LayerSpec


class Refusal(NamedTuple):
    id: str
    framework: str
    spec: LayerSpec
    message: str  # regex the framework's own error must match
    instead: str


REFUSALS = (
    Refusal("torch-same-stride2", "torch", LayerSpec.conv(3, 4, 3, strides=2, padding="same"),
            r"padding='same' is not supported for strided convolutions",
            "the suite pads explicitly with F.pad((total // 2, total - total // 2)), the TF/Keras/Flax rule"),
    Refusal("torch-same-stride2-2d", "torch", LayerSpec.conv(3, 4, (3, 2), strides=(2, 1), padding="same"),
            r"padding='same' is not supported for strided convolutions",
            "the suite pads explicitly with F.pad, as above"),
    Refusal("keras-stride-and-dilation", "keras", LayerSpec.conv(3, 4, 3, strides=2, dilation=2),
            r"`strides > 1` not supported in conjunction with `dilation_rate > 1`",
            "Keras variants of such layers are skipped with this reason; torch and Flax still run them"),
)


@pytest.mark.parametrize("refusal", REFUSALS, ids=[r.id for r in REFUSALS])
def test_framework_refuses(refusal: Refusal, conformance_record: dict[str, Any]) -> None:
    adapter = get_adapter(refusal.framework)
    conformance_record.update({
        "claim": f"refusal-{refusal.id}", "title": f"{refusal.framework} refuses {refusal.spec.describe()}",
        "relation": "differ", "check": "refusal", "variants": [f"{refusal.framework}.{adapter.class_name(refusal.spec)}"],
        "dtype": "float32", "device": "cpu", "examples": 1, "max_abs_error": None, "max_bound_ratio": None,
        "instead": refusal.instead,
    })
    if adapter.available():
        pytest.skip(adapter.available())
    message = adapter.native_refusal(refusal.spec)
    conformance_record["framework_message"] = message
    assert message is not None, (f"{refusal.framework} now accepts {refusal.spec.describe()}: the refusal is gone, "
                                 f"update suites/test_refusals.py and the adapter")
    assert re.search(refusal.message, message), f"{refusal.framework} refuses with a new message: {message!r}"
    if refusal.framework == "keras":
        assert adapter.supports(refusal.spec, "float32", "cpu"), "the Keras variant must be skipped with a reason"
    else:
        assert adapter.supports(refusal.spec, "float32", "cpu") is None, "the suite must run it through F.pad"
