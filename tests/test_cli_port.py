"""`conformance port` end to end: the real command in child processes, every exit status.

0 every port within its bounds, 1 a port failed (a planted mistake, a hand-made wrong port), 2 bad
input (one line on stderr, no traceback), 3 nothing failed but a comparison had no finite bound
(measured, not judged). The reports it writes (report.json, .md, .html, counterexamples) are read
back, the printed repro command is run, and `conformance compare` gates a passing report against a
planted-mistake one.

The model files are written into a temporary folder; the runs start together in a small pool when
the module's first test asks for one (each child imports its frameworks, which is most of its time).
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from layer_conformance.reports.schema import SCHEMA

TESTS = Path(__file__).resolve().parent
TIMEOUT = 600
PORT_CHECKS = {"port-isolated", "port-propagated", "port-gradient", "port-output"}

MLP = '''\
import torch
from torch import nn

INPUT_SHAPE = (8,)


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
'''
# a hand-made port of MLP: the source's weights, the second Linear's bias dropped
WRONG_PORT = '''\
import torch

from mlp import model as source


def port():
    ported = source()
    with torch.no_grad():
        ported[2].bias.zero_()
    return ported
'''
TCN = '''\
from port_models import tcn

INPUT_SHAPE = (4, 32)
'''
# one Linear reducing over 4096 terms in bfloat16: the worst-case bound gamma(4097, 2^-8) is infinite
BFLOAT16 = '''\
import torch
from torch import nn

INPUT_SHAPE = (4096,)


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4096, 4)).to(torch.bfloat16).eval()
'''
BATCHNORM = '''\
from torch import nn

INPUT_SHAPE = (3, 16)


def model():
    return nn.Sequential(nn.Conv1d(3, 8, 3), nn.BatchNorm1d(8), nn.ReLU()).eval()
'''
# a dataclass under postponed annotations looks its module up in sys.modules while the file is imported
ANNOTATED = '''\
from __future__ import annotations

import dataclasses

import torch
from torch import nn

INPUT_SHAPE = (8,)


@dataclasses.dataclass
class Widths:
    hidden: int = 16


def model():
    torch.manual_seed(0)
    widths = Widths()
    return nn.Sequential(nn.Linear(8, widths.hidden), nn.Tanh(), nn.Linear(widths.hidden, 4)).eval()
'''
FILES = {"mlp.py": MLP, "other.py": WRONG_PORT, "tcn.py": TCN, "bf16.py": BFLOAT16, "batchnorm.py": BATCHNORM,
         "annotated.py": ANNOTATED, "nomodel.py": "WIDTH = 8\n", "raises.py": "raise RuntimeError('broken on import')\n",
         "callraises.py": "def model():\n    raise RuntimeError('broken when built')\n"}

# exit 2: (arguments, what the one line on stderr must say); paths relative to the folder of model files
BAD = {
    "missing file": (["missing.py", "--to", "torch"], "no such file"),
    "no model in the file": (["nomodel.py", "--to", "torch"], "defines no model"),
    "import raises": (["raises.py", "--to", "torch"], "importing it raised RuntimeError: broken on import"),
    "model() raises": (["callraises.py", "--to", "torch"], "calling model() raised RuntimeError: broken when built"),
    "unknown --to": (["mlp.py", "--to", "torch,tensorflow"], "unknown framework tensorflow"),
    "--input-shape not ints": (["mlp.py", "--to", "torch", "--input-shape", "8,x"], "--input-shape '8,x'"),
    "--input-shape negative": (["mlp.py", "--to", "torch", "--input-shape", "-1"], "--input-shape '-1'"),
    "unsupported module": (["batchnorm.py", "--to", "keras"], "BatchNorm1d at '1'"),
    "--plant without --to": (["mlp.py", "--target", "other.py:port", "--plant", "bias-dropped"], "use it with --to"),
    "--plant unknown mistake": (["mlp.py", "--to", "torch", "--plant", "typo"], "unknown mistake 'typo'"),
    "--plant layer out of range": (["mlp.py", "--to", "torch", "--plant", "bias-dropped:9"], "layers 1 to 2"),
    "--target and --to": (["mlp.py", "--to", "torch", "--target", "other.py:port"], "not allowed with"),
    "neither --target nor --to": (["mlp.py"], "--to --target is required"),
    "--target missing": (["mlp.py", "--target", "gone.py:port"], "--target gone.py: no such file"),
    "unwritable --out": (["mlp.py", "--to", "torch", "--out", "a-file/report"], "cannot write to output folder"),
    "nothing to compare": (["mlp.py", "--to", "torch", "--examples", "0"], "nothing would be compared"),
    "--inputs of the wrong shape": (["mlp.py", "--to", "torch", "--inputs", "wide.npy"], "array 0 has shape (2, 5)"),
    "--inputs unreadable": (["mlp.py", "--to", "torch", "--inputs", "gone.npy"], "cannot read inputs"),
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), *filter(None, [env.get("PYTHONPATH")])])  # port_models
    return env


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "layer_conformance", *args]


class Runs:
    """Every run this module makes, started together; `get(name)` waits for one."""

    def __init__(self, folder: Path):
        self.folder = folder
        for name, text in FILES.items():
            (folder / name).write_text(text)
        (folder / "a-file").write_text("not a folder")
        np.save(folder / "wide.npy", np.zeros((2, 5), np.float32))
        np.save(folder / "mine.npy", np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8))
        quick = ["--examples", "3"]
        self.jobs: dict[str, list[str]] = {
            "passed": ["mlp.py", "--to", "torch,flax.nnx", *quick, "--out", "passed"],
            "planted": ["tcn.py:tcn", "--to", "keras", "--plant", "kernel-transpose:2", *quick, "--out", "planted"],
            "baseline": ["tcn.py:tcn", "--to", "keras", *quick, "--out", "baseline"],
            "wrong port": ["mlp.py", "--target", "other.py:port", *quick, "--out", "wrong-port"],
            "bfloat16": ["bf16.py", "--to", "torch", *quick, "--out", "bf16"],
            "bfloat16 forward": ["bf16.py", "--to", "torch", "--no-gradients", *quick, "--out", "bf16-forward"],
            "own inputs only": ["mlp.py", "--to", "torch", "--examples", "0", "--inputs", "mine.npy", "--out", "mine"],
            "annotated": ["annotated.py", "--to", "torch", "--examples", "2", "--out", "annotated"],
            **{f"bad: {case}": [*args, *([] if "--out" in args else ["--out", "bad"])]
               for case, (args, _) in BAD.items()},
        }
        self.pool = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 1)))
        self.futures: dict[str, Future] = {name: self.pool.submit(self._port, args) for name, args in self.jobs.items()}

    def _port(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(_command("port", *args), cwd=self.folder, env=_env(), capture_output=True, text=True,
                              timeout=TIMEOUT)

    def get(self, name: str) -> subprocess.CompletedProcess[str]:
        return self.futures[name].result()

    def report(self, out: str) -> dict:
        return json.loads((self.folder / out / "report.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    started = Runs(tmp_path_factory.mktemp("port-cli"))
    yield started
    started.pool.shutdown(wait=True, cancel_futures=True)


def _explain(done: subprocess.CompletedProcess[str]) -> str:
    return f"exit {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"


def _no_leftovers(out: Path) -> None:
    """Atomic writes leave no temporary files behind."""
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


# ---- exit 0 -------------------------------------------------------------------------------------------

def test_correct_ports_pass_and_the_reports_are_written(runs: Runs) -> None:
    done = runs.get("passed")
    assert done.returncode == 0, _explain(done)
    assert "Traceback" not in done.stderr
    out = runs.folder / "passed"
    report = runs.report("passed")
    assert report["schema"] == SCHEMA == "layer-conformance/report/v1"
    assert report["complete"] is True  # the last write; the ones after each port say false
    assert report["command"][:2] == ["conformance", "port"]
    assert [p["target"]["framework"] for p in report["port"]] == ["torch", "flax.nnx"]
    for entry in report["port"]:
        assert entry["status"] == "passed" and entry["examples"] == 3 and entry["first_failure"] is None
        assert len(entry["layers"]) == 2
        for layer in entry["layers"]:
            ratios = [layer["isolated"], layer["propagated"], *layer["gradient"].values()]
            assert set(layer["gradient"]) == {"kernel", "bias"}
            assert all(r is not None and 0 <= r <= 1 for r in ratios), layer  # finite, judged, within the bound
        assert 0 <= entry["output"]["max_bound_ratio"] <= 1
        assert 0 <= entry["input_gradient"]["max_bound_ratio"] <= 1
    rows = report["results"]
    assert {row["check"] for row in rows} == PORT_CHECKS
    assert {row["status"] for row in rows} == {"passed"}
    assert report["summary"]["passed"] == len(rows) and len(rows) == 2 * (2 * 4 + 2)  # per port: 2 layers x 4, out, dx
    assert "Model ports" in (out / "report.md").read_text()
    assert "data:image/png" in (out / "report.html").read_text()
    assert not list(out.glob("counterexamples/*.npz"))  # nothing failed, nothing saved
    _no_leftovers(out)
    assert "passed: model: every layer within its bound over 3 examples" in done.stdout


def test_own_inputs_alone_are_compared(runs: Runs) -> None:
    """--examples 0 with --inputs: the user's examples are the comparisons (and they pass)."""
    done = runs.get("own inputs only")
    assert done.returncode == 0, _explain(done)
    entry = runs.report("mine")["port"][0]
    assert entry["examples"] == 1 and entry["status"] == "passed"


