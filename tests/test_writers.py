"""Self-tests of the report writers (report.md, report.html, plots) on synthetic reports."""
from __future__ import annotations

import base64
import copy
import html as html_lib
import io
import json
import math
import re
import stat

import pytest

from layer_conformance.reports.html import render_html, safe_href, write_html
from layer_conformance.reports.markdown import md_code, md_escape, render_markdown, write_markdown, write_text_atomic
from layer_conformance.reports.plots import bound_ratio_histogram, claim_plots, drawn_in_processes, error_vs_length, many_claim_plots

XSS = "<script>alert(1)</script>"
BASIC_KEYS = ("nodeid", "claim", "relation", "check", "variants", "dtype", "device", "status", "examples",
              "max_abs_error", "max_bound_ratio", "reason")


def _samples(n: int, scale: float, seed: int = 0) -> dict[str, list]:
    ks = [1 + (7 * i + seed) % 500 for i in range(n)]
    ratios = [scale * ((i * 37 + seed) % 100) / 100 for i in range(n)]
    return {"bound_ratio": ratios, "abs_error": [r * 1e-6 * math.sqrt(k) for r, k in zip(ratios, ks)],
            "reduction_length": ks}


def synthetic_report() -> dict:
    results = [
        {"nodeid": "suites/test_linear.py::test_forward[float32]", "claim": "linear_dense", "relation": "equal",
         "check": "forward", "variants": ["torch.Linear", "keras.Dense", "flax.linen.Dense"],
         "skipped_variants": {"flax.nnx.Linear": "flax.nnx not installed"}, "keras_backend": "jax",
         "dtype": "float32", "device": "cpu", "status": "passed", "examples": 60,
         "max_abs_error": 2.1e-6, "max_bound_ratio": 0.031, "reason": None,
         "per_variant": {"torch.Linear": {"max_abs_error": 2.1e-6, "max_bound_ratio": 0.031},
                         "keras.Dense": {"max_abs_error": 1.0e-6, "max_bound_ratio": 0.02},
                         "flax.linen.Dense": {"max_abs_error": 1.5e-6, "max_bound_ratio": 0.025}},
         "pairwise": [{"a": "torch.Linear", "b": "keras.Dense", "max_abs_error": 2e-6, "max_bound_ratio": 0.03}],
         "separation": None, "samples": _samples(60, 0.03), "counterexample": None, "duration": 1.25},
        {"nodeid": "suites/test_linear.py::test_forward[float16]", "claim": "linear_dense", "relation": "equal",
         "check": "forward", "variants": ["torch.Linear", "keras.Dense"], "keras_backend": "jax",
         "dtype": "float16", "device": "cpu", "status": "failed", "examples": 12,
         "max_abs_error": 0.5, "max_bound_ratio": 4.2,
         "reason": "bound ratio 4.2 >= 1 for keras.Dense\nat K=4096",
         "per_variant": {"torch.Linear": {"max_abs_error": 0.01, "max_bound_ratio": 0.4},
                         "keras.Dense": {"max_abs_error": 0.5, "max_bound_ratio": 4.2}},
         "samples": {"bound_ratio": [0.0, 0.1, 4.2, None, float("nan"), float("inf")],
                     "abs_error": [0.0, 0.01, 0.5, 0.1, 0.2, 0.3], "reduction_length": [1, 16, 4096, 8, 9, 10]},
         "counterexample": {"npz": "counterexamples/linear_dense-float16.npz",
                            "script": "counterexamples/linear_dense-float16.py",
                            "command": "conformance repro counterexamples/linear_dense-float16.npz"},
         "duration": 3.5},
        {"nodeid": "suites/test_linear.py::test_forward[bfloat16]", "claim": "linear_dense", "relation": "equal",
         "check": "forward", "variants": [], "skipped_variants": {}, "keras_backend": None,
         "dtype": "bfloat16", "device": "gpu", "status": "skipped", "examples": 0,
         "max_abs_error": None, "max_bound_ratio": None, "reason": "no GPU available for bfloat16 matmul",
         "samples": {"bound_ratio": [], "abs_error": [], "reduction_length": []}},
        {"nodeid": "suites/test_conv.py::test_linear_vs_conv1d[float32]", "claim": "linear_vs_conv1d",
         "relation": "differ", "check": "forward", "variants": ["torch.Linear", "torch.Conv1d"],
         "keras_backend": None, "dtype": "float32", "device": "cpu", "status": "passed", "examples": 40,
         "max_abs_error": 3e-6, "max_bound_ratio": 0.2, "reason": None, "separation": 3.7,
         "samples": _samples(40, 20.0, seed=3), "duration": 0.8},
        {"nodeid": "suites/test_evil.py::test_x", "claim": "evil", "relation": "equal", "check": "forward",
         "variants": ["torch.Linear|pipe", XSS], "dtype": "float64", "device": "cpu", "status": "error",
         "examples": 1, "max_abs_error": None, "max_bound_ratio": None, "reason": XSS + " ``` `code`",
         "counterexample": {"npz": "javascript:alert(1)", "script": "//evil.example/x.py",
                            "command": "conformance repro `x`"},
         "samples": {"bound_ratio": [0.0, 0.0], "reduction_length": [1, 2]}},
    ]
    return {
        "schema": "layer-conformance/report/v1",
        "complete": False,
        "created": "2024-05-01T12:00:00+00:00",
        "environment": {"python": "3.11.2", "platform": "Linux-6.1-x86_64", "cpu": "x86_64",
                        "frameworks": {"torch": "2.3.0", "keras": "3.3.3", "flax": None},
                        "keras_backend": "jax", "devices": {"torch": ["cpu"], "jax": ["cpu:0"]},
                        "numeric_modes": {"torch.allow_tf32": False, "jax_default_matmul_precision": "highest"}},
        "shards": [{"name": "keras-jax", "environment": {"python": "3.11.2", "keras_backend": "jax"}}],
        "claims": {
            "linear_dense": {"title": "Linear and Dense compute the same affine map", "relation": "equal",
                             "source": "docs", "variants": ["torch.Linear", "keras.Dense", "flax.linen.Dense",
                                                            "flax.nnx.Linear"]},
            "linear_vs_conv1d": {"title": "Linear and a 1x1 Conv1d round differently", "relation": "differ",
                                 "source": "forum thread", "variants": ["torch.Linear", "torch.Conv1d"]},
            "evil": {"title": XSS, "relation": "equal", "source": XSS, "variants": []},
        },
        "summary": {"passed": 2, "failed": 1, "skipped": 1, "error": 1},
        "results": results,
    }


