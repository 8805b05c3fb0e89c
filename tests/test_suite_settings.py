"""Process settings the suites make for speed: threads per xdist worker, JAX's compilation cache."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from suites import conftest as suite_conftest

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
        pytest_plugins = ["suites.conftest"]
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
