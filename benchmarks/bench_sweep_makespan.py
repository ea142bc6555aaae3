"""Benchmark: makespan of a sweep of 8 equal trials on 2 slots vs. the ideal packing.

Runs a real sweep (`run_sweep`: Optuna journal storage, MLflow sqlite store, one
forkserver child per trial) of one variant x 8 seeds on `--slots` CPU slots and
compares

    makespan      wall time of run_sweep (study + parent run set-up, all trials, close)
    ideal         sum of the trials' durations (Optuna start -> complete) / slots

The target is makespan <= 1.05 x ideal. The trial forkserver is started (and its
imports done) before timing, as in any sweep after its first seconds; the MLflow
store is created before timing too (a one-off schema migration).

    .venv/bin/python benchmarks/bench_sweep_makespan.py                 # real 30-step tiny trainings
    .venv/bin/python benchmarks/bench_sweep_makespan.py --sleep 10      # trials that only sleep 10 s
    .venv/bin/python benchmarks/bench_sweep_makespan.py --slot-threads 2   # each slot all cores (oversubscribed)

Slot threads: by default each slot gets cores / slots threads (torch, OpenMP, MKL);
`--slot-threads N` forces N per slot, e.g. every core per slot as a plain process
would take, to show what the split is worth.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import yaml

TINY = {
    "model.vision.width": 32,
    "model.vision.depth": 1,
    "model.vision.heads": 2,
    "model.vision.patch_size": 16,
    "model.text.width": 32,
    "model.text.depth": 1,
    "model.text.heads": 2,
    "model.fusion.width": 32,
    "model.fusion.layers": 1,
    "model.fusion.heads": 2,
    "objectives.itc.embed_dim": 16,
    "data.shapes_size": "tiny",
    "train.batch_size": 8,
    "train.warmup_steps": 2,
    "train.log_every": 5,
    "train.checkpoint_every": 0,
    "train.device": "cpu",
    "eval.tasks": [],
}


def sleep_train(cfg, *, resume_run_id=None, parent_run_id=None, tags=None, progress=True):
    """A trainer whose trials all take exactly BENCH_SLEEP_S seconds (isolates the sweep's overhead)."""
    from workbench import tracking
    from workbench.train import RunResult

    tracker = tracking.start_run(cfg, parent_run_id=parent_run_id, tags=tags)
    time.sleep(float(os.environ["BENCH_SLEEP_S"]))
    tracker.log_metrics({"train/loss/total": 1.0}, step=cfg.train.steps)
    tracker.finish("FINISHED")
    return RunResult(tracker.run_id, "FINISHED", {}, 1.0, cfg.train.steps)


def force_slot_threads(threads: int) -> None:
    """Every slot gets `threads` threads instead of cores / slots."""
    import dataclasses

    from workbench.sweeps import runner, slots

    planned = slots.plan_slots

    def plan(*args, **kwargs):
        return [
            dataclasses.replace(s, threads=threads, env={**s.env, **slots.thread_env(threads)})
            for s in planned(*args, **kwargs)
        ]

    runner.plan_slots = plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30, help="training steps per trial (real trainer)")
    parser.add_argument("--sleep", type=float, default=0.0, help="use trials that sleep this many seconds instead")
    parser.add_argument("--data", default="", help="ShapesWorld tiny root to reuse (generated when missing)")
    parser.add_argument(
        "--slot-threads", type=int, default=0, help="threads per slot (0 = cores / slots, the sweep's default)"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from workbench import tracking
    from workbench.data.shapes import generate
    from workbench.sweeps import child
    from workbench.sweeps.runner import SweepOptions, run_sweep
    from workbench.sweeps.spec import load_spec

    work = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    data = Path(args.data) if args.data else work / "shapes"
    generate(data, seed=0, size="tiny")
    spec_path = work / "makespan.yaml"
    spec_path.write_text(
        yaml.safe_dump(
            {
                "description": "makespan benchmark: one variant x N seeds",
                "base": "base",
                "overrides": {
                    **TINY,
                    "data.root": str(data),
                    "train.out_dir": str(work / "out"),
                    "train.steps": args.steps,
                },
                "variants": {"tiny": {}},
                "seeds": args.trials,
                "metrics": ["train/loss/total"],
                "objective": {"metric": "train/loss/total", "direction": "minimize"},
            }
        )
    )
    store = f"sqlite:///{work / 'mlflow.db'}"
    tracking.experiment_id("workbench", store)  # create the store's schema before timing
    options = SweepOptions(slots=args.slots, tracking_uri=store, progress=False)
    if args.slot_threads:
        force_slot_threads(args.slot_threads)
    if args.sleep:
        os.environ["BENCH_SLEEP_S"] = str(args.sleep)
        options.trainer = sleep_train  # pickled as __main__.sleep_train: each trial process imports this script
    child.warm_up(wait=True)

    start = time.perf_counter()
    result = run_sweep(load_spec(spec_path), options)
    makespan = time.perf_counter() - start
    problem = result.problem()
    if problem is not None:
        raise SystemExit(f"sweep failed: {problem}")

    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in result.complete]
    first = min(t.datetime_start for t in result.complete)
    last = max(t.datetime_complete for t in result.complete)
    ideal = sum(durations) / args.slots
    trainer = f"sleep {args.sleep:g} s" if args.sleep else f"train {args.steps} steps"
    from workbench.sweeps.slots import usable_cpu_count

    threads = args.slot_threads or max(1, usable_cpu_count() // args.slots)
    print(f"{len(durations)} trials ({trainer}) on {args.slots} slots, {threads} thread(s) per slot")
    print(
        f"trial time: mean {sum(durations) / len(durations):.2f} s, min {min(durations):.2f}, max "
        f"{max(durations):.2f}, total {sum(durations):.1f} s"
    )
    print(f"ideal (total / slots): {ideal:.2f} s")
    print(f"makespan (run_sweep wall): {makespan:.2f} s  -> ratio {makespan / ideal:.3f}  (target <= 1.05)")
    print(
        f"first trial start -> last trial end: {(last - first).total_seconds():.2f} s  -> ratio "
        f"{(last - first).total_seconds() / ideal:.3f}"
    )


if __name__ == "__main__":
    main()
