"""What the conformance suite itself costs: harness overhead, throughput, scaling, start-up, profile.

A script, not a test: it prints figures and passes whatever they are (except the start-up check,
whose "no framework imported" line says FAIL when one was). See benchmarks/README.md.

    python benchmarks/harness_overhead.py            # everything but --full (a few minutes)
    python benchmarks/harness_overhead.py --skip-scaling --examples 10
    python benchmarks/harness_overhead.py --full     # also times `conformance run --profile ci`

Timings on a shared machine are noisy: compare the ratios printed by one run, not absolute
figures across runs.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere in a checkout
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One thread per framework, as each worker of `pytest -n 2` on two cores gets (suites/conftest.py):
# with two OpenMP threads on a busy machine a 0.01 ms torch call waits milliseconds for a core, and
# that noise would swamp the harness's own cost. CONFORMANCE_THREADS=N measures with N threads.
_THREADS = os.environ.get("CONFORMANCE_THREADS", "1")
for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
    os.environ.setdefault(_name, _THREADS)
if _THREADS == "1":
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

FRAMEWORK_MODULES = ("torch", "tensorflow", "keras", "jax", "flax")
OVERHEAD_CLAIMS = ("xfw-dense", "xfw-conv1d")
OVERHEAD_TARGET = 1.3


# ---------------------------------------------------------------------------- the harness, in-process

def _harness_run(claim_id: str, examples: int, dtype: str, on_example: Callable[[tuple], None] | None = None,
                 seed: int = 0, geometries: int | None = None) -> tuple[float, int, list[float]]:
    """`ClaimRunner.forward_example` under hypothesis, derandomized: (wall seconds, examples, per-example seconds).

    The wall time covers hypothesis too (generation, shrinking bookkeeping, its engine); the
    per-example list covers the test body only.
    """
    from hypothesis import HealthCheck, given, settings, strategies as st

    from layer_conformance.suites.catalog import CLAIMS_BY_ID
    from layer_conformance.suites.harness import Case, ClaimRunner, freeze_imports

    runner = ClaimRunner(Case(CLAIMS_BY_ID[claim_id], dtype, "cpu"), {}, check="forward", geometries=geometries)
    freeze_imports()  # as the suite's runner fixture does
    if on_example is not None:  # capture the drawn example for the hand-written loop
        draw = runner.draw

        def capturing(data: Any) -> tuple:
            drawn = draw(data)
            on_example(drawn)
            return drawn

        runner.draw = capturing  # type: ignore[method-assign]
    bodies: list[float] = []

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def body(data: Any) -> None:
        start = time.perf_counter()
        runner.forward_example(data)
        bodies.append(time.perf_counter() - start)

    start = time.perf_counter()
    body()
    return time.perf_counter() - start, len(bodies), bodies


def _hand_example(claim_id: str, dtype: str) -> Callable[[tuple, Any], None]:
    """One example of the hand-written loop (below): a function of (drawn example, NumPy generator)."""
    import numpy as np

    from layer_conformance.adapters import get_adapter, reference
    from layer_conformance.suites.catalog import CLAIMS_BY_ID

    claim = CLAIMS_BY_ID[claim_id]
    base = claim.variants[0]

    def example(drawn: tuple, rng: Any) -> None:
        dims, x, weights, _style = drawn
        x = rng.standard_normal(x.shape).astype(x.dtype)
        weights = {name: rng.standard_normal(w.shape).astype(w.dtype) for name, w in weights.items()}
        expected = base.y_out(reference.forward(base.spec(dims), base.x_in(x, dims), base.w_map(weights, dims)), dims)
        for variant in claim.variants:
            spec = variant.spec(dims)
            adapter = get_adapter(variant.framework)
            if adapter.supports(spec, dtype, "cpu"):
                continue
            layer = adapter.build(spec, variant.w_map(weights, dims), dtype, "cpu")
            y = variant.y_out(layer.forward(variant.x_in(x, dims)).astype(np.float64), dims)
            np.max(np.abs(y - expected), initial=0.0)

    return example


def _hand_loop(claim_id: str, drawn: list[tuple], dtype: str) -> float:
    """The same framework calls without the harness, as a hand-written equivalence script makes
    them: draw random input and weights of the example's shapes with NumPy, build each variant with
    those weights, forward, compare with the float64 NumPy reference (computed once per example)."""
    import numpy as np

    example = _hand_example(claim_id, dtype)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for one in drawn:
        example(one, rng)
    return time.perf_counter() - start


def _floor_run(claim_id: str, drawn: list[tuple], dtype: str) -> tuple[float, int]:
    """The hand loop's examples run as the body of a bare @given test that draws one integer per
    example: (wall seconds, examples). What hypothesis alone costs on these shapes (its engine, and
    its effect on the framework calls around it): the least any hypothesis-driven harness can add."""
    import numpy as np
    from hypothesis import HealthCheck, given, settings, strategies as st

    example = _hand_example(claim_id, dtype)
    rng = np.random.default_rng(0)
    count = [0]

    @settings(max_examples=len(drawn), derandomize=True, database=None, deadline=None, print_blob=False,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def body(data: Any) -> None:
        data.draw(st.integers(0, 2 ** 16), label="example")
        example(drawn[count[0] % len(drawn)], rng)
        count[0] += 1

    start = time.perf_counter()
    body()
    return time.perf_counter() - start, count[0]


@contextlib.contextmanager
def _timing_calls(seconds: dict[str, float]) -> Any:
    """Adds the wall time spent in framework calls (Adapter.build, Layer.forward) and in
    ClaimRunner.draw to `seconds` while active."""
    from layer_conformance.adapters.base import Adapter, Layer
    from layer_conformance.suites.harness import ClaimRunner

    originals = [(Adapter, "build", "framework"), (Layer, "forward", "framework"), (ClaimRunner, "draw", "draw")]
    saved = [(cls, name, cls.__dict__[name]) for cls, name, _ in originals]

    def timed(function: Callable[..., Any], key: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - start
        return call

    for cls, name, key in originals:
        setattr(cls, name, timed(cls.__dict__[name], key))
    try:
        yield
    finally:
        for cls, name, function in saved:
            setattr(cls, name, function)


def _breakdown(claim_id: str, examples: int, dtype: str, pool: int | None, drawn: list[tuple]) -> str:
    """One instrumented run of each (not the timed ones): where an example's time goes, in ms."""
    harness: dict[str, float] = {}
    with _timing_calls(harness):
        wall, count, bodies = _harness_run(claim_id, examples, dtype, geometries=pool)
    hand: dict[str, float] = {}
    with _timing_calls(hand):
        hand_wall = _hand_loop(claim_id, drawn, dtype)
    ms = lambda value, n: f"{value / n * 1e3:.2f}"  # noqa: E731
    engine, body = wall - sum(bodies), sum(bodies)
    framework, draw = harness.get("framework", 0.0), harness.get("draw", 0.0)
    return (f"where an example's time goes (instrumented run, ms): harness {ms(wall, count)} = hypothesis engine "
            f"{ms(engine, count)} + drawing sizes and data {ms(draw, count)} + framework calls {ms(framework, count)} "
            f"+ reference, bounds and bookkeeping {ms(body - draw - framework, count)}; hand loop {ms(hand_wall, len(drawn))} "
            f"= framework calls {ms(hand.get('framework', 0.0), len(drawn))} + data, reference and comparison "
            f"{ms(hand_wall - hand.get('framework', 0.0), len(drawn))}")


