"""Typed run configuration: defaults <- experiments/<name>.yaml <- --set a.b.c=value.

Each component owns a small dataclass. Constraints live next to the field they
constrain (``field(metadata=...)``) so that a bad value is rejected at load time
with the dotted key, the value and what is allowed -- never deep inside training.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"


class ConfigError(ValueError):
    """A user-facing configuration problem; its message is one line."""


def ratio(default: float, *, closed: bool = False) -> Any:
    """A fraction in [0, 1) (or [0, 1] when ``closed``)."""
    return field(default=default, metadata={"min": 0.0, "max": 1.0, "max_open": not closed})


def at_least(default: float, low: float) -> Any:
    return field(default=default, metadata={"min": low})


def positive(default: int) -> Any:
    return field(default=default, metadata={"min": 1})


# --------------------------------------------------------------------------- data
@dataclass
class DataConfig:
    root: str = "data/shapesworld"  # data set directory (ShapesWorld or real data in the same formats)
    generate: bool = True  # generate ShapesWorld into `root` when it is missing
    shapes_size: Literal["tiny", "default"] = "default"
    shapes_seed: int = 0
    image_root: str = ""  # relative image/video paths resolve here; "" = `root`
    tokenizer: str = ""  # local HF tokenizer dir; "" = `root`/tokenizer (ShapesWorld's own)
    pretrain_files: list[str] = field(default_factory=lambda: ["pretrain.json"])
    video_pretrain_files: list[str] = field(default_factory=list)
    image_size: int = positive(64)
    max_text_len: int = positive(40)
    num_frames: int = positive(4)  # frames sampled per video
    num_workers: int = at_least(0, 0)
    on_bad_sample: Literal["error", "skip"] = "error"
    allow_absolute_paths: bool = False


# -------------------------------------------------------------------------- model
@dataclass
class VisionConfig:
    timm_name: str = ""  # "" = a tiny ViT from the fields below; else a timm model name
    checkpoint: str = ""  # local weights file for `timm_name` (never downloaded)
    patch_size: int = positive(8)
    width: int = positive(192)
    depth: int = positive(4)
    heads: int = positive(3)
    pooling: Literal["frame_cls", "global_cls", "mean"] = "frame_cls"
    max_frames: int = positive(8)


@dataclass
class TextConfig:
    hf_name: str = ""  # "" = a tiny BertConfig from the fields below; else a local HF model dir/name
    width: int = positive(192)
    depth: int = positive(2)
    heads: int = positive(3)


@dataclass
class FusionConfig:
    layers: int = positive(2)
    width: int = positive(192)
    heads: int = positive(3)
    mlp_ratio: float = at_least(4.0, 1.0)


@dataclass
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)


# --------------------------------------------------------------------- objectives
@dataclass
class ITCConfig:
    enabled: bool = True
    weight: float = at_least(1.0, 0.0)
    embed_dim: int = positive(128)
    temperature: float = field(default=0.07, metadata={"min": 0.001, "max": 0.5})
    focal_gamma: float = at_least(0.0, 0.0)
    queue_size: int = at_least(0, 0)  # 0 = no momentum encoder / queue (SCL code)
    momentum: float = ratio(0.995)
    distill_alpha: float = ratio(0.4, closed=True)
    batch_norm: bool = False  # standardise projected features over the batch: from-scratch encoders learn ITC (see objectives/projection.py)


@dataclass
class ITMConfig:
    enabled: bool = True
    weight: float = at_least(1.0, 0.0)
    negatives: Literal["hard", "random"] = "hard"


@dataclass
class MLMConfig:
    enabled: bool = True
    weight: float = at_least(1.0, 0.0)
    mask_prob: float = ratio(0.15)
    reuse_mlsc_pass: bool = False  # predict the MLSC pass's masked tokens instead of a separate pass


@dataclass
class SCLConfig:
    enabled: bool = True
    weight: float = at_least(1.0, 0.0)
    mvsc: bool = True
    mlsc: bool = True
    image_mask_ratio: float = ratio(0.8)
    text_mask_ratio: float = ratio(0.4)
    temperature: float = field(default=0.03, metadata={"min": 0.001, "max": 1.0})
    target: Literal["cross_pass", "clean_pass"] = "cross_pass"


@dataclass
class SoftMaskConfig:
    enabled: bool = False
    weight: float = at_least(1.0, 0.0)
    mode: Literal["soft", "hard", "random", "off"] = "soft"
    layer: int = 0  # fusion layer whose text->image attention drives Grad-CAM; not the last: only its CLS row reaches ITM
    hard_ratio: float = ratio(0.25)


@dataclass
class ObjectivesConfig:
    itc: ITCConfig = field(default_factory=ITCConfig)
    itm: ITMConfig = field(default_factory=ITMConfig)
    mlm: MLMConfig = field(default_factory=MLMConfig)
    scl: SCLConfig = field(default_factory=SCLConfig)
    softmask: SoftMaskConfig = field(default_factory=SoftMaskConfig)


# ------------------------------------------------------------------------ augment
@dataclass
class AugmentConfig:
    image: bool = False  # random resized crop + RandAugment without colour ops
    text: bool = False  # random word masking of the caption
    text_mask_ratio: float = ratio(0.15)
    flip: bool = False  # horizontal flip that swaps left/right in the caption
    crop_scale_min: float = field(default=0.5, metadata={"min": 0.05, "max": 1.0})
    randaug_ops: int = at_least(2, 0)
    randaug_magnitude: int = field(default=7, metadata={"min": 0, "max": 30})


# -------------------------------------------------------------------------- train
@dataclass
class TrainConfig:
    steps: int = at_least(300, 0)  # 0 = no pre-training: the random-init control (same fine-tunes)
    batch_size: int = positive(32)
    lr: float = field(default=3e-4, metadata={"min": 0.0, "max_open": False})
    weight_decay: float = at_least(0.02, 0.0)
    head_lr_mult: float = at_least(5.0, 0.0)  # lr multiplier for fusion and heads
    warmup_steps: int = at_least(20, 0)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    grad_clip: float = at_least(1.0, 0.0)  # 0 = off
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto = bf16 on CUDA, fp32 on CPU
    seed: int = 0
    checkpoint_every: int = at_least(100, 0)  # 0 = only at the end
    log_every: int = positive(10)
    compile: bool = False
    out_dir: str = "outputs"  # local checkpoints: <out_dir>/<run_id>/


# --------------------------------------------------------------------------- eval
@dataclass
class EvalConfig:
    tasks: list[str] = field(
        default_factory=lambda: ["retrieval", "video_retrieval", "vqa", "nlvr", "ve"]
    )
    split: Literal["val", "test"] = "test"
    batch_size: int = positive(64)
    rerank_k: int = at_least(16, 0)  # 0 = ITC only
    finetune_steps: int = at_least(100, 0)
    finetune_lr: float = at_least(1e-4, 0.0)
    finetune_batch_size: int = positive(32)
    head_lr_mult: float = at_least(10.0, 0.0)
    finetune_layers: Literal["all", "fusion"] = "all"  # fusion: encoders frozen, their outputs computed once per split
    finetune_group_size: int = at_least(6, 0)  # items with the same text share a batch, this many at most (0 = plain shuffle)


# ----------------------------------------------------------------------- tracking
@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = ""  # "" = $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory
    experiment: str = "workbench"
    run_name: str = ""


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objectives: ObjectivesConfig = field(default_factory=ObjectivesConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


EVAL_TASKS = ("retrieval", "video_retrieval", "vqa", "nlvr", "ve")


# ===================================================================== machinery
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def all_keys(cls: type = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a config class, e.g. 'objectives.scl.image_mask_ratio'."""
    keys = []
    for name, hint in _hints(cls).items():
        if dataclasses.is_dataclass(hint):
            keys += all_keys(hint, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.6)
    hint = f" — did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}")


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {typing.get_args(hint)[0].__name__}"
    return f"a {getattr(hint, '__name__', str(hint))}"


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the annotation `hint`; return it in the field's type."""
    origin = typing.get_origin(hint)
    bad = ConfigError(f"{key}: {value!r} is not {_describe(hint)}")
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint_txt = f" — did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"{key}: {value!r} is not one of {', '.join(map(str, allowed))}{hint_txt}"
            )
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise bad
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads '1e6' (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        if not math.isfinite(value):  # nan passes every range check; inf is no setting either
            raise ConfigError(f"{key}: {value!r} is not a finite number")
        return float(value)
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise bad
        return str(value)
    if isinstance(hint, types.UnionType):  # pragma: no cover - no unions in the schema yet
        raise bad
    return value


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


def _apply(obj: Any, data: dict[str, Any], prefix: str = "") -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {data!r}")
    hints = _hints(type(obj))
    fields = {f.name: f for f in dataclasses.fields(obj)}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise _unknown_key(key)
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            _apply(getattr(obj, name), value, f"{key}.")
            continue
        setattr(obj, name, _coerce(key, value, hint))


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
    for task in cfg.eval.tasks:
        if task not in EVAL_TASKS:
            close = difflib.get_close_matches(task, EVAL_TASKS, n=1)
            hint = f" — did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"eval.tasks: {task!r} is not one of {', '.join(EVAL_TASKS)}{hint}"
            )
    layers = cfg.model.fusion.layers
    if not -layers <= cfg.objectives.softmask.layer < layers:
        raise ConfigError(
            f"objectives.softmask.layer: {cfg.objectives.softmask.layer} is out of range — "
            f"allowed: -{layers}..{layers - 1} (model.fusion.layers={layers})"
        )
    for name in ("vision", "fusion"):
        sub = getattr(cfg.model, name)
        if sub.width % sub.heads:
            raise ConfigError(
                f"model.{name}.heads: {sub.heads} must divide model.{name}.width={sub.width}"
            )
    if cfg.model.text.width % cfg.model.text.heads:
        raise ConfigError(
            f"model.text.heads: {cfg.model.text.heads} must divide model.text.width={cfg.model.text.width}"
        )
    if cfg.data.image_size % cfg.model.vision.patch_size:
        raise ConfigError(
            f"model.vision.patch_size: {cfg.model.vision.patch_size} must divide "
            f"data.image_size={cfg.data.image_size}"
        )
    if cfg.data.num_frames > cfg.model.vision.max_frames:
        raise ConfigError(
            f"data.num_frames: {cfg.data.num_frames} exceeds model.vision.max_frames="
            f"{cfg.model.vision.max_frames}"
        )
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """'a.b.c=value' -> ('a.b.c', value). Values are YAML scalars/lists ('0.4', 'true', '[a,b]')."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. objectives.scl.image_mask_ratio=0.6")
    hint = _hint_for(key)
    if hint is str or typing.get_origin(hint) is Literal:
        return key, raw.strip()  # strings stay strings: '--set data.root=007' is not an int
    try:
        return key, yaml.safe_load(raw) if raw.strip() else raw
    except yaml.YAMLError:
        return key, raw


def _hint_for(key: str) -> Any:
    cls: Any = RunConfig
    for part in key.split("."):
        hints = _hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints:
            raise _unknown_key(key)
        cls = hints[part]
    if dataclasses.is_dataclass(cls):
        raise ConfigError(f"{key}: is a section; set one of its keys, e.g. {all_keys(cls, key + '.')[0]}")
    return cls


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'a.b': 1} -> {'a': {'b': 1}}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def resolve_named_yaml(name_or_path: str | Path, folders: list[Path], kind: str) -> Path:
    """A YAML path, or a name looked up as `<folder>/<name>.yaml` in `folders` (first wins)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"{kind} file not found: {path}")
        return path
    for folder in folders:
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.is_file():
            return candidate
    known = sorted({p.stem for folder in folders for p in folder.glob("*.yaml")})
    close = difflib.get_close_matches(str(name_or_path), known, n=1)
    hint = f" — did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"unknown {kind} {str(name_or_path)!r} (known: {', '.join(known)}){hint}")


