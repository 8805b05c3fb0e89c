"""A port check in the report.json contract: ordinary result rows (so that `conformance compare`, `merge`
and the table read it as any other run) and the top-level `"port"` entry the reports render per layer."""
from __future__ import annotations

import datetime as _dt
import math
from typing import Any, Iterable

from layer_conformance.reports.schema import SCHEMA, summarize
from layer_conformance.suites.port.check import Measure, PortResult


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _status(measure: Measure, examples: int) -> str:
    if measure.failed:
        return "failed"
    if examples == 0 or not measure.judged or measure.unjudged:
        return "measured"
    return "passed"


def claim_of(result: PortResult) -> str:
    return f"port:{result.model}:{result.source['framework']}->{result.target['framework']}"


def port_rows(result: PortResult) -> list[dict[str, Any]]:
    """One row per (layer, mode), plus the output and the input gradient."""
    claim = claim_of(result)
    backend = result.target.get("keras_backend")
    title = (f"{result.model} ported from {result.source['framework']} to {result.target['framework']}"
             + (f" ({backend})" if backend else ""))
    base = {"claim": claim, "title": title, "relation": "equal", "dtype": result.dtype, "device": result.device,
            "keras_backend": backend, "examples": result.examples, "source": "port check"}
    rows = []

    def row(key: str, check: str, variants: list[str], measure: Measure) -> None:
        status = "error" if result.error else _status(measure, result.examples)
        reason = result.error or (None if status == "passed" else
                                  "an infinite bound: measured, not judged" if status == "measured" else
                                  f"bound ratio {measure.ratio:.3g} > 1")
        rows.append({**base, "nodeid": f"port::{result.model}::{result.source['framework']}->"
                                       f"{result.target['framework']}::{key}",
                     "check": check, "variants": variants, "status": status,
                     "max_abs_error": _finite(measure.error), "max_bound_ratio": measure.as_ratio(),
                     "reason": reason})

    for layer in result.layers:
        key = f"layer{layer.layer:02d}"
        row(f"{key}::isolated", "port-isolated", [layer.variant], layer.isolated)
        row(f"{key}::propagated", "port-propagated", [layer.variant], layer.propagated)
        for name, measure in layer.gradients.items():
            row(f"{key}::gradient-{name}", "port-gradient", [layer.variant], measure)
    row("output", "port-output", [result.target["framework"]], result.output)
    if result.layers and result.layers[0].gradients:
        row("input-gradient", "port-gradient", [result.target["framework"]], result.input_gradient)
    return rows


def _layer_status(layer: Any, examples: int) -> str:
    statuses = {_status(m, examples) for m in layer.measures().values()}
    return "failed" if "failed" in statuses else "measured" if "measured" in statuses else "passed"


def port_entry(result: PortResult) -> dict[str, Any]:
    """The per-layer view of one port (reports/port.py renders it)."""
    failure = dict(result.first_failure) if result.first_failure else None
    if failure is not None:
        consistent = [v for v in result.verdicts if v.ratio <= 1.0]
        failure["diagnosis"] = consistent[0].as_dict() if consistent else None
        failure["hypotheses"] = [v.as_dict() for v in result.verdicts]
        failure["counterexample"] = result.counterexample
        failure["repro"] = result.repro
    return {
        "model": result.model, "source": result.source, "target": result.target, "dtype": result.dtype,
        "device": result.device, "examples": result.examples, "status": result.status, "message": result.message,
        "layers": [{"layer": layer.layer, "name": layer.name, "target_name": layer.target_name, "label": layer.label,
                    "variant": layer.variant,
                    "isolated": layer.isolated.as_ratio(), "isolated_error": _finite(layer.isolated.error),
                    "propagated": layer.propagated.as_ratio(), "propagated_error": _finite(layer.propagated.error),
                    "gradient": {name: m.as_ratio() for name, m in layer.gradients.items()},
                    "status": _layer_status(layer, result.examples)} for layer in result.layers],
        "input_gradient": {"max_bound_ratio": result.input_gradient.as_ratio(),
                           "max_abs_error": _finite(result.input_gradient.error)},
        "output": {"max_bound_ratio": result.output.as_ratio(), "max_abs_error": _finite(result.output.error)},
        "first_failure": failure,
        "seconds": round(result.seconds, 3), "framework_seconds": round(result.framework_seconds, 3),
        "build_seconds": round(result.build_seconds, 3),
    }


def port_report(results: Iterable[PortResult], command: list[str] | None = None,
                errors: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    """A whole report.json for port checks (`errors`: rows of ports that could not be checked at all)."""
    results = list(results)
    return assemble_report([port_entry(r) for r in results],
                           [row for result in results for row in port_rows(result)] + list(errors), command)


def assemble_report(entries: list[dict[str, Any]], rows: list[dict[str, Any]],
                    command: list[str] | None = None, complete: bool = True) -> dict[str, Any]:
    """report.json from port entries and result rows gathered from several processes."""
    from layer_conformance.reports.recorder import base_environment

    return {"schema": SCHEMA, "complete": complete,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command or [], "environment": base_environment(), "claims": {},
            "summary": summarize(rows), "results": rows, "port": entries}
