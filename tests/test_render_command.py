"""`conformance report REPORT.json --out DIR`: report.md and report.html from any report, with `run`'s writers."""
from __future__ import annotations

import json

import pytest
from test_compare_merge import make_report, make_result

from layer_conformance.cli import COMMANDS
from cli_helpers import run_cli
from layer_conformance.reports.html import render_html
from layer_conformance.reports.markdown import render_markdown
from layer_conformance.reports.merge import merge_reports
from layer_conformance.reports.schema import load_report


def _merged(tmp_path):
    """A report as CI has it: shards merged by `conformance merge`, one result failed on one shard."""
    first = make_report([make_result("suites/test_forward.py::test_forward[a]"),
                         make_result("suites/test_forward.py::test_forward[b]")])
    second = make_report([make_result("suites/test_forward.py::test_forward[b]", status="failed", ratio=3.0,
                                      reason="bound ratio 3 >= 1 for flax.linen.Dense")])
    path = tmp_path / "merged.json"
    path.write_text(json.dumps(merge_reports([("shard-1", first), ("shard-2", second)])), encoding="utf-8")
    return path


def test_both_commands_are_registered():
    assert "report" in COMMANDS and "explain" in COMMANDS


def test_renders_a_merged_report_with_the_run_writers(tmp_path, capsys):
    path = _merged(tmp_path)
    out_dir = tmp_path / "site" / "conformance"  # created
    code, out, err = run_cli(["report", str(path), "--out", str(out_dir)], capsys)
    assert code == 0 and err == "", err
    assert "report.md" in out and "report.html" in out and "2 results" in out
    report = load_report(path)
    markdown = (out_dir / "report.md").read_text(encoding="utf-8")
    assert markdown == render_markdown(report)
    assert "bound ratio 3 >= 1 for flax.linen.Dense" in markdown and "shard-2" in markdown
    page = (out_dir / "report.html").read_text(encoding="utf-8")
    assert page.lstrip().lower().startswith("<!doctype html") and "test_forward[b]" in page
    assert page == render_html(report)


@pytest.mark.parametrize("case, problem, fix", [
    ("missing", "no such file", "pass the path of a report.json"),
    ("not json", "not valid JSON", "re-run the suite"),
    ("wrong schema", "not a layer-conformance report", "pass a report.json"),
    ("unwritable", "cannot write to output folder", "choose a writable --out"),
    ("no --out", "--out", "--help"),
])
def test_bad_input_is_one_line_and_exit_2(case, problem, fix, tmp_path, capsys):
    path = _merged(tmp_path)
    out_dir = tmp_path / "out"
    if case == "missing":
        path = tmp_path / "nope.json"
    elif case == "not json":
        path.write_text('{"schema": "layer-conformance/report/v1", "results": [', encoding="utf-8")
    elif case == "wrong schema":
        path.write_text(json.dumps({"schema": "something/else", "results": []}), encoding="utf-8")
    elif case == "unwritable":
        (tmp_path / "a-file").write_text("x")
        out_dir = tmp_path / "a-file" / "sub"  # under a regular file: no one can create it
    argv = ["report", str(path)] + ([] if case == "no --out" else ["--out", str(out_dir)])
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == "" and "Traceback" not in err, (code, out, err)
    assert err.count("\n") == 1 and err.startswith("conformance report: error: "), err
    assert problem in err and fix in err, err
    assert not (out_dir / "report.md").exists()
