"""The conformance suites: claims (catalog), strategies, error bounds and the checks that run them.

The suites ship inside the package; `pytest_command` runs them the same way from a clone and from an
installed package, from any folder: with their own pytest settings (conformance.ini, so the caller's
configuration does not apply) and with node ids that start `suites/`.
"""
from __future__ import annotations

import sys
from pathlib import Path

SUITES_DIR = Path(__file__).resolve().parent


def pytest_command(*, quiet: bool = True) -> list[str]:
    """The start of a pytest command line that runs the suites (options and selections follow it)."""
    cmd = [sys.executable, "-m", "pytest", str(SUITES_DIR), "-c", str(SUITES_DIR / "conformance.ini"),
           "--rootdir", str(SUITES_DIR.parent), "-p", "layer_conformance.plugin"]
    return cmd + (["-q"] if quiet else [])
