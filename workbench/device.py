"""Device and precision choice, and reproducible seeding."""

from __future__ import annotations

import random
from contextlib import nullcontext

import numpy as np
import torch

from workbench.config import TrainConfig
from workbench.errors import ConfigError


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
