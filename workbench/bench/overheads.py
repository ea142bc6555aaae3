"""Data loading and MLflow tracking as shares of a real training loop.

The loop is `train.run`'s: next batch from `PretrainStream` (ShapesWorld) -> step
-> every `train.log_every` steps the scalar outputs are gathered with one
`tolist()` and sent with the real `RunTracker` (MLflow, sqlite store in a temp
dir). Blocks with tracking on and off alternate, same steps each, so a load
change on the machine hits both alike.

* data loading share = time blocked in ``next(stream)`` / loop time;
* tracking overhead, A/B = median step time on / off - 1 (what the brief asks;
  on a busy machine its noise is larger than the effect);
* tracking overhead, direct = (main-thread time inside tracker calls, final flush
  included + CPU time of MLflow's metric thread) / loop time.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from workbench import tracking
from workbench.bench.measure import median, spread, sync
from workbench.bench.setup import to_device
from workbench.config import RunConfig

METRIC_THREAD = "mlflow-metrics"  # tracking.MetricLogger's worker


@dataclass
class LoopBlock:
    tracked: bool
    steps: int
    total_s: float
    load_s: float
    tracking_s: float = 0.0  # main thread inside tracker calls (final flush included)
    worker_cpu_s: float = 0.0  # MLflow metric thread

    @property
    def step_s(self) -> float:
        return self.total_s / self.steps


@dataclass
class Overheads:
    blocks: list[LoopBlock] = field(default_factory=list)
    run_starts_s: list[float] = field(default_factory=list)  # creating an MLflow run (once per run)

    @property
    def run_start_s(self) -> float:
        return median(self.run_starts_s)

    def _of(self, tracked: bool) -> list[LoopBlock]:
        return [b for b in self.blocks if b.tracked == tracked]

    @property
    def data_loading_share(self) -> float:
        return sum(b.load_s for b in self.blocks) / sum(b.total_s for b in self.blocks)

    @property
    def tracking_ab(self) -> float:
        on = median([b.step_s for b in self._of(True)])
        off = median([b.step_s for b in self._of(False)])
        return on / off - 1.0

    @property
    def tracking_direct(self) -> float:
        on = self._of(True)
        return sum(b.tracking_s + b.worker_cpu_s for b in on) / sum(b.total_s for b in on)

    @property
    def noise(self) -> float:
        """Spread of the per-step times of the untracked blocks."""
        return spread([b.step_s for b in self._of(False)])


def _scalars(out: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in out.items() if isinstance(v, torch.Tensor) and v.numel() == 1}


def _metric_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == METRIC_THREAD}


def _thread_cpu_s(thread: threading.Thread | None) -> float:
    if thread is None or not thread.is_alive() or not hasattr(time, "pthread_getcpuclockid"):
        return 0.0
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    except (OSError, TypeError):  # the thread ended meanwhile
        return 0.0


def run_block(
    step: Any, stream: Iterator[dict], cfg: RunConfig, steps: int, *, tracked: bool, first_step: int
) -> tuple[LoopBlock, float]:
    """`steps` training steps as `train.run` runs them; (timings, seconds to start the run)."""
    cfg = copy.deepcopy(cfg)
    cfg.tracking.enabled = tracked
    before = _metric_threads()
    started = time.perf_counter()
    tracker = tracking.start_run(cfg, tags={"workbench.bench": "tracking-overhead"})
    run_start_s = time.perf_counter() - started
    worker = next(iter(_metric_threads() - before), None)
    worker_cpu_start = _thread_cpu_s(worker)
    block = LoopBlock(tracked, steps, 0.0, 0.0)
    device, log_every = step.device, cfg.train.log_every
    sync(device)
    loop_start = time.perf_counter()
    for index in range(first_step, first_step + steps):
        load_start = time.perf_counter()
        batch = to_device(next(stream), device)
        block.load_s += time.perf_counter() - load_start
        out = step(batch)
        if (index + 1) % log_every == 0:
            values = _scalars(out)
            numbers = dict(zip(values, torch.stack(list(values.values())).float().tolist(), strict=True))
            metrics = {f"train/{'loss/total' if k == 'loss' else k}": v for k, v in numbers.items()}
            metrics["train/lr"] = step.scheduler.get_last_lr()[0]
            log_start = time.perf_counter()
            tracker.log_metrics(metrics, step=index + 1)
            block.tracking_s += time.perf_counter() - log_start
    sync(device)
    block.worker_cpu_s = _thread_cpu_s(worker) - worker_cpu_start
    finish_start = time.perf_counter()
    tracker.finish("FINISHED")
    block.tracking_s += time.perf_counter() - finish_start
    block.total_s = time.perf_counter() - loop_start
    return block, run_start_s


def measure_overheads(step: Any, stream: Iterator[dict], cfg: RunConfig, *, steps: int, repeats: int) -> Overheads:
    """`repeats` pairs of (tracked, untracked) blocks of `steps` steps, alternating."""
    result = Overheads()
    done = 0
    for repeat in range(repeats):
        order = (True, False) if repeat % 2 == 0 else (False, True)
        for tracked in order:
            block, start_s = run_block(step, stream, cfg, steps, tracked=tracked, first_step=done)
            done += steps
            result.blocks.append(block)
            if tracked:
                result.run_starts_s.append(start_s)
    return result
