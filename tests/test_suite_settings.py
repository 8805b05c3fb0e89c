"""Process settings the suites make for speed: threads per xdist worker, JAX's compilation cache."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from layer_conformance.suites import conftest as suite_conftest

pytest_plugins = ["pytester"]


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("CONFORMANCE_THREADS", "PYTEST_XDIST_WORKER_COUNT", "CONFORMANCE_JAX_CACHE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_workers_share_the_cores(clean_env):
    clean_env.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    clean_env.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    assert suite_conftest.worker_threads() == 1
    clean_env.setenv("PYTEST_XDIST_WORKER_COUNT", "1")
    assert suite_conftest.worker_threads() == 2
    clean_env.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    assert suite_conftest.worker_threads() == 1  # never 0
    clean_env.setenv("CONFORMANCE_THREADS", "3")
    assert suite_conftest.worker_threads() == 3


@pytest.mark.parametrize("bad", ["0", "two", "-1"])
def test_bad_thread_count_is_a_usage_error(clean_env, bad):
    clean_env.setenv("CONFORMANCE_THREADS", bad)
    with pytest.raises(pytest.UsageError, match="CONFORMANCE_THREADS.*positive integer"):
        suite_conftest.worker_threads()


def test_jax_cache_location(clean_env, tmp_path):
    assert suite_conftest.jax_cache_dir(tmp_path) == str(tmp_path / ".jax-cache")
    clean_env.setenv("CONFORMANCE_JAX_CACHE", "off")
    assert suite_conftest.jax_cache_dir(tmp_path) is None
    clean_env.setenv("CONFORMANCE_JAX_CACHE", str(tmp_path / "elsewhere"))
    assert suite_conftest.jax_cache_dir(Path("/nonexistent")) == str(tmp_path / "elsewhere")


def test_suite_processes_get_the_cache_and_worker_threads(pytester, tmp_path):
    """A worker of `pytest -n 2` sees one thread per core share and the cache folder, set before any import."""
    pytester.makeconftest("""
        import os
        pytest_plugins = ["layer_conformance.suites.conftest"]
    """)
    pytester.makepyfile(test_env="""
        import os
        def test_env():
            print("THREADS", os.environ.get("OMP_NUM_THREADS"), "CACHE", os.environ.get("JAX_COMPILATION_CACHE_DIR"))
    """)
    env = {"CONFORMANCE_JAX_CACHE": str(tmp_path / "cache"), "CONFORMANCE_THREADS": "1"}
    for name, value in env.items():
        pytester._monkeypatch.setenv(name, value)
    pytester._monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    pytester._monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    result = pytester.runpytest_subprocess("-s", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*THREADS 1 CACHE {tmp_path / 'cache'}"])


# ---- the geometry pool ------------------------------------------------------------------------------

def test_pool_size_by_profile_and_option():
    from layer_conformance.suites.strategies import CI_GEOMETRIES, pool_size

    assert pool_size(None, "ci") == CI_GEOMETRIES == 10
    assert pool_size("auto", "dev") is None and pool_size(None, "thorough") is None
    assert pool_size("all", "ci") is None
    assert pool_size(" 7 ", "dev") == 7
    for bad in ("0", "-3", "ten", "2.5"):
        with pytest.raises(ValueError, match="whole number of at least 1, 'all' or 'auto'"):
            pool_size(bad, "ci")


def test_geometry_pool_is_deterministic_distinct_and_keyed():
    from hypothesis import strategies as st

    from layer_conformance.suites.strategies import conv_dims, geometry_key, geometry_pool

    first = geometry_pool(conv_dims(1), 10, "xfw-conv1d-float32-cpu/forward")
    again = geometry_pool(conv_dims(1), 10, "xfw-conv1d-float32-cpu/forward")
    other = geometry_pool(conv_dims(1), 10, "xfw-conv1d-float16-cpu/forward")
    keys = [geometry_key(d) for d in first]
    assert len(first) == 10 and len(set(keys)) == 10
    assert keys == [geometry_key(d) for d in again]
    assert keys != [geometry_key(d) for d in other]
    assert len(geometry_pool(st.fixed_dictionaries({"B": st.integers(1, 3)}), 10, "small")) == 3


def test_pooled_test_runs_its_examples_over_the_pool():
    """Every example is a pool geometry; the row records how many distinct ones ran."""
    pytest.importorskip("torch")
    from hypothesis import HealthCheck, given, settings, strategies as st

    from layer_conformance.suites.catalog import CLAIMS_BY_ID
    from layer_conformance.suites.harness import Case, ClaimRunner
    from layer_conformance.suites.strategies import geometry_key, geometry_pool

    claim = CLAIMS_BY_ID["torch-linear-conv1d-k1"]
    record: dict = {}
    runner = ClaimRunner(Case(claim, "float32", "cpu"), record, check="forward", geometries=3)
    pool = {geometry_key(d) for d in geometry_pool(claim.dims, 3, "torch-linear-conv1d-k1-float32-cpu")}
    # the checks of one case share its pool, so they run the same compiled programs on the same corners
    batch = ClaimRunner(Case(claim, "float32", "cpu"), {}, check="batch", geometries=3)

    def members(strategy: st.SearchStrategy) -> set:
        found: set = set()

        @settings(max_examples=100, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))
        @given(strategy)
        def collect(dims):
            found.add(geometry_key(dims))

        collect()
        return found

    assert members(batch.dims) == members(runner.dims) == pool
    seen = []
    draw = runner._draw_dims
    runner._draw_dims = lambda data: seen.append(draw(data)) or seen[-1]  # type: ignore[method-assign]

    @settings(max_examples=30, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def body(data):
        runner.forward_example(data)

    body()
    assert len(seen) >= 30 and {geometry_key(d) for d in seen} <= pool
    assert record["geometries"] == len({geometry_key(d) for d in seen}) <= 3 and record["geometry_pool"] == 3


def test_bad_geometry_option_is_a_usage_error():
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "pytest", "suites/test_forward.py", "--collect-only", "-q",
                           "-p", "no:cacheprovider", "--conformance-geometries", "ten"],
                          cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR
    assert "--conformance-geometries / $CONFORMANCE_GEOMETRIES: expected a whole number" in done.stderr
    assert "Traceback" not in done.stderr


def test_geometry_pool_covers_the_features_a_fault_needs():
    """The first draws are mostly minimal; the pool picks for coverage: e.g. a dilated convolution
    with stride 1 (the only dilation Keras accepts, so the only one a Keras dilation bug shows in)."""
    from layer_conformance.suites.catalog import CLAIMS_BY_ID
    from layer_conformance.suites.strategies import geometry_pool

    for claim_id in ("xfw-conv1d", "xfw-conv2d"):
        specs = [d["spec"] for d in geometry_pool(CLAIMS_BY_ID[claim_id].dims, 10, f"{claim_id}-float32-cpu/forward")]
        assert any(all(s == 1 for s in p.strides) and any(d > 1 and k > 1 for d, k in zip(p.dilation, p.kernel_size))
                   for p in specs), claim_id
        assert any(any(s > 1 for s in p.strides) for p in specs)
        assert any(p.groups > 1 for p in specs) and any(p.groups == 1 for p in specs)
        assert any(p.bias for p in specs) and not all(p.bias for p in specs)
        assert len({p.padding if isinstance(p.padding, str) else "explicit" for p in specs}) >= 2


def test_geometry_pool_keeps_the_simplest_and_the_largest_candidate():
    """A fault that fires only on large outputs (>= 1000 elements) needs a large geometry in the pool."""
    import numpy as np

    from layer_conformance.suites.catalog import CLAIMS_BY_ID
    from layer_conformance.suites.strategies import geometry_pool

    claim = CLAIMS_BY_ID["xfw-dense"]
    pool = geometry_pool(claim.dims, 10, "xfw-dense-float32-cpu/forward")
    sizes = [int(np.prod(claim.input_shape(d))) for d in pool]
    assert sizes[0] == min(sizes) == 1 and max(sizes) >= 1000


def test_frameworks_are_frozen_out_of_garbage_collection_once():
    """After a row's frameworks are imported, full collections no longer walk them (layer_conformance.suites.harness.freeze_imports)."""
    import gc

    pytest.importorskip("torch")
    from layer_conformance.suites import harness

    import torch  # noqa: F401  (a framework in sys.modules)

    harness._FROZEN_FRAMEWORKS.discard("torch")
    harness.freeze_imports()
    frozen = gc.get_freeze_count()
    assert frozen > 0 and "torch" in harness._FROZEN_FRAMEWORKS
    harness.freeze_imports()  # nothing new imported: no second collection and freeze
    assert gc.get_freeze_count() == frozen


