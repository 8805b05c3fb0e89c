"""Registers the report plugin, the suite options, markers and the hypothesis profiles (one place)."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # before anything can import TensorFlow

import pytest
from hypothesis import HealthCheck, Verbosity, settings
from hypothesis.database import DirectoryBasedExampleDatabase

pytest_plugins = ["reports.plugin"]

DATABASE_ENV = "CONFORMANCE_HYPOTHESIS_DB"


def example_database() -> DirectoryBasedExampleDatabase | None:
    """Hypothesis' example database (failing examples are replayed first on the next run).

    $CONFORMANCE_HYPOTHESIS_DB names the folder (`none` or `off`: no database); by default it is
    .hypothesis/examples next to this file, whatever the current directory, so that pytest and
    `conformance run` share it and CI can cache one path. The derandomized `ci` profile never uses it:
    hypothesis ties derandomize=True to database=None, and that is what makes its runs identical.
    """
    where = os.environ.get(DATABASE_ENV, "").strip()
    if where.lower() in ("none", "off"):
        return None
    return DirectoryBasedExampleDatabase(Path(where).resolve() if where else
                                         Path(__file__).resolve().parent / ".hypothesis" / "examples")


_COMMON = dict(
    deadline=None,  # first calls compile kernels (XLA, oneDNN): wall-clock deadlines would be noise
    print_blob=True,  # every failure prints its @reproduce_failure(...) decorator
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
EXAMPLES_ENV = "CONFORMANCE_EXAMPLES"  # examples per test, overriding every profile's own number


def _examples(default: int) -> int:
    value = os.environ.get(EXAMPLES_ENV, "").strip()
    if not value:
        return default
    if not value.isdigit() or int(value) < 1:
        raise pytest.UsageError(f"{EXAMPLES_ENV}={value!r} is not a number of examples; set a positive integer or unset it")
    return int(value)


_DATABASE = example_database()
settings.register_profile("dev", max_examples=_examples(20), database=_DATABASE, **_COMMON)
settings.register_profile("ci", max_examples=_examples(50), derandomize=True, **_COMMON)  # database=None (derandomized)
settings.register_profile("thorough", max_examples=_examples(500), database=_DATABASE, **_COMMON)
settings.register_profile("debug", max_examples=_examples(10), verbosity=Verbosity.verbose, database=_DATABASE, **_COMMON)
PROFILES = ("dev", "ci", "thorough", "debug")
DEFAULT_PROFILE = os.environ.get("CONFORMANCE_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
if DEFAULT_PROFILE not in PROFILES:
    raise pytest.UsageError(f"CONFORMANCE_PROFILE={DEFAULT_PROFILE!r} is not a profile; use one of {', '.join(PROFILES)}")
settings.load_profile(DEFAULT_PROFILE)  # --hypothesis-profile on the command line still wins


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "layer-conformance reports")
    group.addoption("--conformance-frameworks", default="torch,keras,flax.linen,flax.nnx", type=_csv,
                    metavar="LIST", help="frameworks whose variants run (default: all four)")
    group.addoption("--conformance-dtypes", default="float64,float32,float16,bfloat16,mixed_float16,mixed_bfloat16",
                    type=_csv, metavar="LIST",
                    help="dtypes to check, Keras mixed policies included (default: all six; the policies only for "
                         "claims with a Keras variant)")
    group.addoption("--conformance-devices", default="cpu,gpu", type=_csv, metavar="LIST",
                    help="devices to check; one no framework sees is skipped with the reason (default: cpu,gpu)")
    group.addoption("--conformance-numerics", default="strict", choices=("strict", "default"),
                    help="strict: TF32 off and highest matmul precision in every framework (the bound's u is "
                         "the dtype's); default: each framework's own defaults, e.g. TF32 on GPUs (default: strict)")
    group.addoption("--conformance-require", default="", type=_csv, metavar="LIST",
                    help="only claims with a variant of one of these frameworks (e.g. keras, for extra backends)")
    group.addoption("--conformance-geometries", default=None, metavar="N|all",
                    help="distinct layer geometries per test: its examples are spread over a pool of N, each "
                         "geometry with fresh data, so compiled layers are reused (default: "
                         "$CONFORMANCE_GEOMETRIES, else 10 under the ci profile and all otherwise)")


def pytest_configure(config: pytest.Config) -> None:
    from adapters import FRAMEWORKS
    from adapters.base import DEVICES
    from adapters.spec import DTYPES

    for option, known in (("frameworks", FRAMEWORKS), ("dtypes", DTYPES), ("devices", DEVICES),
                          ("require", FRAMEWORKS)):
        value = config.getoption(f"--conformance-{option}")
        if isinstance(value, str):  # `pytest --help` leaves defaults unconverted
            value = _csv(value)
        unknown = set(value) - set(known)
        if unknown:
            raise pytest.UsageError(f"--conformance-{option}: unknown {', '.join(sorted(unknown))}; "
                                    f"choose from {', '.join(known)}")
    geometries_per_test(config)  # a bad value is a usage error before anything runs
    config.addinivalue_line("markers", "conformance: a conformance check of the claim catalog (suites/)")
    config.addinivalue_line("markers", "selftest: a self-test of the harness (tests/)")


def geometries_per_test(config: pytest.Config) -> int | None:
    """The pool size for the tests' geometries (None: every example draws its own)."""
    from suites.strategies import GEOMETRIES_ENV, configured_pool_size

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
