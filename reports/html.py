"""report.html: one self-contained static page (no network, no scripts, plots inlined as data: URIs).

All report data reaches the page through jinja2 autoescaping; the template never marks report
data safe. Links to counterexample files are percent-encoded relative paths, so a path from the
JSON can neither carry a scheme (javascript:, http:) nor point at another host.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from . import plots
from .markdown import (
    DECLARED_MODES, HALF_PRECISION_BOUNDS, accumulation_rows, declared_rows, build_matrix, claim_order,
    counterexample_of, divergence_rows, environment_rows, relation_of, results_of, skipped_entries,
    summary_counts, variant_label,
)
from .messages import headline, rest
from .port import PORT_INTRO, port_views
from .views import (
    MISSING, STATUS_ICON, as_dict, as_list, format_duration, format_number, status_icon, status_of, text,
)
from .schema import write_text_atomic

TEMPLATE = "report.html.j2"
TEMPLATE_DIR = Path(__file__).parent / "templates"


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def status_class(status: str) -> str:
    """CSS class from a fixed set, whatever the report says."""
    return f"st-{status}" if status in STATUS_ICON else "st-unknown"


def safe_href(path: Any) -> str | None:
    """A relative link for a file named in the report, or None when there is nothing to link.

    Percent-encoding every ':' rules out a scheme; collapsing leading slashes rules out '//host'.
    """
    if not isinstance(path, str) or not path.strip():
        return None
    cleaned = re.sub(r"^/+", "/", path.strip().replace("\\", "/"))
    return quote(cleaned, safe="/-._~")


class _Anchors:
    """Unique, attribute-safe ids derived from claim ids."""

    def __init__(self) -> None:
        self.used: set[str] = set()
        self.by_claim: dict[str, str] = {}

    def claim(self, claim: str) -> str:
        if claim not in self.by_claim:
            base = "claim-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", claim).strip("-") or "x")
            anchor, index = base, 2
            while anchor in self.used:
                anchor, index = f"{base}-{index}", index + 1
            self.used.add(anchor)
            self.by_claim[claim] = anchor
        return self.by_claim[claim]


def _counterexample_view(result: dict[str, Any]) -> dict[str, Any] | None:
    example = counterexample_of(result)
    if not example:
        return None
    files = [{"label": key, "path": example[key], "href": safe_href(example[key])}
             for key in ("npz", "script") if key in example]
    return {"command": example.get("command"), "files": files}


def _result_view(report: dict[str, Any], result: dict[str, Any], index: int) -> dict[str, Any]:
    status = status_of(result)
    per_variant = [{"variant": variant_label(str(variant), result),
                    "max_abs_error": format_number(as_dict(values).get("max_abs_error")),
                    "max_bound_ratio": format_number(as_dict(values).get("max_bound_ratio"))}
                   for variant, values in as_dict(result.get("per_variant")).items()]
    pairwise = [{"a": text(as_dict(pair).get("a")), "b": text(as_dict(pair).get("b")),
                 "max_abs_error": format_number(as_dict(pair).get("max_abs_error")),
                 "max_bound_ratio": format_number(as_dict(pair).get("max_bound_ratio"))}
                for pair in as_list(result.get("pairwise"))]
    skipped = [{"variant": variant_label(str(variant), result), "reason": text(reason)}
               for variant, reason in as_dict(result.get("skipped_variants")).items()]
    return {
        "anchor": f"result-{index}",
        "nodeid": text(result.get("nodeid")),
        "claim": text(result.get("claim")),
        "check": text(result.get("check")),
        "relation": relation_of(report, result),
        "variants": [variant_label(str(v), result) for v in as_list(result.get("variants"))],
        "dtype": text(result.get("dtype")),
        "device": text(result.get("device")),
        "keras_backend": text(result.get("keras_backend")),
        "status": status,
        "status_class": status_class(status),
        "icon": status_icon(status),
        "examples": format_number(result.get("examples")),
        "max_abs_error": format_number(result.get("max_abs_error")),
        "max_bound_ratio": format_number(result.get("max_bound_ratio")),
        "separation": format_number(result.get("separation")),
        "duration": format_duration(result.get("duration")),
        "reason": headline(result["reason"]) if isinstance(result.get("reason"), str) and result["reason"] else None,
        "reason_full": rest(result["reason"]) if isinstance(result.get("reason"), str) else "",
        "per_variant": per_variant,
        "pairwise": pairwise,
        "skipped_variants": skipped,
        "counterexample": _counterexample_view(result),
    }


def _port_views(report: dict[str, Any], with_plots: bool) -> list[dict[str, Any]]:
    """The model ports (reports/port.py) with the page's own parts: an anchor, CSS classes, and a
    percent-encoded relative link for the counterexample file."""
    views = port_views(report, with_plots)
    for index, view in enumerate(views, 1):
        view["anchor"] = f"port-{index}"
        view["status_class"] = status_class(view["status"])
        for row in view["layers"]:
            row["status_class"] = status_class(row["status"])
        failure = view["failure"]
        if failure:
            failure["href"] = safe_href(failure["counterexample"])
    return views


def build_view(report: dict[str, Any], with_plots: bool = True) -> dict[str, Any]:
    """Everything the template shows, as display strings; the template does no data handling."""
    report = as_dict(report)
    anchors = _Anchors()
    results = results_of(report)
    views = [_result_view(report, result, index) for index, result in enumerate(results)]
    claims_meta = as_dict(report.get("claims"))

    claims = []
    jobs: list[tuple[int, list[dict[str, Any]], str]] = []  # (index in claims, results, title): plots to draw
    for claim in claim_order(report):
        meta = as_dict(claims_meta.get(claim))
        own = [result for result in results if text(result.get("claim")) == claim]
        own_views = [view for view in views if view["claim"] == claim]
        counts: dict[str, int] = {}
        for view in own_views:
            counts[view["status"]] = counts.get(view["status"], 0) + 1
        title = meta.get("title")
        claims.append({
            "id": claim,
            "anchor": anchors.claim(claim),
            "title": text(title) if title is not None else claim,
            "relation": text(meta.get("relation")) if meta.get("relation") is not None
            else (own_views[0]["relation"] if own_views else MISSING),
            "source": text(meta.get("source")),
            "variants": [text(v) for v in as_list(meta.get("variants"))],
            "counts": [{"status": s, "count": c, "icon": status_icon(s), "status_class": status_class(s)}
                       for s, c in counts.items()],
            "results": own_views,
            "plots": {"histogram": None, "scatter": None, "depth": None, "speed": None, "errors": []},
        })
        if with_plots and own:
            jobs.append((len(claims) - 1, own, f"{claim}: {text(title)}" if title is not None else claim))
    for (index, _, _), drawn in zip(jobs, plots.many_claim_plots([(own, title) for _, own, title in jobs])):
        claims[index]["plots"] = drawn

    matrix = build_matrix(report)
    for row in matrix["rows"]:
        row["anchor"] = anchors.claim(row["claim"])
        for column, cell in list(row["cells"].items()):
            row["cells"][column] = {
                "status": cell["status"], "status_class": status_class(cell["status"]),
                "icon": status_icon(cell["status"]),
                "ratio": "" if cell["status"] in ("skipped", "measured") else format_number(cell["ratio"]),
                "tooltip": "\n".join([cell["status"]] + cell["nodeids"]),
            }

    counts = summary_counts(report)
    complete = report.get("complete")
    shards = [{"name": text(as_dict(shard).get("name")),
               "environment": environment_rows(as_dict(shard).get("environment"))}
              for shard in as_list(report.get("shards"))]
    divergences = divergence_rows(report)
    accumulation = accumulation_rows(report)
    declared = declared_rows(report)
    skips = skipped_entries(report)
    for skip in skips:
        skip["anchor"] = anchors.claim(skip["claim"])
    differ = [view for view in views if view["relation"] == "differ"]
    failures = [view for view in views if view["status"] in ("failed", "error")]
    for view in views:
        view["claim_anchor"] = anchors.claim(view["claim"])

    ports = _port_views(report, with_plots)
    toc = [("summary", "Summary")]
    if ports:
        toc.append(("ports", f"Model ports ({len(ports)})"))
    toc.append(("matrix", "Matrix"))
    if failures:
        toc.append(("failures", f"Failures ({len(failures)})"))
    if differ:
        toc.append(("differ", "Differ claims: separation"))
    if accumulation:
        toc.append(("half-precision", "Half-precision bounds"))
    if declared:
        toc.append(("declared-modes", "Declared precision modes"))
    if divergences:
        toc.append(("divergences", f"Documented divergences ({len(divergences)})"))
    if skips:
        toc.append(("skips", f"Skips ({len(skips)})"))
    toc.append(("claims", "Claims"))
    toc.append(("environment", "Environment"))

    return {
        "schema": text(report.get("schema")),
        "created": text(report.get("created")),
        "complete": complete if isinstance(complete, bool) else None,
        "counts": [{"status": s, "count": c, "icon": status_icon(s), "status_class": status_class(s)}
                   for s, c in counts.items()],
        "total": sum(counts.values()),
        "has_failures": bool(counts.get("failed") or counts.get("error")),
        "any_passed": bool(counts.get("passed")),
        "incomplete_reason": (report.get("incomplete") or {}).get("reason"),
        "matrix": matrix,
        "ports": ports,
        "port_intro": PORT_INTRO,
        "legend": [{"status": s, "icon": i, "status_class": status_class(s)} for s, i in STATUS_ICON.items()],
        "failures": failures,
        "differ": differ,
        "divergences": divergences,
        "accumulation": {"probed": [r for r in accumulation if r["accumulator"]],
                         "unjudged": [r for r in accumulation if r["reason"]], "text": HALF_PRECISION_BOUNDS},
        "declared": {"rows": declared, "text": DECLARED_MODES},
        "skips": skips,
        "claims": claims,
        "environment": environment_rows(report.get("environment")),
        "shards": shards,
        "toc": toc,
    }


def render_html(report: dict[str, Any]) -> str:
    """report.html as a string: one page, no network, no scripts."""
    return _environment().get_template(TEMPLATE).render(**build_view(report))


def write_html(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    return write_text_atomic(path, render_html(report))