def minimal_report() -> dict:
    full = synthetic_report()
    return {"schema": full["schema"], "results": [{key: r.get(key) for key in BASIC_KEYS} for r in full["results"]]}


def _data_uris(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


# --------------------------------------------------------------------------- markdown

def test_markdown_has_headline_matrix_and_cells():
    md = render_markdown(synthetic_report())
    assert md.startswith("# Layer conformance report")
    assert "Incomplete run" in md
    assert "## Matrix" in md
    header = next(line for line in md.splitlines() if line.startswith("| Claim | Check | Variant"))
    # dtype columns in a fixed order, device named because two devices occur.
    assert header.index("float64") < header.index("float32") < header.index("float16") < header.index("bfloat16")
    assert "gpu" in header
    assert "✅ 0.031" in md and "❌ 4.2" in md and "⏭" in md and "💥" in md
    torch_row = next(line for line in md.splitlines() if "`torch.Linear`" in line and "`linear_dense`" in line)
    assert "✅ 0.031" in torch_row and "❌ 0.4" in torch_row
    assert "`keras.Dense [jax]`" in md


def test_markdown_lists_every_skip_failure_and_environment():
    md = render_markdown(synthetic_report())
    assert "## Skips" in md
    assert "flax.nnx not installed" in md
    assert "no GPU available for bfloat16 matmul" in md
    assert "## Failures" in md
    assert "`conformance repro counterexamples/linear_dense-float16.npz`" in md
    assert "bound ratio 4.2 >= 1 for keras.Dense\nat K=4096" in md  # verbatim in a fenced block
    assert "## Environment" in md
    for expected in ("3.11.2", "`torch`", "2.3.0", "not installed", "jax", "cpu:0", "jax_default_matmul_precision",
                     "highest", "Shard keras-jax"):
        assert expected in md, expected


def test_markdown_differ_table_shows_separation():
    md = render_markdown(synthetic_report())
    assert "## Claims that two computations differ" in md
    row = next(line for line in md.splitlines() if "test_linear_vs_conv1d" in line and "3.7" in line)
    assert "`linear_vs_conv1d`" in row


def test_markdown_escapes_report_text():
    md = render_markdown(synthetic_report())
    # Raw text may only appear verbatim inside code spans and fenced blocks, where Markdown renders no HTML.
    outside_code = re.sub(r"(`+).+?\1", "", re.sub(r"(?ms)^(`{3,})text\n.*?^\1$", "", md))
    # the writer's own fold around a long message is the only HTML it writes
    outside_code = re.sub(r"(?m)^(<details><summary>Full message</summary>|</details>)$", "", outside_code)
    assert not re.search(r"(?<!\\)<", outside_code)
    assert "`" + XSS + "`" in md
    assert r"\<script\>alert(1)\</script\>" in md
    # A pipe in a variant name must not split the table row.
    assert r"torch.Linear\|pipe" in md
    assert md_escape("a|b\nc") == r"a\|b c"
    assert md_code("a`b") == "``a`b``"
    assert md_code("`x`", in_table=False) == "`` `x` ``"


def test_markdown_copes_with_minimal_and_empty_reports():
    md = render_markdown(minimal_report())
    assert "## Matrix" in md and "Completeness unknown" in md
    assert "## Environment" in md and "No environment recorded." in md
    empty = render_markdown({"schema": "layer-conformance/report/v1", "complete": True, "results": []})
    assert "No results recorded." in empty and "0 results" in empty


# --------------------------------------------------------------------------- html

@pytest.fixture(scope="module")
def page() -> str:
    return render_html(synthetic_report())


def test_html_is_self_contained(page):
    refs = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', page, flags=re.IGNORECASE)
    assert refs
    for ref in refs:
        assert not ref.lower().startswith(("http:", "https:", "//", "javascript:")), ref
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    assert "Content-Security-Policy" in page


def test_html_has_matrix_plots_and_sections(page):
    assert 'id="matrix-table"' in page
    assert 'class="cell st-failed"' in page and 'class="cell st-passed"' in page
    assert 'class="cell st-skipped"' in page
    assert '<img class="plot plot-histogram" src="data:image/png;base64,' in page
    assert '<img class="plot plot-scatter" src="data:image/png;base64,' in page
    for anchor in ("summary", "matrix", "failures", "differ", "skips", "claims", "environment",
                   "claim-linear_dense", "claim-linear_vs_conv1d"):
        assert f'id="{anchor}"' in page and f'href="#{anchor}"' in page, anchor
    assert 'href="counterexamples/linear_dense-float16.npz"' in page
    assert "conformance repro counterexamples/linear_dense-float16.npz" in page
    assert "flax.nnx not installed" in page and "jax_default_matmul_precision" in page
    assert "3.7" in page  # separation


def test_html_plots_are_valid_pngs(page):
    import matplotlib.image as mpimg

    images = _data_uris(page)
    assert len(images) >= 4
    for png in images:
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert mpimg.imread(io.BytesIO(png), format="png").shape[0] > 100


def _pixels(png: bytes) -> "np.ndarray":
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def _palette_error(full: bytes, small: bytes) -> tuple[float, float]:
    """(mean over pixels of the worst channel's |difference|, fraction of pixels off by more than 16 of 255 levels)."""
    difference = abs(_pixels(full) - _pixels(small)).max(axis=-1)
    return float(difference.mean()), float((difference > 16).mean())


def _full_and_palette(monkeypatch) -> tuple[bytes, bytes]:
    """A report plot as matplotlib renders it (full colour) and as the report embeds it."""
    from layer_conformance.reports import plots

    rendered: list[bytes] = []
    render = plots._render
    monkeypatch.setattr(plots, "_render", lambda fig: rendered.append(render(fig)) or rendered[-1])
    small = plots.error_vs_length(synthetic_report()["results"][:2], title="linear_dense")
    (full,) = rendered
    return full, small


def test_plots_are_palette_pngs_that_look_like_the_full_colour_render(monkeypatch):
    """The report embeds 8-bit palette PNGs (a third of the bytes): the same picture to the eye."""
    from PIL import Image

    from layer_conformance.reports import plots

    full, small = _full_and_palette(monkeypatch)
    with Image.open(io.BytesIO(small)) as image:
        assert image.mode == "P" and len(image.getcolors(maxcolors=1 << 24)) <= plots.PALETTE_COLOURS
    with Image.open(io.BytesIO(full)) as image:
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 24)) > plots.PALETTE_COLOURS  # anti-aliasing
    mean, off = _palette_error(full, small)
    assert mean <= 2.0 and off <= 0.005, (mean, off)  # a ci report's 62 plots: at most 1.6 and 0.0026
    assert len(small) < 0.6 * len(full)
    assert plots.palette_png(full) == small  # deterministic: the same report, the same bytes


