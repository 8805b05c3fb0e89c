"""Self-tests for `conformance compare` and `conformance merge` on synthetic reports."""
from __future__ import annotations

import copy
import json

import pytest

from layer_conformance.cli import compare, merge
from layer_conformance.reports.compare import compare_reports, result_key
from layer_conformance.reports.merge import merge_reports
from layer_conformance.reports.schema import SCHEMA, summarize, validate_report


def make_result(nodeid, *, claim="linear-matches-dense", status="passed", ratio=0.1, variants=None,
                keras_backend=None, check="forward", reason=None, **extra):
    result = {
        "nodeid": nodeid, "claim": claim, "relation": "equal", "check": check,
        "variants": variants if variants is not None else ["torch.Linear", "flax.linen.Dense"],
        "skipped_variants": {}, "keras_backend": keras_backend, "dtype": "float32", "device": "cpu",
        "status": status, "examples": 50, "max_abs_error": None if ratio is None else ratio * 1e-6,
        "max_bound_ratio": ratio, "reason": reason,
    }
    result.update(extra)
    return result


def make_report(results=None, *, frameworks=None, claims=None, complete=True, keras_backend=None):
    if results is None:
        results = [make_result(f"suites/test_linear.py::test_forward[{i}]") for i in range(3)]
    return {
        "schema": SCHEMA, "complete": complete, "created": "2024-01-01T00:00:00+00:00",
        "environment": {
            "python": "3.11.7", "platform": "linux", "cpu": "x86_64",
            "frameworks": frameworks if frameworks is not None else {"torch": "2.3.0", "flax": "0.8.0"},
            "keras_backend": keras_backend, "devices": ["cpu"], "numeric_modes": {},
        },
        "claims": claims if claims is not None else {
            "linear-matches-dense": {"title": "Linear equals Dense", "relation": "equal",
                                     "source": "docs", "variants": ["torch.Linear", "flax.linen.Dense"]}},
        "summary": summarize(results),
        "results": results,
    }


def write(tmp_path, name, report):
    path = tmp_path / name
    path.write_text(json.dumps(report), encoding="utf-8")
    return str(path)


def run_compare(capsys, tmp_path, baseline, current, *extra):
    code = compare.main([write(tmp_path, "base.json", baseline), write(tmp_path, "cur.json", current), *extra])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- compare


def test_result_key_counts_backend_only_for_keras_variants():
    assert result_key(make_result("a", keras_backend="jax")) == ("a", "")
    assert result_key(make_result("a", variants=["keras.Dense"], keras_backend="jax")) == ("a", "jax")
    assert result_key(make_result("a", variants=["keras.Dense"], keras_backend=None)) == ("a", "")
    assert result_key({"nodeid": "a"}) == ("a", "")


def test_compare_with_itself_exits_0(capsys, tmp_path):
    report = make_report()
    code, out, err = run_compare(capsys, tmp_path, report, report)
    assert code == 0
    assert "No regression" in out
    assert err == ""


def test_flipped_to_failed_is_a_regression(capsys, tmp_path):
    baseline = make_report()
    current = copy.deepcopy(baseline)
    current["results"][1].update(status="failed", reason="max error 3e-5 above bound", max_bound_ratio=3.0)
    code, out, _ = run_compare(capsys, tmp_path, baseline, current)
    assert code == 1
    assert "REGRESSION: 1 problem" in out and "1 result now failing or erroring" in out
    assert "suites/test_linear.py::test_forward[1]" in out
    assert "passed → failed" in out
    assert "linear-matches-dense" in out


def test_vanished_result_is_a_regression(capsys, tmp_path):
    baseline = make_report()
    current = copy.deepcopy(baseline)
    del current["results"][2]
    code, out, _ = run_compare(capsys, tmp_path, baseline, current)
    assert code == 1
    assert "test_forward[2]" in out and "(absent)" in out


def test_vanished_skipped_result_is_listed_not_a_regression():
    baseline = make_report([make_result("a"), make_result("b", status="skipped", ratio=None, reason="no GPU")])
    current = make_report([make_result("a")])
    comparison = compare_reports(baseline, current)
    assert comparison.exit_code == 0
    assert [c.nodeid for c in comparison.skips_changed] == ["b"]


