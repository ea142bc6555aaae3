"""The first command on a new GPU cluster (or a CI GPU runner): does workbench work here, and how fast?

    .venv/bin/python benchmarks/gpu_check.py            # one GPU, <= 6 min
    .venv/bin/python benchmarks/gpu_check.py --dry-run  # CPU-only: what can be checked without a GPU

Checks, each reported in one JSON (printed last but one) and a verdict line (last):
  paper_step      a CUDA + bf16-autocast pre-training step of the paper shapes (ViT-B/16 +
                  BERT-base + 6 fusion layers, random weights, every objective on, a synthetic
                  batch): s/step, pairs/s, MFU against a bf16 matmul peak measured in this process
                  (workbench.bench, as `workbench bench`), and the GPU memory high-water mark;
  paper_step_compiled  the same with train.compile=true (compile time reported apart);
  sweep_packing   a 4-trial sweep of a tiny config with --gpus 0 --per-gpu 2: from the trials'
                  MLflow start/end times, at most 2 and at least 2 ran at once;
  nccl            a one-rank NCCL process group and an all_reduce on the GPU (workbench only
                  builds a process group for >= 2 ranks; --nproc 2 runs too when 2 GPUs are visible);
  run_and_eval    `workbench run --nproc 1` of a tiny config on the GPU, its retrieval evaluation
                  included (eval/retrieval/* logged from the GPU).
--dry-run checks what needs no GPU: imports, the paper config resolved and its model built on
the meta device (parameters counted, no memory), the tiny configs, the --gpus 0 --per-gpu 2 slot
plan for a one-GPU host, the sweep spec, the torchrun command; JSON has "dry_run": true.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # tiny_config: the test suite's seconds-long configs

PAPER_BATCH = 32  # pairs per step on one GPU (ALBEF: 64 per V100 at 256 px; ours bf16 at 224)
TIMED_STEPS = 5
SWEEP_TRIALS = 4  # 2 variants x 2 seeds, 2 at a time on GPU 0


def _stage(results: dict[str, Any], name: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one check; a failure is recorded (one line + the last frames), the others still run."""
    start = time.perf_counter()
    try:
        results[name] = {"ok": True, **fn()}
    except Exception as err:  # noqa: BLE001 - a check that fails is a result, not the end of the check
        results[name] = {
            "ok": False,
            "error": f"{type(err).__name__}: {' '.join(str(err).split())[:500]}",
            "trace": traceback.format_exc(limit=4)[-1500:],
        }
    results[name]["seconds"] = round(time.perf_counter() - start, 1)


# ------------------------------------------------------------------------ dry run
def dry_imports() -> dict[str, Any]:
    import mlflow
    import optuna
    import timm
    import torch
    import torchvision
    import transformers

    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "transformers": transformers.__version__,
        "mlflow": mlflow.__version__,
        "optuna": optuna.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_version": torch.version.cuda,
    }


def dry_paper_model() -> dict[str, Any]:
    """The paper config resolved and its model + objectives built on the meta device (no memory)."""
    import torch

    from workbench.bench.setup import PAPER_VOCABULARY, bench_config, build_pretrainer

    cfg = bench_config("paper")
    with torch.device("meta"):
        pretrainer = build_pretrainer(cfg, PAPER_VOCABULARY)
    params = sum(p.numel() for p in pretrainer.parameters())
    vision = cfg.model.vision
    if (vision.width, vision.depth, vision.patch_size, cfg.data.image_size, cfg.model.fusion.layers) != (
        768,
        12,
        16,
        224,
        6,
    ):
        raise AssertionError("the paper config is no longer ViT-B/16 at 224 px with 6 fusion layers")
    return {"parameters_m": round(params / 1e6, 1), "precision": cfg.train.precision, "batch_size": PAPER_BATCH}


def dry_slot_plan() -> dict[str, Any]:
    from workbench.sweeps.slots import plan_slots

    slots = plan_slots("0", 2, gpu_count=1, cpu_count=16)
    plan = [
        {"name": s.name, "CUDA_VISIBLE_DEVICES": s.env["CUDA_VISIBLE_DEVICES"], "threads": s.threads} for s in slots
    ]
    if [s["name"] for s in plan] != ["gpu0.0", "gpu0.1"] or {s["CUDA_VISIBLE_DEVICES"] for s in plan} != {"0"}:
        raise AssertionError(f"--gpus 0 --per-gpu 2 should give two slots on GPU 0, got {plan}")
    return {"slots": plan}


def dry_tiny_configs(scratch: Path) -> dict[str, Any]:
    from workbench import distributed
    from workbench.config import load_config
    from workbench.sweeps.spec import load_spec

    spec = load_spec(_sweep_spec(scratch / "data", f"sqlite:///{scratch / 'mlflow.db'}", scratch))
    run = load_config("base", _tiny_run_overrides(scratch / "data", f"sqlite:///{scratch / 'mlflow.db'}", scratch))
    command = distributed.torchrun_command(1, ["run"])
    trials = len(spec.variants) * len(spec.seeds)
    if trials != SWEEP_TRIALS:
        raise AssertionError(f"the packing sweep should have {SWEEP_TRIALS} trials, has {trials}")
    return {"sweep_trials": trials, "run_device": run.train.device, "torchrun": " ".join(command[1:5])}


