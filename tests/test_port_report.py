"""Self-tests of the model port views (reports/port.py) in report.md and report.html, on synthetic reports
shaped like those `conformance port` writes: ordinary result rows plus the optional top-level `port` list."""
from __future__ import annotations

import base64
import copy
import io
import json
import re

import pytest

from layer_conformance.cli import compare
from layer_conformance.reports.compare import compare_reports
from layer_conformance.reports.html import render_html
from layer_conformance.reports.markdown import md_escape, render_markdown
from layer_conformance.reports.plots import port_ratio_plot
from layer_conformance.reports.port import (
    first_failure_view, hypothesis_rows, layer_rows, port_entries, port_view, port_views, ratio_plot, verdict,
)
from layer_conformance.reports.render import render
from layer_conformance.reports.schema import SCHEMA, summarize, validate_report

XSS = "<script>alert(1)</script>"
FAILED_MESSAGE = ("layer 3 (Conv1d 64->128, k=5): consistent with NCHW/NHWC flatten order (ratio 0.3 under that "
                  "hypothesis, 2e+05 as ported)")
PASSED_MESSAGE = "all 3 layers within the bound; output ratio 0.21"


def _layer(number, name, label, isolated, propagated, gradient=None, status="passed", target_name=None):
    return {"layer": number, "name": name, "target_name": target_name or name.replace(".", "_"), "label": label,
            "isolated": isolated, "isolated_error": None if isolated is None else isolated * 1e-6,
            "propagated": propagated, "propagated_error": None if propagated is None else propagated * 1e-6,
            "gradient": gradient or {}, "status": status}


def _passed_port() -> dict:
    return {
        "model": "mlp", "source": {"framework": "torch", "description": "three Linear layers, ReLU between"},
        "target": {"framework": "flax", "keras_backend": None, "description": "flax.linen.Dense stack"},
        "dtype": "float32", "device": "cpu", "examples": 50, "status": "passed", "message": PASSED_MESSAGE,
        "layers": [_layer(1, "net.0", "Linear 8->16", 0.12, 0.12, {"kernel": 0.2, "bias": 0.1}),
                   _layer(2, "net.1", "ReLU", 0.0, 0.3),
                   _layer(3, "net.2", "Linear 16->4", 0.05, 0.4, {"kernel": 0.3, "bias": 0.05})],
        "input_gradient": {"max_bound_ratio": 0.05, "max_abs_error": 1e-8},
        "output": {"max_bound_ratio": 0.21, "max_abs_error": 3e-7},
        "first_failure": None,
    }


def _failed_port(counterexample: str = "javascript:alert(1)") -> dict:
    return {
        "model": "tcn", "source": {"framework": "torch", "description": "temporal convolutional network"},
        "target": {"framework": "keras", "keras_backend": "tensorflow", "description": "Keras Conv1D port"},
        "dtype": "float32", "device": "cpu", "examples": 50, "status": "failed", "message": FAILED_MESSAGE,
        "layers": [_layer(1, "network.0.conv1", "Conv1d 4->16, k=3, d=1, pad=((2, 0),)", 0.12, 0.4,
                          {"kernel": 0.2, "bias": 0.1}),
                   _layer(2, XSS, "ReLU", None, 0.5),
                   _layer(3, "network.1.conv1", "Conv1d 64->128, k=5", 2.1e5, 3.0e5, {"kernel": 7.0e4},
                          status="failed"),
                   _layer(4, "head", "Linear 128->1", 0.3, 9.0e4, {"kernel": 0.2}, status="failed")],
        "input_gradient": {"max_bound_ratio": None, "max_abs_error": None},
        "output": {"max_bound_ratio": 9.0e4, "max_abs_error": 0.3},
        "first_failure": {
            "layer": 3, "name": "network.1.conv1", "label": "Conv1d 64->128, k=5", "mode": "isolated",
            "ratio": 2.1e5,
            "diagnosis": {"mistake": "flatten-order", "title": "NCHW/NHWC flatten order", "ratio": 0.3},
            "hypotheses": [{"mistake": "bias-dropped", "title": "bias dropped", "ratio": None},
                           {"mistake": "kernel-transpose", "title": "missing kernel transpose", "ratio": 1e4},
                           {"mistake": "flatten-order", "title": "NCHW/NHWC flatten order", "ratio": 0.3}],
            "counterexample": counterexample, "repro": "python counterexamples/port-tcn.py"},
    }


