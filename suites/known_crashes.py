"""Known crashes: framework bugs that kill the process, their rules, standalone scripts and re-checks.

A crash cannot be asserted in-process the way an exception can (`suites/test_refusals.py`): the
variants a documented crash covers are not run there (`layer_conformance.suites.divergences`, kind "crash"). Instead,
every run re-checks each known crash in a throwaway child process (`python -c <script>` with a
time limit), in a background thread of the pytest controller, and the report says whether it still
happens on the installed versions.

`python -m layer_conformance.suites.known_crashes sweep` checks the torch rule below against a sweep of geometries,
each run in child processes (a crashing geometry costs only its child).
"""
from __future__ import annotations

import functools
import json
import os
import random
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any, Sequence

from layer_conformance.adapters.base import package_version
from layer_conformance.adapters.spec import LayerSpec
from layer_conformance.reports.flight import signal_name
from layer_conformance.suites.features import onednn_padding_only_geometry

RECHECK_TIMEOUT = 240.0  # seconds per script: a TensorFlow import alone takes 25 s on a busy 2-core machine

TORCH_BF16_ONEDNN_SCRIPT = """\
import torch
conv = torch.nn.Conv1d(3, 12, kernel_size=1, stride=2, padding=1, dilation=2, bias=False).to(torch.bfloat16)
x = torch.zeros(2, 1, 3, dtype=torch.bfloat16).permute(0, 2, 1)  # channels-last view, length 1
with torch.no_grad():
    conv(x)
"""

TORCH_F32_ONEDNN_BIAS_SCRIPT = """\
import torch
torch.set_num_threads(1)
conv = torch.nn.Conv1d(4, 3, kernel_size=1, stride=2, padding=1, dilation=3, bias=True)
x = torch.randn(3, 1, 4).permute(0, 2, 1)  # channels-last view, length 1
with torch.no_grad():
    conv(x)
"""

TF_GROUPED_DILATED_ABORT_SCRIPT = """\
import os
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
import keras
layer = keras.layers.Conv1D(4, 5, dilation_rate=3, groups=2, padding="causal", dtype="float64")
x = tf.constant(np.ones((2, 8, 2)), tf.float64)
for _ in range(20):  # heap corruption: glibc notices it after 2 of 3 single gradients, after 20 every time seen
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    tape.gradient(y, [x, *layer.trainable_variables])
"""


# ---- the torch bf16 oneDNN rule -------------------------------------------------------------------
def torch_bf16_onednn_crash(spec: LayerSpec, dtype: str, shape: Sequence[int]) -> bool:
    """The torch 2.13.0 oneDNN bf16 segfault (`brg_conv_fwd:avx512_core_bf16`): may this layer crash?

    bfloat16 convolution (autocast to bfloat16 under mixed_bfloat16 included); an input that torch sees
    as a channels-last view (the torch adapter permutes
    canonical (N, *s, C) to (N, C, *s) without a copy; with one channel and every spatial size 1 it is
    plainly contiguous); zero padding that torch's conv applies itself (equal on both sides: the
    adapter hands anything else to F.pad, which gives oneDNN real zeros); and a spatial axis with
    stride >= 2 and dilation >= 2 whose output positions, two or more, all read only that padding.
    The geometry is `layer_conformance.suites.features.onednn_padding_only_geometry` (the `padding-only-axis` feature).
    """
    return dtype in ("bfloat16", "mixed_bfloat16") and onednn_padding_only_geometry(spec, shape)


def torch_f32_onednn_bias_crash(spec: LayerSpec, dtype: str, shape: Sequence[int]) -> bool:
    """The same torch 2.13.0 oneDNN segfault in float32: the same geometry, with a bias."""
    return dtype == "float32" and spec.bias and onednn_padding_only_geometry(spec, shape)


# ---- re-checking a crash in a child process -------------------------------------------------------
_ALIASES = {"tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly")}


@functools.lru_cache(maxsize=None)
def installed_version(package: str) -> str | None:
    """The installed version of a package a divergence names (tensorflow: whichever distribution is installed)."""
    return next(filter(None, map(package_version, _ALIASES.get(package, (package,)))), None)


