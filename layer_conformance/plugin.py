"""The layer-conformance pytest plugin: every `--conformance-*` option, marker and hypothesis profile.

Installed, it is registered for every pytest run through the `pytest11` entry point (its name is the
module's, so `-p layer_conformance.plugin` or `pytest_plugins = [...]` load it once, not twice). In a
user's project it records the project's own conformance tests (`assert_conforms`, user claims) into
`--conformance-report`; `conformance run` loads it for the built-in suites.

Loading the plugin changes nothing for a project that does not ask: the hypothesis profiles below are
registered, but a profile is loaded only when `--hypothesis-profile` names one, `$CONFORMANCE_PROFILE`
is set, or the ini option `conformance_profiles = true` (the suites and this project's own tests) is.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything can import TensorFlow

import pytest
from hypothesis import HealthCheck, Verbosity, settings
from hypothesis.database import DirectoryBasedExampleDatabase

from layer_conformance.reports import recorder
from layer_conformance.cli.arguments import PROFILES, split_csv as csv
from layer_conformance.reports.flight import DEFAULT_TIMEOUT_S
from layer_conformance.reports.recorder import conformance_record  # noqa: F401  (the fixture a test fills)

DATABASE_ENV = "CONFORMANCE_HYPOTHESIS_DB"
EXAMPLES_ENV = "CONFORMANCE_EXAMPLES"  # examples per test, overriding every profile's own number
PROFILE_ENV = "CONFORMANCE_PROFILE"
REPORT_OPTION = recorder.REPORT_OPTION
FRAMEWORK_NAMES = "torch,keras,flax.linen,flax.nnx"
DTYPE_NAMES = "float64,float32,float16,bfloat16,mixed_float16,mixed_bfloat16"


def example_database() -> DirectoryBasedExampleDatabase | None:
    """Hypothesis' example database (failing examples are replayed first on the next run).

    $CONFORMANCE_HYPOTHESIS_DB names the folder (`none` or `off`: no database); by default it is
    .hypothesis/examples in the current directory, hypothesis' own place, which `conformance run`
    keeps for all its parts. The derandomized `ci` profile never uses it: hypothesis ties
    derandomize=True to database=None, and that is what makes its runs identical.
    """
    where = os.environ.get(DATABASE_ENV, "").strip()
    if where.lower() in ("none", "off"):
        return None
    return DirectoryBasedExampleDatabase(Path(where or Path(".hypothesis") / "examples").resolve())


_COMMON = dict(
    deadline=None,  # first calls compile kernels (XLA, oneDNN): wall-clock deadlines would be noise
    print_blob=True,  # every failure prints its @reproduce_failure(...) decorator
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _examples(default: int) -> int:
    value = os.environ.get(EXAMPLES_ENV, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(f"{EXAMPLES_ENV}={value!r} is not a number of examples; set a positive integer or unset it")
    return int(value)


def register_profiles() -> None:
    """The four profiles, by name: dev (20 examples), ci (50, derandomized), thorough (500), debug (10, verbose)."""
    database = example_database()
    settings.register_profile("dev", max_examples=_examples(20), database=database, **_COMMON)
    settings.register_profile("ci", max_examples=_examples(50), derandomize=True, **_COMMON)  # database=None
    settings.register_profile("thorough", max_examples=_examples(500), database=database, **_COMMON)
    settings.register_profile("debug", max_examples=_examples(10), verbosity=Verbosity.verbose, database=database,
                              **_COMMON)


def default_profile() -> str:
    """$CONFORMANCE_PROFILE, else `ci` when $CI is set, else `dev`."""
    name = os.environ.get(PROFILE_ENV) or ("ci" if os.environ.get("CI") else "dev")
    if name not in PROFILES:
        raise pytest.UsageError(f"{PROFILE_ENV}={name!r} is not a profile; use one of {', '.join(PROFILES)}")
    return name


register_profiles()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("conformance_profiles", type="bool", default=False,
                  help="load a layer-conformance hypothesis profile ($CONFORMANCE_PROFILE, else ci under $CI, "
                       "else dev) unless --hypothesis-profile names one")
    group = parser.getgroup("conformance", "layer-conformance")
    group.addoption("--conformance-frameworks", default=FRAMEWORK_NAMES, type=csv,
                    metavar="LIST", help="frameworks whose variants run (default: all four)")
    group.addoption("--conformance-dtypes", default=DTYPE_NAMES, type=csv, metavar="LIST",
                    help="dtypes to check, Keras mixed policies included (default: all six; the policies only for "
                         "claims with a Keras variant)")
    group.addoption("--conformance-devices", default="cpu,gpu", type=csv, metavar="LIST",
                    help="devices to check; one no framework sees is skipped with the reason (default: cpu,gpu)")
    group.addoption("--conformance-numerics", default="strict", choices=("strict", "default"),
                    help="strict: TF32 off and highest matmul precision in every framework (the bound's u is "
                         "the dtype's); default: each framework's own defaults, e.g. TF32 on GPUs (default: strict)")
    group.addoption("--conformance-require", default="", type=csv, metavar="LIST",
                    help="only claims with a variant of one of these frameworks (e.g. keras, for extra backends)")
    group.addoption("--conformance-geometries", default=None, metavar="N|all",
                    help="distinct layer geometries per test: its examples are spread over a pool of N, each "
                         "geometry with fresh data, so compiled layers are reused (default: "
                         "$CONFORMANCE_GEOMETRIES, else 10 under the ci profile and all otherwise)")
    group.addoption(REPORT_OPTION, metavar="PATH", default=None,
                    help="write the conformance report (JSON, schema layer-conformance/report/v1) to PATH")
    group.addoption("--conformance-counterexamples", metavar="DIR", default=None,
                    help="folder for failing examples (.npz + reproduction scripts); default: "
                         "counterexamples/ next to the report, none without a report")
    group.addoption("--conformance-table", action="store_true", default=False,
                    help="print the per-claim result table at the end of the run")
    group.addoption("--conformance-timeout", metavar="SECONDS", default=None,
                    help="per-test limit under pytest-xdist: a test still running after it is reported as an "
                         "error (hung) and the run goes on; 0 or off: no limit (default: $CONFORMANCE_TIMEOUT, "
                         f"else {DEFAULT_TIMEOUT_S:g})")
    group.addoption("--conformance-progress", metavar="PATH", default=None,
                    help="append one JSON line per finished test (and the total once collected) to PATH")
    group.addoption("--conformance-claims", default="", type=csv, metavar="MODULES",
                    help="modules (importable from the current folder, or .py paths) that register user claims "
                         "(layer_conformance.register_claims): the suites run them beside the catalog")
    group.addoption("--conformance-fault", default=None, metavar="ID",
                    help="monkeypatch the framework with this fault (layer_conformance.mutation.faults) for the "
                         "whole run: mutation testing of the suite")


def _load_profile(config: pytest.Config) -> None:
    if config.getoption("--hypothesis-profile", None):
        return  # hypothesis' own plugin loads it
    if config.getini("conformance_profiles") or os.environ.get(PROFILE_ENV):
        settings.load_profile(default_profile())


def pytest_configure(config: pytest.Config) -> None:
    from layer_conformance.adapters import FRAMEWORKS
    from layer_conformance.adapters.base import DEVICES
    from layer_conformance.adapters.spec import DTYPES

    _load_profile(config)
    for option, known in (("frameworks", FRAMEWORKS), ("dtypes", DTYPES), ("devices", DEVICES),
                          ("require", FRAMEWORKS)):
        value = config.getoption(f"--conformance-{option}")
        if isinstance(value, str):  # `pytest --help` leaves defaults unconverted
            value = csv(value)
        unknown = set(value) - set(known)
        if unknown:
            raise pytest.UsageError(f"--conformance-{option}: unknown {', '.join(sorted(unknown))}; "
                                    f"choose from {', '.join(known)}")
    geometries_per_test(config)  # a bad value is a usage error before anything runs
    _load_claims(config)
    config.addinivalue_line("markers", "conformance: a conformance check of the claim catalog (suites/)")
    config.addinivalue_line("markers", "selftest: a self-test of the harness (tests/)")
    recorder.configure(config)
    if config.getoption("--conformance-fault"):
        config.pluginmanager.import_plugin("layer_conformance.mutation.plugin")  # installs the fault now


def _load_claims(config: pytest.Config) -> None:
    """--conformance-claims: import the user's modules now (a bad one is a usage error before anything runs).
    Entry-point claims load when a conformance check is first collected, so a project without any pays nothing."""
    names = config.getoption("--conformance-claims")
    if not names:
        return
    from layer_conformance.suites.catalog import CatalogError
    from layer_conformance.suites.user_claims import load_modules

    try:
        load_modules(names, Path(config.invocation_params.dir))
    except CatalogError as error:
        raise pytest.UsageError(f"layer-conformance user claims: {error}") from None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    from layer_conformance.suites.parametrize import generate

    generate(metafunc)


def pytest_unconfigure(config: pytest.Config) -> None:
    recorder.unconfigure(config)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    """In a worker with a flight recorder: the test is noted (and the hang watchdog armed) while it runs."""
    with recorder.flight_noted(item):
        yield


@pytest.fixture
def conformance_runner(request: pytest.FixtureRequest, conformance_record: dict) -> Iterator[object]:
    """The runner of one row (claim, dtype, device) of a conformance check (suites.parametrize.runner_for)."""
    from layer_conformance.suites.parametrize import runner_for

    yield from runner_for(request, conformance_record)


def geometries_per_test(config: pytest.Config) -> int | None:
    """The pool size for the tests' geometries (None: every example draws its own)."""
    from layer_conformance.suites.strategies import GEOMETRIES_ENV, configured_pool_size

    try:
        return configured_pool_size(config.getoption("--conformance-geometries"))
    except ValueError as error:
        raise pytest.UsageError(f"--conformance-geometries / ${GEOMETRIES_ENV}: {error}") from None


def pytest_report_header(config: pytest.Config) -> list[str]:
    profile = settings._current_profile  # the profile in force after --hypothesis-profile
    pool = geometries_per_test(config)
    geometries = f"over at most {pool} geometries" if pool else "each drawing its geometry"
    return [f"layer-conformance: hypothesis profile {profile!r} ({settings().max_examples} examples per test, "
            f"{geometries}), "
            f"frameworks={','.join(config.getoption('--conformance-frameworks'))}, "
            f"dtypes={','.join(config.getoption('--conformance-dtypes'))}, "
            f"devices={','.join(config.getoption('--conformance-devices'))}, "
            f"KERAS_BACKEND={os.environ.get('KERAS_BACKEND', 'tensorflow (default)')}"]