def overhead(examples: int, dtype: str, rounds: int) -> dict[str, dict[str, float]]:
    from layer_conformance.suites.strategies import CI_GEOMETRIES

    print(f"\n== Harness overhead: ClaimRunner.forward_example under hypothesis vs a hand-written loop "
          f"({examples} derandomized examples, {dtype}, cpu; {rounds} rounds after a warm-up round)")
    figures = {}
    for mode, pool in ((f"ci: pool of {CI_GEOMETRIES}", CI_GEOMETRIES), ("each example its own geometry", None)):
        print(f"  {mode}:")
        for claim_id in OVERHEAD_CLAIMS:
            drawn: list[tuple] = []
            _harness_run(claim_id, examples, dtype, drawn.append, geometries=pool)  # warm-up: imports, compiles
            _hand_loop(claim_id, drawn, dtype)
            harness, hand, bodies, floor = [], [], [], []

            def timed_harness() -> None:
                wall, count, per = _harness_run(claim_id, examples, dtype, geometries=pool)
                harness.append(wall / count)
                bodies.append(sum(per) / count)

            def timed_hand() -> None:
                hand.append(_hand_loop(claim_id, drawn, dtype) / len(drawn))

            def timed_floor() -> None:
                wall, count = _floor_run(claim_id, drawn, dtype)
                floor.append(wall / count)

            order = [timed_harness, timed_hand, timed_floor]
            for round_ in range(rounds):  # back to back, so load changes hit all three alike; every other
                for run in (order if round_ % 2 == 0 else order[::-1]):  # round reversed: no one always goes first
                    run()
            h, b, m, f = min(harness), min(bodies), min(hand), min(floor)
            # each round's harness run, hand loop and floor ran back to back: their ratios see the same load
            paired = statistics.median(x / y for x, y in zip(harness, hand))
            body_paired = statistics.median(x / y for x, y in zip(bodies, hand))
            floor_paired = statistics.median(x / y for x, y in zip(floor, hand))
            own_paired = statistics.median(x / y for x, y in zip(harness, floor))
            figures[f"{claim_id} ({mode})"] = {"harness_s": h, "body_s": b, "hand_s": m, "floor_s": f, "ratio": paired,
                                               "ratio_of_best": h / m, "floor_ratio": floor_paired,
                                               "over_floor": own_paired}
            verdict = "within" if paired <= OVERHEAD_TARGET else "OVER"
            print(f"    {claim_id:12s} harness {h * 1e3:8.2f} ms/example (test body {b * 1e3:8.2f}), hand loop "
                  f"{m * 1e3:8.2f} ms/example (best rounds) -> ratio {paired:5.2f}x, median of {rounds} paired "
                  f"rounds ({verdict} the {OVERHEAD_TARGET}x target; body alone {body_paired:5.2f}x; ratio of the "
                  f"best rounds {h / m:5.2f}x)")
            print(f"      hypothesis alone (the hand loop's examples as the body of a bare @given test, one draw "
                  f"each): {f * 1e3:.2f} ms/example -> {floor_paired:5.2f}x the hand loop; the harness is "
                  f"{own_paired:5.2f}x that (medians of paired rounds)")
            print(f"      {_breakdown(claim_id, examples, dtype, pool, drawn)}")
    return figures


