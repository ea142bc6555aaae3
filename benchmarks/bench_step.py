"""Benchmark: the pre-training step (samples/s, MFU, time per objective / fusion pass,
data-loading share, MLflow tracking overhead). Same as `workbench bench`.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_step.py [--config base] [--json] [--quick]

Run it on an idle machine: the numbers are medians of interleaved repeats, but a
machine shared with other jobs still moves them (the table shows the load average).
"""

from __future__ import annotations

import argparse
import json

from workbench.bench import BenchOptions, render, run_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", choices=["base", "paper"], help="repeatable; default both")
    parser.add_argument("--quick", action="store_true", help="tiny widths, one step per measurement")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--steps", type=int, help="timed steps per block (default 3)")
    parser.add_argument("--repeats", type=int, help="timed blocks (default 3)")
    parser.add_argument("--loop-steps", type=int, help="steps per data/tracking block (default train.log_every)")
    parser.add_argument("--loop-repeats", type=int, help="(tracked, untracked) block pairs (default 2)")
    parser.add_argument("--compile", action="store_true", help="train.compile=true")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override, repeatable")
    args = parser.parse_args()
    options = BenchOptions(
        configs=tuple(args.config or BenchOptions().configs),
        quick=args.quick,
        device=args.device,
        batch_size=args.batch_size,
        steps=args.steps,
        repeats=args.repeats,
        loop_steps=args.loop_steps,
        loop_repeats=args.loop_repeats,
        compile=args.compile,
        overrides=args.overrides,
    )
    result = run_bench(options)
    print(json.dumps(result.to_dict(), indent=2) if args.json else render(result))


if __name__ == "__main__":
    main()
