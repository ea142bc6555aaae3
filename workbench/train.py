"""The pre-training loop: `run(cfg) -> RunResult`, called by the CLI, sweeps and tests.

One run = build data, model and the enabled objectives from the config; train
with AdamW + warmup/decay; checkpoint; evaluate downstream; log everything to
MLflow. Same config and seed on CPU => same losses bit for bit, also across a
kill and `--resume` (model, optimizer, scheduler and RNG states are
checkpointed; the data stream is a pure function of (seed, step)).

Under torchrun each process runs `run` as one rank of a DDP run (see
`workbench.distributed`): it trains on its slice of every global batch; rank 0
alone logs to MLflow, writes checkpoints and evaluates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench import checkpoint, distributed, tracking
from workbench.config import RunConfig, from_dict, to_yaml
from workbench.device import autocast, autocast_dtype, resolve_device, seed_everything
from workbench.errors import RunError, check_writable
from workbench.models.vlp import compile_model
from workbench.optim import build_optimizer, build_scheduler, optimizer_step
from workbench.pretrainer import Pretrainer, build
from workbench.progress import TrainProgress


@dataclass
class RunResult:
    run_id: str
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    final_loss: float = float("nan")
    steps: int = 0
    checkpoint: Path | None = None

    def summary(self) -> str:
        lines = [f"run {self.run_id}: {self.status} after {self.steps} steps, final loss {self.final_loss:.4f}"]
        lines += [f"  {name} = {value:.4f}" for name, value in sorted(self.metrics.items())]
        if self.checkpoint:
            lines.append(f"  checkpoint: {self.checkpoint}")
        return "\n".join(lines)


def prepare_data(cfg: RunConfig) -> dict[str, Any]:
    """Make sure the data set exists (generating ShapesWorld if configured); its manifest."""
    from workbench.data import data_hash, ensure_data

    manifest = ensure_data(cfg.data) or {"generator": Path(cfg.data.root).name}
    manifest.setdefault("data_hash", data_hash(cfg.data))
    return manifest


def check_destinations(cfg: RunConfig) -> None:
    """Before any work: the checkpoint directory can be written and the MLflow store answers.
    Creates nothing, so a run refused later (bad data) leaves no empty folders behind."""
    check_writable(Path(cfg.train.out_dir), "train.out_dir")
    if cfg.data.generate and not Path(cfg.data.root).exists():  # ShapesWorld will be generated there
        check_writable(Path(cfg.data.root), "data.root")
    if cfg.tracking.enabled:
        tracking.check_store(cfg.tracking.uri)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    non_blocking = device.type == "cuda"
    return {
        key: value.to(device, non_blocking=non_blocking) if isinstance(value, torch.Tensor) else value
        for key, value in batch.items()
    }


def ensure_warmstart(cfg: RunConfig, tokenizer, ranks, progress: bool) -> None:
    """`model.<part>.init: warmstart`: make the cached uni-modal warm start when missing (rank 0,
    announced, with progress); `build(..., warm_start=True)` loads it."""
    import sys

    from workbench import warmstart

    if ranks.is_main:
        warmstart.ensure(cfg, tokenizer, progress=progress, announce=lambda text: print(text, file=sys.stderr))
    distributed.broadcast_object(None)  # under DDP the other ranks wait here until rank 0 has made it


def _check_finite(out: dict[str, torch.Tensor], step: int, ckpt: Path | None) -> None:
    if torch.isfinite(out["loss"]):
        return
    bad = [key for key, value in out.items() if key.startswith("loss/") and not torch.isfinite(value).all()]
    terms = ", ".join(f"{key} = {out[key].item()}" for key in bad) or f"loss = {out['loss'].item()}"
    kept = f"; last good checkpoint: {ckpt}" if ckpt else "; no checkpoint was written yet"
    raise RunError(f"non-finite loss at step {step}: {terms} (lower train.lr or check the data){kept}")


def _loggable(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        key: value.detach()
        for key, value in out.items()
        if isinstance(value, torch.Tensor) and value.numel() == 1
    }


def _state(pretrainer: Pretrainer, optimizer, scheduler, step: int, cfg: RunConfig) -> dict[str, Any]:
    state = {
        "model": pretrainer.model.state_dict(),
        "objectives": pretrainer.objectives.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "rng": checkpoint.rng_state(),
        "config": to_yaml(cfg),
    }
    if distributed.is_active():  # collective: every rank's RNG, so each rank's stream resumes exactly
        state["rng_ranks"] = distributed.all_objects(checkpoint.rng_state())
    return state


def _save(path: Path, state: dict[str, Any], ranks: distributed.Ranks) -> Path:
    """Rank 0 writes the checkpoint (every rank builds `state`: `_state` is collective under DDP)."""
    if ranks.is_main:
        checkpoint.save(path, state)
    return path


def _restore_rng(state: dict[str, Any], ranks: distributed.Ranks, seed: int) -> None:
    saved = state.get("rng_ranks") or [state["rng"]]
    if ranks.rank < len(saved):
        checkpoint.set_rng_state(saved[ranks.rank])
    else:  # resumed on more ranks than were saved: a fresh stream of its own
        torch.manual_seed(distributed.rank_seed(seed + state["step"], ranks.rank))


def _start_tracker(cfg: RunConfig, ranks: distributed.Ranks, **kwargs: Any) -> tracking.RunTracker:
    """Rank 0 opens the MLflow run; the other ranks get a disabled tracker with the same run id."""
    tracker = tracking.start_run(cfg, **kwargs) if ranks.is_main else None
    run_id = distributed.broadcast_object(tracker.run_id if tracker else None)
    return tracker or tracking.RunTracker(None, run_id, enabled=False)


def _over_ranks(out: dict[str, torch.Tensor], ranks: distributed.Ranks) -> dict[str, torch.Tensor]:
    """Under DDP every reported scalar averaged over ranks: the global batch's losses, a NaN seen by all."""
    return distributed.mean_over_ranks(_loggable(out)) if ranks.active else out


