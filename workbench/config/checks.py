"""Is a run config one that can run? Each field's range, then the rules between fields.

Values every type check accepts but that make no model (heads that do not divide the
width) or would quietly do something else than meant (an empty output directory) are
refused here, with the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

from workbench.config.paths import expand_paths
from workbench.config.schema import RunConfig
from workbench.errors import ConfigError, did_you_mean
from workbench.strict_yaml import brief
from workbench.tasks import EVAL_TASKS


def validate(cfg: RunConfig) -> RunConfig:
    """Check ranges of every field and the few cross-field rules."""

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            key = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(value, f"{key}.")
            elif f.metadata and isinstance(value, (int, float)):
                _check_range(key, value, f.metadata)

    walk(cfg, "")
    expand_paths(cfg)  # `~` and `$VAR` in path settings, as a shell would
    for task in cfg.eval.tasks:
        if task not in EVAL_TASKS:
            raise ConfigError(
                f"eval.tasks: {task!r} is not one of {', '.join(EVAL_TASKS)}{did_you_mean(task, EVAL_TASKS)}"
            )
    _check_silent_accepts(cfg)
    layers = cfg.model.fusion.layers
    if not -layers <= cfg.objectives.softmask.layer < layers:
        raise ConfigError(
            f"objectives.softmask.layer: {cfg.objectives.softmask.layer} is out of range — "
            f"allowed: -{layers}..{layers - 1} (model.fusion.layers={layers})"
        )
    # rules of one objective (SoftMask's Grad-CAM layer, MLM's mask_prob) are its spec's `check`
    # (objectives/), run by `workbench.preflight` before any work and when the objectives are built
    _check_model_shapes(cfg)
    return cfg


def _check_range(key: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    low, high = meta.get("min"), meta.get("max")
    high_open = meta.get("max_open", False)
    too_low = low is not None and value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        if high is None:
            allowed = f">= {low}"
        else:
            allowed = f"in [{low}, {high}{')' if high_open else ']'}"
        raise ConfigError(f"{key}: {value!r} is out of range — allowed: {allowed}")


def _check_model_shapes(cfg: RunConfig) -> None:
    """Model settings that each pass their own check but make no model: an empty init, heads that do
    not divide the width, patches that do not tile the image, more frames than the encoder takes."""
    for part in ("vision", "text"):
        if not getattr(cfg.model, part).init.strip():
            raise ConfigError(
                f"model.{part}.init: '' is not a setting — 'random', 'warmstart' or a warm-start file path"
            )
    for name in ("vision", "fusion"):
        sub = getattr(cfg.model, name)
        if sub.width % sub.heads:
            raise ConfigError(f"model.{name}.heads: {sub.heads} must divide model.{name}.width={sub.width}")
    if cfg.model.text.width % cfg.model.text.heads:
        raise ConfigError(
            f"model.text.heads: {cfg.model.text.heads} must divide model.text.width={cfg.model.text.width}"
        )
    if cfg.data.image_size % cfg.model.vision.patch_size:
        raise ConfigError(
            f"model.vision.patch_size: {cfg.model.vision.patch_size} must divide data.image_size={cfg.data.image_size}"
        )
    if cfg.data.num_frames > cfg.model.vision.max_frames:
        raise ConfigError(
            f"data.num_frames: {cfg.data.num_frames} exceeds model.vision.max_frames={cfg.model.vision.max_frames}"
        )


def _check_silent_accepts(cfg: RunConfig) -> None:
    """Values every type check accepts but that would quietly do something else than meant."""
    for key in ("train.out_dir", "data.root", "tracking.experiment"):
        section, name = key.split(".")
        if not str(getattr(getattr(cfg, section), name)).strip():
            raise ConfigError(f"{key}: is empty; give a {'name' if name == 'experiment' else 'directory'}")
    for key in ("pretrain_files", "video_pretrain_files"):
        for i, name in enumerate(getattr(cfg.data, key)):
            path = Path(name)
            if not name.strip():
                raise ConfigError(f"data.{key}[{i}]: is empty; give a file name under data.root")
            if path.is_absolute() and not cfg.data.allow_absolute_paths:
                raise ConfigError(
                    f"data.{key}[{i}]: absolute path {brief(name)} refused — give a path under data.root "
                    "(or set data.allow_absolute_paths=true)"
                )
            if ".." in path.parts:
                raise ConfigError(f"data.{key}[{i}]: path {brief(name)} climbs out of data.root ('..' refused)")