def throughput(examples: int, dtype: str) -> None:
    from layer_conformance.suites.catalog import CLAIMS

    print(f"\n== Throughput of the forward check ({examples} derandomized examples per claim, {dtype}, cpu)")
    print("  first = the first example of the claim (frameworks already imported: compiles its first shapes); "
          "warm = examples/s over the rest")
    for claim in CLAIMS:
        if dtype not in claim.dtypes:
            continue
        try:
            wall, count, per = _harness_run(claim.id, examples, dtype)
        except Exception as exc:  # noqa: BLE001 - a skip or failure of one claim is reported, not fatal
            print(f"  {claim.id:34s} not measured: {exc.__class__.__name__}: {str(exc).splitlines()[0][:90]}")
            continue
        warm = per[1:] or per
        rate = len(warm) / sum(warm) if sum(warm) > 0 else float("inf")
        print(f"  {claim.id:34s} {rate:8.1f} examples/s warm, {count / wall:8.1f} overall, "
              f"first example {per[0]:6.2f} s")


POOL_CLAIMS = ("xfw-conv1d", "flax-dense-conv-1x1", "keras-dense-conv1d-methods")


def geometry_pool(examples: int, dtype: str) -> None:
    """Examples/s with every example its own geometry against a pool of 10 (the ci profile's)."""
    from layer_conformance.adapters import clear_programs
    from layer_conformance.suites.strategies import CI_GEOMETRIES

    print(f"\n== Geometry pool: the forward check, {examples} derandomized examples per claim ({dtype}, cpu), "
          f"each example its own geometry vs a pool of {CI_GEOMETRIES} (new shapes compile: XLA, tf.function)")
    for claim_id in POOL_CLAIMS:
        rates = {}
        for label, pool in (("own", None), ("pool", CI_GEOMETRIES)):
            clear_programs()  # both start cold: no program of an earlier section's shapes
            try:
                wall, count, _ = _harness_run(claim_id, examples, dtype, geometries=pool)
            except Exception as exc:  # noqa: BLE001 - a skip or failure of one claim is reported, not fatal
                print(f"  {claim_id:28s} not measured: {exc.__class__.__name__}: {str(exc).splitlines()[0][:90]}")
                break
            rates[label] = count / wall
        if len(rates) == 2:
            print(f"  {claim_id:28s} {rates['own']:7.1f} examples/s each its own geometry, {rates['pool']:7.1f} over "
                  f"the pool -> {rates['pool'] / rates['own']:4.1f}x")


