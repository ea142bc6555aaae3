"""`workbench bench`: samples/s, MFU and where the time of a pre-training step goes.

Per config (base, paper; every objective on): warm up, count FLOPs over one step,
then ``repeats`` blocks of ``steps`` individually timed steps, each block followed
by one timed peak matmul, so the steps and the peak see the same machine load.
MFU is given two ways: median step / median peak (this machine as loaded now) and
fastest step / fastest peak (what an idle machine gives: other jobs can only slow
a step down). Then one profiled step for the time shares. On the
base config the real training loop (ShapesWorld stream + MLflow tracking on/off)
gives the data-loading share and the tracking overhead.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from mlflow.tracking import MlflowClient

from workbench.bench.breakdown import Breakdown, profile_step
from workbench.bench.measure import count_flops, matmul_flops_per_s, median, peak_operands, spread, timed
from workbench.bench.overheads import Overheads, measure_overheads
from workbench.bench.setup import (
    CONFIGS,
    PAPER_VOCABULARY,
    TrainStep,
    Vocabulary,
    bench_config,
    build_pretrainer,
    default_batch_size,
    synthetic_batch,
    to_device,
)
from workbench.data import PretrainStream, load_tokenizer, prepare_data
from workbench.device import resolve_device, seed_everything
from workbench.errors import ConfigError
from workbench.models.vlp import compiled_training

PEAK_SIZE = {"cpu": 2048, "cuda": 8192}
QUICK_PEAK_SIZE = 256


@dataclass
class BenchOptions:
    configs: tuple[str, ...] = CONFIGS
    quick: bool = False  # tiny widths, 1 step per block: a smoke test
    device: str = "auto"
    batch_size: int | None = None  # default: the config's (paper on CPU: 2)
    steps: int | None = None  # timed steps per block (default 3; quick 1)
    repeats: int | None = None  # timed blocks (default 3; quick 1)
    loop_steps: int | None = None  # steps per tracking/data block (default train.log_every)
    loop_repeats: int | None = None  # (tracked, untracked) block pairs (default 2; quick 1)
    compile: bool = False  # train.compile=true
    data_root: str = ""  # a ShapesWorld (or real) data set for the base config; "" = tiny ShapesWorld in a temp dir
    overrides: list[str] = field(default_factory=list)  # --set for every config

    def resolved(self, name: str, default: int, quick: int) -> int:
        value = getattr(self, name)
        if value is None:
            return quick if self.quick else default
        if value < 1:
            raise ConfigError(f"bench --{name.replace('_', '-')}: {value} must be >= 1")
        return value


@dataclass
class ConfigResult:
    name: str
    batch_size: int
    step_times_s: list[float]
    flops_per_step: int
    flops_by_op: dict[str, int]
    peak_flops_per_s: list[float]
    breakdown: Breakdown
    fusion_passes: int  # model.fuse calls per step, as the step context counts them

    @property
    def step_s(self) -> float:
        """Median step time: what the machine gave under its current load."""
        return median(self.step_times_s)

    @property
    def best_step_s(self) -> float:
        """Fastest step: interference from other jobs can only lengthen a step."""
        return min(self.step_times_s)

    @property
    def samples_per_s(self) -> float:
        return self.batch_size / self.step_s

    @property
    def best_samples_per_s(self) -> float:
        return self.batch_size / self.best_step_s

    @property
    def achieved_flops_per_s(self) -> float:
        return self.flops_per_step / self.step_s

    @property
    def peak(self) -> float:
        return median(self.peak_flops_per_s)

    @property
    def mfu(self) -> float:
        """Median step FLOP/s / median peak (both under the same load)."""
        return self.achieved_flops_per_s / self.peak

    @property
    def best_mfu(self) -> float:
        """Fastest step's FLOP/s / fastest peak: the estimate for an idle machine."""
        return self.flops_per_step / self.best_step_s / max(self.peak_flops_per_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.name,
            "batch_size": self.batch_size,
            "step_s": self.step_s,
            "best_step_s": self.best_step_s,
            "step_times_s": self.step_times_s,
            "step_spread": spread(self.step_times_s),
            "samples_per_s": self.samples_per_s,
            "best_samples_per_s": self.best_samples_per_s,
            "flops_per_step": self.flops_per_step,
            "flops_by_op": self.flops_by_op,
            "achieved_flops_per_s": self.achieved_flops_per_s,
            "peak_flops_per_s": self.peak,
            "peak_flops_per_s_all": self.peak_flops_per_s,
            "mfu": self.mfu,
            "best_mfu": self.best_mfu,
            "fusion_passes": self.fusion_passes,
            "profiled_step_s": self.breakdown.step_s,
            "components": self.breakdown.components,
            "passes": self.breakdown.passes,
            "pass_readers": self.breakdown.readers,
            "objectives": self.breakdown.objectives,
        }