def test_a_model_file_with_a_dataclass_under_postponed_annotations_loads(runs: Runs) -> None:
    done = runs.get("annotated")
    assert done.returncode == 0, _explain(done)


# ---- exit 1 -------------------------------------------------------------------------------------------

def test_planted_mistake_fails_at_its_layer_with_a_diagnosis(runs: Runs) -> None:
    done = runs.get("planted")
    assert done.returncode == 1, _explain(done)
    assert "Traceback" not in done.stderr
    out = done.stdout
    assert "tcn: torch → keras" in out
    header = next(line for line in out.splitlines() if "isolated" in line and "propagated" in line)
    assert "layer" in header and "gradients" in header  # the per-layer table
    marked = [line.split() for line in out.splitlines() if line.rstrip().endswith("<-")]
    assert len(marked) == 1 and marked[0][0] == "2", out  # layer 2, the first over its bound, is marked
    assert "failed: layer 2 (Conv1d 16->16" in out and "network.0.conv2" in out
    assert "consistent with missing kernel transpose" in out
    assert "counterexample:" in out and "repro:" in out

    entry = runs.report("planted")["port"][0]
    failure = entry["first_failure"]
    assert entry["status"] == "failed" and failure["layer"] == 2 and failure["mode"] == "isolated"
    assert failure["diagnosis"]["mistake"] == "kernel-transpose" and failure["diagnosis"]["ratio"] <= 1
    for layer in entry["layers"][:1]:  # before the mistake: within the bound
        assert layer["isolated"] <= 1 and layer["propagated"] <= 1
    saved = sorted(p.name for p in (runs.folder / "planted" / "counterexamples").iterdir())
    assert saved == ["port-tcn-keras-layer02.npz", "port-tcn-keras-layer02.py"]
    assert Path(failure["counterexample"]).name == "port-tcn-keras-layer02.npz"
    rows = {row["nodeid"]: row for row in runs.report("planted")["results"]}
    assert rows["port::tcn::torch->keras::layer02::isolated"]["status"] == "failed"
    assert rows["port::tcn::torch->keras::layer01::isolated"]["status"] == "passed"


