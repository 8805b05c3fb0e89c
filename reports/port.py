"""The views of a report's model ports (`conformance port`), shared by the Markdown and HTML writers.

A port report keeps ordinary result rows, one per (model port, layer, mode), so the matrix, `compare`
and `merge` treat it like any other; its optional top-level key `port` holds one entry per model port
checked (reports/schema.py): the verdict, the bound ratio of every layer, compared in isolation (both
layers given the source's input) and propagated (each model fed by its own earlier layers), and the
first failing layer with the porting mistakes tried on it.

Everything here turns such an entry into display strings. An entry comes from a report.json that
anyone may hand over: every read is defensive and a missing value shows as "–".
"""
from __future__ import annotations

from typing import Any

from layer_conformance.reports.views import (
    MISSING, as_dict, as_list, format_number, status_icon, status_of, text, to_float,
)

MODES = ("isolated", "propagated", "gradient")

PORT_INTRO = (
    "Each layer of the ported model is compared with its source layer in units of the derived error bound "
    "(below 1 passes): isolated, both layers given the source model's input to that layer; propagated, each "
    "model fed by its own earlier layers; gradient, the parameter gradients of the layer. The first failing "
    "layer is tried against known porting mistakes: a mistake which, made in the source model, gives what the "
    "port computed within the bound (ratio below 1) explains the failure.")


