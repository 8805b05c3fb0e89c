"""The upgrade gate: `conformance compare` fails on anything that got worse; tox and the workflow fail
when a side has no complete report. One self-test per regression kind, on synthetic reports."""
from __future__ import annotations

import configparser
import copy
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from layer_conformance.cli import compare
from layer_conformance.reports.compare import compare_reports
from test_compare_merge import make_report, make_result, run_compare

ROOT = Path(__file__).resolve().parent.parent
NODE = "suites/test_linear.py::test_forward[0]"


def passed_row(nodeid: str = NODE, **extra: Any) -> dict[str, Any]:
    """A passing row that measured two variants, as the harness records them."""
    per_variant = {"torch.Linear": {"max_abs_error": 1e-7, "max_bound_ratio": 0.1, "examples": 50},
                   "flax.linen.Dense": {"max_abs_error": 2e-7, "max_bound_ratio": 0.2, "examples": 50}}
    return make_result(nodeid, per_variant=per_variant, **extra)


def divergence(observed: bool | None = True, **extra: Any) -> dict[str, Any]:
    entry = {"id": "tf-bf16-nan", "framework": "keras", "versions": {"tensorflow": ">=2.21,<2.22"},
             "kind": "numeric", "summary": "NaN kernel gradient in bf16", "evidence": "7 of 20 runs gave NaN",
             "ceiling": "NaN only; finite values judged", "observed": observed, "exceeded_ceiling": False}
    entry.update(extra)
    return entry


def with_divergences(report: dict[str, Any], *entries: dict[str, Any]) -> dict[str, Any]:
    report["divergences"] = list(entries)
    return report


def exits_1_naming(capsys, tmp_path, baseline, current, *names: str, args: tuple[str, ...] = ()) -> str:
    __tracebackhide__ = True
    code, out, err = run_compare(capsys, tmp_path, baseline, current, *args)
    assert code == 1, out
    assert "REGRESSION" in out
    for name in names:
        assert name in out, (name, out)
    return out


# ----------------------------------------------------------------------------- skips


def test_passed_to_skipped_is_a_regression(capsys, tmp_path):
    current = make_report([make_result(NODE, status="skipped", ratio=None, reason="keras could not be imported")])
    exits_1_naming(capsys, tmp_path, make_report([passed_row()]), current,
                   "passed → skipped", NODE, "keras could not be imported", "--allow-skip")


def test_allowed_skip_is_listed_not_a_regression(capsys, tmp_path):
    current = make_report([make_result(NODE, status="skipped", ratio=None, reason="needs a GPU (cuda)")])
    code, out, _ = run_compare(capsys, tmp_path, make_report([passed_row()]), current, "--allow-skip", "gpu",
                               "--allow-skip", "GPU")
    assert code == 0, out
    assert "## Allowed skips (1)" in out and NODE in out and "`GPU`" in out


def test_allow_skip_pattern_that_does_not_match_still_fails(capsys, tmp_path):
    current = make_report([make_result(NODE, status="skipped", ratio=None, reason="needs a GPU (cuda)")])
    exits_1_naming(capsys, tmp_path, make_report([passed_row()]), current, "passed → skipped",
                   args=("--allow-skip", "tpu"))


def test_allow_skip_must_be_a_regex(capsys):
    with pytest.raises(SystemExit) as exc:
        compare.main(["a.json", "b.json", "--allow-skip", "gpu("])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "'gpu(' is not a regular expression" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- variants


def test_variant_no_longer_measured_is_a_regression(capsys, tmp_path):
    current = copy.deepcopy(make_report([passed_row()]))
    row = current["results"][0]
    del row["per_variant"]["flax.linen.Dense"]
    row["skipped_variants"] = {"flax.linen.Dense": "flax could not be imported"}
    out = exits_1_naming(capsys, tmp_path, make_report([passed_row()]), current,
                         "variant flax.linen.Dense no longer measured: flax could not be imported", NODE,
                         "1 variant no longer measured in a row that still passes")
    assert "## Skips changed" not in out  # the skip that explains it is not listed a second time


def test_variant_dropped_from_the_names_when_no_per_variant_numbers(capsys, tmp_path):
    baseline = make_report([make_result(NODE, variants=["torch.Linear", "keras.Dense"])])
    current = make_report([make_result(NODE, variants=["torch.Linear"])])
    exits_1_naming(capsys, tmp_path, baseline, current, "variant keras.Dense no longer measured")