def test_printed_repro_command_replays_the_failure(runs: Runs) -> None:
    """The printed command, run where the port was run (its path is --out's, here relative), exits 1."""
    done = runs.get("planted")
    line = next(line for line in done.stdout.splitlines() if line.strip().startswith("repro:"))
    command = shlex.split(line.split("repro:", 1)[1])
    assert command[0] == "python" and command[1].endswith("port-tcn-keras-layer02.py"), line
    replay = subprocess.run([sys.executable, *command[1:]], cwd=runs.folder, env=_env(), capture_output=True, text=True,
                            timeout=TIMEOUT)
    assert replay.returncode == 1, _explain(replay)
    assert "layer 2" in replay.stdout and "exceeds the bound" in replay.stdout


def test_hand_made_wrong_port_fails_and_names_the_layer(runs: Runs) -> None:
    done = runs.get("wrong port")
    assert done.returncode == 1, _explain(done)
    assert "model: torch → torch" in done.stdout
    assert "failed: layer 2 (Dense 16->4)" in done.stdout
    assert "consistent with the bias dropped" in done.stdout
    entry = runs.report("wrong-port")["port"][0]
    assert entry["first_failure"]["layer"] == 2 and entry["first_failure"]["diagnosis"]["mistake"] == "bias-dropped"
    assert entry["layers"][0]["status"] == "passed" and entry["layers"][1]["status"] == "failed"
    assert list((runs.folder / "wrong-port" / "counterexamples").glob("*layer02.npz"))