# ---------------------------------------------------------------------------- fresh processes

def _wall(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout)
    return time.perf_counter() - start, done


def scaling() -> None:
    base = [sys.executable, "-m", "pytest", "suites/test_forward.py", "-k", "xfw-dense", "--hypothesis-profile", "ci",
            "-q", "-p", "no:cacheprovider"]
    print(f"\n== Scaling: {' '.join(base[2:])} serial vs -n 2")
    walls = {}
    for name, extra in (("serial", ["-p", "no:xdist"]), ("-n 2", ["-n", "2"])):
        wall, done = _wall(base + extra, timeout=1800)
        tail = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip()[-200:]
        walls[name] = wall
        print(f"  {name:7s} {wall:7.1f} s  (exit {done.returncode}: {tail})")
    print(f"  speed-up with -n 2: {walls['serial'] / walls['-n 2']:.2f}x")


_PROBE = """
import json, sys, time
start = time.perf_counter()
sys.argv = ["conformance"] + json.loads(sys.argv[1])
from layer_conformance.cli import main
try:
    code = main()
except SystemExit as exc:
    code = exc.code
frameworks = sorted(m for m in sys.modules if m.split(".")[0] in {frameworks!r})
print("\\n@@" + json.dumps({{"code": code, "inner_s": time.perf_counter() - start, "frameworks": frameworks}}))
"""


def startup() -> bool:
    print("\n== Start-up (fresh processes; wall time includes the interpreter)")
    ok = True
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "r.json"
        report.write_text(json.dumps({"schema": "layer-conformance/report/v1", "complete": True, "environment": {},
                                      "results": []}))
        probe = _PROBE.format(frameworks=FRAMEWORK_MODULES)
        for args in (["--help"], ["compare", str(report), str(report)]):
            label = "conformance " + " ".join("r.json" if a == str(report) else a for a in args)
            console = [sys.executable, "-m", "layer_conformance", *args]
            walls = [_wall(console)[0] for _ in range(3)]
            _, done = _wall([sys.executable, "-c", probe, json.dumps(args)])
            line = next((l for l in done.stdout.splitlines() if l.startswith("@@")), None)
            info = json.loads(line[2:]) if line else {"frameworks": ["(probe failed: " + done.stderr[-200:] + ")"]}
            wall = statistics.median(walls)
            clean = not info["frameworks"] and wall < 1.0
            ok &= clean
            print(f"  {label:32s} {wall:6.3f} s median of 3 (in-process {info.get('inner_s', float('nan')):.3f} s), "
                  f"framework modules imported: {info['frameworks'] or 'none'} -> {'ok' if clean else 'FAIL'}")
    return ok


def full_run() -> None:
    with tempfile.TemporaryDirectory() as folder:
        cmd = [sys.executable, "-m", "layer_conformance", "run", "--profile", "ci", "--out", folder]
        print("\n== Full run: conformance run --profile ci (this takes many minutes)")
        wall, done = _wall(cmd)
        print(f"  wall {wall:.0f} s, exit {done.returncode}")


# ---------------------------------------------------------------------------- profile

BREAKDOWN = (  # (what, file suffix, function): cumulative time of that function
    ("framework import (first get_adapter)", "adapters/__init__.py", "get_adapter"),
    ("layer construction (Adapter.build)", "adapters/base.py", "build"),
    ("forward (Layer.forward)", "adapters/base.py", "forward"),
    ("float64 reference: output and magnitude", "adapters/reference.py", "forward_and_magnitude"),
    ("hypothesis generation (ClaimRunner.draw)", "suites/harness.py", "draw"),
    ("test body (ClaimRunner.forward_example)", "suites/harness.py", "forward_example"),
    ("runner set-up (ClaimRunner.__post_init__)", "suites/harness.py", "__post_init__"),
)