def test_dropped_variant_with_an_allowed_reason_is_listed(capsys, tmp_path):
    current = copy.deepcopy(make_report([passed_row()]))
    row = current["results"][0]
    del row["per_variant"]["flax.linen.Dense"]
    row["skipped_variants"] = {"flax.linen.Dense (some examples)": "flax not selected (--conformance-frameworks)"}
    code, out, _ = run_compare(capsys, tmp_path, make_report([passed_row()]), current,
                               "--allow-skip", "not selected")
    assert code == 0, out
    assert "## Allowed skips (1)" in out and "variant flax.linen.Dense no longer measured" in out


def test_variant_judged_under_a_divergence_is_still_measured():
    current = make_report([passed_row()])
    numbers = current["results"][0]["per_variant"].pop("flax.linen.Dense")
    current["results"][0]["divergences"] = {"flax.linen.Dense": {
        "id": "tf-bf16-nan", "observed": False, "within_ceiling": True, **numbers}}
    comparison = compare_reports(make_report([passed_row()]), current)
    assert comparison.exit_code == 0, comparison.to_markdown()


# ----------------------------------------------------------------------------- frameworks


def test_framework_missing_from_candidate_is_a_regression(capsys, tmp_path):
    current = make_report([passed_row()], frameworks={"torch": "2.3.0", "flax": None})
    exits_1_naming(capsys, tmp_path, make_report([passed_row()]), current,
                   "framework flax (0.8.0 in the baseline) is missing from the candidate", "**lost**")


def test_framework_that_cannot_be_imported_is_a_regression(capsys, tmp_path):
    current = make_report([passed_row()], frameworks={"torch": "2.3.0", "flax": "0.9.0"})
    current["environment"]["unavailable"] = {"flax": "ImportError: cannot import name 'linen'"}
    exits_1_naming(capsys, tmp_path, make_report([passed_row()]), current,
                   "framework flax", "cannot be imported there: ImportError: cannot import name 'linen'")


def test_framework_unavailable_in_both_runs_is_not_a_new_regression():
    broken = {"unavailable": {"flax": "ImportError"}}
    baseline, current = make_report([passed_row()]), make_report([passed_row()])
    for report in (baseline, current):
        report["environment"].update(broken)
    assert compare_reports(baseline, current).problems == []


def test_other_distribution_of_the_same_framework_is_not_lost():
    baseline = make_report([passed_row()], frameworks={"torch": "2.3.0", "tensorflow-cpu": "2.21.0"})
    current = make_report([passed_row()], frameworks={"torch": "2.3.0", "tensorflow": "2.22.0"})
    assert compare_reports(baseline, current).problems == []


def test_framework_missing_from_a_shard_environment_of_a_merged_report():
    current = make_report([passed_row()], frameworks={"torch": "2.3.0"})
    current["environment"]["frameworks"] = {"torch": "2.3.0"}
    current["shards"] = [{"name": "tensorflow", "complete": True,
                          "environment": {"frameworks": {"torch": "2.3.0"}, "unavailable": {"keras": "crashed"}}}]
    baseline = make_report([passed_row()], frameworks={"torch": "2.3.0", "keras": "3.15.1"})
    subjects = [p.subject for p in compare_reports(baseline, current).problems]
    assert subjects == ["keras"]


# ----------------------------------------------------------------------------- completeness


@pytest.mark.parametrize("side", ["baseline", "candidate"])
def test_incomplete_report_is_a_regression(capsys, tmp_path, side):
    reports = {"baseline": make_report([passed_row()]), "candidate": make_report([passed_row()])}
    reports[side]["complete"] = False
    exits_1_naming(capsys, tmp_path, reports["baseline"], reports["candidate"],
                   f"the {side} report is incomplete (complete: false", "--allow-incomplete")


def test_incomplete_shard_is_named():
    current = make_report([passed_row()], complete=False)
    current["shards"] = [{"name": "jax", "complete": True}, {"name": "tensorflow", "complete": False}]
    (problem,) = compare_reports(make_report([passed_row()]), current).problems
    assert "incomplete shards: tensorflow" in problem.text


def test_incomplete_report_names_its_reason_and_the_tests_without_a_result(capsys, tmp_path):
    current = make_report([passed_row()], complete=False)
    current["incomplete"] = {"reason": "worker gw1 died (SIGSEGV)", "missing": ["suites/test_batch.py::test_b[x]"]}
    exits_1_naming(capsys, tmp_path, make_report([passed_row()]), current,
                   "complete: false: worker gw1 died (SIGSEGV), 1 test without a result",
                   "## Incomplete reports (1)", "no result: `suites/test_batch.py::test_b[x]`")