def test_failed_to_skipped_is_listed_with_reason():
    baseline = make_report([make_result("a", status="failed", ratio=3.0)])
    current = make_report([make_result("a", status="skipped", ratio=None, reason="flax not installed")])
    comparison = compare_reports(baseline, current)
    assert comparison.exit_code == 0
    assert comparison.skips_changed[0].reason == "flax not installed"
    assert "flax not installed" in comparison.to_markdown("old", "new")


def test_skipped_to_failed_is_a_regression():
    baseline = make_report([make_result("a", status="skipped", ratio=None)])
    current = make_report([make_result("a", status="failed", ratio=5.0)])
    assert compare_reports(baseline, current).exit_code == 1


@pytest.mark.parametrize("growth, expected", [(3.0, 1), (1.5, 0)])
def test_drift(capsys, tmp_path, growth, expected):
    baseline = make_report([make_result("a", ratio=0.2)])
    current = make_report([make_result("a", ratio=0.2 * growth)])
    code, out, _ = run_compare(capsys, tmp_path, baseline, current)
    assert code == expected
    if expected:
        assert "Bound-ratio drift" in out and "×3" in out


def test_drift_floor_for_tiny_baselines():
    grown_from_zero = compare_reports(make_report([make_result("a", ratio=0.0)]),
                                      make_report([make_result("a", ratio=0.5)]))
    assert grown_from_zero.exit_code == 1
    assert grown_from_zero.drift[0].factor == pytest.approx(500.0)
    noise = compare_reports(make_report([make_result("a", ratio=1e-6)]),
                            make_report([make_result("a", ratio=1e-4)]))
    assert noise.exit_code == 0


def test_factor_option_and_validation(capsys, tmp_path):
    baseline = make_report([make_result("a", ratio=0.2)])
    current = make_report([make_result("a", ratio=0.6)])
    code, _, _ = run_compare(capsys, tmp_path, baseline, current, "--factor", "4")
    assert code == 0
    with pytest.raises(ValueError, match="greater than 1"):
        compare_reports(baseline, current, factor=1.0)
    with pytest.raises(SystemExit) as exc:
        compare.main(["a.json", "b.json", "--factor", "0.5"])
    assert exc.value.code == 2
    assert "greater than 1" in capsys.readouterr().err


def test_new_claim_and_result_listed_exit_0(capsys, tmp_path):
    baseline = make_report()
    current = copy.deepcopy(baseline)
    current["claims"]["conv-matches-conv"] = {"title": "Conv2d equals Conv", "relation": "equal",
                                             "source": "docs", "variants": ["torch.Conv2d", "keras.Conv2D"]}
    current["results"].append(make_result("suites/test_conv.py::test_forward", claim="conv-matches-conv"))
    code, out, _ = run_compare(capsys, tmp_path, baseline, current)
    assert code == 0
    assert "New claims" in out and "conv-matches-conv" in out
    assert "suites/test_conv.py::test_forward" in out


def test_fixed_listed(capsys, tmp_path):
    baseline = make_report([make_result("a", status="failed", ratio=3.0)])
    current = make_report([make_result("a")])
    code, out, _ = run_compare(capsys, tmp_path, baseline, current)
    assert code == 0
    assert "## Fixed (1)" in out


def test_version_change_shown(capsys, tmp_path):
    baseline = make_report()
    current = make_report(frameworks={"torch": "2.4.0", "flax": "0.8.0"})
    comparison = compare_reports(baseline, current)
    assert comparison.version_changes == [("torch", "2.3.0", "2.4.0")]
    code, out, _ = run_compare(capsys, tmp_path, baseline, current)
    assert code == 0
    assert "| torch | 2.3.0 | 2.4.0 | changed |" in out


def test_keras_backends_are_distinct_results():
    results = [make_result("k", variants=["keras.Dense"], keras_backend=b) for b in ("jax", "torch")]
    baseline = make_report(results)
    current = make_report([results[0]])
    comparison = compare_reports(baseline, current)
    assert comparison.exit_code == 1
    assert comparison.regressions[0].keras_backend == "torch"


def test_markdown_escapes_pipes():
    baseline = make_report([make_result("a[x|y]")])
    current = make_report([make_result("a[x|y]", status="failed", reason="bad | worse")])
    markdown = compare_reports(baseline, current).to_markdown("b", "c")
    assert "a[x\\|y]" in markdown and "bad \\| worse" in markdown


