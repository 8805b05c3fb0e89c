"""A planted failure is reproduced from nothing but what the failing run printed.

A pytest process runs one forward test of the suite with a fault planted in torch (the bias dropped,
for layers with 3 or more outputs only, so that the simplest examples pass) under the `dev` profile
without shrinking: the falsifying example is a random one, not the minimal one any fresh run would
reach too. From its output we take

* the `reproduce: conformance repro PATH` line: the command, run as printed, exits 1 and shows the
  same claim, variant, error and bound ratio;
* the `@reproduce_failure(...)` decorator (hypothesis prints it, `print_blob=True` in every profile):
  applied to the suite's test in a fresh pytest process, with no example database, the test runs that
  one example and fails with the same draws and the same message;
* the example database (CONFORMANCE_HYPOTHESIS_DB): a plain re-run with the same database replays
  the failure with the same draws.
"""
from __future__ import annotations

import ast
import importlib
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from layer_conformance import adapters
from layer_conformance.cli import main as cli_main
from layer_conformance.reports.schema import load_report

ROOT = Path(__file__).resolve().parent.parent
NODE = "suites/test_forward.py::test_forward[xfw-dense-float32-cpu]"

PLANT = '''
"""pytest plugin: torch layers with 3 or more outputs lose their bias; profile `planted` = dev without shrinking."""
import numpy as np
import pytest
from hypothesis import Phase, settings

from layer_conformance import adapters
from layer_conformance.mutation.planting import FaultyAdapter


def drop_wide_bias(spec, weights):
    if spec.out_features >= 3 and "bias" in weights:
        return {**weights, "bias": np.zeros_like(weights["bias"])}
    return weights


def faulty_torch():
    inner = adapters.get_adapter("torch")
    return FaultyAdapter(getattr(inner, "inner", inner), lambda layer, y: y, weights_fault=drop_wide_bias)


@pytest.hookimpl(tryfirst=True)  # before hypothesis loads the profile named on the command line
def pytest_configure(config):
    settings.register_profile("planted", parent=settings.get_profile("dev"),
                              phases=[Phase.explicit, Phase.reuse, Phase.generate])
    adapters._CACHE["torch"] = faulty_torch()
'''

REPLAY = '''
"""pytest plugin: the @reproduce_failure decorator printed by the failing run, applied to the selected test."""
from hypothesis import reproduce_failure

DECORATOR = reproduce_failure(*{args!r})


def pytest_collection_modifyitems(items):
    for item in items:
        DECORATOR(item.function)
'''


