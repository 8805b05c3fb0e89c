"""Planted framework faults for self-tests that need a real pytest process (tests/test_crash.py,
tests/test_nondeterminism.py).

Put this folder on PYTHONPATH and set PLANT_TEST (a substring of a test id) and PLANT_STATE (a file
path); `torch.nn.functional.linear` (what torch.nn.Linear calls) is then replaced. PLANT_MODE:

- segv (default, SIGSEGV), abort (SIGABRT), hang (sleeps until killed): the first call inside that
  test ends its process, the way a native framework bug does, and writes the call's geometry to
  PLANT_STATE. Outside pytest (a reproduction script) it ends the process on that same geometry again.
- jitter: every call inside that test moves a random tenth of its outputs by one ulp, a different
  tenth each call (a framework that is not deterministic: two calls on one input differ).
- ulp: every call inside that test moves each output by one ulp toward +inf (deterministic: the same
  input gives the same output, one ulp off the true one).
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


def _nudge(y, where):
    import torch

    return torch.where(where, torch.nextafter(y, torch.full_like(y, float("inf"))), y)


def _install() -> None:
    import torch
    import torch.nn.functional as F

    original = F.linear
    mode = os.environ.get("PLANT_MODE", "segv")
    if mode in ("jitter", "ulp"):
        def linear(x, w, b=None):
            y = original(x, w, b)
            current = os.environ.get("PYTEST_CURRENT_TEST")
            if not (current and _TEST in current) or not y.is_floating_point():
                return y
            if not os.path.exists(_STATE):
                with open(_STATE, "w") as handle:  # the self-test's proof that the plant was in force
                    handle.write(mode)
            if mode == "ulp":
                return _nudge(y, torch.ones_like(y, dtype=torch.bool))
            return _nudge(y, torch.rand(y.shape) < 0.1)  # torch's global generator: another tenth each call

        F.linear = linear
        return

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
