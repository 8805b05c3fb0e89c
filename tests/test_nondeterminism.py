"""Nondeterminism is its own verdict, in words a reader can act on.

A planted torch (tests/plants/sitecustomize.py) changes what `torch.nn.Linear` returns inside one
test, in a real pytest process with the report plugin:

- jitter: a random tenth of the outputs one ulp up, another tenth each call. Two calls on one input
  differ, and hypothesis' replay of the failing example may pass: the result must be `failed`, its
  reason's first line naming the variant, the difference and the example, never a raw FlakyFailure.
- ulp: every output one ulp up, the same on every call: within the bound, deterministic, `passed`.

No message in report.json, report.md or report.html carries a repr of the harness's own classes.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from layer_conformance.reports.html import write_html
from layer_conformance.reports.markdown import write_markdown
from layer_conformance.reports.messages import HEADLINE_LIMIT, headline
from layer_conformance.reports.schema import load_report

ROOT = Path(__file__).resolve().parent.parent
PLANTS = Path(__file__).resolve().parent / "plants"
TARGET = "test_batch[torch-linear-conv1d-k1-float32-cpu]"
LIMIT_S = 900  # only a hang of the harness reaches it
# what a Python object repr of the harness's classes looks like in text
HARNESS_REPR = re.compile(r"\b(ClaimRunner|Case|Claim|Variant|LayerSpec|VariantStats|ExampleOutcome)\(\w+=|"
                          r"<(suites|adapters|reports)\.[\w.]+ object at 0x|FlakyFailure|ExceptionGroup")


def _run(tmp_path: Path, mode: str) -> dict:
    pytest.importorskip("torch")
    report = tmp_path / "report.json"
    env = dict(os.environ, CONFORMANCE_EXAMPLES="30", CONFORMANCE_SPEED="0", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(PLANTS), str(ROOT)]), PLANT_STATE=str(tmp_path / "plant-state"),
               PLANT_MODE=mode, PLANT_TEST=TARGET)
    for name in ("PYTEST_CURRENT_TEST", "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-m", "pytest", f"suites/test_batch.py::{TARGET}", "-q",
                           "-p", "no:cacheprovider", "--hypothesis-profile", "ci", "--conformance-frameworks", "torch",
                           "--conformance-report", str(report)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=LIMIT_S)
    assert report.is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    assert (tmp_path / "plant-state").read_text() == mode  # the plant was in force
    loaded = load_report(report)
    [row] = loaded["results"]
    row["_output"] = done.stdout[-3000:]
    return loaded


def _messages(report: dict, folder: Path) -> str:
    """Every message field of report.json, and the whole of report.md and report.html."""
    write_markdown(report, folder / "report.md")
    write_html(report, folder / "report.html")
    fields = [str(row.get("reason") or "") for row in report["results"]]
    return "\n".join(fields + [(folder / "report.md").read_text(), (folder / "report.html").read_text()])


def test_a_nondeterministic_variant_fails_with_a_one_line_reason(tmp_path):
    report = _run(tmp_path, "jitter")
    [row] = report["results"]
    assert row["status"] == "failed", row["_output"]
    first = headline(row["reason"])
    assert first == row["reason"].split("\n", 1)[0] and len(first) <= HEADLINE_LIMIT
    assert "torch.Linear is not deterministic: two runs on the same input differ by" in first, row["reason"]
    assert re.search(r"differ by \d\.\d+e-\d+", first) and "example:" in first and "B=" in first, first
    assert not HARNESS_REPR.search(_messages(report, tmp_path))


def test_a_deterministic_one_ulp_change_passes(tmp_path):
    report = _run(tmp_path, "ulp")
    [row] = report["results"]
    assert row["status"] == "passed", (row.get("reason"), row["_output"])
    assert row["examples"] >= 30
