"""Benchmark: how much of a `base` run's wall time is downstream evaluation, per task.

Runs a real `train.run` on the base config (ShapesWorld default size, MLflow
sqlite store in a temp dir) for `--steps` pre-training steps, timing pre-training,
each evaluation task and the attention score. The share is reported two ways:

    measured      eval / (pre-training + eval) of this run
    at N steps    eval / (N x seconds per step + eval): the share of a full run of
                  `train.steps` (300 for base) without training all of them here

Eval time does not depend on how long the model was trained, so a short run gives
the eval side exactly. Every number is also taken in CPU seconds of this process
(`*_cpu` keys, "CPU" lines): on a shared machine wall time also counts waiting for a
core, CPU time does not, so with one thread (OMP_NUM_THREADS=1) the CPU share is the
steadier before/after comparison. Timings wrap the task functions from outside, so the script
runs unchanged against older checkouts (PYTHONPATH=<old tree>) for a before/after.

    nice -n 10 /work/notes/py benchmarks/bench_eval_share.py --steps 10 --data data/shapesworld
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="pre-training steps run here")
    parser.add_argument(
        "--full-steps", type=int, default=0, help="steps of the full run to extrapolate to (default: the config's)"
    )
    parser.add_argument(
        "--data", default="data/shapesworld", help="ShapesWorld default-size root (generated when missing)"
    )
    parser.add_argument("--experiment", default="base")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config overrides")
    parser.add_argument("--json", default="", help="also write the numbers to this JSON file")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from workbench import recorded_run, train
    from workbench.config import load_config
    from workbench.data import prepare_data
    from workbench.evaluate import runner

    timings: dict[str, float] = {}
    cpu_timings: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            start, cpu_start = time.perf_counter(), time.process_time()
            try:
                return fn(*a, **k)
            finally:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - start
                cpu_timings[name] = cpu_timings.get(name, 0.0) + time.process_time() - cpu_start

        return wrapper

    for name in list(runner.TASKS):
        runner.TASKS[name] = timed(f"eval {name}", runner.TASKS[name])
    runner.attention_in_object = timed("eval attention", runner.attention_in_object)
    if hasattr(runner, "attention_in_object_encoded"):  # from the retrieval encodings (newer trees)
        runner.attention_in_object_encoded = timed("eval attention", runner.attention_in_object_encoded)
    recorded_run.evaluate = timed("evaluation", recorded_run.evaluate)
    step_times: list[float] = []
    step_cpu_times: list[float] = []
    optimizer_step = train.optimizer_step

    def counted_step(*a, **k):
        out = optimizer_step(*a, **k)
        step_times.append(time.perf_counter())
        step_cpu_times.append(time.process_time())
        return out

    train.optimizer_step = counted_step  # steady-state step time, without start-up

    work = Path(tempfile.mkdtemp(prefix="bench_eval_share_"))
    overrides = [
        f"data.root={args.data}",
        f"train.steps={args.steps}",
        f"train.out_dir={work / 'out'}",
        f"tracking.uri=sqlite:///{work / 'mlflow.db'}",
        "train.device=cpu",
        "train.checkpoint_every=0",
        *args.overrides,
    ]
    cfg = load_config(args.experiment, overrides)
    full_steps = args.full_steps or load_config(args.experiment, [f"data.root={args.data}"]).train.steps
    prepare_data(cfg.data)  # generation is a one-off, not part of a run's share
    start, cpu_start = time.perf_counter(), time.process_time()
    result = train.run(cfg, progress=False)
    total, cpu_total = time.perf_counter() - start, time.process_time() - cpu_start
    numbers = {"steps": args.steps, "full_steps": full_steps, "metrics": result.metrics}
    for suffix, run_s, times, tasks in (
        ("", total, step_times, timings),
        ("_cpu", cpu_total, step_cpu_times, cpu_timings),
    ):
        evaluation = tasks.get("evaluation", 0.0)
        pretrain = run_s - evaluation
        per_step = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else pretrain / args.steps
        setup = pretrain - per_step * args.steps
        full = setup + full_steps * per_step + evaluation
        numbers |= {
            f"seconds_per_step{suffix}": per_step,
            f"setup_s{suffix}": setup,
            f"pretrain_s{suffix}": pretrain,
            f"eval_s{suffix}": evaluation,
            f"tasks_s{suffix}": {k: v for k, v in tasks.items() if k != "evaluation"},
            f"share_measured{suffix}": evaluation / run_s,
            f"full_run_s{suffix}": full,
            f"share_at_full_steps{suffix}": evaluation / full,
        }
        kind = "CPU" if suffix else "wall"
        print(
            f"{args.experiment} ({kind} s): {args.steps} steps in {pretrain:.1f} s ({per_step:.2f} s/step + "
            f"{setup:.1f} s set-up), evaluation {evaluation:.1f} s"
        )
        for name, seconds in numbers[f"tasks_s{suffix}"].items():
            print(f"  {name:<22} {seconds:7.1f} s  ({seconds / max(evaluation, 1e-9):5.1%} of eval)")
        print(
            f"eval share ({kind}): {numbers[f'share_measured{suffix}']:.1%} of this run; "
            f"{numbers[f'share_at_full_steps{suffix}']:.1%} of a {full_steps}-step run"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(numbers, indent=2))


if __name__ == "__main__":
    main()
