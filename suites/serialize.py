"""The JSON form of layer specs and example sizes (dims), and the file stem of a test's saved example.

Counterexamples (suites/counterexamples.py), crash records (reports/flight.py) and `assert_conforms`
files store specs and dims this way; `conformance repro` reads them back.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import fields, replace
from typing import Any, Mapping

import numpy as np

from layer_conformance.adapters.spec import LayerSpec, SpecError

_MAX_STEM = 96  # long parametrized ids stay usable as file names; the hash keeps them unique


def spec_to_json(spec: LayerSpec) -> dict[str, Any]:
    """Every field of the spec as JSON data (tuples as lists); `extra` only when it holds something."""
    return {f.name: _to_json(getattr(spec, f.name), f"spec.{f.name}") for f in fields(LayerSpec)
            if f.name != "extra" or spec.extra}


def spec_from_json(obj: Mapping[str, Any]) -> LayerSpec:
    """The LayerSpec back, validated (SpecError, KeyError or TypeError for a malformed entry)."""
    unknown = sorted(set(obj) - {f.name for f in fields(LayerSpec)})
    if unknown:
        raise SpecError(f"unknown LayerSpec field(s) {', '.join(unknown)}: saved by a newer layer-conformance; "
                        f"upgrade to read it")
    if obj["kind"] == "dense":
        spec = LayerSpec.dense(obj["in_features"], obj["out_features"], bias=obj["bias"])
    else:
        padding = obj["padding"]
        if not isinstance(padding, str):
            padding = tuple(tuple(pair) for pair in padding)
        spec = LayerSpec.conv(obj["in_features"], obj["out_features"], tuple(obj["kernel_size"]),
                              strides=tuple(obj["strides"]), padding=padding, dilation=tuple(obj["dilation"]),
                              groups=obj["groups"], bias=obj["bias"],
                              padding_mode=obj.get("padding_mode", "zeros"))  # v1 files did not store it
    return replace(spec, extra=_from_json(obj["extra"])) if obj.get("extra") else spec


def _to_json(value: Any, where: str) -> Any:
    if isinstance(value, LayerSpec):
        return {"__spec__": spec_to_json(value)}
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (tuple, list)):
        return [_to_json(item, where) for item in value]
    if isinstance(value, Mapping):
        return {str(k): _to_json(v, f"{where}.{k}") for k, v in value.items()}
    raise TypeError(f"dims entry {where} has type {type(value).__name__}, which a counterexample cannot store; "
                    f"use ints, tuples or LayerSpec values")


def _from_json(value: Any) -> Any:
    if isinstance(value, list):  # shapes are tuples in dims
        return tuple(_from_json(item) for item in value)
    if isinstance(value, dict):
        if set(value) == {"__spec__"}:
            return spec_from_json(value["__spec__"])
        return {k: _from_json(v) for k, v in value.items()}
    return value


def dims_to_json(dims: Mapping[str, Any]) -> dict[str, Any]:
    """Dims as JSON-ready data: LayerSpec -> {"__spec__": {...}}, tuples -> lists."""
    return {str(key): _to_json(value, str(key)) for key, value in dims.items()}


def dims_from_json(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The inverse of `dims_to_json`: lists come back as tuples, specs as LayerSpec."""
    return {key: _from_json(value) for key, value in obj.items()}


def counterexample_stem(nodeid: str, keras_backend: str | None = None) -> str:
    """A stable file stem for a test: readable part of the nodeid plus a short hash of all of it.

    Keras results are told apart by backend (one run per backend reuses the nodeids), so the backend
    is part of the name where a Keras variant ran.
    """
    key = nodeid if not keras_backend else f"{nodeid}|keras-{keras_backend}"
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", nodeid.split("::", 1)[-1]).strip("._-")
    if keras_backend:
        readable += "-keras-" + re.sub(r"[^A-Za-z0-9._-]+", "_", keras_backend)
    readable = readable[:_MAX_STEM].strip("._-") or "example"
    return f"{readable}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"