def test_pool_built_once_per_run_is_the_pool_each_process_would_build(tmp_path, monkeypatch):
    """$CONFORMANCE_POOL_DIR: the first process leaves the pool there; a later one reads the same pool, and
    an unreadable file is built again rather than trusted."""
    from layer_conformance.suites import strategies
    from layer_conformance.suites.strategies import POOL_DIR_ENV, _shared_pool, conv_dims, geometry_key

    dims = conv_dims(1)
    monkeypatch.delenv(POOL_DIR_ENV, raising=False)
    built = [geometry_key(d) for d in _shared_pool(dims, 10, "xfw-conv1d-float32-cpu")]
    monkeypatch.setenv(POOL_DIR_ENV, str(tmp_path))
    assert [geometry_key(d) for d in _shared_pool(dims, 10, "xfw-conv1d-float32-cpu")] == built
    (saved,) = tmp_path.glob("*.pickle")
    monkeypatch.setattr(strategies, "_build_pool", lambda *a: pytest.fail("built again although saved"))
    assert [geometry_key(d) for d in _shared_pool(dims, 10, "xfw-conv1d-float32-cpu")] == built
    saved.write_bytes(b"not a pickle")
    monkeypatch.undo()
    monkeypatch.setenv(POOL_DIR_ENV, str(tmp_path))
    assert [geometry_key(d) for d in _shared_pool(dims, 10, "xfw-conv1d-float32-cpu")] == built