def test_palette_check_catches_a_palette_too_small(monkeypatch):
    """The check above fails on a damaged picture: 16 colours lose the shades of the markers' edges."""
    from layer_conformance.reports import plots

    full, _ = _full_and_palette(monkeypatch)
    monkeypatch.setattr(plots, "PALETTE_COLOURS", 16)
    mean, off = _palette_error(full, plots.palette_png(full))
    assert mean > 2.0 or off > 0.005, (mean, off)


def test_html_escapes_report_data(page):
    assert XSS not in page
    assert html_lib.escape(XSS) in page or "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # A link from the report can carry neither a scheme nor another host.
    assert 'href="javascript:' not in page
    assert 'href="javascript%3Aalert%281%29"' in page
    assert 'href="/evil.example/x.py"' in page


def test_safe_href():
    assert safe_href("counterexamples/a b#1.npz") == "counterexamples/a%20b%231.npz"
    assert safe_href("https://example.com/x") == "https%3A//example.com/x"
    assert safe_href("java\tscript:alert(1)") == "java%09script%3Aalert%281%29"
    assert safe_href("\\\\host\\share\\x.npz") == "/host/share/x.npz"
    assert safe_href("") is None and safe_href(None) is None and safe_href(3) is None


def test_html_copes_with_minimal_report():
    page = render_html(minimal_report())
    assert 'id="matrix-table"' in page
    assert "Completeness unknown" in page and "No environment recorded." in page
    assert "No per-example samples recorded" in page  # the 12 basic fields carry no samples
    assert XSS not in page


