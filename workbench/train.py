"""The pre-training loop: `run(cfg) -> RunResult`, called by the CLI, sweeps and tests.

One run = build data, model and the enabled objectives from the config; train
with AdamW + warmup/decay; checkpoint; evaluate downstream; log everything to
MLflow. Same config and seed on CPU => same losses bit for bit, also across a
kill and `--resume` (model, optimizer, scheduler and RNG states are
checkpointed; the data stream is a pure function of (seed, step)).

A run is one session (`run`'s ExitStack): the MLflow run it opens is ended exactly
once, by the tracker's context -- FINISHED, FAILED or KILLED -- whatever happens
inside; the steps (`_build`, `_open_run`, `_start`, `_pretrain`, `_finish`) only do
their work and raise.

A resumed run's checkpoint is read back by `recorded_run.restore` (the one way every
command restores a run); memory checks live in `workbench.device`, data preparation in
`workbench.data.prepare`.

Under torchrun each process runs `run` as one rank of a DDP run (see
`workbench.distributed`): it trains on its slice of every global batch; rank 0
alone logs to MLflow, writes checkpoints and evaluates.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench import (
    checkpoint,
    distributed,
    interrupts,
    preflight,
    recorded_run,
    resume_data,
    tracking,
    warmstart,
)
from workbench import tags as tag
from workbench.config import RunConfig
from workbench.data import PretrainStream, load_tokenizer, prepare_data
from workbench.data.check import check_eval_files
from workbench.data.data_guard import in_use
from workbench.device import autocast, autocast_dtype, check_fits_memory, is_oom, out_of_memory, seed_everything
from workbench.errors import RunError, check_writable
from workbench.launch import slurm_env
from workbench.models.vlp import compile_model, compiled_training
from workbench.optim import build_optimizer, build_scheduler, optimizer_step
from workbench.pretrainer import Pretrainer, build
from workbench.progress import TrainProgress
from workbench.progress import settings as progress_settings


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
        if self.checkpoint and self.checkpoint.suffix == tracking.REFERENCE_SUFFIX and self.checkpoint.is_file():
            lines.append(
                f"  checkpoint: {self.checkpoint.read_text().split()[-1]} (one copy; reference: {self.checkpoint})"
            )
        elif self.checkpoint:
            lines.append(f"  checkpoint: {self.checkpoint}")
        return "\n".join(lines)


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
    return {key: value.detach() for key, value in out.items() if isinstance(value, torch.Tensor) and value.numel() == 1}


def _over_ranks(out: dict[str, torch.Tensor], ranks: distributed.Ranks) -> dict[str, torch.Tensor]:
    """Under DDP every reported scalar averaged over ranks: the global batch's losses, a NaN seen by all."""
    return distributed.mean_over_ranks(_loggable(out)) if ranks.active else out


@dataclass
class _Parts:
    """What a run trains, built before its MLflow run is opened."""

    manifest: dict[str, Any]
    tokenizer: Any
    stream: PretrainStream
    pretrainer: Pretrainer
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    dtype: torch.dtype | None
    resumed: recorded_run.Restored | None = None  # a resumed run's checkpoint (already loaded into the modules)


@dataclass
class _Session:
    """One run in progress: what it trains, its MLflow run, and how far it got."""

    cfg: RunConfig
    ranks: distributed.Ranks
    device: torch.device
    parts: _Parts
    tracker: tracking.RunTracker
    step: int = 0  # steps done (during a step: the steps before it)
    last_checkpoint: Path | None = None  # the newest checkpoint kept: what a NaN or an interrupt reports
    already_logged: int = -1  # a resumed run's last logged step: metrics up to it are not logged again
    final_loss: float = float("nan")

    @property
    def checkpoint_path(self) -> Path:
        return Path(self.cfg.train.out_dir) / self.tracker.run_id / checkpoint.LAST

    def save(self, step: int) -> Path:
        """Checkpoint at `step` (collective under DDP: every rank builds the state; rank 0 writes it)."""
        parts = self.parts
        state = recorded_run.checkpoint_state(parts.pretrainer, parts.optimizer, parts.scheduler, step, self.cfg)
        if self.ranks.is_main:
            checkpoint.save(self.checkpoint_path, state)
        return self.checkpoint_path