@dataclass
class BenchResult:
    device: str
    threads: int
    torch_version: str
    quick: bool
    load_average: tuple[float, float]  # 1-minute load average before, after
    cores: int
    peak_matrix: int
    configs: list[ConfigResult] = field(default_factory=list)
    overheads: Overheads | None = None
    loop_steps: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "device": self.device,
            "threads": self.threads,
            "cores": self.cores,
            "torch": self.torch_version,
            "quick": self.quick,
            "load_average_before": self.load_average[0],
            "load_average_after": self.load_average[1],
            "flops_counted": "FlopCounterMode over one forward+backward step (matmul, conv, attention; 2 per MAC)",
            "peak": f"{'bf16' if self.device.startswith('cuda') else 'fp32'} {self.peak_matrix}x{self.peak_matrix} "
            "matmul in this process, median of the blocks",
            "configs": [c.to_dict() for c in self.configs],
        }
        if self.overheads is not None:
            o = self.overheads
            out["loop"] = {
                "config": "base",
                "steps_per_block": self.loop_steps,
                "blocks": [vars(b) | {"step_s": b.step_s} for b in o.blocks],
                "data_loading_share": o.data_loading_share,
                "tracking_overhead_ab": o.tracking_ab,
                "tracking_overhead_direct": o.tracking_direct,
                "untracked_step_spread": o.noise,
                "run_start_s": o.run_start_s,
            }
        return out


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def _base_data(options: BenchOptions, scratch: Path) -> list[str]:
    """Overrides that point the base config at its data (tiny ShapesWorld in `scratch` by default)."""
    if options.data_root:
        return [f"data.root={options.data_root}", "data.generate=false"]
    return [f"data.root={scratch / 'shapesworld'}", "data.shapes_size=tiny", "data.generate=true"]


def _track_into(cfg: Any, scratch: Path) -> None:
    """Point `cfg` at an MLflow store in `scratch` whose experiment keeps its artifacts there too."""
    cfg.tracking.uri = f"sqlite:///{scratch / 'mlflow.db'}"
    cfg.tracking.experiment = "bench"
    artifacts = (scratch / "artifacts").as_uri()
    MlflowClient(tracking_uri=cfg.tracking.uri).create_experiment(cfg.tracking.experiment, artifact_location=artifacts)


def bench_one(name: str, options: BenchOptions, device: torch.device, scratch: Path) -> tuple[ConfigResult, Any]:
    """Time one config; returns the result and (for base) what the loop benchmark needs."""
    extra = list(options.overrides) + (["train.compile=true"] if options.compile else [])
    if name == "base":
        extra = _base_data(options, scratch) + extra
    cfg = bench_config(name, quick=options.quick, overrides=extra)
    cfg.train.batch_size = options.batch_size or default_batch_size(name, cfg, device, quick=options.quick)
    seed_everything(cfg.train.seed)
    stream = tokenizer = None
    if name == "base":
        prepare_data(cfg.data)
        tokenizer = load_tokenizer(cfg.data)
        vocab = Vocabulary.of(tokenizer)
        stream = PretrainStream(cfg, tokenizer, seed=cfg.train.seed, pin_memory=device.type == "cuda").batches(0)
        batch = next(stream)
    else:
        vocab = PAPER_VOCABULARY
        batch = synthetic_batch(cfg, vocab, cfg.train.batch_size, seed=cfg.train.seed)
    step = TrainStep(build_pretrainer(cfg, vocab), cfg, device)
    batch = to_device(batch, device)
    flops, by_op = count_flops(lambda: step(batch))  # also the warm-up step (optimizer state, caches)
    if options.compile:
        step(batch)  # the compiled graph, outside the counter's dispatch mode
    a, b = peak_operands(device, QUICK_PEAK_SIZE if options.quick else PEAK_SIZE.get(device.type, 2048))
    matmul_flops_per_s(a, b, device)  # warm-up
    steps = options.resolved("steps", 3, 1)
    step_times, peaks = [], []
    for _ in range(options.resolved("repeats", 3, 1)):
        step_times += [timed(lambda: step(batch), device) for _ in range(steps)]
        peaks.append(matmul_flops_per_s(a, b, device))
    passes = _fusion_passes(step, batch)
    breakdown = profile_step(step, batch)
    result = ConfigResult(name, cfg.train.batch_size, step_times, flops, by_op, peaks, breakdown, passes)
    return result, (step, stream, cfg)


def _fusion_passes(step: TrainStep, batch: dict[str, torch.Tensor]) -> int:
    """Fusion passes of one step's forward, as the step context counts them."""
    pretrainer = step.pretrainer
    with torch.no_grad():
        ctx = pretrainer.objectives.context(pretrainer.model, batch)
        pretrainer.objectives.compute(ctx)
    return ctx.fusion_passes


def run_bench(options: BenchOptions) -> BenchResult:
    """Benchmark the configured training step(s); see the module docstring for what is measured."""
    for name in options.configs:
        if name not in CONFIGS:
            raise ConfigError(f"bench --config: {name!r} is not one of {', '.join(CONFIGS)}")
    device = resolve_device(options.device)
    peak_matrix = QUICK_PEAK_SIZE if options.quick else PEAK_SIZE.get(device.type, 2048)
    result = BenchResult(
        device=str(device),
        threads=torch.get_num_threads(),
        torch_version=torch.__version__,
        quick=options.quick,
        load_average=(_load(), float("nan")),
        cores=os.cpu_count() or 0,
        peak_matrix=peak_matrix,
    )
    compiled = compiled_training() if options.compile else contextlib.nullcontext()  # as train.run trains
    with tempfile.TemporaryDirectory(prefix="workbench-bench-") as tmp, compiled:
        scratch = Path(tmp)
        for name in options.configs:
            config_result, (step, stream, cfg) = bench_one(name, options, device, scratch)
            result.configs.append(config_result)
            if name == "base":
                loop_steps = options.resolved("loop_steps", cfg.train.log_every, cfg.train.log_every)
                _track_into(cfg, scratch)
                result.loop_steps = loop_steps
                result.overheads = measure_overheads(
                    step, stream, cfg, steps=loop_steps, repeats=options.resolved("loop_repeats", 2, 1)
                )
            del step, stream
    result.load_average = (result.load_average[0], _load())
    return result