def test_compare_flags_the_planted_report_against_the_passing_one(runs: Runs) -> None:
    base = runs.get("baseline")
    assert base.returncode == 0, _explain(base)
    assert runs.get("planted").returncode == 1
    done = subprocess.run(_command("compare", "baseline/report.json", "planted/report.json"), cwd=runs.folder,
                          env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1, _explain(done)
    assert "REGRESSION" in done.stdout
    assert "`port::tcn::torch->keras::layer02::isolated`" in done.stdout
    assert "passed → failed" in done.stdout
    same = subprocess.run(_command("compare", "baseline/report.json", "baseline/report.json"), cwd=runs.folder,
                          env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert same.returncode == 0, _explain(same)


# ---- exit 2 -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_exit_2(runs: Runs, case: str) -> None:
    done = runs.get(f"bad: {case}")
    assert done.returncode == 2, _explain(done)
    assert "Traceback" not in done.stderr, _explain(done)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("conformance port"), _explain(done)
    assert BAD[case][1] in lines[0], _explain(done)
    if case == "unsupported module":
        assert "torch.nn.BatchNorm1d" in lines[0]  # the class, and where it sits ('1')
    assert not (runs.folder / "bad" / "report.json").exists()  # refused before any port ran


# ---- exit 3 -------------------------------------------------------------------------------------------

FORWARD = ("::isolated", "::propagated", "::output")


def test_unjudgeable_comparison_is_measured_not_passed(runs: Runs) -> None:
    done = runs.get("bfloat16")
    assert done.returncode == 3, _explain(done)
    assert "measured:" in done.stdout and "this is a measurement, not a pass" in done.stdout
    report = runs.report("bf16")
    assert report["complete"] is True
    entry = report["port"][0]
    assert entry["dtype"] == "bfloat16" and entry["status"] == "measured"
    assert entry["layers"][0]["isolated"] is None and entry["layers"][0]["propagated"] is None
    assert entry["output"]["max_bound_ratio"] is None
    rows = report["results"]
    assert "failed" not in {row["status"] for row in rows}
    forward = [row for row in rows if row["nodeid"].endswith(FORWARD)]
    assert len(forward) == 3 and {row["status"] for row in forward} == {"measured"}
    assert all(row["max_bound_ratio"] is None and row["max_abs_error"] > 0 for row in forward)
    # the gradients reduce over 4 terms at most (the batch, the 4 outputs): their bounds are finite and judged
    assert all(row["status"] == "passed" for row in rows if row["check"] == "port-gradient")


def test_unjudgeable_forward_only_report_has_no_passed_row(runs: Runs) -> None:
    done = runs.get("bfloat16 forward")
    assert done.returncode == 3, _explain(done)
    rows = runs.report("bf16-forward")["results"]
    assert rows and {row["status"] for row in rows} == {"measured"}
    assert {row["check"] for row in rows} == {"port-isolated", "port-propagated", "port-output"}


# ---- the command line itself ----------------------------------------------------------------------------

def test_help_lists_the_options(tmp_path: Path) -> None:
    done = subprocess.run(_command("port", "--help"), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert done.returncode == 0, _explain(done)
    assert done.stdout.startswith("usage: conformance port")
    for option in ("--to", "--target", "--input-shape", "--examples", "--batch", "--inputs", "--no-gradients",
                   "--plant", "--name", "--out"):
        assert option in done.stdout, option
    for mistake in ("kernel-transpose", "bias-dropped", "flatten-order"):
        assert mistake in done.stdout
    assert "exit status: 0" in " ".join(done.stdout.split()) and "3 nothing failed" in " ".join(done.stdout.split())


@pytest.mark.skipif(os.name == "nt", reason="SIGINT to a child process is POSIX")
def test_interrupted_run_leaves_a_whole_report_marked_incomplete(runs: Runs, tmp_path: Path) -> None:
    """Ctrl-C during the second port: exit 130, and report.json is the whole report of the first (complete: false),
    never a half-written file; `conformance compare` refuses it as incomplete."""
    (tmp_path / "mlp.py").write_text(MLP)
    child = subprocess.Popen(_command("port", "mlp.py", "--to", "torch,flax.nnx", "--examples", "40", "--out", "out"),
                             cwd=tmp_path, env={**_env(), "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # even under nohup
    try:
        assert child.stdout is not None
        for line in child.stdout:
            if line.strip().startswith("passed:"):  # the first port is done and its report written
                child.send_signal(signal.SIGINT)
                break
        rest, err = child.communicate(timeout=TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, err
    assert "conformance port: interrupted" in err and "Traceback" not in err
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())  # whole JSON
    assert report["schema"] == SCHEMA and report["complete"] is False
    assert [p["target"]["framework"] for p in report["port"]] == ["torch"]
    assert {row["status"] for row in report["results"]} == {"passed"}
    _no_leftovers(out)
    passed = runs.get("passed")
    assert passed.returncode == 0
    done = subprocess.run(_command("compare", str(runs.folder / "passed" / "report.json"), str(out / "report.json")),
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1, _explain(done)


# a model file that also breaks one framework the way native bugs do: its layer calls abort the process (or
# hang) on a batch of 3 or more, in the process of that port only
BREAKS = '''\
import os
import time

import torch
from torch import nn

from layer_conformance.suites.port import execute

INPUT_SHAPE = (8,)
_node = execute.Executor.node


def _broken(self, index, ins):
    if self.framework == os.environ.get("BREAK_FRAMEWORK") and self.graph.nodes[index].op == "layer":
        if len(ins[0]) >= 3:
            if os.environ.get("BREAK_HOW") == "hang":
                time.sleep(3600)
            os.abort()
    return _node(self, index, ins)


execute.Executor.node = _broken


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
'''


@pytest.mark.parametrize("how", ["abort", "hang"])
def test_a_crashing_or_hanging_framework_costs_its_port_only(tmp_path: Path, how: str) -> None:
    """A port whose framework aborts (or hangs past --timeout) is an error row naming why and the input it was on,
    with a command that repeats it; the other ports run on, the report is complete, and the exit status is 1."""
    (tmp_path / "breaks.py").write_text(BREAKS)
    env = {**_env(), "BREAK_FRAMEWORK": "flax.nnx", "BREAK_HOW": how}
    done = subprocess.run(_command("port", "breaks.py", "--to", "torch,flax.nnx,flax.linen", "--examples", "6",
                                   "--batch", "3,4", "--timeout", "60", "--out", "out"),
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 1, _explain(done)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["complete"] is True
    assert [p["target"]["framework"] for p in report["port"]] == ["torch", "flax.linen"]
    assert all(p["status"] == "passed" for p in report["port"])
    errors = [row for row in report["results"] if row["status"] == "error"]
    assert len(errors) == 1 and "flax.nnx" in errors[0]["nodeid"], errors
    reason = errors[0]["reason"]
    assert ("SIGABRT" if how == "abort" else "hung") in reason, reason
    saved = Path("out", "counterexamples", "port-model-flax.nnx-crash.npy")  # the model is breaks.py's `model`
    assert (tmp_path / saved).exists() and f"--inputs {saved}" in reason, reason
    assert np.load(tmp_path / saved).shape[1:] == (8,)
    if how == "abort":  # the command in the reason repeats the crash
        repeat = shlex.split(reason.split("reproduce: ")[1])
        assert repeat[:2] == ["conformance", "port"], reason
        again = subprocess.run(_command(*repeat[1:], "--out", "again"), cwd=tmp_path,
                               env=env, capture_output=True, text=True, timeout=TIMEOUT)
        assert again.returncode == 1 and "SIGABRT" in again.stderr, _explain(again)
