"""Open report.html in real headless Chromium: the page must render its matrix and plots from the file
alone (no network, no scripts), show hostile report text as text, and log no errors."""
from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from layer_conformance.reports.html import write_html

XSS = "<script>alert(1)</script>"
# The page has no scripts, so any console message is a problem: a script error, or a CSP refusal of a
# resource the page should not load ("... violates the following Content Security Policy directive").
BROWSER_PROBLEM = re.compile(r"CONSOLE|Uncaught|Refused to|Content Security Policy|ERR_BLOCKED|Not allowed to load|"
                             r"Failed to load resource")
ORANGE = (255, 127, 14)  # matplotlib tab:orange, the float32 series; no CSS colour of the page is near it


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    pytest.skip("chromium not installed: apt-get install chromium (the CI script installs it)")


def _samples(scale: float) -> dict:
    return {"bound_ratio": [scale * (i + 1) for i in range(50)],
            "abs_error": [scale * 1e-4 * (i + 1) for i in range(50)],
            "reduction_length": [1 + 13 * i for i in range(50)]}


def _report() -> dict:
    base = {"check": "forward", "relation": "equal", "device": "cpu", "examples": 50, "reason": None,
            "keras_backend": "jax", "max_abs_error": 5e-6, "max_bound_ratio": 0.05}
    return {
        "schema": "layer-conformance/report/v1", "complete": True, "created": "2024-05-01T12:00:00+00:00",
        "environment": {"python": "3.11", "frameworks": {"torch": "2.3.0"}, "keras_backend": "jax",
                        "devices": {"torch": ["cpu"]}, "numeric_modes": {"torch.allow_tf32": False}},
        "claims": {"linear_dense": {"title": XSS, "relation": "equal", "source": "docs",
                                    "variants": ["torch.Linear", "keras.Dense"]}},
        "results": [
            {**base, "nodeid": "t::a[float32]", "claim": "linear_dense", "dtype": "float32", "status": "passed",
             "samples": _samples(0.001), "variants": ["torch.Linear", "keras.Dense"], "keras_backend": "jax"},
            {**base, "nodeid": "t::a[float16]", "claim": "linear_dense", "dtype": "float16", "status": "failed",
             "samples": _samples(0.06), "variants": ["torch.Linear"],
             "skipped_variants": {"keras.Dense": "float16 unsupported"},
             "reason": XSS, "max_bound_ratio": 3.0,
             "counterexample": {"npz": "ce/a.npz", "script": "ce/a.py", "command": "conformance repro ce/a.npz"}},
        ],
    }


def _run(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-breakpad", "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    chromium = _chromium()
    folder = tmp_path_factory.mktemp("browser")
    page = write_html(_report(), folder / "report.html")
    url = page.resolve().as_uri()
    dom = _run(chromium, folder / "profile-dom", "--virtual-time-budget=5000", "--dump-dom", url)
    shot = folder / "shot.png"
    screenshot = _run(chromium, folder / "profile-shot", "--hide-scrollbars", "--window-size=1280,2400",
                      "--virtual-time-budget=5000", f"--screenshot={shot}", url)
    return {"dom": dom, "screenshot": screenshot, "shot": shot}


def test_dom_has_matrix_and_plots(rendered):
    dom = rendered["dom"].stdout
    assert rendered["dom"].returncode == 0, rendered["dom"].stderr[-2000:]
    table = re.search(r'<table class="matrix" id="matrix-table">(.*?)</table>', dom, flags=re.S)
    assert table, dom[:2000]
    assert len(re.findall(r"<tr>", table.group(1))) == 3  # header + torch.Linear + keras.Dense [jax]
    assert 'class="cell st-failed"' in table.group(1) and 'class="cell st-passed"' in table.group(1)
    images = re.findall(r'<img [^>]*src="data:image/png;base64,[A-Za-z0-9+/=]+"', dom)
    assert len(images) == 2  # histogram and scatter of the one claim


def test_dom_shows_report_text_as_text(rendered):
    dom = rendered["dom"].stdout
    assert "<script" not in dom.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert 'href="ce/a.npz"' in dom


def test_no_browser_errors(rendered):
    for run in (rendered["dom"], rendered["screenshot"]):
        problems = [line for line in run.stderr.splitlines() if BROWSER_PROBLEM.search(line)]
        assert not problems, "\n".join(problems)


def test_screenshot_shows_the_plots(rendered):
    import matplotlib.image as mpimg
    import numpy as np

    assert rendered["screenshot"].returncode == 0, rendered["screenshot"].stderr[-2000:]
    assert rendered["shot"].is_file()
    pixels = mpimg.imread(io.BytesIO(rendered["shot"].read_bytes()), format="png")[..., :3] * 255
    # Decoded plot images draw the float32 series in orange; a broken image would not.
    near_orange = (np.abs(pixels - np.array(ORANGE)) < 40).all(axis=-1).sum()
    assert near_orange > 200, near_orange


# A page beside the report that reads the report's own DOM once it has loaded: the report allows no scripts,
# so the harness frames it (file:// pages share an origin under --allow-file-access-from-files).
PORT_HARNESS = """<!DOCTYPE html><html><body><iframe id="report" src="report.html" width="1280" height="2400"></iframe>
<pre id="out">pending</pre>
<script>
document.getElementById("report").addEventListener("load", function () {
  var out = document.getElementById("out");
  try {
    var doc = this.contentDocument;
    var images = Array.prototype.slice.call(doc.querySelectorAll("img.plot-port"));
    out.textContent = JSON.stringify({
      images: images.map(function (image) { return [image.complete, image.naturalWidth, image.naturalHeight]; }),
      tables: Array.prototype.slice.call(doc.querySelectorAll("table.port-layers")).map(function (table) {
        return table.querySelectorAll("tbody tr").length; }),
      scripts: doc.querySelectorAll("script").length,
      names: Array.prototype.slice.call(doc.querySelectorAll("table.port-layers code")).map(function (code) {
        return code.textContent; })});
  } catch (error) { out.textContent = "error: " + error; }
});
</script></body></html>
"""


def test_port_section_plots_decode_in_the_browser(tmp_path):
    import html as html_lib
    import json

    from test_port_report import XSS as PORT_XSS, port_report

    chromium = _chromium()
    report = write_html(port_report(), tmp_path / "report.html")
    harness = tmp_path / "harness.html"
    harness.write_text(PORT_HARNESS, encoding="utf-8")
    run = _run(chromium, tmp_path / "profile", "--allow-file-access-from-files", "--virtual-time-budget=5000",
               "--dump-dom", harness.resolve().as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.search(r'<pre id="out">(.*?)</pre>', run.stdout, flags=re.S)
    assert found, run.stdout[:2000]
    seen = json.loads(html_lib.unescape(found.group(1)))
    assert len(seen["images"]) == 2
    for complete, width, height in seen["images"]:
        assert complete and width > 0 and height > 0, seen["images"]
    assert seen["tables"] == [3, 4]  # one row per layer of each port
    assert seen["scripts"] == 0 and PORT_XSS in seen["names"]  # the hostile layer name is text, not a script
    problems = [line for line in run.stderr.splitlines() if BROWSER_PROBLEM.search(line)]
    assert not problems, "\n".join(problems)
    assert report.is_file()