@dataclass(frozen=True)
class KnownCrash:
    """A documented crash (its divergence id), the packages its script needs, and the script."""

    divergence: str
    packages: tuple[str, ...]
    script: str


def recheck(crash: KnownCrash, timeout: float = RECHECK_TIMEOUT) -> str:
    """Runs the crash's script in a throwaway child: "crashes (SIGSEGV)", "no crash", "timed out", ..."""
    missing = [name for name in crash.packages if installed_version(name) is None]
    if missing:
        return f"not checked: {', '.join(missing)} not installed"
    try:
        done = subprocess.run([sys.executable, "-c", _NICE + crash.script], capture_output=True, text=True,
                              timeout=timeout, env=_child_environment())
    except subprocess.TimeoutExpired:
        return f"timed out (after {timeout:g} s)"
    return describe_exit(done.returncode, done.stderr)


def describe_exit(returncode: int, stderr: str = "") -> str:
    """What a child's exit status says about a crash script."""
    if returncode < 0:
        return f"crashes ({signal_name(-returncode)})"
    if returncode == 0:
        return "no crash"
    last = (stderr.strip().splitlines() or ["no output"])[-1]
    return f"not checked: the script failed with exit status {returncode} ({last[:200]})"


_NICE = "import os\ntry:\n    os.nice(10)\nexcept OSError:\n    pass\n"  # the child yields the cores to the tests


def _child_environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTEST_XDIST_WORKER", None)  # the child is no test worker
    return env


class Recheck:
    """Re-checks known crashes one after another in a daemon thread; `results()` waits for them."""

    def __init__(self, crashes: Sequence[KnownCrash], timeout: float = RECHECK_TIMEOUT):
        self.crashes = tuple(crashes)
        self.timeout = timeout
        self._results: dict[str, str] = {}
        self._thread = threading.Thread(target=self._run, name="known-crash-recheck", daemon=True)

    def start(self) -> "Recheck":
        self._thread.start()
        return self

    def _run(self) -> None:
        for crash in self.crashes:
            try:
                self._results[crash.divergence] = recheck(crash, self.timeout)
            except Exception as exc:  # a re-check must never cost the run
                self._results[crash.divergence] = f"not checked: {type(exc).__name__}: {exc}"

    def results(self, wait: float | None = None) -> dict[str, str]:
        """{divergence id: outcome}; a crash still being checked after `wait` seconds reads "timed out"."""
        self._thread.join(self.timeout * len(self.crashes) if wait is None else wait)
        return {c.divergence: self._results.get(c.divergence, "timed out (the run ended first)") for c in self.crashes}


# ---- the sweep behind the torch rule ---------------------------------------------------------------
_SWEEP_CHILD = """\
import json, sys
import numpy as np
import torch
torch.set_num_threads(int(sys.argv[2]))
from layer_conformance.adapters import get_adapter
from layer_conformance.adapters.spec import LayerSpec
adapter = get_adapter("torch")
for line in open(sys.argv[1]).read().splitlines()[int(sys.argv[3]):]:
    case = json.loads(line)
    pad = case["padding"] if isinstance(case["padding"], str) else tuple(map(tuple, case["padding"]))
    spec = LayerSpec.conv(case["cin"], case["cout"], tuple(case["k"]), strides=tuple(case["s"]), padding=pad,
                          dilation=tuple(case["d"]), groups=case["g"], bias=case["bias"])
    x = np.ones((case["n"], *case["len"], case["cin"]), np.float32)
    print("START", flush=True)
    layer = adapter.build(spec, {"kernel": np.ones(spec.kernel_shape(), np.float32),
                                 **({"bias": np.ones(case["cout"], np.float32)} if case["bias"] else {})}, "bfloat16")
    y = layer.forward(x)
    if case["vjp"]:
        layer.vjp(x, np.ones(y.shape, np.float32))
    print("OK", flush=True)
"""