def port_entries(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's model port entries (its `port` list), dropping anything that is not an object."""
    return [entry for entry in as_list(as_dict(report).get("port")) if isinstance(entry, dict)]


def _over(value: Any) -> bool:
    ratio = to_float(value)
    return ratio is not None and ratio >= 1


def _ratio_cell(ratio: Any, error: Any = None) -> dict[str, Any]:
    """{text, error, over}: a bound ratio (and its absolute error) for display; `over` when at or above the bound."""
    return {"text": format_number(ratio), "error": format_number(error), "over": _over(ratio)}


def _layer_number(layer: dict[str, Any], position: int) -> int:
    number = layer.get("layer")
    return number if isinstance(number, int) and not isinstance(number, bool) else position


def port_title(entry: dict[str, Any]) -> str:
    """The model and the direction of the port, as in "tcn: torch → keras [tensorflow]"."""
    source, target = as_dict(entry.get("source")), as_dict(entry.get("target"))
    backend = target.get("keras_backend")
    direction = f"{text(source.get('framework'))} → {text(target.get('framework'))}"
    if isinstance(backend, str) and backend:
        direction += f" [{backend}]"
    return f"{text(entry.get('model'))}: {direction}"


def verdict(entry: dict[str, Any]) -> str:
    """The one-line verdict: the status and the entry's message ("passed: ..."; the status alone without one)."""
    status = status_of(entry)
    message = entry.get("message")
    if isinstance(message, str) and message.strip():
        return f"{status}: {' '.join(message.split())}"
    return status


def layer_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per layer of the port, as display strings.

    Each row: {layer, name, target_name (None when missing or the same as name), label, isolated,
    propagated (each {text, error, over}), gradient ([{parameter, text, over}]), gradient_text, status,
    icon, first (the first failing layer)}.
    """
    first = as_dict(entry.get("first_failure")).get("layer")
    rows = []
    for position, layer in enumerate((item for item in as_list(entry.get("layers")) if isinstance(item, dict)), 1):
        number = _layer_number(layer, position)
        name, target_name = text(layer.get("name")), layer.get("target_name")
        gradient = [{"parameter": str(parameter), "text": format_number(ratio), "over": _over(ratio)}
                    for parameter, ratio in as_dict(layer.get("gradient")).items()]
        status = status_of(layer)
        rows.append({
            "layer": str(number), "name": name,
            "target_name": text(target_name) if isinstance(target_name, str) and target_name and target_name != name
            else None,
            "label": text(layer.get("label")),
            "isolated": _ratio_cell(layer.get("isolated"), layer.get("isolated_error")),
            "propagated": _ratio_cell(layer.get("propagated"), layer.get("propagated_error")),
            "gradient": gradient,
            "gradient_text": ", ".join(f"{g['parameter']} {g['text']}" for g in gradient) or MISSING,
            "status": status, "icon": status_icon(status),
            "first": isinstance(first, int) and not isinstance(first, bool) and first == number,
        })
    return rows


def summary_rows(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The whole model's comparisons: its output and the gradient with respect to its input, when recorded."""
    rows = []
    for key, name in (("output", "Output"), ("input_gradient", "Gradient of the input")):
        if key in entry:
            part = as_dict(entry.get(key))
            rows.append({"name": name, **_ratio_cell(part.get("max_bound_ratio"), part.get("max_abs_error"))})
    return rows


def _hypothesis_key(hypothesis: dict[str, Any]) -> tuple[bool, float]:
    ratio = to_float(hypothesis.get("ratio"))
    return (ratio is None, ratio if ratio is not None else 0.0)


def hypothesis_rows(failure: dict[str, Any]) -> list[dict[str, Any]]:
    """The porting mistakes tried on the first failing layer, smallest ratio first, those without a ratio last.

    Each row: {mistake, title, ratio (the port's bound ratio against the source with the mistake made), explains ("yes" below 1, "no",
    or "not judged" without a ratio), diagnosis (the one the entry names as its diagnosis)}.
    """
    diagnosis = as_dict(as_dict(failure).get("diagnosis")).get("mistake")
    hypotheses = [item for item in as_list(as_dict(failure).get("hypotheses")) if isinstance(item, dict)]
    rows = []
    for hypothesis in sorted(hypotheses, key=_hypothesis_key):
        ratio = to_float(hypothesis.get("ratio"))
        rows.append({
            "mistake": text(hypothesis.get("mistake")), "title": text(hypothesis.get("title")),
            "ratio": format_number(ratio),
            "explains": "not judged" if ratio is None else "yes" if ratio < 1 else "no",
            "diagnosis": diagnosis is not None and hypothesis.get("mistake") == diagnosis,
        })
    return rows


def first_failure_view(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The first failing layer as display strings, or None when the port has none.

    {layer, name, label, mode, ratio, diagnosis (None, or {mistake, title, ratio, text}), diagnosis_text
    (the sentence to show), hypotheses (hypothesis_rows), counterexample (a relative path or None), repro}.
    A ratio recorded as null was not finite (JSON has no infinity).
    """
    failure = entry.get("first_failure")
    if not isinstance(failure, dict):
        return None
    ratio = to_float(failure.get("ratio"))
    diagnosis = as_dict(failure.get("diagnosis"))
    hypotheses = hypothesis_rows(failure)
    if diagnosis:
        title = text(diagnosis.get("title"))
        diagnosis_view = {"mistake": text(diagnosis.get("mistake")), "title": title,
                          "ratio": format_number(to_float(diagnosis.get("ratio")))}
        diagnosis_text = (f"consistent with {title}: bound ratio {diagnosis_view['ratio']} against the source "
                          f"with that mistake made")
    else:
        diagnosis_view = None
        diagnosis_text = ("none of the porting mistakes tried explains it" if hypotheses
                          else "no porting mistake was tried")
    counterexample, repro = failure.get("counterexample"), failure.get("repro")
    return {
        "layer": text(failure.get("layer")), "name": text(failure.get("name")), "label": text(failure.get("label")),
        "mode": text(failure.get("mode")),
        "ratio": format_number(ratio) if ratio is not None else "not finite",
        "diagnosis": diagnosis_view, "diagnosis_text": diagnosis_text, "hypotheses": hypotheses,
        "counterexample": counterexample if isinstance(counterexample, str) and counterexample.strip() else None,
        "repro": repro if isinstance(repro, str) and repro.strip() else None,
    }


def ratio_plot(entry: dict[str, Any]) -> str | None:
    """The bound ratio of every layer against its index as a PNG data: URI (reports/plots.py
    `port_ratio_plot`); None when no layer has a ratio to draw."""
    from layer_conformance.reports import plots

    png = plots.port_ratio_plot(entry, port_title(entry))
    return None if png is None else plots.png_data_uri(png)


def port_view(entry: dict[str, Any], with_plot: bool = True) -> dict[str, Any]:
    """Everything the writers show of one model port, as display strings.

    {title, model, status, icon, verdict, source, target ({framework, description}), dtype, device, examples,
    summary (summary_rows), layers (layer_rows), failure (first_failure_view), plot (a data: URI or None),
    plot_error (why the plot could not be drawn, or None)}.
    """
    entry = as_dict(entry)
    status = status_of(entry)
    plot = plot_error = None
    if with_plot:
        try:
            plot = ratio_plot(entry)
        except Exception as exc:  # noqa: BLE001 - report data is arbitrary; keep the rest of the page
            plot_error = f"{exc.__class__.__name__}: {exc}"
    sides = {}
    for side in ("source", "target"):
        part = as_dict(entry.get(side))
        sides[side] = {"framework": text(part.get("framework")), "description": text(part.get("description"))}
    return {
        "title": port_title(entry), "model": text(entry.get("model")), "status": status,
        "icon": status_icon(status), "verdict": verdict(entry), **sides,
        "dtype": text(entry.get("dtype")), "device": text(entry.get("device")),
        "examples": format_number(entry.get("examples")),
        "summary": summary_rows(entry), "layers": layer_rows(entry), "failure": first_failure_view(entry),
        "plot": plot, "plot_error": plot_error,
    }


def port_views(report: dict[str, Any], with_plots: bool = True) -> list[dict[str, Any]]:
    """`port_view` of each model port of the report, in its order; [] for a report without ports."""
    return [port_view(entry, with_plots) for entry in port_entries(report)]


def format_port_text(entry: dict[str, Any]) -> str:
    """A port for the terminal: its title, one line per layer (bound ratios isolated, propagated, gradients),
    the whole model's rows and the verdict, with the first failure's counterexample and repro command."""
    rows = layer_rows(entry)
    widths = {"layer": 5, "label": max([len("layer")] + [len(r["label"]) for r in rows]),
              "name": max([len("at")] + [len(r["name"]) for r in rows])}
    lines = [port_title(entry),
             f"  {'#':>3}  {'layer':<{widths['label']}}  {'at':<{widths['name']}}  {'isolated':>9}  "
             f"{'propagated':>10}  gradients"]
    for r in rows:
        mark = " <-" if r["first"] else ""
        lines.append(f"  {r['layer']:>3}  {r['label']:<{widths['label']}}  {r['name']:<{widths['name']}}  "
                     f"{r['isolated']['text']:>9}  {r['propagated']['text']:>10}  {r['gradient_text']}{mark}")
    for row in summary_rows(entry):
        lines.append(f"  {row['name']}: bound ratio {row['text']} (max error {row['error']})")
    lines.append(f"  {verdict(entry)}")
    failure = first_failure_view(entry)
    if failure is not None:
        consistent = [h for h in failure["hypotheses"] if h["explains"] == "yes"]
        if consistent:
            lines.append("  consistent with: " + "; ".join(f"{h['title']} (ratio {h['ratio']})" for h in consistent))
        if failure["counterexample"]:
            lines.append(f"  counterexample: {failure['counterexample']}")
        if failure["repro"]:
            lines.append(f"  repro: {failure['repro']}")
    return "\n".join(lines)
