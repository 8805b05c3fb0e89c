"""Port check speed: porting and checking the TCN (tests/port_models.py) with 50 examples, against the time
of the framework calls it makes: reading, porting and building the models (tracing, layer construction) and
every layer forward and VJP and every activation of both models.

The target is at most 2x: the check's own work (the float64 reference, the composed bounds, the
bookkeeping) costs no more than the framework calls it judges. Both figures come from one run, so a
loaded machine slows them together; the ratio is what to read.

    python benchmarks/port_speed.py [--examples 50] [--to keras,flax.nnx,...]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--to", default="torch,keras,flax.linen,flax.nnx")
    parser.add_argument("--model", default="tcn")
    args = parser.parse_args()
    from port_models import MODELS

    from layer_conformance.suites.port.check import check_port

    build, shape = MODELS[args.model]
    print(f"{'target':<11} {'examples':>8} {'total s':>8} {'build s':>8} {'calls s':>8} {'own s':>7} {'ratio':>6}  "
          f"status")
    worst = 0.0
    for target in args.to.split(","):
        started = time.perf_counter()
        result = check_port(build(0), to=target, input_shape=shape, examples=args.examples, name=args.model)
        total = time.perf_counter() - started
        framework = result.framework_seconds + result.build_seconds
        ratio = total / framework
        worst = max(worst, ratio)
        print(f"{target:<11} {result.examples:>8} {total:>8.2f} {result.build_seconds:>8.2f} "
              f"{result.framework_seconds:>8.2f} {total - framework:>7.2f} {ratio:>6.2f}  {result.status}")
    print(f"worst ratio of total time to framework time: {worst:.2f} (target: at most 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