# ----------------------------------------------------------------------------- GPU
def paper_step(compile_model: bool, batch_size: int) -> dict[str, Any]:
    """Time the paper-shape step on cuda:0 in bf16; MFU against a bf16 matmul peak of this process."""
    import contextlib
    import gc

    import torch

    from workbench.bench.measure import count_flops, matmul_flops_per_s, median, peak_operands, timed
    from workbench.bench.setup import (
        PAPER_VOCABULARY,
        TrainStep,
        bench_config,
        build_pretrainer,
        synthetic_batch,
        to_device,
    )
    from workbench.device import seed_everything
    from workbench.models.vlp import compiled_training

    device = torch.device("cuda", 0)
    cfg = bench_config("paper", overrides=["train.precision=bf16"] + (["train.compile=true"] if compile_model else []))
    cfg.train.batch_size = batch_size
    seed_everything(0)
    gc.collect()  # the previous stage's model and optimizer state, before the high-water mark resets
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    with compiled_training() if compile_model else contextlib.nullcontext():
        step = TrainStep(build_pretrainer(cfg, PAPER_VOCABULARY), cfg, device)
        batch = to_device(synthetic_batch(cfg, PAPER_VOCABULARY, batch_size), device)
        flops, _ = count_flops(lambda: step(batch))  # eager step: the FLOPs, and the optimizer state
        first = timed(lambda: step(batch), device)  # compiled: the compile happens here
        times = [timed(lambda: step(batch), device) for _ in range(TIMED_STEPS)]
    a, b = peak_operands(device, 8192)
    matmul_flops_per_s(a, b, device, calls=3)  # warm-up
    peak = median([matmul_flops_per_s(a, b, device, calls=10) for _ in range(3)])
    step_s = median(times)
    return {
        "batch_size": batch_size,
        "step_s": round(step_s, 4),
        "pairs_per_s": round(batch_size / step_s, 1),
        "first_step_s": round(first, 2),
        "gflops_per_pair": round(flops / batch_size / 1e9, 1),
        "peak_bf16_tflops": round(peak / 1e12, 1),
        "mfu": round(flops / step_s / peak, 4),
        "memory_high_water_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 2),
    }


def nccl_group() -> dict[str, Any]:
    """A one-rank NCCL group on cuda:0 and an all_reduce through it."""
    import torch
    import torch.distributed as dist

    store = dist.HashStore()
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", store=store, rank=0, world_size=1, device_id=torch.device("cuda", 0))
    try:
        value = torch.ones(4, device="cuda")
        dist.all_reduce(value)
        torch.cuda.synchronize()
        if value.sum().item() != 4:
            raise AssertionError(f"all_reduce over one rank changed the value: {value.tolist()}")
        version = torch.cuda.nccl.version()
        return {
            "backend": dist.get_backend(),
            "nccl_version": ".".join(map(str, version)) if isinstance(version, tuple) else str(version),
        }
    finally:
        dist.destroy_process_group()


def _tiny_run_overrides(data: Path, store: str, out: Path) -> list[str]:
    from tiny_config import tiny_run

    return tiny_run(data, store, out / "runs", "train.device=auto", steps=30)


def _sweep_spec(data: Path, store: str, out: Path) -> Path:
    """A 2-variant x 2-seed sweep of the tiny config (a YAML in `out`)."""
    from tiny_config import TINY_MODEL

    from workbench.config import parse_override

    overrides = dict(parse_override(o) for o in TINY_MODEL)
    overrides.update(
        {
            "data.root": str(data),
            "data.shapes_size": "tiny",
            "train.steps": 60,
            "train.batch_size": 8,
            "train.warmup_steps": 2,
            "train.log_every": 10,
            "train.checkpoint_every": 0,
            "train.out_dir": str(out / "sweep"),
            "eval.tasks": [],
        }
    )
    spec = {
        "description": "gpu_check: 4 tiny trials packed 2 per GPU",
        "base": "base",
        "overrides": overrides,
        "variants": {"lr1": {"train.lr": 3.0e-4}, "lr2": {"train.lr": 1.0e-4}},
        "baseline": "lr1",
        "seeds": 2,
        "metrics": ["train/loss/total"],
    }
    path = out / "gpu-check-packing.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec))  # JSON is YAML
    return path


def _workbench(*args: str, env: dict[str, str] | None = None, timeout: int = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "workbench", *args]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}, cwd=ROOT
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:3])} exited {done.returncode}: {done.stderr.strip()[-600:]}")
    return done


def max_concurrent(intervals: list[tuple[int, int]]) -> int:
    """Most intervals (start, end) open at one instant."""
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    best = now = 0
    for _, change in events:
        now += change
        best = max(best, now)
    return best


