"""Bad input for every `conformance` command: one line on stderr naming the problem and the fix, exit 2.

The matrix is command x case. A case that cannot apply to a command (`run` and `faults` read no
file) is a visible skip with the reason, and `test_file_arguments_are_the_declared_ones` fails as
soon as a command grows a file argument the matrix does not know about. Everything runs in-process
through `layer_conformance.cli.main`; no framework is imported and no suite is started.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from cli_helpers import run_cli
from layer_conformance.adapters.spec import LayerSpec
from layer_conformance.cli import compare, explain, faults, merge, report, repro, run
from layer_conformance.reports.schema import SCHEMA
from layer_conformance.suites.counterexamples import SCHEMA as COUNTEREXAMPLE_SCHEMA, dims_to_json, spec_to_json

COMMANDS = ("run", "compare", "merge", "repro", "faults", "report", "explain")
CASES = ("unknown option", "missing file", "directory", "non-JSON", "truncated", "wrong schema version",
         "newer schema", "empty file", "no results", "unwritable output")

# Every argument of every command, split into the files it reads, the files it writes, and the rest.
ARGUMENTS = {
    # run's --claims names modules (or .py files) that the suites import; it is checked before anything starts
    # (OTHER_BAD_ARGUMENTS), not read by run itself
    "run": ({"out"}, set(), {"help", "profile", "frameworks", "dtypes", "devices", "keras_backends", "no_speed",
                             "timeout", "table", "workers", "pytest_args", "claims"}),
    "compare": ({"output"}, {"baseline", "current"}, {"help", "factor", "allow_skip", "allow_incomplete"}),
    "merge": ({"output"}, {"inputs"}, {"help"}),
    "repro": (set(), {"path"}, {"help", "frameworks"}),
    "faults": ({"out"}, set(), {"help", "faults", "profile", "benign_examples", "quiet"}),
    "report": ({"out"}, {"report"}, {"help"}),
    "explain": (set(), {"output", "reference", "x", "weights", "magnitude"}, {"help", "spec", "dtype", "u_eff"}),
}
PARSERS: dict[str, Callable] = {"run": run.build_parser, "compare": compare.build_parser,
                                "merge": merge.build_parser, "repro": repro.build_parser, "faults": faults.build_parser,
                                "report": report.build_parser, "explain": explain.build_parser}
EXPLAIN_FILES = "reads arrays, not reports: its file cases are tests/test_explain.py's (missing, unreadable, shapes)"


# ---- inputs -------------------------------------------------------------------------------------------

def _report(results: list | None = None, schema: str = SCHEMA) -> dict:
    if results is None:
        results = [{"nodeid": "suites/test_forward.py::test_forward[x-float32-cpu]", "claim": "x", "relation": "equal",
                    "check": "forward", "variants": ["torch.Linear"], "dtype": "float32", "device": "cpu",
                    "status": "passed", "examples": 5, "max_abs_error": 1e-7, "max_bound_ratio": 0.1, "reason": None}]
    return {"schema": schema, "complete": True, "created": "2024-01-01T00:00:00+00:00", "environment": {},
            "claims": {}, "summary": {}, "results": results}


def _counterexample(path: Path, schema: str = COUNTEREXAMPLE_SCHEMA, variants: bool = True) -> Path:
    """A well-formed counterexample file, built without any framework."""
    spec = LayerSpec.dense(2, 3)
    x, kernel, bias = np.ones((1, 1, 2)), np.ones((2, 3)), np.zeros(3)
    meta = {"schema": schema, "nodeid": "suites/test_forward.py::test_forward[xfw-dense-float32-cpu]",
            "claim": "xfw-dense", "dtype": "float32", "device": "cpu", "message": "saved failure",
            "dims": dims_to_json({"B": 1, "L": 1, "K": 2, "N": 3, "spec": spec, "shape": (1, 1, 2)}),
            "variants": [{"label": "torch.Linear", "framework": "torch", "spec": spec_to_json(spec),
                          "failed": True}] if variants else []}
    arrays = {"meta": np.array(json.dumps(meta)), "x": x, "kernel": kernel, "bias": bias}
    if variants:
        arrays.update({"v0_x": x, "v0_kernel": kernel, "v0_bias": bias, "v0_reference": np.ones((1, 1, 3)),
                       "v0_bound": np.ones((1, 1, 3)), "v0_observed": np.ones((1, 1, 3))})
    np.savez(path, **arrays)
    return path


def _text(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _blocked(tmp: Path) -> Path:
    """A path under a regular file: no one can create it, root included."""
    _text(tmp / "a-file", "x")
    return tmp / "a-file" / "sub"


REPORT_FILES: dict[str, Callable[[Path], Path]] = {
    "missing file": lambda tmp: tmp / "missing.json",
    "directory": lambda tmp: (tmp / "a-dir").mkdir() or tmp / "a-dir",
    "non-JSON": lambda tmp: _text(tmp / "notjson.json", "hello, world\n"),
    "truncated": lambda tmp: _text(tmp / "truncated.json", json.dumps(_report())[:100]),
    "wrong schema version": lambda tmp: _text(tmp / "v0.json", json.dumps(_report(schema=SCHEMA[:-1] + "0"))),
    "newer schema": lambda tmp: _text(tmp / "v2.json", json.dumps(_report(schema=SCHEMA[:-1] + "2"))),
    "empty file": lambda tmp: _text(tmp / "empty.json", ""),
    "no results": lambda tmp: _text(tmp / "noresults.json", json.dumps(_report(results=[]))),
}
REPORT_EXPECTED = {  # (problem, fix) as they must appear in the line
    "missing file": ("no such file", "pass the path of a report.json"),
    "directory": ("is a directory", "pass the report.json file"),
    "non-JSON": ("not valid JSON", "re-run the suite"),
    "truncated": ("not valid JSON", "re-run the suite"),
    "wrong schema version": ("old schema", "re-run `conformance run`"),
    "newer schema": ("written by a newer layer-conformance", "upgrade layer-conformance"),
    "empty file": ("the file is empty", "re-run the suite"),
    "no results": ("holds no results", "re-run the suite"),
}
_SCHEMA_BASE, _SCHEMA_VERSION = COUNTEREXAMPLE_SCHEMA.rsplit("/v", 1)
_NEWER_COUNTEREXAMPLE = f"{_SCHEMA_BASE}/v{int(_SCHEMA_VERSION) + 1}"  # one this version cannot read
NPZ_FILES: dict[str, Callable[[Path], Path]] = {
    "missing file": lambda tmp: tmp / "missing.npz",
    "directory": lambda tmp: (tmp / "a-dir").mkdir() or tmp / "a-dir",
    "non-JSON": lambda tmp: _text(tmp / "text.npz", "hello, world\n"),
    "truncated": lambda tmp: _text(tmp / "cut.npz", _counterexample(tmp / "whole.npz").read_bytes()[:200]),
    "wrong schema version": lambda tmp: _counterexample(tmp / "v0.npz", schema=COUNTEREXAMPLE_SCHEMA[:-1] + "0"),
    "newer schema": lambda tmp: _counterexample(tmp / "newer.npz", schema=_NEWER_COUNTEREXAMPLE),
    "empty file": lambda tmp: _text(tmp / "empty.npz", ""),
    "no results": lambda tmp: _counterexample(tmp / "novariants.npz", variants=False),
}
NPZ_EXPECTED = {
    "missing file": ("no such file", "pass the .npz path"),
    "directory": ("is a directory", "pass one counterexample .npz"),
    "non-JSON": ("not an .npz file", "pass a counterexample .npz"),
    "truncated": ("not a readable counterexample .npz", "pass the .npz named in the failure message"),
    "wrong schema version": ("unsupported counterexample schema", "re-run the failing test"),
    "newer schema": ("written by a newer layer-conformance", "upgrade layer-conformance"),
    "empty file": ("not an .npz file", "pass a counterexample .npz"),
    "no results": ("records no variants", "re-run the failing test"),
}
NO_INPUT_FILE = "reads no file (ARGUMENTS declares its arguments; test_file_arguments_are_the_declared_ones checks it)"


def _calls(command: str, case: str, tmp: Path) -> list[tuple[list[str], str, str]]:
    """The command lines for one cell of the matrix, each with the (problem, fix) its error must name."""
    good = _text(tmp / "good.json", json.dumps(_report()))
    if case == "unknown option":
        args = {"run": [], "compare": [str(good), str(good)], "merge": [str(good), "-o", str(tmp / "m.json")],
                "repro": [str(tmp / "x.npz")], "faults": [], "report": [str(good), "--out", str(tmp / "r")],
                "explain": ["--output", "o.npy", "--reference", "r.npy", "--spec", "dense(2, 3)"]}[command]
        return [([command, *args, "--bogus"], "unrecognized arguments: --bogus", f"`conformance {command} --help`")]
    if case == "unwritable output":
        blocked = _blocked(tmp)
        argv = {"run": ["--out", str(blocked)], "faults": ["--out", str(blocked)],
                "compare": [str(good), str(good), "--output", str(blocked / "gate.md")],
                "merge": [str(good), "-o", str(blocked / "merged.json")], "report": [str(good), "--out", str(blocked)]}[command]
        problem = "cannot write to output folder" if command in ("run", "faults", "report") else "cannot write"
        return [([command, *argv], problem, "choose a writable")]
    if command == "compare":
        bad = str(REPORT_FILES[case](tmp))
        return [(["compare", bad, str(good)], *REPORT_EXPECTED[case]),
                (["compare", str(good), bad], *REPORT_EXPECTED[case])]
    if command == "merge":
        bad = str(REPORT_FILES[case](tmp))
        return [(["merge", str(good), bad, "-o", str(tmp / "merged.json")], *REPORT_EXPECTED[case])]
    if command == "repro":
        return [(["repro", str(NPZ_FILES[case](tmp))], *NPZ_EXPECTED[case])]
    if command == "report":
        return [(["report", str(REPORT_FILES[case](tmp)), "--out", str(tmp / "r")], *REPORT_EXPECTED[case])]
    raise AssertionError(f"no input case for {command}")


def _matrix():
    for command in COMMANDS:
        for case in CASES:
            marks = ()
            if command in ("run", "faults") and case not in ("unknown option", "unwritable output"):
                marks = pytest.mark.skip(reason=f"conformance {command} {NO_INPUT_FILE}")
            elif command == "report" and case == "no results":
                marks = pytest.mark.skip(reason="conformance report renders a report without results, as run writes "
                                                "one (the page says 0 results): it draws no verdict")
            elif command == "explain" and case != "unknown option":
                marks = pytest.mark.skip(reason=f"conformance explain {EXPLAIN_FILES}")
            elif command == "repro" and case == "unwritable output":
                marks = pytest.mark.skip(reason="conformance repro writes no file (see "
                                                "test_repro_has_no_output_argument)")
            yield pytest.param(command, case, id=f"{command}-{case.replace(' ', '-')}", marks=marks)


@pytest.fixture
def no_suite_run(monkeypatch):
    """Any attempt to start pytest (run, faults) fails the test: bad input must stop before that."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"a suite was started: {args[0] if args else kwargs}")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    monkeypatch.setattr(subprocess, "call", refuse)