def run(
    cfg: RunConfig,
    *,
    resume_run_id: str | None = None,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    on_start: Callable[[str, str], None] | None = None,
) -> RunResult:
    """Train, evaluate and track one configured run.

    `stop_after` ends the session after that many total steps, leaving the run
    RUNNING and resumable (what a pre-empted job looks like); tests use it.
    `on_start(run_id, url)` is called once the MLflow run is open, before the first step.
    Inside `interrupts.graceful()` a SIGINT/SIGTERM stops at the next step boundary
    with a checkpoint, and `interrupts.Interrupted` says where and how to resume.
    """
    if resume_run_id and cfg.tracking.enabled:  # a FINISHED or deleted run is refused before anything starts
        tracking.check_resumable(resume_run_id, cfg.tracking.uri)
    ranks, device = distributed.setup(cfg.train.device)
    with contextlib.ExitStack() as session:  # left in reverse order, whatever ends the run
        session.callback(distributed.teardown, ranks, synchronize=False)  # error path; a normal end has left already
        session.enter_context(
            progress_settings(bars=progress and ranks.is_main, lines=None if ranks.is_main else False)
        )
        if cfg.train.compile:
            session.enter_context(compiled_training())
        lease = session.enter_context(recorded_run.lease(cfg))  # one writer per run; released after the run has ended
        if resume_run_id and ranks.is_main:
            lease.acquire(resume_run_id)  # a run another live process trains is refused before anything
        parts = _build(cfg, ranks, device, resume_run_id=resume_run_id, progress=progress)
        session.enter_context(in_use(cfg.data.root))  # no one regenerates the data set under this run
        tracker = session.enter_context(  # ends the MLflow run exactly once: FINISHED, FAILED or KILLED
            _open_run(
                cfg, ranks, device, parts.manifest, resume_run_id=resume_run_id, parent_run_id=parent_run_id, tags=tags
            )
        )
        if not resume_run_id and ranks.is_main:
            lease.acquire(tracker.run_id)
        s = _Session(cfg, ranks, device, parts, tracker)
        if parts.resumed is not None:
            s.step, s.last_checkpoint = parts.resumed.step, s.checkpoint_path
        session.enter_context(_telling_where(s))
        trainer, stream = _start(s, on_start)
        _pretrain(s, trainer, stream, stop_after=stop_after, progress=progress)
        return _finish(s)