def test_output_file_written(capsys, tmp_path):
    report = make_report()
    target = tmp_path / "sub" / "summary.md"
    code, out, _ = run_compare(capsys, tmp_path, report, report, "--output", str(target))
    assert code == 0
    assert target.read_text(encoding="utf-8") == out


def test_unwritable_output_exits_2(capsys, tmp_path):
    report = make_report()
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    code, _, err = run_compare(capsys, tmp_path, report, report, "--output", str(blocker / "summary.md"))
    assert code == 2
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "summary.md" in err


def _bad_inputs(tmp_path):
    v2 = make_report()
    v2["schema"] = "layer-conformance/report/v2"
    full = json.dumps(make_report())
    (tmp_path / "truncated.json").write_text(full[: len(full) // 2])
    (tmp_path / "notjson.json").write_text("hello, world\n")
    (tmp_path / "wrongschema.json").write_text(json.dumps({"schema": "something/else", "results": []}))
    (tmp_path / "v2.json").write_text(json.dumps(v2))
    (tmp_path / "empty.json").write_text("")
    (tmp_path / "adir").mkdir()
    return ["truncated.json", "notjson.json", "wrongschema.json", "v2.json", "empty.json", "missing.json", "adir"]


@pytest.mark.parametrize("position", [0, 1])
def test_bad_input_files_exit_2_without_traceback(capsys, tmp_path, position):
    good = write(tmp_path, "good.json", make_report())
    for name in _bad_inputs(tmp_path):
        bad = str(tmp_path / name)
        argv = [bad, good] if position == 0 else [good, bad]
        code = compare.main(argv)
        out, err = capsys.readouterr()
        assert code == 2, name
        assert "Traceback" not in err
        assert out == ""
        lines = err.strip().splitlines()
        assert len(lines) == 1, (name, err)
        assert lines[0].startswith("conformance compare: error: ") and name in lines[0]


def test_unknown_option_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        compare.main(["a.json", "b.json", "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unrecognized arguments: --bogus" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- merge


def _keys(report):
    return sorted((result_key(r), r["status"]) for r in report["results"])


def test_merge_disjoint_shards_is_union():
    a = make_report([make_result("a"), make_result("b")])
    b = make_report([make_result("c", status="failed")], complete=False)
    merged = merge_reports([("w0", a), ("w1", b)])
    validate_report(merged)
    assert [r["nodeid"] for r in merged["results"]] == ["a", "b", "c"]
    assert [r["shard"] for r in merged["results"]] == ["w0", "w0", "w1"]
    assert merged["summary"] == {"passed": 2, "failed": 1, "skipped": 0, "error": 0}
    assert merged["complete"] is False
    assert merged["schema"] == SCHEMA and merged["created"].endswith("+00:00")
    assert "a" not in [r["nodeid"] for r in b["results"]] and "shard" not in a["results"][0]


def test_merge_identical_duplicate_kept_once():
    a = make_report([make_result("a")])
    merged = merge_reports([("w0", a), ("w1", copy.deepcopy(a))])
    assert len(merged["results"]) == 1
    assert merged["results"][0]["shard"] == "w0"
    assert "merge_conflicts" not in merged["results"][0]


def test_merge_conflict_keeps_worse_status():
    a = make_report([make_result("a")])
    b = make_report([make_result("a", status="failed", reason="above bound")])
    c = make_report([make_result("a", status="skipped", ratio=None)])
    merged = merge_reports([("w0", a), ("w1", b), ("w2", c)])
    (result,) = merged["results"]
    assert result["status"] == "failed" and result["shard"] == "w1"
    assert [(e["shard"], e["status"]) for e in result["merge_conflicts"]] == [
        ("w0", "passed"), ("w1", "failed"), ("w2", "skipped")]
    assert merged["summary"]["failed"] == 1
    validate_report(merged)


def test_merge_is_associative():
    a = make_report([make_result("a"), make_result("b"), make_result("k", variants=["keras.Dense"],
                                                                         keras_backend="jax")])
    b = make_report([make_result("b", status="error"), make_result("c"),
                     make_result("k", variants=["keras.Dense"], keras_backend="torch")])
    c = make_report([make_result("a", status="failed"), make_result("b"), make_result("d", status="skipped")])
    flat = merge_reports([("a", a), ("b", b), ("c", c)])
    left = merge_reports([("ab", merge_reports([("a", a), ("b", b)])), ("c", c)])
    right = merge_reports([("a", a), ("bc", merge_reports([("b", b), ("c", c)]))])
    for nested in (left, right):
        assert _keys(nested) == _keys(flat)
        assert [s["name"] for s in nested["shards"]] == ["a", "b", "c"]
        assert nested["summary"] == flat["summary"]
        by_key = {result_key(r): r for r in nested["results"]}
        for r in flat["results"]:
            assert by_key[result_key(r)].get("merge_conflicts") == r.get("merge_conflicts")
    assert len(flat["results"]) == 6  # a, b, k/jax, c, k/torch, d


def test_merge_keeps_per_shard_environments():
    jax = make_report([make_result("k", variants=["keras.Dense"], keras_backend="jax")], keras_backend="jax")
    tf = make_report([make_result("k", variants=["keras.Dense"], keras_backend="tensorflow")],
                     keras_backend="tensorflow", frameworks={"torch": "2.3.0", "flax": "0.8.1"})
    merged = merge_reports([("jax", jax), ("tf", tf)])
    validate_report(merged)
    assert len(merged["results"]) == 2
    assert [s["environment"]["keras_backend"] for s in merged["shards"]] == ["jax", "tensorflow"]
    assert "keras_backend" not in merged["environment"]
    assert merged["environment"]["frameworks"] == {"torch": "2.3.0"}
    assert merged["environment"]["python"] == "3.11.7"
    same = merge_reports([("w0", make_report()), ("w1", make_report())])
    assert same["environment"] == make_report()["environment"]
    # compare reads per-shard versions of a merged report
    versions = dict((row.name, row.new) for row in compare_reports(make_report(), merged).versions)
    assert versions["flax"] == "0.8.0 / 0.8.1"


def test_merge_main(capsys, tmp_path):
    a = write(tmp_path, "a.json", make_report([make_result("a")]))
    b = write(tmp_path, "b.json", make_report([make_result("b", status="failed")]))
    out_path = tmp_path / "out" / "merged.json"
    assert merge.main([a, b, "-o", str(out_path)]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == (f"merged 2 results from 2 reports into {out_path} "
                           f"(passed=1, failed=1, skipped=0, error=0)")
    assert err == ""
    validate_report(json.loads(out_path.read_text()))


def test_merge_main_bad_input_exit_2(capsys, tmp_path):
    good = write(tmp_path, "good.json", make_report())
    for name in _bad_inputs(tmp_path):
        code = merge.main([good, str(tmp_path / name), "-o", str(tmp_path / "out.json")])
        _, err = capsys.readouterr()
        assert code == 2, name
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1 and name in err
    assert not (tmp_path / "out.json").exists()


def test_merge_main_needs_inputs_and_output(capsys, tmp_path):
    good = write(tmp_path, "good.json", make_report())
    for argv in ([good], ["-o", str(tmp_path / "out.json")]):
        with pytest.raises(SystemExit) as exc:
            merge.main(argv)
        assert exc.value.code == 2
        assert "Traceback" not in capsys.readouterr().err


def test_merge_keeps_documented_divergences_for_the_gate():
    entry = {"id": "tf-bf16-nan", "framework": "keras", "evidence": "7 of 20 runs", "exceeded_ceiling": False}
    jax = make_report([make_result("a")])
    tf = make_report([make_result("b")])
    never = make_report([make_result("c")])
    jax["divergences"] = [{**entry, "observed": False}]
    tf["divergences"] = [{**entry, "observed": True, "exceeded_ceiling": True}]
    never["divergences"] = [{**entry, "id": "torch-crash", "observed": None}]
    merged = merge_reports([("jax", jax), ("tf", tf), ("never", never)])
    by_id = {d["id"]: d for d in merged["divergences"]}
    assert by_id["tf-bf16-nan"] == {**entry, "observed": True, "exceeded_ceiling": True}
    assert by_id["torch-crash"]["observed"] is None and by_id["torch-crash"]["exceeded_ceiling"] is False
    assert [p.subject for p in compare_reports(make_report(), merged).problems] == ["tf-bf16-nan", "tf-bf16-nan"]
    assert "divergences" not in merge_reports([("w0", make_report())])