def sweep_cases(count: int, seed: int, near_rule: bool) -> list[dict[str, Any]]:
    """Random bf16 conv geometries (rank 1-2, groups, bias, symmetric/asymmetric/same/causal padding)."""
    rng, cases = random.Random(seed), []
    while len(cases) < count:
        rank, groups = rng.choice((1, 2)), rng.choice((1, 1, 1, 2))
        case = {"cin": groups * rng.randint(1, 3), "cout": groups * rng.randint(1, 6), "g": groups,
                "k": [rng.randint(1, 3) for _ in range(rank)], "s": [rng.randint(1, 3) for _ in range(rank)],
                "d": [rng.randint(1, 3) for _ in range(rank)], "len": [rng.randint(1, 5) for _ in range(rank)],
                "n": rng.randint(1, 3), "bias": rng.random() < 0.5, "vjp": rng.random() < 0.5,
                "padding": _sweep_padding(rng, rank)}
        spec = _sweep_spec(case)
        if spec is not None and (not near_rule or _ruled(case)):
            cases.append(case)
    return cases


def _sweep_padding(rng: random.Random, rank: int) -> Any:
    kind = rng.random()
    if kind < 0.8:
        return [[p, p] for p in (rng.randint(0, 3) for _ in range(rank))]
    if kind < 0.9:
        return [[rng.randint(0, 3), rng.randint(0, 3)] for _ in range(rank)]
    return rng.choice(("same", "causal") if rank == 1 else ("same",))


def _sweep_spec(case: dict[str, Any]) -> LayerSpec | None:
    """The case's layer, or None where the input is shorter than the dilated kernel."""
    pad = case["padding"] if isinstance(case["padding"], str) else tuple(map(tuple, case["padding"]))
    spec = LayerSpec.conv(case["cin"], case["cout"], tuple(case["k"]), strides=tuple(case["s"]), padding=pad,
                          dilation=tuple(case["d"]), groups=case["g"], bias=case["bias"])
    pairs = spec.explicit_padding(tuple(case["len"]))
    fits = all(n + lo + hi >= (k - 1) * d + 1 for n, (lo, hi), k, d in
               zip(case["len"], pairs, spec.kernel_size, spec.dilation))
    return spec if fits else None


def _ruled(case: dict[str, Any]) -> bool:
    spec = _sweep_spec(case)
    return spec is not None and torch_bf16_onednn_crash(spec, "bfloat16", (case["n"], *case["len"], case["cin"]))


def sweep(cases: list[dict[str, Any]], threads: int, folder: str) -> list[bool]:
    """Whether each case crashed: children run the cases in order, a new child after each crash."""
    path = os.path.join(folder, "cases.jsonl")
    with open(path, "w") as handle:
        handle.writelines(json.dumps(case) + "\n" for case in cases)
    crashed, start = [False] * len(cases), 0
    while start < len(cases):
        done = subprocess.run([sys.executable, "-c", _SWEEP_CHILD, path, str(threads), str(start)], text=True,
                              capture_output=True, env=_child_environment(), cwd=_ROOT)
        finished = done.stdout.split().count("OK")
        if done.returncode == 0:
            break
        if done.returncode > 0:
            raise RuntimeError(f"the sweep child failed at case {start + finished}: {done.stderr[-2000:]}")
        crashed[start + finished] = True
        start += finished + 1
    return crashed


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv: Sequence[str]) -> int:
    """python -m layer_conformance.suites.known_crashes sweep [count] [seed] [threads]: the rule against crashes, as counts."""
    import tempfile

    if not argv or argv[0] != "sweep":
        print("usage: python -m layer_conformance.suites.known_crashes sweep [count] [seed] [threads]", file=sys.stderr)
        return 2
    given = [int(a) for a in argv[1:4]]
    count, seed, threads = given + [1000, 0, 1][len(given):]
    for near in (False, True):
        cases = sweep_cases(count, seed, near)
        with tempfile.TemporaryDirectory() as folder:
            crashed = sweep(cases, threads, folder)
        ruled = [_ruled(c) for c in cases]
        both = sum(r and c for r, c in zip(ruled, crashed))
        print(json.dumps({"cases": "inside the rule" if near else "random", "count": len(cases), "threads": threads,
                          "crashed": sum(crashed), "crashed_inside_rule": both,
                          "crashed_outside_rule": sum(crashed) - both, "inside_rule_no_crash": sum(ruled) - both}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