def _pytest(tmp: Path, name: str, database: str, *plugins: str) -> tuple[subprocess.CompletedProcess, Path]:
    report = tmp / name / "report.json"
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "CONFORMANCE_PROFILE", "PYTEST_ADDOPTS")}
    env.update(CONFORMANCE_HYPOTHESIS_DB=database, CONFORMANCE_SPEED="0",
               PYTHONPATH=os.pathsep.join([str(tmp), str(ROOT / "tests"), str(ROOT)]))
    command = [sys.executable, "-m", "pytest", NODE, "-p", "no:xdist", "-p", "plant_wide_bias",
               *[arg for plugin in plugins for arg in ("-p", plugin)], "--hypothesis-profile", "planted",
               "--conformance-frameworks", "torch", "--conformance-dtypes", "float32", "--conformance-devices", "cpu",
               "--conformance-report", str(report)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    return done, report


def _draws(output: str) -> list[str]:
    """The falsifying example's draws, as printed (one `Draw N (label): value` per line)."""
    draws = re.findall(r"^(?:E\s+)?(Draw \d+ \(.*)$", output, flags=re.M)
    assert draws, output[-3000:]
    return draws


def _message(output: str) -> str:
    """The harness's failure message, without its `reproduce:` line (the folder differs per run)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"E\s+AssertionError: claim xfw-dense", line))
    body = []
    for line in lines[start:]:
        text = re.sub(r"^E\s{7}", "", line).removeprefix("AssertionError: ")
        if not line.startswith("E") or "reproduce: conformance repro" in text:
            break
        body.append(text)
    return "\n".join(body)


@pytest.fixture(scope="module")
def failing_run(tmp_path_factory):
    pytest.importorskip("torch")
    tmp = tmp_path_factory.mktemp("planted")
    (tmp / "plant_wide_bias.py").write_text(PLANT)
    done, report_path = _pytest(tmp, "first", str(tmp / "db"))
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    report = load_report(report_path)
    (row,) = [r for r in report["results"] if r["check"] == "forward"]
    assert row["status"] == "failed" and row["examples"] > 1, row  # not the first (simplest) example
    return {"tmp": tmp, "output": output, "row": row}


def test_the_output_says_how_to_reproduce(failing_run):
    output = failing_run["output"]
    assert "torch.Linear exceeds the error bound" in output
    assert re.search(r"^E\s+reproduce: conformance repro \S+\.npz$", output, flags=re.M)
    assert re.search(r"@reproduce_failure\('[\d.]+', b'[A-Za-z0-9+/=]+'\)", output)
    spec = re.search(r"Draw 1 \(dims\): .*out_features=(\d+),.*bias=True", output)
    assert spec and int(spec.group(1)) >= 3  # the planted fault, not the simplest example, failed


def test_printed_repro_command_reproduces(failing_run, monkeypatch, capsys):
    output = failing_run["output"]
    command = shlex.split(re.search(r"^E\s+reproduce: (conformance repro .+)$", output, flags=re.M).group(1))
    assert command[:2] == ["conformance", "repro"]
    monkeypatch.syspath_prepend(str(failing_run["tmp"]))
    plant = importlib.import_module("plant_wide_bias")
    monkeypatch.setitem(adapters._CACHE, "torch", plant.faulty_torch())  # the fault is in this process too

    code = cli_main(command[1:])  # as printed: every framework's variant is re-run
    out, err = capsys.readouterr()
    assert code == 1 and err == "", out + err
    assert "claim:   xfw-dense (equal)" in out and "dtype:   float32    device: cpu" in out
    message = _message(output)
    assert textwrap.indent(message, "    ") in out  # the saved failure is the one pytest printed
    printed = next(line.strip() for line in message.splitlines() if "torch.Linear exceeds" in line)
    rerun = out.split("the failure reproduces:", 1)[1].strip().splitlines()
    assert [line.strip() for line in rerun] == [printed]  # recomputed: same variant, error, ratio and index
    error, ratio = re.search(r"max \|y - y_ref\| = (\S+) is (\S+)x", printed).groups()
    assert re.search(rf"^  torch\.Linear\s+{re.escape(error)}\s+{re.escape(ratio)}\s+{re.escape(ratio)}\s+FAIL$",
                     out, flags=re.M), out


def test_printed_blob_fails_again_with_the_same_example(failing_run):
    tmp, output = failing_run["tmp"], failing_run["output"]
    args = ast.literal_eval("(" + re.search(r"@reproduce_failure\((.*?)\) as a decorator", output).group(1) + ",)")
    assert isinstance(args[0], str) and isinstance(args[1], bytes)
    (tmp / "replay_blob.py").write_text(REPLAY.format(args=args))
    done, report_path = _pytest(tmp, "blob", "none", "replay_blob")  # no database: only the blob can help
    again = done.stdout + done.stderr
    assert done.returncode == 1, again[-3000:]
    assert _draws(again) == _draws(output)
    assert _message(again) == _message(output)
    (row,) = [r for r in load_report(report_path)["results"] if r["check"] == "forward"]
    assert row["status"] == "failed" and row["examples"] == 1  # exactly the printed example, nothing drawn anew
    assert row["max_abs_error"] == failing_run["row"]["max_abs_error"]


def test_example_database_replays_the_failure(failing_run):
    tmp, output = failing_run["tmp"], failing_run["output"]
    assert any(path.is_file() for path in (tmp / "db").rglob("*"))  # saved where CONFORMANCE_HYPOTHESIS_DB says
    done, _ = _pytest(tmp, "database", str(tmp / "db"))
    again = done.stdout + done.stderr
    assert done.returncode == 1, again[-3000:]
    assert _draws(again) == _draws(output) and _message(again) == _message(output)