def sweep_packing(scratch: Path, placement: tuple[str, ...] = ("--gpus", "0", "--per-gpu", "2")) -> dict[str, Any]:
    from mlflow.tracking import MlflowClient

    from workbench.data.shapes import generate

    store = f"sqlite:///{scratch / 'sweep.db'}"
    generate(scratch / "data", seed=0, size="tiny")
    spec = _sweep_spec(scratch / "data", store, scratch)
    _workbench("sweep", str(spec), *placement, "--no-progress", "--tracking-uri", store, timeout=300)
    client = MlflowClient(store)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    trials = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    intervals = [(r.info.start_time, r.info.end_time) for r in trials if r.info.end_time]
    finished = sum(r.info.status == "FINISHED" for r in trials)
    concurrent = max_concurrent(intervals)
    if finished != SWEEP_TRIALS or concurrent != 2:
        raise AssertionError(f"{finished} of {SWEEP_TRIALS} trials finished, at most {concurrent} at once (want 2)")
    return {
        "trials_finished": finished,
        "max_concurrent": concurrent,
        "makespan_s": round((max(e for _, e in intervals) - min(s for s, _ in intervals)) / 1000, 1),
    }


def run_and_eval(scratch: Path, device: str = "cuda") -> dict[str, Any]:
    """`workbench run --nproc 1` on the GPU, retrieval evaluated there; --nproc 2 too with 2 GPUs."""
    import torch
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{scratch / 'run.db'}"
    overrides = _tiny_run_overrides(scratch / "data", store, scratch)
    sets = [a for o in overrides for a in ("--set", o)]
    _workbench("run", "--nproc", "1", "--device", device, *sets)
    out: dict[str, Any] = {}
    if device == "cuda" and torch.cuda.device_count() >= 2:  # a real NCCL group through torchrun
        _workbench("run", "--nproc", "2", *sets)
        out["nproc_2"] = "FINISHED"
    client = MlflowClient(store)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    first = min(runs, key=lambda r: r.info.start_time)
    metrics = first.data.metrics
    device = first.data.params.get("train.device")
    if first.info.status != "FINISHED" or "eval/retrieval/tr_r1" not in metrics:
        raise AssertionError(f"run {first.info.run_id}: {first.info.status}, metrics {sorted(metrics)[:8]}")
    return {
        **out,
        "status": first.info.status,
        "train_device": device,
        "eval_retrieval_r_mean": metrics.get("eval/retrieval/r_mean"),
        "final_loss": metrics.get("train/loss/total"),
    }


# ---------------------------------------------------------------------------- main
def verdict(results: dict[str, Any], dry_run: bool) -> str:
    failed = [name for name, r in results.items() if isinstance(r, dict) and r.get("ok") is False]
    if failed:
        return f"GPU CHECK FAILED: {', '.join(failed)} (see the JSON's error and trace fields)"
    if dry_run:
        return (
            "GPU CHECK DRY RUN OK: imports, paper config (meta device), slot plan, tiny configs; run it on a "
            "GPU for the rest"
        )
    step, compiled = results["paper_step"], results.get("paper_step_compiled", {})
    speedup = f", compiled {step['step_s'] / compiled['step_s']:.2f}x" if compiled.get("ok") else ""
    return (
        f"GPU CHECK OK: paper step {step['pairs_per_s']} pairs/s at MFU {100 * step['mfu']:.1f} % of a "
        f"{step['peak_bf16_tflops']} TFLOP/s bf16 peak{speedup}; memory high-water "
        f"{step['memory_high_water_gib']} GiB; "
        f"2 trials per GPU ran at once; NCCL; run + eval on the GPU"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dry-run", action="store_true", help="check what needs no GPU (CPU-only machines, the test suite)"
    )
    parser.add_argument("--batch-size", type=int, default=PAPER_BATCH, help="pairs per paper step")
    parser.add_argument(
        "--no-compile", action="store_true", help="skip the torch.compile step (it compiles for 1-2 min)"
    )
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"dry_run": args.dry_run}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        scratch = Path(tmp)
        _stage(results, "imports", dry_imports)
        _stage(results, "paper_model", dry_paper_model)
        _stage(results, "slot_plan", dry_slot_plan)
        _stage(results, "tiny_configs", lambda: dry_tiny_configs(scratch))
        if not args.dry_run:
            import torch

            if not torch.cuda.is_available():
                results["cuda"] = {"ok": False, "error": "no CUDA device visible (use --dry-run on a CPU-only machine)"}
            else:
                results["device"] = torch.cuda.get_device_name(0)
                _stage(results, "paper_step", lambda: paper_step(False, args.batch_size))
                if not args.no_compile:
                    _stage(results, "paper_step_compiled", lambda: paper_step(True, args.batch_size))
                _stage(results, "nccl", nccl_group)
                _stage(results, "sweep_packing", lambda: sweep_packing(scratch))
                _stage(results, "run_and_eval", lambda: run_and_eval(scratch))
    line = verdict(results, args.dry_run)
    print(json.dumps(results, indent=2))
    print(line)
    return 1 if line.startswith("GPU CHECK FAILED") else 0


if __name__ == "__main__":
    sys.exit(main())