def test_html_copes_with_empty_results():
    page = render_html({"schema": "layer-conformance/report/v1", "complete": True, "results": []})
    assert "No results recorded." in page
    assert "matrix-table" not in page
    assert "data:image/png" not in page


def test_html_copes_with_malformed_optional_fields():
    report = synthetic_report()
    broken = report["results"][3]  # the differ result, whose separation both writers show
    broken.update({"per_variant": [1, 2], "pairwise": {"a": 1}, "samples": {"bound_ratio": "x"},
                   "skipped_variants": None, "counterexample": "oops", "separation": "far", "duration": "long",
                   "variants": None})
    report["environment"] = {"frameworks": None, "devices": {"torch": "cpu"}, "numeric_modes": [1]}
    report["claims"]["linear_dense"] = None
    report["shards"] = [None, {"name": XSS}]
    page = render_html(report)
    md = render_markdown(report)
    assert XSS not in page
    assert "far" in page and "far" in md


def test_write_html_and_markdown_atomically(tmp_path):
    report = synthetic_report()
    md_path = write_markdown(report, tmp_path / "out" / "report.md")
    html_path = write_html(report, tmp_path / "out" / "report.html")
    assert md_path.read_text(encoding="utf-8") == render_markdown(report)
    assert html_path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "report.md"]  # no temp files
    assert stat.S_IMODE(md_path.stat().st_mode) == 0o644
    # The input is never modified by rendering.
    assert report == synthetic_report() or json.dumps(report, default=str) == json.dumps(synthetic_report(),
                                                                                          default=str)


def test_write_text_atomic_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "report.md"
    write_text_atomic(target, "old\n")

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("layer_conformance.reports.markdown.os.replace", boom)
    with pytest.raises(OSError):
        write_text_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_render_does_not_mutate_input():
    report = synthetic_report()
    snapshot = copy.deepcopy(report)
    render_html(report)
    render_markdown(report)
    assert json.dumps(report, default=str, sort_keys=True) == json.dumps(snapshot, default=str, sort_keys=True)


