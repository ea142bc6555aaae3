"""Benchmark: makespan of the same tiny sweep through SLURM vs. the local `--slots` launcher.

Starts the tests' one-node SLURM cluster (tests/slurm_cluster.py: munged, slurmctld,
slurmd on 127.0.0.1, as root), then times, as a user sees it, the wall time of

    local   workbench sweep SPEC --slots K
    slurm   workbench sweep SPEC --launcher slurm --max-parallel K   (waits for the end)

on a 2-variant x 2-seed sweep of tiny 5-step CPU trainings (fresh study, journal and
MLflow store each time; the data set is generated once before timing). Rounds
alternate the order so a load change hits both sides alike; the ratio of medians is
printed. The cluster is stopped at the end.

    sudo .venv/bin/python benchmarks/bench_slurm_makespan.py --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import slurm_cluster  # noqa: E402
from tiny_config import tiny_run  # noqa: E402

SPEC = {
    "base": "base",
    "variants": {"mvsc": {"objectives.scl.mlsc": False}, "mlsc": {"objectives.scl.mvsc": False}},
    "seeds": 2,
    "metrics": ["train/loss/total"],
    "objective": {"metric": "train/loss/total", "direction": "minimize"},
}


def sweep_once(work: Path, data: Path, launcher: str, parallel: int) -> float:
    run_dir = work / f"{launcher}-{time.monotonic_ns()}"
    run_dir.mkdir()
    spec = run_dir / "tiny.yaml"
    spec.write_text(yaml.safe_dump(SPEC))
    store = f"sqlite:///{run_dir / 'mlflow.db'}"
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from mlflow.tracking import MlflowClient; MlflowClient('{store}').search_experiments()",
        ],
        check=True,
        capture_output=True,
    )
    sets = [
        s for s in tiny_run(data, store, run_dir / "out", "eval.tasks=[]", steps=5) if not s.startswith("tracking.uri")
    ]
    where = (
        ["--slots", str(parallel)] if launcher == "local" else ["--launcher", "slurm", "--max-parallel", str(parallel)]
    )
    command = [
        sys.executable,
        "-m",
        "workbench",
        "sweep",
        str(spec),
        *where,
        "--no-progress",
        "--tracking-uri",
        store,
        *[a for s in sets for a in ("--set", s)],
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=run_dir, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0 or "4/4 trials complete" not in done.stdout:
        raise SystemExit(f"{launcher} sweep failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=2, help="--slots K locally, --max-parallel K on SLURM")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as tmp:
        work = Path(tmp)
        cluster = slurm_cluster.start(work / "cluster")
        os.environ["SLURM_CONF"] = str(cluster.conf)
        try:
            from workbench.data.shapes import generate

            data = work / "shapes"
            generate(data, seed=0, size="tiny")
            times: dict[str, list[float]] = {"local": [], "slurm": []}
            for round_ in range(args.rounds):
                order = ("local", "slurm") if round_ % 2 == 0 else ("slurm", "local")
                for launcher in order:
                    seconds = sweep_once(work, data, launcher, args.parallel)
                    times[launcher].append(seconds)
                    print(f"round {round_ + 1}: {launcher:<5} {seconds:6.1f} s", flush=True)
        finally:
            slurm_cluster.stop(cluster)
    local, slurm = statistics.median(times["local"]), statistics.median(times["slurm"])
    print(
        f"median makespan: local --slots {args.parallel}: {local:.1f} s; slurm --max-parallel {args.parallel}: "
        f"{slurm:.1f} s; ratio slurm/local = {slurm / local:.2f} (load average {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
