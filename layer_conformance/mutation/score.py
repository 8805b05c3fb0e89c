"""The mutation score: inject framework-level faults, run the relevant suites under each, score them
(`conformance faults`; its command line is layer_conformance/cli/faults.py).

A fault is CAUGHT when any result of its run failed; a benign perturbation passes when no result
failed or errored over at least --benign-examples examples (run under the `thorough` profile).
"""
from __future__ import annotations

import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from layer_conformance.reports.schema import ReportError, load_report, write_json_atomic

FAULT_FAILING = ("failed", "error")


def pytest_command(fault: Any, report: Path, profile: str) -> list[str]:
    """The pytest run for one fault: its framework only, float32 on cpu, the claims and checks it touches."""
    rows = [f"[{claim}-float32" for claim in fault.claims] or ["["]
    selection = " or ".join(f"test_{check}{row}" for check in fault.checks for row in rows)
    from layer_conformance.suites import pytest_command as suites_command

    return [*suites_command(), "--conformance-fault", fault.id, "--conformance-report", str(report),
            "--conformance-devices", "cpu", "--conformance-dtypes", "float32",
            "--conformance-require", fault.frameworks[0], "--conformance-frameworks", ",".join(fault.frameworks),
            "--hypothesis-profile", profile, "-k", selection, "-x" if fault.kind == "fault" else "-rN"]


def benign_examples_per_test(fault: Any, total: int, env: dict[str, str]) -> int:
    """Examples per test so that the tests a benign perturbation selects run at least `total` in all.

    The selection is counted by collecting it (no framework is imported to collect); a fifth more
    than the even share covers tests that skip at run time. At least 50, the ci profile's number.
    """
    collect = [*pytest_command(fault, Path(os.devnull), "ci"), "--collect-only", "-q"]
    collect.remove("--conformance-report")
    collect.remove(os.devnull)
    done = subprocess.run(collect, env=env, capture_output=True, text=True)
    tests = 0
    for line in done.stdout.splitlines():  # "-q -q": `file: count` lines
        path, _, count = line.rpartition(":")
        if path.endswith(".py") and count.strip().isdigit():
            tests += int(count)
    return max(50, math.ceil(total * 1.2 / max(tests, 1)))


def judge(fault: Any, report: dict[str, Any], benign_examples: int) -> dict[str, Any]:
    results = report["results"]
    failing = [r for r in results if r["status"] in FAULT_FAILING]
    examples = sum(int(r.get("examples") or 0) for r in results if r["status"] != "skipped")
    row = {"id": fault.id, "framework": fault.framework, "kind": fault.kind, "description": fault.description,
           "results": len(results), "examples": examples,
           "caught_by": sorted({f"{r['check']}:{r['claim']}" for r in failing}),
           "caught_by_checks": sorted({r["check"] for r in failing})}
    if fault.kind == "fault":
        row["caught"] = bool(failing)
    else:
        row["passed"] = not failing and examples >= benign_examples
        if not failing and examples < benign_examples:
            row["note"] = f"only {examples} examples, fewer than the {benign_examples} required"
    return row


def _markdown(rows: list[dict[str, Any]], score: str, benign: str) -> str:
    lines = ["# Framework fault injection", "", f"Mutation score: **{score}**", "", f"Benign: **{benign}**", "",
             "| fault | framework | kind | caught / passed | caught by checks | examples |", "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        verdict = ("CAUGHT" if r["caught"] else "MISSED") if r["kind"] == "fault" else ("passed" if r["passed"] else "FAILED")
        lines.append(f"| `{r['id']}` | {r['framework']} | {r['kind']} | {verdict} | "
                     f"{', '.join(r['caught_by_checks']) or '-'} | {r['examples']} |")
    lines += ["", "## Details", ""]
    for r in rows:
        lines.append(f"- `{r['id']}`: {r['description']}" + (f"; caught by {', '.join(r['caught_by'])}" if r["caught_by"] else "")
                     + (f" ({r['note']})" if r.get("note") else "") + (f" (error: {r['error']})" if r.get("error") else ""))
    return "\n".join(lines) + "\n"


def _table(rows: list[dict[str, Any]]) -> str:
    header = f"{'fault':<36} {'framework':<9} {'kind':<7} {'result':<7} {'caught by checks':<18} {'examples':>8}"
    out = [header, "-" * len(header)]
    for r in rows:
        verdict = ("CAUGHT" if r["caught"] else "MISSED") if r["kind"] == "fault" else ("passed" if r["passed"] else "FAILED")
        out.append(f"{r['id']:<36} {r['framework']:<9} {r['kind']:<7} {verdict:<7} "
                   f"{','.join(r['caught_by_checks']) or '-':<18} {r['examples']:>8}")
    return "\n".join(out)


def score_faults(faults: list[Any], out: Path, *, profile: str = "ci", benign_examples: int = 1000,
                 quiet: bool = False) -> int:
    """Run the suites under each fault (faults: `profile`; benign ones: `thorough`, with enough examples per
    test for `benign_examples` in all), print the table and the mutation score, write faults.md and
    faults.json into `out`. 0 when every fault is caught and every benign perturbation passed, else 1."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"), KERAS_BACKEND="tensorflow")
    rows = []
    for fault in faults:
        report_path = out / f"fault-{fault.id}.json"
        report_path.unlink(missing_ok=True)
        profile = "thorough" if fault.kind == "benign" else profile
        run_env = env
        if fault.kind == "benign":  # enough examples per test for --benign-examples over the selected tests
            per_test = benign_examples_per_test(fault, benign_examples, env)
            run_env = dict(env, CONFORMANCE_EXAMPLES=str(per_test))
            profile += f", {per_test} examples per test"
        print(f"conformance faults: {fault.id} ({fault.kind}, profile {profile})", flush=True)
        started = time.perf_counter()
        code = subprocess.call(pytest_command(fault, report_path, profile.split(",")[0]), env=run_env,
                               stdout=subprocess.DEVNULL if quiet else None)
        try:
            row = judge(fault, load_report(report_path), benign_examples)
        except ReportError as exc:  # the run itself broke: neither caught nor passed, say why
            row = {"id": fault.id, "framework": fault.framework, "kind": fault.kind, "description": fault.description,
                   "results": 0, "examples": 0, "caught_by": [], "caught_by_checks": [],
                   "error": f"pytest exit code {code}: {exc}", **({"caught": False} if fault.kind == "fault" else {"passed": False})}
        row["duration"] = round(time.perf_counter() - started, 1)
        rows.append(row)
    real = [r for r in rows if r["kind"] == "fault"]
    benign = [r for r in rows if r["kind"] == "benign"]
    caught = sum(r["caught"] for r in real)
    score = f"{caught}/{len(real)} = {caught / len(real):.0%}" if real else "n/a (no faults run)"
    benign_text = (f"{sum(r['passed'] for r in benign)}/{len(benign)} passed, "
                   f"{sum(r['examples'] for r in benign)} examples" if benign else "n/a (none run)")
    print()
    print(_table(rows))
    print(f"\nmutation score: {score}\nbenign: {benign_text}")
    (out / "faults.md").write_text(_markdown(rows, score, benign_text), encoding="utf-8")
    write_json_atomic(out / "faults.json", {"mutation_score": caught / len(real) if real else None, "caught": caught,
                                            "faults": len(real), "benign_passed": sum(r["passed"] for r in benign),
                                            "benign": len(benign), "benign_examples_required": benign_examples,
                                            "results": rows})
    print(f"conformance faults: wrote {out / 'faults.md'} and {out / 'faults.json'}")
    return 0 if caught == len(real) and all(r["passed"] for r in benign) else 1
