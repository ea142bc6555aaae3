"""Device and precision choice, reproducible seeding, and memory: what a config needs, what there is,
and an out-of-memory error told as one line naming the settings to lower."""

from __future__ import annotations

import random
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from workbench.config import RunConfig, TrainConfig
from workbench.errors import ConfigError, RunError


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; 'cuda:N' must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: {name!r} is not a device — allowed: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device: {name!r} but CUDA is not available here — use cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"train.device: {name!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type != "cpu":
        raise ConfigError(f"train.device: {name!r} is not supported — allowed: auto, cpu, cuda, cuda:N")
    return device


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """None = fp32. 'auto' is bf16 on CUDA (no loss scaling needed), fp32 on CPU."""
    if cfg.precision == "fp32" or (cfg.precision == "auto" and device.type != "cuda"):
        return None
    if cfg.precision in ("auto", "bf16"):
        return torch.bfloat16
    if device.type != "cuda":
        raise ConfigError("train.precision: 'fp16' needs a CUDA device — use bf16 or fp32 on cpu")
    return torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def is_oom(err: BaseException) -> bool:
    """Out of memory: MemoryError, torch's OutOfMemoryError, or a RuntimeError saying so (not our RunError)."""
    if isinstance(err, (MemoryError, torch.OutOfMemoryError)):
        return True
    if not isinstance(err, RuntimeError) or isinstance(err, RunError):
        return False
    text = str(err)
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text


def out_of_memory(cfg: RunConfig, when: str) -> RunError:
    return RunError(
        f"out of memory while {when} with train.batch_size={cfg.train.batch_size}, model widths "
        f"{cfg.model.vision.width}/{cfg.model.text.width}/{cfg.model.fusion.width} (vision/text/fusion); "
        "lower train.batch_size or the model.*.width / depth settings"
    )


def check_fits_memory(cfg: RunConfig, device: torch.device, world_size: int = 1) -> None:
    """Refuse, before building anything, a model whose weights and AdamW state alone exceed the
    memory there is (a huge width or depth would otherwise die mid-run with an allocator error)."""
    weights = 16 * estimate_parameters(cfg)  # fp32 weights + grads + two AdamW moments
    have = available_memory(device)
    if have and weights > have:
        raise ConfigError(
            f"model.*.width/depth: the model needs about {weights / 2**30:.1f} GiB for weights and optimizer state "
            f"(widths {cfg.model.vision.width}/{cfg.model.text.width}/{cfg.model.fusion.width}, depths "
            f"{cfg.model.vision.depth}/{cfg.model.text.depth}/{cfg.model.fusion.layers}), "
            f"more than the {have / 2**30:.1f} GiB available on {device}"
        )
    activations = estimate_activations(cfg) // world_size  # each rank holds its slice of the batch
    if have and weights + activations > have:
        raise ConfigError(
            f"train.batch_size: {cfg.train.batch_size} needs at least {activations / 2**30:.1f} GiB of "
            "activations per step "
            f"(a lower bound), more than the {max(have - weights, 0) / 2**30:.1f} GiB left on {device} beside the "
            "model; "
            "lower train.batch_size"
        )


def estimate_parameters(cfg: RunConfig) -> int:
    """~12 w^2 per transformer layer (attention 4 w^2 + MLP 8 w^2), fusion with cross-attention ~16 w^2."""
    m = cfg.model
    return (
        12 * m.vision.width**2 * m.vision.depth
        + 12 * m.text.width**2 * m.text.depth
        + 16 * m.fusion.width**2 * m.fusion.layers
    )


def estimate_activations(cfg: RunConfig) -> int:
    """A lower bound on one step's saved activations (bytes): 4 fp32 values per token, width unit
    and layer, one pass (real steps keep several times this; only what surely cannot fit is refused)."""
    m, d = cfg.model, cfg.data
    image_tokens = (d.image_size // m.vision.patch_size) ** 2 + 1
    text_tokens = d.max_text_len
    per_sample = (
        image_tokens * m.vision.width * m.vision.depth
        + text_tokens * m.text.width * m.text.depth
        + text_tokens * m.fusion.width * m.fusion.layers
    )
    return 16 * cfg.train.batch_size * per_sample


def available_memory(device: torch.device) -> int:
    """Free bytes on `device` (0 when unknown)."""
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, RuntimeError, ValueError):
        pass
    return 0
