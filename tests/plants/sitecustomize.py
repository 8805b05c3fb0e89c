"""A planted framework crash for the crash-containment self-tests (tests/test_crash.py).

Put this folder on PYTHONPATH and set PLANT_TEST (a substring of a test id) and PLANT_STATE (a file
path): `torch.nn.functional.linear` (what torch.nn.Linear calls) then ends its process on the first
call inside that test, the way a native framework bug does, and writes the call's geometry to
PLANT_STATE. Outside pytest (a reproduction script) it ends the process on that same geometry again.
PLANT_MODE: segv (default, SIGSEGV), abort (SIGABRT), hang (sleeps until killed).
"""
import os
import signal
import time

_TEST, _STATE = os.environ.get("PLANT_TEST"), os.environ.get("PLANT_STATE")


def _die() -> None:
    mode = os.environ.get("PLANT_MODE", "segv")
    if mode == "hang":
        time.sleep(10**6)
    elif mode == "abort":
        os.abort()
    else:
        os.kill(os.getpid(), signal.SIGSEGV)


def _install() -> None:
    import torch.nn.functional as F

    original = F.linear

    def linear(x, w, b=None):
        current = os.environ.get("PYTEST_CURRENT_TEST")
        geometry = f"{tuple(x.shape)} {tuple(w.shape)}"
        seen = os.path.exists(_STATE)
        if (current and _TEST in current and not seen) or \
                (not current and seen and open(_STATE).read() == geometry):
            with open(_STATE, "w") as handle:
                handle.write(geometry)
            _die()
        return original(x, w, b)

    F.linear = linear


if _TEST and _STATE:
    try:
        _install()
    except ImportError:  # no torch in this environment: nothing to plant
        pass