@pytest.mark.parametrize("command, case", list(_matrix()))
def test_bad_input_gives_one_line_and_exit_2(command, case, tmp_path, capsys, no_suite_run):
    for argv, problem, fix in _calls(command, case, tmp_path):
        code, out, err = run_cli(argv, capsys)
        assert code == 2, (argv, code, out, err)
        assert "Traceback" not in err and out == "", (argv, out, err)
        assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
        assert err.startswith(f"conformance {command}: error: "), err
        assert problem in err and fix in err, (problem, fix, err)


def test_file_arguments_are_the_declared_ones():
    """A new argument of any command must be declared in ARGUMENTS (and so get its bad-input cases)."""
    for command, (outputs, inputs, others) in ARGUMENTS.items():
        dests = {action.dest for action in PARSERS[command]()._actions}
        assert dests == outputs | inputs | others, (command, sorted(dests ^ (outputs | inputs | others)))
    assert {c for c, (_, inputs, _) in ARGUMENTS.items() if not inputs} == {"run", "faults"}


def test_repro_has_no_output_argument():
    assert not ARGUMENTS["repro"][0]
    assert "--output" not in repro.build_parser().format_help() and "--out " not in repro.build_parser().format_help()


OTHER_BAD_ARGUMENTS = [
    ([], "no command given"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["run", "--frameworks", "theano"], "--frameworks: unknown theano"),
    (["run", "--dtypes", "float8"], "--dtypes: unknown float8"),
    (["run", "--devices", ""], "--devices is empty"),
    (["run", "-n", "two"], "'two' is not a number of workers"),
    (["run", "--timeout", "soon"], "--timeout: 'soon' is not a number of seconds"),
    (["run", "--keras-backends", "theano"], "unknown Keras backend(s) theano"),
    (["run", "--profile", "fast"], "invalid choice: 'fast'"),
    (["compare", "a.json"], "the following arguments are required: current"),
    (["compare", "a.json", "b.json", "--factor", "0.5"], "must be a finite number greater than 1"),
    (["merge", "a.json"], "the following arguments are required: -o/--output"),
    (["repro"], "the following arguments are required: PATH"),
    (["faults", "--faults", "nonexistent"], "unknown fault(s) nonexistent"),
    (["faults", "--benign-examples", "-3"], "--benign-examples must be >= 0"),
    (["run", "--claims", "no_such_claims_module"], "--claims: cannot find module no_such_claims_module"),
    (["run", "--claims", "missing_claims.py"], "--claims: no such file"),
    (["report"], "the following arguments are required: REPORT.json"),
]


@pytest.mark.parametrize("argv, problem", OTHER_BAD_ARGUMENTS,
                         ids=[" ".join(argv) or "(none)" for argv, _ in OTHER_BAD_ARGUMENTS])
def test_other_bad_arguments_are_one_line_too(argv, problem, tmp_path, capsys, monkeypatch, no_suite_run):
    monkeypatch.chdir(tmp_path)  # `run` and `faults` create their default output folder in the current one
    code, out, err = run_cli(argv, capsys)
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and problem in err, err
    assert err.startswith(f"conformance{' ' + argv[0] if argv and argv[0] in COMMANDS else ''}: error: ")