def _rows(port: dict) -> list[dict]:
    """The result rows of one port: one per (layer, mode), and the output."""
    source, target = port["source"]["framework"], port["target"]["framework"]
    backend = port["target"]["keras_backend"]
    claim = f"port:{port['model']}:{source}->{target}"
    base = {"claim": claim, "title": f"{port['model']} ported from {source} to {target}", "relation": "equal",
            "keras_backend": backend, "dtype": "float32", "device": "cpu", "examples": 50, "duration": 1.2}
    variants = ["keras.Conv1D"] if target == "keras" else ["flax.linen.Dense"]
    rows = []
    for layer in port["layers"]:
        for mode in ("isolated", "propagated", "gradient"):
            if mode == "gradient":
                if not layer["gradient"]:
                    continue
                ratio, error = max(layer["gradient"].values()), None
            else:
                ratio, error = layer[mode], layer[f"{mode}_error"]
            status = "passed" if ratio is None or ratio < 1 else "failed"
            nodeid = f"port::{port['model']}::{source}->{target}::layer{layer['layer']:02d}::{mode}"
            rows.append({**base, "nodeid": nodeid,
                         "check": f"port-{mode}", "variants": variants, "status": status,
                         "max_abs_error": error, "max_bound_ratio": ratio,
                         "reason": None if status == "passed" else f"layer {layer['layer']} {mode}: ratio {ratio:g}"})
    output = port["output"]
    rows.append({**base, "nodeid": f"port::{port['model']}::{source}->{target}::output", "check": "port-output",
                 "variants": variants, "status": "passed" if output["max_bound_ratio"] < 1 else "failed",
                 "max_abs_error": output["max_abs_error"], "max_bound_ratio": output["max_bound_ratio"],
                 "reason": None})
    return rows


def port_report(*ports: dict) -> dict:
    ports = ports or (_passed_port(), _failed_port())
    results = [row for port in ports for row in _rows(port)]
    return {"schema": SCHEMA, "complete": True, "created": "2024-05-01T12:00:00+00:00",
            "environment": {"python": "3.11.7", "frameworks": {"torch": "2.3.0", "keras": "3.3.3"},
                            "keras_backend": "tensorflow"},
            "summary": summarize(results), "results": results, "port": list(ports)}


def _md_table(md: str, header_start: str) -> list[list[str]]:
    """The body rows of every Markdown table whose header line starts with `header_start`, as cell lists."""
    tables, lines = [], md.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(header_start):
            rows = []
            for row in lines[index + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]])
            tables.append(rows)
    return tables