def resolve_experiment(experiment: str | Path) -> Path:
    """An experiment is a YAML path or a name under experiments/ (e.g. 'base')."""
    return resolve_named_yaml(experiment, [Path.cwd() / "experiments", EXPERIMENTS_DIR], "experiment")


def read_yaml(path: Path, contents: str = "config sections") -> dict[str, Any]:
    """A YAML mapping (safe_load); bad YAML or another type is one line naming the file (and line)."""
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {contents}, got {type(data).__name__}")
    return data


def load_config(
    experiment: str | Path | None = "base",
    overrides: list[str] | dict[str, Any] | None = None,
) -> RunConfig:
    """defaults <- experiment YAML <- overrides; validated."""
    cfg = RunConfig()
    if experiment:
        _apply(cfg, read_yaml(resolve_experiment(experiment)))
    _apply_overrides(cfg, overrides)
    return validate(cfg)


def _apply_overrides(cfg: RunConfig, overrides: list[str] | dict[str, Any] | None) -> None:
    if not overrides:
        return
    flat = overrides if isinstance(overrides, dict) else dict(parse_override(o) for o in overrides)
    for key in flat:
        _hint_for(key)
    _apply(cfg, nest(flat))


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any], overrides: list[str] | None = None) -> RunConfig:
    """Rebuild a RunConfig from `to_dict` output (e.g. a run's saved config.yaml), then overrides."""
    cfg = RunConfig()
    _apply(cfg, data)
    _apply_overrides(cfg, overrides)
    return validate(cfg)


def to_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def flatten(cfg: RunConfig | dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted leaf keys -> values, for MLflow params and sweep axes."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