def test_allow_incomplete_lists_what_is_missing(capsys, tmp_path):
    baseline = make_report([passed_row(), passed_row("suites/test_linear.py::test_forward[1]")])
    current = make_report([passed_row()], complete=False)
    current["incomplete"] = {"reason": "interrupted by SIGTERM", "missing": ["suites/test_linear.py::test_forward[1]"]}
    code, out, _ = run_compare(capsys, tmp_path, baseline, current, "--allow-incomplete")
    assert code == 0, out
    assert "## Incomplete reports (1)" in out and "interrupted by SIGTERM" in out
    assert "## Missing from an incomplete report (1)" in out
    assert "test_forward[1]" in out and "absent from the incomplete candidate report" in out


def test_allow_incomplete_lists_results_missing_from_the_baseline(capsys, tmp_path):
    baseline = make_report([passed_row()], complete=False)
    current = make_report([passed_row(), passed_row("suites/test_linear.py::test_forward[1]")])
    code, out, _ = run_compare(capsys, tmp_path, baseline, current, "--allow-incomplete")
    assert code == 0, out
    assert "absent from the incomplete baseline report" in out and "test_forward[1]" in out


def test_allow_incomplete_still_fails_on_a_new_failure(capsys, tmp_path):
    current = make_report([make_result(NODE, status="failed", ratio=3.0)], complete=False)
    exits_1_naming(capsys, tmp_path, make_report([passed_row()]), current, "passed → failed",
                   args=("--allow-incomplete",))


def test_allow_incomplete_does_not_excuse_results_vanished_from_a_complete_candidate():
    baseline = make_report([passed_row(), passed_row("b")], complete=False)
    current = make_report([passed_row()])
    comparison = compare_reports(baseline, current, allow_incomplete=True)
    assert [c.nodeid for c in comparison.regressions] == ["b"]


# ----------------------------------------------------------------------------- divergences


def test_new_divergence_is_a_regression(capsys, tmp_path):
    baseline = with_divergences(make_report([passed_row()]), divergence(observed=False))
    current = with_divergences(make_report([passed_row()]), divergence(observed=True))
    exits_1_naming(capsys, tmp_path, baseline, current,
                   "documented divergence tf-bf16-nan (keras) is observed in the candidate and was not observed in "
                   "the baseline")


def test_divergence_seen_only_in_candidate_rows_is_new(capsys, tmp_path):
    current = make_report([passed_row()])
    current["results"][0]["divergences"] = {"keras.Conv1D dkernel": {
        "id": "tf-bf16-nan", "observed": True, "within_ceiling": True, "max_bound_ratio": 3.0, "examples": 4}}
    exits_1_naming(capsys, tmp_path, make_report([passed_row()]), current,
                   "documented divergence tf-bf16-nan is observed in the candidate and was not listed in the baseline")


def test_divergence_observed_in_both_runs_is_not_a_regression(capsys, tmp_path):
    baseline = with_divergences(make_report([passed_row()]), divergence(observed=True))
    current = with_divergences(make_report([passed_row()]), divergence(observed=True))
    code, out, _ = run_compare(capsys, tmp_path, baseline, current)
    assert code == 0, out


def test_divergence_over_its_ceiling_is_a_regression(capsys, tmp_path):
    baseline = with_divergences(make_report([passed_row()]), divergence())
    current = with_divergences(make_report([passed_row()]), divergence(exceeded_ceiling=True))
    exits_1_naming(capsys, tmp_path, baseline, current,
                   "documented divergence tf-bf16-nan (keras) exceeds its ceiling (NaN only; finite values judged)")


def test_row_divergence_over_its_ceiling_names_the_row(capsys, tmp_path):
    baseline = with_divergences(make_report([passed_row()]), divergence())
    current = with_divergences(make_report([passed_row()]), divergence())
    current["results"][0]["divergences"] = {"keras.Conv1D dkernel": {
        "id": "tf-bf16-nan", "observed": True, "within_ceiling": False, "max_bound_ratio": 7.5}}
    exits_1_naming(capsys, tmp_path, baseline, current, "exceeds its ceiling",
                   f"{NODE} keras.Conv1D dkernel: bound ratio 7.5")


def test_every_divergence_is_listed_with_evidence_and_whether_each_run_observed_it(capsys, tmp_path):
    baseline = with_divergences(make_report([passed_row()]), divergence(observed=True),
                                divergence(id="torch-crash", kind="crash", observed=None, evidence="SIGSEGV 3 of 3"))
    current = with_divergences(make_report([passed_row()]), divergence(observed=False))
    code, out, _ = run_compare(capsys, tmp_path, baseline, current)
    assert code == 0, out
    assert "## Documented divergences (2)" in out
    assert "| `tf-bf16-nan` | keras | tensorflow >=2.21,<2.22 | numeric |" in out
    assert "| observed | not observed | NaN kernel gradient in bf16 | 7 of 20 runs gave NaN |" in out
    assert "| not exercised | not listed |" in out and "SIGSEGV 3 of 3" in out