def _port_images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in
            re.findall(r'<img class="plot plot-port" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("port-report")
    md_path, html_path = render(port_report(), folder)
    return {"md": md_path.read_text(encoding="utf-8"), "html": html_path.read_text(encoding="utf-8")}


# --------------------------------------------------------------------------- the views

def test_report_with_port_is_a_valid_report():
    report = port_report()
    assert validate_report(copy.deepcopy(report)) == report
    assert [entry["model"] for entry in port_entries(report)] == ["mlp", "tcn"]
    assert port_entries({"port": "junk"}) == [] and port_entries({}) == []
    assert port_entries({"port": [None, 3, {"model": "x"}]}) == [{"model": "x"}]


def test_layer_rows_and_verdict():
    rows = layer_rows(_failed_port())
    assert [row["layer"] for row in rows] == ["1", "2", "3", "4"]
    assert rows[0]["target_name"] == "network_0_conv1" and rows[0]["gradient_text"] == "kernel 0.2, bias 0.1"
    assert rows[1]["isolated"] == {"text": "–", "error": "–", "over": False} and rows[1]["gradient_text"] == "–"
    assert rows[2]["isolated"]["text"] == "2.1e+05" and rows[2]["isolated"]["over"] and rows[2]["first"]
    assert [row["first"] for row in rows] == [False, False, True, False]
    assert rows[2]["status"] == "failed" and rows[2]["icon"] == "❌"
    assert verdict(_failed_port()) == "failed: " + FAILED_MESSAGE
    assert verdict({"status": "error"}) == "error" and verdict({}) == "unknown"


def test_hypotheses_sorted_by_ratio_with_missing_last():
    rows = hypothesis_rows(_failed_port()["first_failure"])
    assert [row["mistake"] for row in rows] == ["flatten-order", "kernel-transpose", "bias-dropped"]
    assert [row["explains"] for row in rows] == ["yes", "no", "not judged"]
    assert [row["diagnosis"] for row in rows] == [True, False, False]
    assert [row["ratio"] for row in rows] == ["0.3", "1e+04", "–"]


def test_first_failure_view():
    failure = first_failure_view(_failed_port())
    assert failure["layer"] == "3" and failure["mode"] == "isolated" and failure["ratio"] == "2.1e+05"
    assert failure["diagnosis_text"] == ("consistent with NCHW/NHWC flatten order: bound ratio 0.3 against the "
                                         "source with that mistake made")
    assert first_failure_view(_passed_port()) is None
    infinite = dict(_failed_port()["first_failure"], ratio=None, diagnosis=None)
    view = first_failure_view({"first_failure": infinite})
    assert view["ratio"] == "not finite"
    assert view["diagnosis_text"] == "none of the porting mistakes tried explains it"
    assert first_failure_view({"first_failure": {"hypotheses": []}})["diagnosis_text"] == "no porting mistake was tried"


def test_views_cope_with_malformed_entries():
    for entry in ({}, {"layers": "x", "first_failure": "y", "output": None}, {"layers": [None, {"layer": True}]},
                  {"layers": [{"isolated": "far", "gradient": [1]}], "first_failure": {"hypotheses": [None, 1]}}):
        view = port_view(entry)
        assert view["plot_error"] is None
    assert port_view({"layers": [{"isolated": "far"}]})["layers"][0]["isolated"]["text"] == "far"


# --------------------------------------------------------------------------- the plot

def test_ratio_plot_is_a_png_data_uri():
    import matplotlib.image as mpimg

    uri = ratio_plot(_failed_port())
    assert uri.startswith("data:image/png;base64,")
    png = base64.b64decode(uri.split(",", 1)[1])
    assert mpimg.imread(io.BytesIO(png), format="png").shape[0] > 100


def test_ratio_plot_copes_with_zero_missing_and_infinite_ratios():
    assert port_ratio_plot({}) is None and port_ratio_plot({"layers": []}) is None
    assert port_ratio_plot({"layers": [{"isolated": None, "propagated": None}]}) is None  # nothing to draw
    assert ratio_plot({"layers": "junk"}) is None
    zeros = {"layers": [{"layer": 1, "isolated": 0.0, "propagated": 0.0}, {"layer": 2, "isolated": 0, "propagated": 0}]}
    assert port_ratio_plot(zeros).startswith(b"\x89PNG")
    mixed = {"layers": [{"isolated": float("inf"), "propagated": float("nan"), "gradient": {"kernel": None}},
                        {"isolated": 1e-9, "propagated": 3e7, "gradient": {"k": 0.0, "b": "x"}},
                        {"layer": "seven", "isolated": True}],
             "first_failure": {"layer": 2}}
    assert port_ratio_plot(mixed, title="a $ title with_underscore $x^").startswith(b"\x89PNG")


# --------------------------------------------------------------------------- report.md

def test_markdown_has_the_port_section(rendered):
    md = rendered["md"]
    assert "## Model ports" in md
    assert md.index("## Model ports") < md.index("## Matrix")
    assert "### ✅ mlp: torch → flax" in md
    assert r"### ❌ tcn: torch → keras \[tensorflow\]" in md
    assert "**Verdict:** ✅ passed: " + md_escape(PASSED_MESSAGE) in md
    assert "**Verdict:** ❌ failed: " + md_escape(FAILED_MESSAGE) in md
    mlp, tcn = _md_table(md, "| Layer | Name | Label |")
    assert [row[0] for row in mlp] == ["1", "2", "3"]
    assert [row[0] for row in tcn] == ["1", "2", "3 ⬅ first failure", "4"]
    assert tcn[0][1] == "`network.0.conv1` → `network_0_conv1`"
    assert tcn[0][3:7] == ["0.12", "0.4", "kernel 0.2, bias 0.1", "✅ passed"]
    assert tcn[2][3:7] == ["**2.1e+05**", "**3e+05**", "kernel **7e+04**", "❌ failed"]
    assert mlp[1][3] == "0"  # a ratio of exactly 0
    assert "- Output: bound ratio **9e+04**, max abs error 0.3" in md


def test_markdown_has_the_first_failure_and_hypotheses(rendered):
    md = rendered["md"]
    assert ("**First failure:** layer 3 `network.1.conv1` (Conv1d 64-\\>128, k=5), isolated, bound ratio "
            "2.1e+05.") in md
    assert ("**Diagnosis:** consistent with NCHW/NHWC flatten order: bound ratio 0.3 against the source with that "
            "mistake made." in md)
    (hypotheses,) = _md_table(md, "| Mistake | Id |")
    assert hypotheses == [["NCHW/NHWC flatten order (diagnosis)", "`flatten-order`", "0.3", "yes"],
                          ["missing kernel transpose", "`kernel-transpose`", "1e+04", "no"],
                          ["bias dropped", "`bias-dropped`", "–", "not judged"]]
    assert "- Reproduce: `python counterexamples/port-tcn.py`" in md
    assert "- Counterexample file: `javascript:alert(1)`" in md


def test_markdown_keeps_hostile_text_as_text(rendered):
    md = rendered["md"]
    outside_code = re.sub(r"(`+).+?\1", "", md)
    assert not re.search(r"(?<!\\)<", outside_code)
    assert "`" + XSS + "`" in md
    markdown_it = pytest.importorskip("markdown_it")
    html = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="javascript:' not in html
    # Every row of the per-layer tables keeps its 7 cells.
    section = html[html.index("<h2>Model ports</h2>"):html.index("<h2>Matrix</h2>")]
    for table in re.findall(r"<table>(.*?)</table>", section, flags=re.S):
        widths = {len(re.findall(r"<t[hd][ >]", row)) for row in re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)}
        assert len(widths) == 1, widths


