"""The `conformance` command: fast start-up, clear errors, and a real (small) run end to end."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from layer_conformance.cli import main
from layer_conformance.reports.schema import load_report

FRAMEWORK_MODULES = ("torch", "tensorflow", "keras", "jax", "flax")


def test_help_and_compare_import_no_framework(tmp_path):
    """`conformance --help` and `compare` must stay fast: no framework import."""
    report = {"schema": "layer-conformance/report/v1", "complete": True, "environment": {}, "results": []}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    code = (
        "import sys\n"
        "from layer_conformance.cli import main\n"
        "for argv in (['--help'], ['compare', '--help'], ['compare', sys.argv[1], sys.argv[1]]):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"loaded = [m for m in {FRAMEWORK_MODULES!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_run_refuses_an_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as info:
        main(["run", "--out", str(blocker / "sub")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "cannot write to output folder" in err and "Traceback" not in err


def test_run_refuses_an_unknown_backend(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--out", str(tmp_path), "--keras-backends", "theano"])
    assert info.value.code == 2 and "unknown Keras backend(s) theano" in capsys.readouterr().err


def test_run_writes_the_report_and_prints_the_table(tmp_path):
    """A real, small run: one claim family, one dtype, the debug profile, one Keras backend."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "layer_conformance", "run", "--out", str(out), "--profile", "debug", "--dtypes", "float32",
         "--devices", "cpu", "--keras-backends", "tensorflow", "--table", "--", "-k", "xfw-dense or differ-view"],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "xfw-dense" in done.stdout and "differ-view-instead-of-permute" in done.stdout
    report = load_report(out / "report.json")
    statuses = {(r["claim"], r["check"]): r["status"] for r in report["results"]}
    assert statuses[("xfw-dense", "forward")] == "passed"
    assert statuses[("differ-view-instead-of-permute", "forward")] == "passed"
    assert (out / "report.md").is_file() and (out / "report.html").is_file()


def test_merged_shards_equal_a_single_run(tmp_path):
    """Shards split by dtype, merged, hold exactly the results of one run over both dtypes."""
    from layer_conformance.reports.merge import merge_reports

    root = Path(__file__).resolve().parent.parent

    def run(name: str, dtypes: str) -> dict:
        path = tmp_path / f"{name}.json"
        subprocess.run([sys.executable, "-m", "pytest", "suites/test_forward.py", "-q", "-p", "no:xdist",
                        "--hypothesis-profile", "debug", "-k", "torch-linear-conv1d-k1", "--conformance-devices", "cpu",
                        "--conformance-dtypes", dtypes, "--conformance-report", str(path)],
                       cwd=root, capture_output=True, text=True, timeout=600)
        return load_report(path)

    merged = merge_reports([("a", run("a", "float32")), ("b", run("b", "float64"))])
    single = run("single", "float32,float64")
    as_set = lambda report: {(r["nodeid"], r["check"], r["status"]) for r in report["results"]}  # noqa: E731
    assert as_set(merged) == as_set(single) and len(merged["results"]) == len(single["results"]) == 4


def test_later_backends_rerun_keras_beside_the_framework_it_runs_on():
    from layer_conformance.cli.run import shard_frameworks

    assert shard_frameworks(None, "tensorflow", True) is None  # the first run: everything
    assert shard_frameworks(["torch", "keras"], "jax", True) == ["torch", "keras"]
    assert shard_frameworks(None, "jax", False) == ["keras", "flax.linen", "flax.nnx"]
    assert shard_frameworks(None, "torch", False) == ["torch", "keras"]
    assert shard_frameworks(None, "tensorflow", False) == ["torch", "keras"]
    assert shard_frameworks(["keras", "torch"], "jax", False) == ["keras"]
