"""Settings of a run of the built-in suites: threads per worker, the JAX cache, shared geometry pools,
the known-crash re-checks and the report's divergences section. Parametrization over claims x dtype x
device and the per-test runner are the plugin's (layer_conformance.suites.parametrize), so that a
user's own suites get them too."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from layer_conformance.reports.cores import usable_cores
from layer_conformance.reports.recorder import REPORT_OPTION, add_report_section, recorded_results
from layer_conformance.suites.harness import ClaimRunner
from layer_conformance.suites.strategies import POOL_DIR_ENV

THREADS_ENV = "CONFORMANCE_THREADS"


def worker_threads() -> int:
    """CPU threads per test process: the cores this process may use, shared by the xdist workers.

    Two workers each running two-thread kernels on two cores spend their time waiting for a core
    (a 0.01 ms torch Linear took 8 ms that way), so each worker gets its share. $CONFORMANCE_THREADS
    overrides it; thread counts already set by the user (OMP_NUM_THREADS, ...) are left alone.
    """
    if os.environ.get(THREADS_ENV):
        value = os.environ[THREADS_ENV]
        if not value.isdigit() or int(value) < 1:
            raise pytest.UsageError(f"{THREADS_ENV}={value!r} is not a thread count; set a positive integer or unset it")
        return int(value)
    return max(1, usable_cores() // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


JAX_CACHE_ENV = "CONFORMANCE_JAX_CACHE"


def jax_cache_dir(rootpath: Path) -> str | None:
    """JAX's persistent compilation cache: $CONFORMANCE_JAX_CACHE, by default .jax-cache in the folder the run
    was started from (`rootpath` here), never inside the installed package.

    `none` or `off` switches it off. The Flax and Keras-on-jax layers are jit-compiled once per
    geometry and input shape; the cache keeps those executables on disk (keyed by the program, the
    compile options and the jax/jaxlib versions), so xdist workers, the per-backend runs of
    `conformance run` and later runs reuse them instead of compiling again. Results are those of the
    same compiled program, so caching cannot change a verdict.
    """
    where = os.environ.get(JAX_CACHE_ENV, "").strip()
    if where.lower() in ("none", "off"):
        return None
    return str(Path(where).resolve() if where else rootpath / ".jax-cache")


def _configure_jax_cache(config: pytest.Config) -> None:
    where = jax_cache_dir(Path(config.invocation_params.dir))
    if where is None or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return  # switched off, or the user configured JAX's cache directly
    os.environ["JAX_COMPILATION_CACHE_DIR"] = where  # read by jax at import; workers inherit it
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # layers compile in ~30 ms
    # no size limit: with one, jax scans the whole folder on every write (minutes over a run). A ci
    # run adds about 100 MB once (the same draws every run); delete the folder to reclaim it.


def pytest_configure(config: pytest.Config) -> None:
    _configure_jax_cache(config)
    _configure_threads(config)
    _configure_pool_folder(config)
    _start_crash_rechecks(config)


_POOL_FOLDER_KEY = pytest.StashKey[str]()


def _configure_pool_folder(config: pytest.Config) -> None:
    """In the controller: a folder where the first worker to build a case's geometry pool leaves it for the
    others (layer_conformance.suites.strategies._shared_pool); removed at the end. `conformance run` sets one for all its parts."""
    if hasattr(config, "workerinput") or os.environ.get(POOL_DIR_ENV):
        return
    import tempfile

    os.environ[POOL_DIR_ENV] = config.stash[_POOL_FOLDER_KEY] = tempfile.mkdtemp(prefix="conformance-pools-")


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_POOL_FOLDER_KEY, None)
    if folder:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        if os.environ.get(POOL_DIR_ENV) == folder:
            del os.environ[POOL_DIR_ENV]


RECHECK_ENV = "CONFORMANCE_CRASH_RECHECK"
_RECHECK_KEY = pytest.StashKey["Recheck"]()


def _start_crash_rechecks(config: pytest.Config) -> None:
    """In the controller of a run that writes a report: every known crash re-checked in child processes,
    in a background thread while the tests run ($CONFORMANCE_CRASH_RECHECK=off skips it)."""
    if hasattr(config, "workerinput") or not config.getoption(REPORT_OPTION, None) \
            or os.environ.get(RECHECK_ENV, "").lower() in ("0", "off", "no"):
        return
    from layer_conformance.suites.divergences import known_crashes
    from layer_conformance.suites.known_crashes import Recheck

    config.stash[_RECHECK_KEY] = Recheck(known_crashes()).start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The report's `divergences` section (before the report plugin writes it, which it does last)."""
    config = session.config
    if hasattr(config, "workerinput") or not config.getoption(REPORT_OPTION, None):
        return
    from layer_conformance.suites.divergences import report_entries

    recheck = config.stash.get(_RECHECK_KEY, None)
    interrupted = exitstatus == pytest.ExitCode.INTERRUPTED  # the report must not wait for a child then
    rechecks = recheck.results(wait=0 if interrupted else None) if recheck else {}
    add_report_section(config, "divergences", report_entries(recorded_results(config), rechecks))


def _configure_threads(config: pytest.Config) -> None:
    """In an xdist worker, before any framework is imported (adapters import them lazily): its threads.

    Only workers set them: the controller runs no test, and its environment is what workers inherit.
    """
    if not (hasattr(config, "workerinput") or os.environ.get("PYTEST_XDIST_WORKER")) and not os.environ.get(THREADS_ENV):
        return
    threads = str(worker_threads())
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ.setdefault(name, threads)
    if threads == "1" and "XLA_FLAGS" not in os.environ:
        os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "suites" in item.path.parts:
            item.add_marker(pytest.mark.conformance)


@pytest.fixture
def runner(conformance_runner: ClaimRunner) -> ClaimRunner:
    """The suites' name for the plugin's `conformance_runner` (layer_conformance.suites.parametrize)."""
    return conformance_runner