def _build(
    cfg: RunConfig, ranks: distributed.Ranks, device: torch.device, *, resume_run_id: str | None, progress: bool
) -> _Parts:
    """Everything before the MLflow run opens: the checks, data, model, optimizer, and a resumed
    run's checkpoint loaded into them. A run refused here leaves the store as it was."""
    distributed.local_batch_size(cfg.train.batch_size, ranks.world_size)  # fail before anything starts
    preflight.check(cfg, fresh=not resume_run_id, data=False)  # each objective's rules, init files: before the data
    dtype = autocast_dtype(cfg.train, device)
    if ranks.is_main:
        check_destinations(cfg)
    seed_everything(cfg.train.seed)
    if resume_run_id and ranks.is_main:
        resume_data.refuse_changed(cfg, resume_run_id)  # before anything could regenerate it
    manifest = prepare_data(cfg.data)
    if resume_run_id and ranks.is_main:
        resume_data.refuse_changed(cfg, resume_run_id, manifest["data_hash"])
    tokenizer = load_tokenizer(cfg.data)
    stream = PretrainStream(  # reads and checks every pre-training entry: bad data fails here
        cfg,
        tokenizer,
        seed=cfg.train.seed,
        pin_memory=device.type == "cuda",
        rank=ranks.rank,
        world_size=ranks.world_size,
    )
    if ranks.is_main:
        check_eval_files(cfg)  # before training, not after it
    check_fits_memory(cfg, device, ranks.world_size)
    fresh = not resume_run_id  # a resumed run's checkpoint holds the weights
    if fresh:
        ensure_warmstart(cfg, tokenizer, ranks, progress)
    try:
        pretrainer = build(cfg, tokenizer, warm_start=fresh).to(device)
    except (MemoryError, RuntimeError) as err:
        if not is_oom(err):
            raise
        raise out_of_memory(cfg, "building the model") from None
    optimizer = build_optimizer(pretrainer.model, pretrainer.objectives, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    parts = _Parts(manifest, tokenizer, stream, pretrainer, optimizer, scheduler, scaler, dtype)
    if resume_run_id:  # the checkpoint must fit this model before the run is touched (refused: it stays as it was)
        parts.resumed = recorded_run.restore(
            resume_run_id,
            cfg,
            pretrainer,
            device,
            optimizer=optimizer,
            scheduler=scheduler,
            ranks=ranks,
            doing="--resume: ",
        )
    return parts


def _open_run(
    cfg: RunConfig,
    ranks: distributed.Ranks,
    device: torch.device,
    manifest: dict[str, Any],
    *,
    resume_run_id: str | None,
    parent_run_id: str | None,
    tags: dict[str, str] | None,
) -> tracking.RunTracker:
    """Rank 0 opens (or reopens) the MLflow run; the other ranks get a disabled tracker with the same run id."""
    job = slurm_env.job_tags()  # inside a SLURM job: its id and node (on resume: the job carrying the run on)
    run_tags = {
        tag.SEED: str(cfg.train.seed),
        tag.DATA_HASH: manifest["data_hash"],
        tag.DEVICES: str(ranks.world_size),
        tag.DEVICE_KIND: device.type,
        **job,
        **(tags or {}),
    }
    tracker = None
    if ranks.is_main:
        tracker = tracking.start_run(
            cfg, resume_run_id=resume_run_id, parent_run_id=parent_run_id, tags=run_tags, resume_tags=job
        )
    run_id = distributed.broadcast_object(tracker.run_id if tracker else None)
    return tracker or tracking.RunTracker(None, run_id, enabled=False)


@contextlib.contextmanager
def _telling_where(s: _Session) -> Iterator[None]:
    """An `Interrupted` leaving the run learns which run it stopped, at which step, and what to resume from."""
    try:
        yield
    except KeyboardInterrupt as err:
        _say_where(err, s.cfg, s.tracker.run_id, s.step, s.last_checkpoint)
        raise


def _start(s: _Session, on_start: Callable[[str, str], None] | None) -> tuple[nn.Module, Iterator[dict[str, Any]]]:
    """Inside the MLflow run, before the first step: what a resumed run logged already (else the
    data set record), the announcement, compiling, the DDP wrapper, the batches and the RNG streams."""
    cfg, ranks, parts = s.cfg, s.ranks, s.parts
    if parts.resumed is not None:
        s.already_logged = tracking.last_logged_step(s.tracker, "train/loss/total")
    else:
        tracking.log_dataset(s.tracker, Path(cfg.data.root), parts.manifest)
    if on_start is not None and ranks.is_main:
        on_start(s.tracker.run_id, _url(cfg, s.tracker))
    if cfg.train.compile:
        compile_model(parts.pretrainer.model)
    trainer = distributed.wrap(parts.pretrainer, s.device, ranks)
    stream = parts.stream.batches(s.step)
    if parts.resumed is not None:  # after everything else that draws random numbers at start-up
        parts.resumed.restore_rng(ranks, cfg.train.seed)
    elif ranks.rank:  # each rank its own masks, negatives and dropout (rank 0 keeps the one-process stream)
        torch.manual_seed(distributed.rank_seed(cfg.train.seed, ranks.rank))
    return trainer, stream


def _pretrain(
    s: _Session, trainer: nn.Module, stream: Iterator[dict[str, Any]], *, stop_after: int | None, progress: bool
) -> None:
    """The pre-training loop with its progress bar, up to `train.steps` (or `stop_after`).
    Signals wait for a step boundary (under DDP every rank stops after the same step: they agree on it);
    running out of memory becomes one line naming the step and the settings to lower."""
    end_step = s.cfg.train.steps if stop_after is None else min(s.cfg.train.steps, stop_after)
    bar = TrainProgress(total=s.cfg.train.steps, start=s.step, enabled=progress and s.ranks.is_main)
    try:
        s.parts.pretrainer.train()
        with interrupts.deferring():
            _train_steps(s, trainer, stream, end_step, bar)
    except BaseException as err:
        bar.close(err)
        if is_oom(err):
            raise out_of_memory(s.cfg, f"step {s.step}") from None
        raise
    bar.close()


def _train_steps(
    s: _Session, trainer: nn.Module, stream: Iterator[dict[str, Any]], end_step: int, bar: TrainProgress
) -> None:
    """Steps `s.step`..`end_step`: forward, NaN check, update, metrics every `train.log_every`, a checkpoint
    every `train.checkpoint_every`; after a step in which SIGINT/SIGTERM came, a checkpoint and `Interrupted`."""
    cfg, parts = s.cfg, s.parts
    params = [p for p in parts.pretrainer.parameters() if p.requires_grad]
    start_step, window_start, window_samples = s.step, time.perf_counter(), 0
    for step in range(start_step, end_step):
        s.step = step
        batch = _to_device(next(stream), s.device)
        with autocast(s.device, parts.dtype):
            out = trainer(batch)
        reported = _over_ranks(out, s.ranks)
        _check_finite(reported, step, s.last_checkpoint)
        optimizer_step(out["loss"], parts.optimizer, parts.scheduler, parts.scaler, params, cfg.train.grad_clip)
        window_samples += batch["text_ids"].shape[0] * s.ranks.world_size

        done = step + 1
        log_now = done % cfg.train.log_every == 0 or done == cfg.train.steps
        if log_now or done == start_step + 1:  # the first step too: losses on screen at once
            elapsed = time.perf_counter() - window_start
            _report(s, reported, done, window_samples / elapsed if elapsed > 0 else 0.0, log_now, bar)
            window_start, window_samples = time.perf_counter(), 0
        else:
            bar.update(done, None, None)
        if cfg.train.checkpoint_every and done % cfg.train.checkpoint_every == 0 and done < cfg.train.steps:
            s.last_checkpoint = s.save(done)
        signum = distributed.agreed_signal(interrupts.requested(), s.device)  # every rank stops after the same step
        if signum is not None:  # SIGINT/SIGTERM/SIGHUP during this step: keep it, then stop
            s.step = done
            if done < cfg.train.steps:
                s.last_checkpoint = s.save(done)
            interrupts.stop(signum)
    s.step = end_step


def _report(
    s: _Session, reported: dict[str, torch.Tensor], done: int, throughput: float, log: bool, bar: TrainProgress
) -> None:
    """Losses on the progress bar; with `log`, also to MLflow (`train/...`, 1-based steps)."""
    values = _loggable(reported)
    numbers = dict(zip(values, torch.stack(list(values.values())).float().tolist(), strict=True))
    s.final_loss = numbers["loss"]
    if log and done > s.already_logged:  # a resumed run logs only the steps it had not logged
        metrics = {f"train/{'loss/total' if k == 'loss' else k}": v for k, v in numbers.items()}
        metrics["train/lr"] = s.parts.scheduler.get_last_lr()[0]
        metrics["train/samples_per_s"] = throughput
        s.tracker.log_metrics(metrics, step=done)
    bar.update(done, numbers, throughput)


def _finish(s: _Session) -> RunResult:
    """After the loop: the last checkpoint; then rank 0 evaluates, logs the metrics and stores the
    checkpoint in MLflow. A run stopped early on purpose (`stop_after`) stays RUNNING, resumable."""
    s.last_checkpoint = s.save(s.step)
    distributed.teardown(s.ranks)  # evaluation is rank 0's alone: nothing may wait on the other ranks
    run_id = s.tracker.run_id
    if s.step < s.cfg.train.steps:  # stopped early on purpose: resumable
        s.tracker.leave_running()
        return RunResult(run_id, "RUNNING", final_loss=s.final_loss, steps=s.step, checkpoint=s.checkpoint_path)
    if not s.ranks.is_main:
        return RunResult(run_id, "FINISHED", final_loss=s.final_loss, steps=s.step)
    metrics = recorded_run.evaluate(s.parts.pretrainer, s.cfg, s.parts.tokenizer, s.device)
    s.tracker.log_final(metrics, step=s.step)
    stored = tracking.store_checkpoint(s.tracker, s.checkpoint_path)  # one copy: MLflow's; locally a reference
    return RunResult(run_id, "FINISHED", metrics, s.final_loss, s.step, stored)


def _url(cfg: RunConfig, tracker: tracking.RunTracker) -> str:
    if not tracker.enabled:
        return ""
    experiment = tracker.client.get_run(tracker.run_id).info.experiment_id
    return tracking.run_url(cfg.tracking.uri, experiment, tracker.run_id)


def _say_where(err: BaseException, cfg: RunConfig, run_id: str, step: int, last_ckpt: Path | None) -> None:
    """Tell an `Interrupted` which run it stopped, where, and what to resume from."""
    if isinstance(err, interrupts.Interrupted) and err.run_id is None:
        err.quiet = not distributed.ranks_from_env().is_main  # under DDP rank 0 alone says it
        err.run_id, err.step, err.steps = run_id, step, cfg.train.steps
        err.checkpoint = str(last_ckpt) if last_ckpt is not None and last_ckpt.is_file() else None
        err.tracking_uri = cfg.tracking.uri