def profile(claim_id: str, examples: int, dtype: str) -> None:
    """In a fresh process, so framework import and first compilation are part of the picture."""
    print(f"\n== Profile: {claim_id}, {examples} examples, {dtype}, cold process (cProfile)")
    wall, done = _wall([sys.executable, str(Path(__file__).resolve()), "--profile-child", claim_id,
                        "--examples", str(examples), "--dtype", dtype])
    sys.stdout.write(done.stdout)
    if done.returncode:
        print(f"  profile child failed (exit {done.returncode}): {done.stderr[-1500:]}")


def _profile_child(claim_id: str, examples: int, dtype: str) -> None:
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    _, count, _ = _harness_run(claim_id, examples, dtype)
    profiler.disable()
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler)
    cumulative = {}
    for (file, _line, function), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        for what, suffix, name in BREAKDOWN:
            if function == name and file.replace(os.sep, "/").endswith(suffix):
                cumulative[what] = cumulative.get(what, 0.0) + ct
    print(f"  {count} examples in {total:.2f} s (profiled; cProfile slows Python-heavy code)")
    for what, _suffix, _name in BREAKDOWN:
        seconds = cumulative.get(what, 0.0)
        print(f"  {what:45s} {seconds:7.2f} s  {100 * seconds / total:5.1f} %")
    rest = (total - cumulative.get("test body (ClaimRunner.forward_example)", 0.0)
            - cumulative.get("runner set-up (ClaimRunner.__post_init__)", 0.0))
    print(f"  {'hypothesis engine (outside body and set-up)':45s} {rest:7.2f} s  {100 * rest / total:5.1f} %")
    builds = sorted(((file.replace(os.sep, "/").rsplit("/", 1)[-1], line, ct)
                     for (file, line, function), (_cc, _nc, _tt, ct, _callers) in stats.stats.items()  # type: ignore[attr-defined]
                     if function == "_build" and "/adapters/" in file.replace(os.sep, "/")), key=lambda b: -b[2])
    for file, line, seconds in builds:  # per framework (flax.py holds two: linen first in the file, then nnx)
        print(f"    of which {file}:{line} _build{'':{max(0, 24 - len(file) - len(str(line)))}} {seconds:7.2f} s  "
              f"{100 * seconds / total:5.1f} %")
    print("  (rows overlap: the import happens inside the runner set-up, which asks every adapter whether it "
          "can run the claim; draw, build, forward and reference are inside the test body)")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(18)
    lines = [l for l in out.getvalue().splitlines() if l.strip()]
    start_at = next((i for i, l in enumerate(lines) if l.lstrip().startswith("ncalls")), 0)
    print("  top functions by cumulative time:")
    for line in lines[start_at:]:
        print("   " + line.replace(str(ROOT) + os.sep, "").replace(sys.prefix, "<venv>")[:150])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=50,
                        help="hypothesis examples per measurement (default 50, a ci test's number)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds for the overhead ratio (default 15)")
    parser.add_argument("--dtype", default="float32", help="dtype under test (default float32)")
    parser.add_argument("--throughput-examples", type=int, default=8, help="examples per claim for throughput")
    parser.add_argument("--skip-scaling", action="store_true", help="skip the pytest serial vs -n 2 timing")
    parser.add_argument("--pool-examples", type=int, default=30, help="examples per claim for the pool section")
    parser.add_argument("--skip-pool", action="store_true", help="skip the geometry-pool section")
    parser.add_argument("--full", action="store_true", help="also time `conformance run --profile ci` (many minutes)")
    parser.add_argument("--profile-child", metavar="CLAIM", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profile_child:
        _profile_child(args.profile_child, args.examples, args.dtype)
        return 0
    started = time.perf_counter()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    ok = startup()  # first: nothing of ours is imported in this process yet either
    profile("xfw-conv1d", args.examples, args.dtype)
    overhead(args.examples, args.dtype, args.rounds)
    throughput(args.throughput_examples, args.dtype)
    if not args.skip_pool:
        geometry_pool(args.pool_examples, args.dtype)
    if not args.skip_scaling:
        scaling()
    if args.full:
        full_run()
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
