"""Benchmark: `workbench report ablations` over 1,000 runs in one MLflow store.

Builds a real sqlite MLflow store in a temporary directory laid out like real
sweeps (INTERFACES.md "MLflow layout": parent run with sweep.yaml, child runs
with params = flatten(cfg), tags, step losses and final eval metrics), then times
the report (tables in every format + figures) and prints the seconds.

    .venv/bin/python benchmarks/bench_report.py [--sweeps 10 --variants 33 --seeds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

EVAL_KEYS = [
    "eval/retrieval/tr_r1",
    "eval/retrieval/tr_r5",
    "eval/retrieval/tr_r10",
    "eval/retrieval/ir_r1",
    "eval/retrieval/ir_r5",
    "eval/retrieval/ir_r10",
    "eval/retrieval/r_mean",
    "eval/video_retrieval/tr_r1",
    "eval/video_retrieval/ir_r1",
    "eval/vqa/acc",
    "eval/nlvr/acc",
    "eval/ve/acc",
    "eval/attention/in_object",
]
LOSSES = ["itc", "itm", "mlm", "scl_mvsc", "scl_mlsc"]
# reference levels, named as evaluation logs them (eval/<task>/<kind>_<metric>): the tables' reference row
REFERENCE_KEYS = {
    "eval/retrieval/chance_tr_r1": 0.5,
    "eval/retrieval/chance_ir_r1": 0.5,
    "eval/retrieval/chance_r_mean": 2.7,
    "eval/vqa/majority_acc": 33.2,
    "eval/vqa/blind_acc": 41.0,
    "eval/nlvr/chance_acc": 50.0,
    "eval/ve/majority_acc": 33.3,
}


def build_store(folder: Path, sweeps: int, variants: int, seeds: int, log_points: int, log_every: int = 10) -> int:
    """Write `sweeps` sweeps of `variants` x `seeds` child runs (+1 parent each) into
    `<folder>/mlflow.db` (artifacts under `<folder>/artifacts`); return the run count."""
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    from workbench.config import RunConfig, flatten

    client = MlflowClient(tracking_uri=f"sqlite:///{folder / 'mlflow.db'}")
    exp = client.create_experiment("bench", artifact_location=(folder / "artifacts").as_uri())
    base_params = {k: str(v) for k, v in flatten(RunConfig()).items()}
    rng = np.random.default_rng(0)
    count = 0
    for s in range(sweeps):
        name = f"sweep{s}"
        names = ["baseline"] + [f"variant{v}" for v in range(1, variants)]
        parent = client.create_run(exp, run_name=name, tags={"workbench.sweep": name})
        spec = {
            "name": name,
            "baseline": "baseline",
            "seeds": list(range(seeds)),
            "axes": {"objectives.scl.image_mask_ratio": [0.2, 0.4, 0.6, 0.8]},
            "metrics": ["retrieval/tr_r1", "retrieval/ir_r1", "retrieval/r_mean", "vqa/acc", "nlvr/acc", "ve/acc"],
            "variants": [
                {"name": n, "overrides": {"objectives.scl.image_mask_ratio": 0.2 * (1 + i % 4)}}
                for i, n in enumerate(names)
            ],
        }
        client.log_text(parent.info.run_id, yaml.safe_dump(spec, sort_keys=False), "sweep.yaml")
        count += 1
        for i, variant in enumerate(names):
            for seed in range(seeds):
                tags = {
                    "mlflow.parentRunId": parent.info.run_id,
                    "workbench.sweep": name,
                    "workbench.variant": variant,
                    "workbench.seed": str(seed),
                    "workbench.trial": str(i * seeds + seed),
                    "workbench.devices": "1",
                    "workbench.device": "cuda",
                }
                run = client.create_run(exp, tags=tags)
                run_id = run.info.run_id
                params = dict(
                    base_params, **{"objectives.scl.image_mask_ratio": str(0.2 * (1 + i % 4)), "train.seed": str(seed)}
                )
                items = [Param(k, v) for k, v in params.items()]
                for start in range(0, len(items), 100):
                    client.log_batch(run_id, params=items[start : start + 100])
                now = int(time.time() * 1000)
                metrics = []
                for point in range(log_points):
                    step = (point + 1) * log_every
                    for loss in LOSSES:
                        metrics.append(
                            Metric(f"train/loss/{loss}", float(2.0 / (1 + point) + rng.random() * 0.1), now, step)
                        )
                    metrics.append(Metric("train/loss/total", float(10.0 / (1 + point)), now, step))
                metrics += [Metric(k, float(rng.random() * 100), now, log_points * log_every) for k in EVAL_KEYS]
                metrics += [Metric(k, v, now, log_points * log_every) for k, v in REFERENCE_KEYS.items()]
                for start in range(0, len(metrics), 1000):
                    client.log_batch(run_id, metrics=metrics[start : start + 1000])
                client.set_terminated(run_id, "FINISHED", end_time=now + 1_800_000)  # 30 min on one GPU
                count += 1
        client.set_terminated(parent.info.run_id, "FINISHED")
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=10)
    parser.add_argument("--variants", type=int, default=33)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--log-points", type=int, default=30, help="logged steps per run and loss")
    parser.add_argument("--store", default="", help="reuse this directory's mlflow.db (built when missing)")
    args = parser.parse_args()
    os.environ.setdefault("MPLBACKEND", "Agg")

    folder = Path(args.store or tempfile.mkdtemp(prefix="bench_report_"))
    folder.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    if not (folder / "mlflow.db").exists():
        start = time.perf_counter()
        runs = build_store(folder, args.sweeps, args.variants, args.seeds, args.log_points)
        print(f"built {runs} runs in {time.perf_counter() - start:.1f} s ({uri})")

    from workbench.reports.ablations import report_ablations

    # cold = the first report of the process (MLflow imports its SQL store lazily), then warm;
    # CPU seconds are printed too: on a shared machine wall time also counts waiting for a core.
    for label, figures in (
        ("tables only, cold", False),
        ("tables only, warm", False),
        ("tables + figures, warm", True),
    ):
        out = Path(tempfile.mkdtemp(prefix="bench_report_out_"))
        wall, cpu = time.perf_counter(), time.process_time()
        result = report_ablations(tracking_uri=uri, out=out, with_figures=figures, log_to_mlflow=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"report ablations over {result.runs_read} runs ({len(result.sweeps)} sweeps, {label}): "
            f"{wall:.2f} s wall, {cpu:.2f} s CPU"
        )


if __name__ == "__main__":
    main()