def run(
    cfg: RunConfig,
    *,
    resume_run_id: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> RunResult:
    """Train, evaluate and track one configured run.

    `stop_after` ends the session after that many total steps, leaving the run
    RUNNING and resumable (what a pre-empted job looks like); tests use it.
    """
    ranks, device = distributed.setup(cfg.train.device)
    try:
        return _run(
            cfg, ranks, device, resume_run_id=resume_run_id, parent_run_id=parent_run_id, tags=tags,
            progress=progress, stop_after=stop_after,
        )
    finally:
        distributed.teardown(ranks, synchronize=False)  # error path; a normal end has left the group already


def _run(
    cfg: RunConfig,
    ranks: distributed.Ranks,
    device: torch.device,
    *,
    resume_run_id: str | None,
    parent_run_id: str | None,
    tags: dict[str, str] | None,
    progress: bool,
    stop_after: int | None,
) -> RunResult:
    from workbench.data import PretrainStream, load_tokenizer
    from workbench.data.check import check_eval_files

    distributed.local_batch_size(cfg.train.batch_size, ranks.world_size)  # fail before anything starts
    dtype = autocast_dtype(cfg.train, device)
    if ranks.is_main:
        check_destinations(cfg)
    seed_everything(cfg.train.seed)
    manifest = prepare_data(cfg)
    tokenizer = load_tokenizer(cfg.data)
    stream_source = PretrainStream(  # reads and checks every pre-training entry: bad data fails here
        cfg, tokenizer, seed=cfg.train.seed, pin_memory=device.type == "cuda",
        rank=ranks.rank, world_size=ranks.world_size,
    )
    if ranks.is_main:
        check_eval_files(cfg)  # before training, not after it
    fresh = not resume_run_id  # a resumed run's checkpoint holds the weights
    if fresh:
        ensure_warmstart(cfg, tokenizer, ranks, progress)
    pretrainer = build(cfg, tokenizer, warm_start=fresh).to(device)
    optimizer = build_optimizer(pretrainer.model, pretrainer.objectives, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)

    run_tags = {"workbench.seed": str(cfg.train.seed), "workbench.data_hash": manifest["data_hash"], **(tags or {})}
    tracker = _start_tracker(cfg, ranks, resume_run_id=resume_run_id, parent_run_id=parent_run_id, tags=run_tags)
    ckpt_path = Path(cfg.train.out_dir) / tracker.run_id / checkpoint.LAST
    start_step, already_logged = 0, -1
    state = None
    try:  # a run that cannot start (a corrupt checkpoint, ...) is marked FAILED, never left RUNNING
        if resume_run_id:
            path = distributed.broadcast_object(_local_or_downloaded(ckpt_path, tracker) if ranks.is_main else None)
            state = checkpoint.load(path, map_location=device)  # other hosts: train.out_dir must be shared
            pretrainer.model.load_state_dict(state["model"])
            pretrainer.objectives.load_state_dict(state["objectives"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            start_step = state["step"]
            already_logged = tracking.last_logged_step(tracker, "train/loss/total")
        else:
            tracking.log_dataset(tracker, Path(cfg.data.root), manifest)

        if cfg.train.compile:
            compile_model(pretrainer.model)
        trainer = distributed.wrap(pretrainer, device, ranks)
        stream = stream_source.batches(start_step)
        if state is not None:  # after everything else that draws random numbers at start-up
            _restore_rng(state, ranks, cfg.train.seed)
        elif ranks.rank:  # each rank its own masks, negatives and dropout (rank 0 keeps the one-process stream)
            torch.manual_seed(distributed.rank_seed(cfg.train.seed, ranks.rank))
    except BaseException as err:
        tracker.finish("KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
        raise
    params = [p for p in pretrainer.parameters() if p.requires_grad]
    last_ckpt: Path | None = ckpt_path if resume_run_id else None
    final_loss = float("nan")
    end_step = cfg.train.steps if stop_after is None else min(cfg.train.steps, stop_after)
    bar = TrainProgress(total=cfg.train.steps, start=start_step, enabled=progress and ranks.is_main)
    step = start_step
    try:
        pretrainer.train()
        window_start, window_samples = time.perf_counter(), 0
        for step in range(start_step, end_step):
            batch = _to_device(next(stream), device)
            with autocast(device, dtype):
                out = trainer(batch)
            reported = _over_ranks(out, ranks)
            _check_finite(reported, step, last_ckpt)
            optimizer_step(out["loss"], optimizer, scheduler, scaler, params, cfg.train.grad_clip)
            window_samples += batch["text_ids"].shape[0] * ranks.world_size

            done = step + 1
            if done % cfg.train.log_every == 0 or done == cfg.train.steps:
                values = _loggable(reported)
                numbers = dict(zip(values, torch.stack(list(values.values())).float().tolist()))
                final_loss = numbers["loss"]
                elapsed = time.perf_counter() - window_start
                throughput = window_samples / elapsed if elapsed > 0 else 0.0
                window_start, window_samples = time.perf_counter(), 0
                if done > already_logged:  # metric steps are 1-based (`done`)
                    metrics = {f"train/{'loss/total' if k == 'loss' else k}": v for k, v in numbers.items()}
                    metrics["train/lr"] = scheduler.get_last_lr()[0]
                    metrics["train/samples_per_s"] = throughput
                    tracker.log_metrics(metrics, step=done)
                bar.update(done, final_loss, throughput)
            else:
                bar.update(done, None, None)
            if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0 and done < cfg.train.steps:
                last_ckpt = _save(ckpt_path, _state(pretrainer, optimizer, scheduler, done, cfg), ranks)
        step = end_step
    except RunError:
        bar.close()
        tracker.finish("FAILED")
        raise
    except KeyboardInterrupt:
        bar.close()
        tracker.finish("KILLED")
        raise
    except BaseException:
        bar.close()
        tracker.finish("FAILED")
        raise
    bar.close()

    if step < cfg.train.steps:  # stopped early on purpose: resumable
        _save(ckpt_path, _state(pretrainer, optimizer, scheduler, step, cfg), ranks)
        distributed.teardown(ranks)
        tracker.close_metrics()
        return RunResult(tracker.run_id, "RUNNING", final_loss=final_loss, steps=step, checkpoint=ckpt_path)

    _save(ckpt_path, _state(pretrainer, optimizer, scheduler, step, cfg), ranks)
    distributed.teardown(ranks)  # evaluation is rank 0's alone: nothing may wait on the other ranks
    if not ranks.is_main:
        return RunResult(tracker.run_id, "FINISHED", final_loss=final_loss, steps=step)
    try:
        metrics = evaluate(pretrainer, cfg, tokenizer, device)
        tracker.log_final(metrics, step=step)
        tracker.log_artifact(ckpt_path, "checkpoints")
    except KeyboardInterrupt:
        tracker.finish("KILLED")
        raise
    except BaseException:
        tracker.finish("FAILED")
        raise
    tracker.finish("FINISHED")
    return RunResult(tracker.run_id, "FINISHED", metrics, final_loss, step, ckpt_path)


def evaluate(pretrainer: Pretrainer, cfg: RunConfig, tokenizer, device: torch.device) -> dict[str, float]:
    if not cfg.eval.tasks:
        return {}
    from workbench.evaluate import evaluate_all

    return evaluate_all(pretrainer.model, pretrainer.objectives, cfg, tokenizer, device)


def _local_or_downloaded(ckpt_path: Path, tracker: tracking.RunTracker) -> Path:
    if ckpt_path.is_file() or not tracker.enabled:
        return ckpt_path
    return tracking.download_checkpoint(tracker, ckpt_path.parent)


def load_run_config(run_id: str, tracking_uri: str = "", overrides: list[str] | None = None) -> RunConfig:
    """The resolved config a run was started with (its config.yaml artifact), plus overrides."""
    import yaml

    data = yaml.safe_load(tracking.read_run_config(run_id, tracking_uri))
    extra = list(overrides or []) + ([f"tracking.uri={tracking_uri}"] if tracking_uri else [])
    return from_dict(data, extra)


def evaluate_run(run_id: str, tasks: list[str] | None = None, tracking_uri: str | None = None) -> dict[str, float]:
    """`workbench eval RUN_ID`: evaluate a run's final checkpoint and log into that run."""
    from workbench.data import load_tokenizer

    cfg = load_run_config(run_id, tracking_uri or "")
    if tasks:
        cfg.eval.tasks = list(tasks)
        from workbench.config import validate

        validate(cfg)
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    prepare_data(cfg)
    tokenizer = load_tokenizer(cfg.data)
    pretrainer = build(cfg, tokenizer).to(device)
    mlflow_client = tracking.client(cfg.tracking.uri)
    tracker = tracking.RunTracker(mlflow_client, run_id)
    state = checkpoint.load(
        _local_or_downloaded(Path(cfg.train.out_dir) / run_id / checkpoint.LAST, tracker), map_location=device
    )
    pretrainer.model.load_state_dict(state["model"])
    pretrainer.objectives.load_state_dict(state["objectives"])
    metrics = evaluate(pretrainer, cfg, tokenizer, device)
    tracker.log_final(metrics, step=state["step"])
    tracker.metrics.close()
    return metrics
