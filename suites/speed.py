"""Timing and memory helpers for the `speed` check: a benchmark of the variants, never a pass/fail.

What is timed is `Layer.forward` as the harness calls it: the canonical (channels-last NumPy) input
goes in, the canonical NumPy output comes out, so host conversions and layout transposes that a
variant needs are part of its cost. Each layer is built once, warmed up (first calls compile
kernels: XLA, oneDNN, tf.function), then timed.

Memory, per method name recorded in `memory_method`:

- ``tracemalloc``: peak bytes of allocations made through Python's allocators during one forward
  call, NumPy array buffers included (NumPy reports them to tracemalloc). Buffers that frameworks
  allocate natively (torch's CPU allocator, XLA and TensorFlow buffers) are NOT seen, so for
  those frameworks it counts the host-side conversion copies only.
- ``rss``: growth of the resident set size (``/proc/self/statm``, pages x page size) across one
  forward call: memory the process newly took from the OS, whoever allocated it. Allocator caches
  make it 0 once a shape has been seen, so it is recorded as ``rss_delta_bytes`` next to the peak,
  not used as the peak. Linux only (None elsewhere).
- ``torch.cuda.max_memory_allocated``: on a GPU with torch, peak device bytes held by torch's
  caching allocator during one forward (statistics reset first).
- ``tf.config.experimental.get_memory_info``: the same for TensorFlow (Keras on its TF backend).

Set ``CONFORMANCE_SPEED=0`` to switch the check off (it then skips with the reason).
"""
from __future__ import annotations

import gc
import os
import statistics
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any, Callable

ENV_SWITCH = "CONFORMANCE_SPEED"
WARMUP = 3
MIN_REPEATS = 7
MAX_REPEATS = 15
FLOOR_REPEATS = 3  # a slow layer stops here once the budget is spent: still a median and a spread
BUDGET_S = 0.2  # timed seconds per variant per grid point


def enabled() -> tuple[bool, str]:
    """(on, reason): the check runs unless CONFORMANCE_SPEED is 0/false/no/off."""
    value = os.environ.get(ENV_SWITCH, "1").strip().lower()
    if value in ("0", "false", "no", "off"):
        return False, f"speed benchmark switched off ({ENV_SWITCH}={os.environ[ENV_SWITCH]})"
    return True, ""


@dataclass(frozen=True)
class Timing:
    median_s: float
    iqr_s: float  # interquartile range of the repeats (0 with fewer than 2)
    min_s: float
    max_s: float
    repeats: int


def _iqr(times: list[float]) -> float:
    if len(times) < 2:
        return 0.0
    q = statistics.quantiles(times, n=4, method="inclusive")
    return q[2] - q[0]


def measure(fn: Callable[[], Any], *, warmup: int = WARMUP, min_repeats: int = MIN_REPEATS,
            max_repeats: int = MAX_REPEATS, budget_s: float = BUDGET_S) -> Timing:
    """Median and spread of `fn()` wall time after `warmup` untimed calls.

    Repeats until `max_repeats`, or stops early once `budget_s` of timed calls is spent and at
    least `min_repeats` ran (or `FLOOR_REPEATS`, for calls so slow that `min_repeats` would blow
    the budget several times over).
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    spent = 0.0
    gc_was_on = gc.isenabled()
    gc.disable()  # a collection landing in one repeat is noise, not the layer's cost
    try:
        while len(times) < max_repeats:
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            times.append(elapsed)
            spent += elapsed
            if (spent >= budget_s and len(times) >= min_repeats) or (spent >= 2 * budget_s and
                                                                     len(times) >= FLOOR_REPEATS):
                break
    finally:
        if gc_was_on:
            gc.enable()
    return Timing(statistics.median(times), _iqr(times), min(times), max(times), len(times))


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            resident_pages = int(handle.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def peak_memory(fn: Callable[[], Any], framework: str = "", device: str = "cpu") -> dict[str, Any]:
    """{"peak_bytes", "memory_method", "rss_delta_bytes"} for one call of `fn` (see the module doc)."""
    if device != "cpu":
        gpu = _gpu_peak(fn, framework)
        if gpu is not None:
            return {**gpu, "rss_delta_bytes": None}
    # no gc.collect() first: with TensorFlow or JAX loaded one collection costs 0.1-0.5 s
    before = _rss_bytes()
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if started_here:
            tracemalloc.stop()
    after = _rss_bytes()
    rss = None if before is None or after is None else max(after - before, 0)
    return {"peak_bytes": max(peak - base, 0), "memory_method": "tracemalloc", "rss_delta_bytes": rss}


def _gpu_peak(fn: Callable[[], Any], framework: str) -> dict[str, Any] | None:
    if framework == "torch":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return {"peak_bytes": max(torch.cuda.max_memory_allocated() - base, 0),
                "memory_method": "torch.cuda.max_memory_allocated"}
    if framework == "keras":
        from layer_conformance.adapters.keras import BACKEND

        if BACKEND == "tensorflow":
            import tensorflow as tf

            tf.config.experimental.reset_memory_stats("GPU:0")
            base = tf.config.experimental.get_memory_info("GPU:0")["current"]
            fn()
            return {"peak_bytes": max(tf.config.experimental.get_memory_info("GPU:0")["peak"] - base, 0),
                    "memory_method": "tf.config.experimental.get_memory_info"}
    return None  # JAX exposes no resettable peak: fall back to the host-side figures


def relative(medians: dict[str, float]) -> dict[str, float]:
    """Each median over the fastest one (the fastest gets exactly 1.0)."""
    fastest = min(medians.values())
    return {key: (1.0 if value == fastest else value / fastest) if fastest > 0 else 1.0
            for key, value in medians.items()}


def grid(claim_id: str, example: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, dims) grid points for one claim: its example sizes, then either the classic
    (B, K, L) = (128, 256, 8) Linear-vs-Conv1d measurement (pointwise dense/conv claims with free
    sizes) or the example with a larger batch (every other claim: batch is the one size every
    claim's mappings accept unchanged)."""
    points = [("example", dict(example))]
    if claim_id not in CLASSIC_CLAIMS:  # one larger point per claim: building and compiling cost more than timing
        points.append((f"B={BATCH}", _with_batch(example, BATCH)))
    else:
        classic = {**example, **CLASSIC}
        if "spec" in classic:  # xfw-dense carries its spec and input shape
            from layer_conformance.adapters.spec import LayerSpec

            classic["spec"] = LayerSpec.dense(CLASSIC["K"], classic["N"])
            classic["shape"] = (CLASSIC["B"], CLASSIC["L"], CLASSIC["K"])
        points.append(("classic B=128 K=256 L=8", classic))
    return points


BATCH = 64
CLASSIC = {"B": 128, "K": 256, "L": 8}  # input (128, 256, 8) channels-first: B=128, K=256 channels, L=8
CLASSIC_CLAIMS = ("torch-linear-conv1d-k1", "torch-conv1d-conv2d-1x1", "keras-dense-conv1d-methods",
                  "flax-dense-conv-1x1", "xfw-dense")


def _with_batch(dims: dict[str, Any], batch: int) -> dict[str, Any]:
    scaled = dict(dims)
    if "B" in scaled:
        scaled["B"] = batch
    if "shape" in scaled:
        scaled["shape"] = (batch, *scaled["shape"][1:])
    return scaled


def describe_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"
