"""Derandomized runs give identical reports; the example database lives where it is documented.

The `ci` profile is derandomized (hypothesis then draws from a fixed seed per test and uses no
example database), so two runs of the same selection must write the same results, timings aside.
The control: two runs of the random `dev` profile with different seeds differ, so the comparison
does see the examples. The database location comes from the plugin's profiles, read in a fresh
interpreter for each setting of CONFORMANCE_HYPOTHESIS_DB.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from layer_conformance.reports.schema import load_report

ROOT = Path(__file__).resolve().parent.parent
# cheap: torch only, float64, two claims of the forward check
NODES = ["suites/test_forward.py::test_forward[torch-linear-conv1d-k1-float64-cpu]",
         "suites/test_forward.py::test_forward[xfw-dense-float64-cpu]"]
VOLATILE = {"duration", "created", "timings", "speed"}  # wall-clock figures, nothing an example decides


def _environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "CONFORMANCE_PROFILE", "PYTEST_ADDOPTS")}
    env.update(CONFORMANCE_SPEED="0", PYTHONPATH=str(ROOT), **extra)
    return env


def _run(tmp_path: Path, name: str, *options: str) -> dict[str, Any]:
    report = tmp_path / f"{name}.json"
    done = subprocess.run([sys.executable, "-m", "pytest", *NODES, "-p", "no:xdist", "--conformance-frameworks",
                           "torch", "--conformance-dtypes", "float64", "--conformance-devices", "cpu",
                           "--conformance-report", str(report), *options],
                          cwd=ROOT, env=_environment(CONFORMANCE_HYPOTHESIS_DB="none"), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return load_report(report)


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def test_ci_profile_reports_are_identical(tmp_path):
    pytest.importorskip("torch")
    first = _run(tmp_path, "ci-1", "--hypothesis-profile", "ci")
    second = _run(tmp_path, "ci-2", "--hypothesis-profile", "ci")
    assert [r["nodeid"] for r in first["results"]] == NODES
    assert all(r["status"] == "passed" and r["examples"] == 50 and r["duration"] is not None
               for r in first["results"])
    stable = _stable(first["results"])
    assert json.dumps(stable, sort_keys=True) == json.dumps(_stable(second["results"]), sort_keys=True)
    assert all(len(r["samples"]["bound_ratio"]) == 50 for r in stable)  # the comparison covers every example


def test_random_profile_reports_differ(tmp_path):
    """The control: without derandomizing, the drawn examples (and so the results) change with the seed."""
    pytest.importorskip("torch")
    one = _run(tmp_path, "dev-1", "--hypothesis-profile", "dev", "--hypothesis-seed", "1")
    two = _run(tmp_path, "dev-2", "--hypothesis-profile", "dev", "--hypothesis-seed", "2")
    assert [r["examples"] for r in one["results"]] == [r["examples"] for r in two["results"]]
    assert _stable(one["results"]) != _stable(two["results"])


PROFILES = '''
import json
import layer_conformance.plugin as plugin
from hypothesis import settings
print(json.dumps({name: (lambda db: None if db is None else [type(db).__name__, str(db.path)])(
    settings.get_profile(name).database) for name in plugin.PROFILES}))
'''


@pytest.mark.parametrize("setting, expected", [
    (None, "{tmp}/.hypothesis/examples"),  # the default: hypothesis' own place, in the current directory
    ("{tmp}/cache/examples", "{tmp}/cache/examples"),
    ("relative/db", "{tmp}/relative/db"),  # relative to the current directory
    ("none", None),
])
def test_example_database_location(tmp_path, setting, expected):
    env = _environment()
    env.pop("CONFORMANCE_HYPOTHESIS_DB", None)
    if setting is not None:
        env["CONFORMANCE_HYPOTHESIS_DB"] = setting.format(tmp=tmp_path)
    done = subprocess.run([sys.executable, "-c", PROFILES], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    databases = json.loads(done.stdout.strip().splitlines()[-1])
    assert databases.pop("ci") is None  # derandomized: hypothesis ties it to database=None
    want = None if expected is None else ["DirectoryBasedExampleDatabase", expected.format(tmp=tmp_path.resolve())]
    assert databases == {"dev": want, "thorough": want, "debug": want}


def test_conformance_run_hands_pytest_an_absolute_database_path(tmp_path, monkeypatch):
    """`conformance run` starts pytest in the project folder: a relative path means the caller's folder."""
    from layer_conformance.cli.run import _child_environment

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONFORMANCE_HYPOTHESIS_DB", "cache/examples")
    assert _child_environment(None, False)["CONFORMANCE_HYPOTHESIS_DB"] == str(tmp_path / "cache" / "examples")
    monkeypatch.setenv("CONFORMANCE_HYPOTHESIS_DB", "none")
    assert _child_environment(None, False)["CONFORMANCE_HYPOTHESIS_DB"] == "none"