# ----------------------------------------------------------------------------- measured (speed)


def test_measured_row_is_not_a_regression_by_itself(capsys, tmp_path):
    baseline = make_report([make_result(NODE, check="speed", status="passed", ratio=None)])
    current = make_report([make_result(NODE, check="speed", status="measured", ratio=None)])
    code, out, _ = run_compare(capsys, tmp_path, baseline, current)
    assert code == 0, out
    assert "passed → measured" in out
    assert "| Report | complete | passed | failed | error | skipped | measured |" in out


def test_measured_row_vanished_is_a_regression(capsys, tmp_path):
    baseline = make_report([passed_row(), make_result("suites/test_speed.py::test_speed[x]", check="speed",
                                                      status="measured", ratio=None)])
    exits_1_naming(capsys, tmp_path, baseline, make_report([passed_row()]),
                   "measured → (absent)", "suites/test_speed.py::test_speed[x]", "no longer measured")


def test_measured_row_skipped_is_a_regression(capsys, tmp_path):
    baseline = make_report([make_result(NODE, check="speed", status="measured", ratio=None)])
    current = make_report([make_result(NODE, check="speed", status="skipped", ratio=None, reason="--no-speed")])
    exits_1_naming(capsys, tmp_path, baseline, current, "measured → skipped")


def test_passed_to_measured_not_judged_is_a_regression(capsys, tmp_path):
    reason = "measured, not judged: torch.Linear: the bfloat16 worst-case bound is infinite for 300 terms"
    row = make_result(NODE, status="measured", ratio=0.0, reason=reason)
    row["not_judged"] = {"torch.Linear": reason}
    current = make_report([row])
    exits_1_naming(capsys, tmp_path, make_report([passed_row()]), current, "passed → measured", "not judged")


# ----------------------------------------------------------------------------- wiring


def _tox() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "tox.ini", encoding="utf-8")
    return parser


def _side_checker(fake_exit: str) -> list[str]:
    """The tox gate sides' command, wrapped around a fake `conformance run` (tox splits like shlex)."""
    return [*shlex.split(_tox()["gate"]["complete_report"]), sys.executable, "-c", fake_exit]


@pytest.mark.parametrize("side", ["baseline", "candidate"])
def test_tox_sides_go_through_the_complete_report_check(side):
    (command,) = [line for line in _tox()[f"testenv:{side}"]["commands"].splitlines() if line.strip()]
    assert command.startswith("{[gate]complete_report} conformance run "), command


@pytest.mark.parametrize("fake_exit, expected", [
    ("raise SystemExit(0)", 0), ("raise SystemExit(1)", 0), ("raise SystemExit(2)", 2), ("raise SystemExit(3)", 3),
    ("import os, signal; os.kill(os.getpid(), signal.SIGTERM)", 128 + 15)])
def test_tox_side_fails_without_a_complete_report(fake_exit, expected):
    done = subprocess.run(_side_checker(fake_exit), capture_output=True, text=True, timeout=60)
    assert done.returncode == expected, done.stderr
    assert ("no complete report" in done.stderr) == (expected != 0)


def _workflow_run_step() -> str:
    """The shell script of the workflow's `conformance run` step, its expressions filled in."""
    lines = (ROOT / ".github" / "workflows" / "conformance.yml").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- name: conformance run")
    key = next(i for i in range(start, len(lines)) if lines[i].strip() == "run: |")
    indent = len(lines[key]) - len(lines[key].lstrip()) + 2
    body = []
    for line in lines[key + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        body.append(line[indent:])
    script = "\n".join(body)
    return re.sub(r"\$\{\{\s*matrix\.(\w+)\s*\}\}", lambda m: {"set": "newest", "backend": "jax"}[m.group(1)], script)


@pytest.mark.skipif(sys.platform == "win32", reason="the workflow runs bash on Linux")
@pytest.mark.parametrize("fake_code, expected", [(0, 0), (1, 0), (2, 2), (3, 3), (143, 143)])
def test_workflow_run_step_fails_without_a_complete_report(tmp_path, fake_code, expected):
    fake = tmp_path / "conformance"
    fake.write_text(f"#!/bin/sh\nexit {fake_code}\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "PROFILE": "ci", "OUT": "out"}
    # GitHub runs `run:` steps with `bash -e -o pipefail`
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", _workflow_run_step()],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == expected, done.stdout + done.stderr
    assert ("::error::" in done.stdout) == (expected != 0)


def test_workflow_no_longer_ignores_run_exit_codes():
    text = (ROOT / ".github" / "workflows" / "conformance.yml").read_text(encoding="utf-8")
    assert "needs.run.result != 'success'" in text
    assert "- conformance run" not in text and "|| true" not in text
