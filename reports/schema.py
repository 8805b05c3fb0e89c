"""The report.json contract: schema id, loading with clear errors, atomic writes."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA = "layer-conformance/report/v1"
SCHEMA_PREFIX = "layer-conformance/report/v"
SCHEMA_VERSION = 1

# `measured`: a measurement and never a verdict: the speed check, or a result with comparisons whose bound is
# infinite (`not_judged`)
STATUSES = ("passed", "failed", "skipped", "error", "xfailed", "measured")
RELATIONS = ("equal", "differ")
RESULT_KEYS = (
    "nodeid", "claim", "relation", "check", "variants", "dtype", "device",
    "status", "examples", "max_abs_error", "max_bound_ratio", "reason",
)
# Fields that only some results carry (readers treat them as optional):
# - features: results of the checks that draw a geometry (forward, gradient, depth, batch): {feature name
#   (layer_conformance.suites.features): examples that exercised it}, every feature the claim can exercise, zeros included
# - accumulation: {variant label: [accumulators its probes found: "float32", or the half dtype]}, for half-
#   precision forward and batch results, and gradient results ("<variant> dkernel", "<variant> dbias": the VJP
#   program's probe) (layer_conformance.suites.accumulation); a "float32" one is judged by the wide bound
# - declared_roundoff: {variant label: [declared precision modes, e.g. "tf32"]}: variants judged under a declared
#   u_eff because their framework computes float32 in that mode (--conformance-numerics default on a GPU;
#   layer_conformance.suites.numerics)
# - not_judged: {variant label: why}: comparisons measured but not judged because their bound is infinite;
#   such a result is `measured`, never `passed`
OPTIONAL_RESULT_KEYS = ("features", "accumulation", "not_judged", "declared_roundoff")
# Optional top-level keys (readers treat them as optional; a report without them is read as before):
# - port: written by `conformance port`, one entry per model port checked; its `results` stay ordinary rows, one
#   per (model port, layer, mode), checks port-isolated, port-propagated, port-gradient and port-output. An entry:
#   {"model", "source": {"framework", "description"}, "target": {"framework", "keras_backend" (or null),
#   "description"}, "dtype", "device", "examples", "status" (passed | failed | error), "message" (the one-line
#   verdict), "layers": [{"layer" (1-based index), "name", "target_name", "label", "isolated", "isolated_error",
#   "propagated", "propagated_error" (bound ratios and max abs errors, null when not judged), "gradient":
#   {parameter: bound ratio}, "status"}], "input_gradient" and "output": {"max_bound_ratio", "max_abs_error"},
#   "first_failure": null or {"layer", "name", "label", "mode" (isolated | propagated | gradient), "ratio" (null
#   when not finite), "diagnosis": null or {"mistake", "title", "ratio"}, "hypotheses": [{"mistake", "title",
#   "ratio" (of the port against the source with that porting mistake made, or null)}], "counterexample" (a path relative to the report's
#   folder, or null), "repro" (a command, or null)}}. Rendered by reports/port.py.


class ReportError(Exception):
    """A report file that cannot be used; the message names the file, the problem and the fix."""


def summarize(results: list[dict[str, Any]]) -> dict[str, int]:
    """Counts per status, always with passed/failed/skipped/error present; `measured` (speed) and `xfailed`
    under their own names when some result has them: a measurement is never counted as passed."""
    summary = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for result in results:
        summary[result["status"]] = summary.get(result["status"], 0) + 1
    return summary


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write through a temporary file in the same folder and rename it into place.

    A reader never sees a half-written file: either the old one or the new one. The mode is the old
    file's, or 0644 (mkstemp creates 0600; reports are read by others: CI artifacts, web servers).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.chmod(tmp, target.stat().st_mode & 0o777 if target.exists() else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_json_atomic(path: str | os.PathLike[str], payload: Any) -> Path:
    """Strict JSON (no NaN/inf), written atomically."""
    return write_text_atomic(path, json.dumps(payload, indent=1, allow_nan=False) + "\n")


def validate_report(report: Any, source: str = "report") -> dict[str, Any]:
    """Check the shape of a loaded report; raise ReportError naming the first problem."""
    if not isinstance(report, dict):
        raise ReportError(f"{source}: expected a JSON object at the top level, found {type(report).__name__}; "
                          f"pass a report.json written by `conformance run`")
    schema = report.get("schema")
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        raise ReportError(f"{source}: not a layer-conformance report (schema={schema!r}, expected {SCHEMA!r}); "
                          f"pass a report.json written by `conformance run`")
    try:
        version = int(schema[len(SCHEMA_PREFIX):])
    except ValueError:
        raise ReportError(f"{source}: unreadable schema version in {schema!r} (expected {SCHEMA!r}); pass a "
                          f"report.json written by `conformance run`") from None
    if version > SCHEMA_VERSION:
        raise ReportError(f"{source}: written by a newer layer-conformance (schema {schema!r}, this one reads "
                          f"{SCHEMA!r}); upgrade layer-conformance to read it")
    if version < SCHEMA_VERSION:
        raise ReportError(f"{source}: old schema {schema!r}; re-run `conformance run` to get {SCHEMA!r}")
    results = report.get("results")
    if not isinstance(results, list):
        raise ReportError(f"{source}: field 'results' is missing or not a list; the file is damaged, re-run the suite")
    for index, result in enumerate(results):
        if not isinstance(result, dict):
            raise ReportError(f"{source}: results[{index}] is not an object; the file is damaged, re-run the suite")
        missing = [key for key in ("nodeid", "claim", "check", "status") if key not in result]
        if missing:
            raise ReportError(f"{source}: results[{index}] lacks {', '.join(missing)}; the file is damaged, "
                              f"re-run the suite")
        if result["status"] not in STATUSES:
            raise ReportError(f"{source}: results[{index}] has unknown status {result['status']!r}; "
                              f"expected one of {', '.join(STATUSES)}")
    if not isinstance(report.get("environment", {}), dict):
        raise ReportError(f"{source}: field 'environment' is not an object; the file is damaged, re-run the suite")
    return report


def require_results(report: dict[str, Any], source: str) -> dict[str, Any]:
    """For commands that judge results (compare, merge): a report with none is refused, not read as 'all fine'."""
    if not report.get("results"):
        raise ReportError(f"{source}: holds no results (its run selected no tests, or stopped before the first "
                          f"one finished); re-run the suite with a selection that runs tests")
    return report


def load_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and validate a report.json; every problem becomes a ReportError with a one-line message."""
    source = Path(path)
    if not source.exists():
        raise ReportError(f"{source}: no such file; pass the path of a report.json written by `conformance run`")
    if source.is_dir():
        hint = source / "report.json"
        fix = f"pass {hint}" if hint.is_file() else "pass the report.json file, not its folder"
        raise ReportError(f"{source}: is a directory, expected a report.json file; {fix}")
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{source}: cannot be read ({exc.__class__.__name__}: {exc}); check the path and its "
                          f"permissions") from None
    if not text.strip():
        raise ReportError(f"{source}: the file is empty; the run that wrote it did not finish, re-run the suite")
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                          f"the file is truncated or not a report, re-run the suite") from None
    return validate_report(report, str(source))