# --------------------------------------------------------------------------- report.html

def test_html_has_the_port_section(rendered):
    page = rendered["html"]
    assert 'id="ports"' in page and 'href="#ports"' in page and "Model ports (2)" in page
    assert page.index('id="ports"') < page.index('id="matrix"')
    assert 'id="port-1"' in page and 'id="port-2"' in page
    assert "✅ mlp: torch → flax" in page and "❌ tcn: torch → keras [tensorflow]" in page
    assert "<strong>Verdict:</strong> ❌ failed: layer 3 (Conv1d 64-&gt;128, k=5): consistent with" in page
    tables = re.findall(r'<table class="port-layers">(.*?)</table>', page, flags=re.S)
    assert len(tables) == 2
    assert [len(re.findall(r"<tr[ >]", table)) for table in tables] == [4, 5]  # header + one row per layer
    assert len(re.findall(r'<tr class="first-failure">', tables[1])) == 1
    assert '<td class="num" title="max abs error 0.21"><strong>2.1e+05</strong></td>' in tables[1]
    assert "kernel 0.2, bias 0.1" in tables[1]
    hypotheses = re.search(r'<table class="port-hypotheses">(.*?)</table>', page, flags=re.S).group(1)
    order = [hypotheses.index(f"<code>{m}</code>") for m in ("flatten-order", "kernel-transpose", "bias-dropped")]
    assert order == sorted(order)
    assert "NCHW/NHWC flatten order (diagnosis)" in hypotheses
    assert "<strong>Diagnosis:</strong> consistent with NCHW/NHWC flatten order" in page
    assert "Reproduce: <code>python counterexamples/port-tcn.py</code>" in page


def test_html_inlines_the_ratio_plots(rendered):
    import matplotlib.image as mpimg

    images = _port_images(rendered["html"])
    assert len(images) == 2
    for png in images:
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert mpimg.imread(io.BytesIO(png), format="png").shape[1] > 100