# --------------------------------------------------------------------------- plots

def test_plots_cope_with_empty_zero_and_bad_samples():
    assert bound_ratio_histogram([]) is None
    assert error_vs_length([]) is None
    empty = {"dtype": "float32", "samples": {"bound_ratio": [], "abs_error": [], "reduction_length": []}}
    assert bound_ratio_histogram([empty]) is None and error_vs_length([empty]) is None
    assert bound_ratio_histogram([{"dtype": "float32"}]) is None  # no samples field at all
    zeros = {"dtype": "float32", "samples": {"bound_ratio": [0.0, 0.0], "abs_error": [0.0, 0.0],
                                             "reduction_length": [1, 2]}}
    assert bound_ratio_histogram([zeros]).startswith(b"\x89PNG")
    assert error_vs_length([zeros]).startswith(b"\x89PNG")
    wide = {"dtype": "float16", "samples": {"bound_ratio": [0.0, 1e-9, 1e-3, 5.0, None, float("nan"), float("inf"),
                                                            "x", True],
                                            "abs_error": [0, 1e-12, 1e-6, 1e-1],
                                            "reduction_length": [1, 10, 1000, 100000, 3]}}
    assert bound_ratio_histogram([wide], title="a $ title with_underscore $x^").startswith(b"\x89PNG")
    assert error_vs_length([wide], title="$$").startswith(b"\x89PNG")
    # Mismatched lengths and junk: pairs are zipped, junk dropped.
    junk = {"samples": {"bound_ratio": ["a", None], "reduction_length": [None, "b", 3]}}
    assert error_vs_length([junk]) is None


def test_claim_plots_returns_data_uris():
    plots = claim_plots(synthetic_report()["results"][:2], title="linear_dense")
    assert plots["errors"] == []
    assert plots["histogram"].startswith("data:image/png;base64,")
    assert plots["scatter"].startswith("data:image/png;base64,")


def test_plots_drawn_in_parallel_processes_are_the_ones_drawn_here():
    results = synthetic_report()["results"]
    jobs = [(results[:2], "first"), (results[2:], "second"), (results[:1], "third")]
    here = [claim_plots(own, title) for own, title in jobs]
    assert drawn_in_processes(jobs, workers=2) == here  # no fallback: really drawn elsewhere
    assert many_claim_plots(jobs, workers=2) == here
    assert many_claim_plots(jobs, workers=1) == here


def test_plots_module_does_not_import_matplotlib_at_import_time():
    import subprocess
    import sys
    from pathlib import Path

    code = "import sys, layer_conformance.reports.plots, layer_conformance.reports.html, layer_conformance.reports.markdown; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "False"


def test_markdown_renders_safely_as_commonmark_tables():
    markdown_it = pytest.importorskip("markdown_it")
    md = render_markdown(synthetic_report())
    rendered = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table").render(md)
    # Hostile text from the report stays text even with raw HTML allowed.
    assert "<script" not in rendered
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered
    # Every matrix row keeps its cell count: a pipe in the data did not split a cell.
    matrix = re.search(r"<h2>Matrix</h2>.*?<table>(.*?)</table>", rendered, flags=re.S).group(1)
    rows = re.findall(r"<tr>(.*?)</tr>", matrix, flags=re.S)
    widths = {len(re.findall(r"<t[hd][ >]", row)) for row in rows}
    assert widths == {7}, widths


def test_headlines_never_call_measurements_a_pass_and_say_why_a_run_is_incomplete():
    report = synthetic_report()
    report["results"] = [dict(r, status="measured") for r in report["results"] if r["status"] == "passed"][:2]
    report["summary"] = {"passed": 0, "failed": 0, "skipped": 0, "error": 0, "measured": 2}
    report["complete"] = False
    report["incomplete"] = {"reason": "keras-jax: wrote no report (pytest killed by SIGSEGV)", "missing": []}
    md, page = render_markdown(report), render_html(report)
    for text in (md, page):
        assert "No check was judged: only measurements and skips." in text
        assert "All checks that ran passed" not in text
        assert "keras-jax: wrote no report (pytest killed by SIGSEGV)" in text