def test_html_escapes_hostile_port_data(rendered):
    page = rendered["html"]
    assert XSS not in page and "<script" not in page.lower()
    assert "<code>&lt;script&gt;alert(1)&lt;/script&gt;</code>" in page
    assert 'href="javascript:' not in page
    assert 'href="javascript%3Aalert%281%29"' in page


def test_html_links_the_counterexample_as_a_relative_path():
    page = render_html(port_report(_failed_port("counterexamples/port tcn#3.npz")))
    assert '<a href="counterexamples/port%20tcn%233.npz"><code>counterexamples/port tcn#3.npz</code></a>' in page
    page = render_html(port_report(_failed_port("//evil.example/x.npz")))
    assert 'href="/evil.example/x.npz"' in page and 'href="//' not in page


def test_html_without_plots_and_with_a_broken_plot(monkeypatch):
    from layer_conformance.reports import plots
    from layer_conformance.reports.html import build_view

    view = build_view(port_report(), with_plots=False)
    assert [port["plot"] for port in view["ports"]] == [None, None]

    def boom(entry, title=""):
        raise ValueError("bad layer")

    monkeypatch.setattr(plots, "port_ratio_plot", boom)
    page = render_html(port_report(_passed_port()))
    assert "Plot could not be drawn: ValueError: bad layer" in page and 'id="port-1"' in page


# --------------------------------------------------------------------------- reports without ports

@pytest.mark.parametrize("ports", [None, [], "junk"])
def test_report_without_ports_has_no_port_section(ports):
    report = port_report()
    if ports is None:
        del report["port"]
    else:
        report["port"] = ports
    md, page = render_markdown(report), render_html(report)
    assert "Model ports" not in md and "Model ports" not in page
    assert 'id="ports"' not in page and "plot-port" not in page and "port-layers" not in page
    assert port_views(report) == []
    # The ordinary views still show the port rows.
    assert "## Matrix" in md and "`port:tcn:torch->keras`" in md


def test_rendering_does_not_change_the_report():
    report = port_report()
    snapshot = copy.deepcopy(report)
    render_markdown(report)
    render_html(report)
    assert json.dumps(report, sort_keys=True) == json.dumps(snapshot, sort_keys=True)


# --------------------------------------------------------------------------- conformance compare

def test_compare_flags_a_port_layer_that_now_fails(capsys, tmp_path):
    baseline_port = _failed_port()
    baseline_port["layers"] = [_layer(n, f"layer{n}", "Conv1d", 0.1 * n, 0.2 * n, {"kernel": 0.1}) for n in (1, 2, 3)]
    baseline_port.update(status="passed", message="all layers within the bound", first_failure=None,
                         output={"max_bound_ratio": 0.3, "max_abs_error": 1e-7})
    baseline = port_report(baseline_port)
    current_port = copy.deepcopy(baseline_port)
    current_port["layers"][1].update(isolated=4.0, status="failed")
    current_port.update(status="failed", message="layer 2: ratio 4", first_failure={
        "layer": 2, "name": "layer2", "label": "Conv1d", "mode": "isolated", "ratio": 4.0, "diagnosis": None,
        "hypotheses": [], "counterexample": None, "repro": None})
    current = port_report(current_port)
    failing = "port::tcn::torch->keras::layer02::isolated"
    assert [row["status"] for row in current["results"] if row["nodeid"] == failing] == ["failed"]

    comparison = compare_reports(baseline, current)
    assert comparison.exit_code == 1
    assert [(change.nodeid, change.keras_backend) for change in comparison.regressions] == [(failing, "tensorflow")]
    assert compare_reports(baseline, copy.deepcopy(baseline)).exit_code == 0

    paths = []
    for name, report in (("base.json", baseline), ("cur.json", current)):
        (tmp_path / name).write_text(json.dumps(report), encoding="utf-8")
        paths.append(str(tmp_path / name))
    code = compare.main(paths)
    out, _ = capsys.readouterr()
    assert code == 1
    assert failing in out and "passed → failed" in out
