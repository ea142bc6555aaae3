"""Typed run configuration: defaults <- experiments/<name>.yaml <- --set a.b.c=value.

Each component owns a small dataclass. Constraints live next to the field they
constrain (``field(metadata=...)``) so that a bad value is rejected at load time
with the dotted key, the value and what is allowed -- never deep inside training.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from workbench.config_paths import expand_paths
from workbench.errors import ConfigError, did_you_mean
from workbench.strict_yaml import YamlError, brief
from workbench.strict_yaml import load as load_yaml
from workbench.tasks import EVAL_TASKS

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"


def ratio(default: float, *, closed: bool = False) -> Any:
    """A fraction in [0, 1) (or [0, 1] when ``closed``)."""
    return field(default=default, metadata={"min": 0.0, "max": 1.0, "max_open": not closed})


def at_least(default: float, low: float) -> Any:
    return field(default=default, metadata={"min": low})


def positive(default: int, high: int | None = None) -> Any:
    """An integer >= 1; `high` caps sizes whose huge values would only exhaust memory mid-run."""
    return field(default=default, metadata={"min": 1, **({"max": high} if high is not None else {})})


WIDTH_MAX = 16_384  # 4x a ViT-G: widths beyond this do not fit any accelerator
DEPTH_MAX = 256
BATCH_MAX = 1_048_576


# --------------------------------------------------------------------------- data
@dataclass
class DataConfig:
    root: str = "data/shapesworld"  # data set directory (ShapesWorld or real data in the same formats)
    generate: bool = True  # generate ShapesWorld into `root` when it is missing
    shapes_size: Literal["tiny", "default"] = (
        "default"  # ShapesWorld preset: tiny (tests, seconds) or default (~120 MB)
    )
    shapes_seed: int = field(default=0, metadata={"min": 0, "max": 2**32 - 1})  # ShapesWorld generator seed
    image_root: str = ""  # relative image/video paths resolve here; "" = `root`
    tokenizer: str = ""  # local HF tokenizer dir; "" = `root`/tokenizer (ShapesWorld's own)
    pretrain_files: list[str] = field(
        default_factory=lambda: ["pretrain.json"]
    )  # image-caption JSON files under `root` for pre-training
    video_pretrain_files: list[str] = field(
        default_factory=list
    )  # video-caption JSON files under `root` mixed into pre-training
    # tar shards (webdataset layout) instead of pretrain_files, e.g. /data/cc3m/{000000..000331}.tar; relative = under
    # `root`
    pretrain_shards: str = ""
    image_size: int = positive(64, 4096)  # images are resized to this square side (pixels)
    max_text_len: int = positive(40, 8192)  # captions are cut/padded to this many tokens
    num_frames: int = positive(4, 1024)  # frames sampled per video
    num_workers: int = field(
        default=0, metadata={"min": 0, "max": 512}
    )  # DataLoader worker processes (0 = in the training process)
    on_bad_sample: Literal["error", "skip"] = "error"  # an unreadable sample: stop with an error, or skip it
    allow_absolute_paths: bool = False  # accept absolute media paths in the JSON files


# -------------------------------------------------------------------------- model
@dataclass
class VisionConfig:
    timm_name: str = ""  # "" = a tiny ViT from the fields below; else a timm model name
    checkpoint: str = ""  # local weights file for `timm_name` (never downloaded)
    patch_size: int = positive(8, 4096)  # ViT patch side (pixels)
    width: int = positive(192, WIDTH_MAX)  # ViT embedding width
    depth: int = positive(4, DEPTH_MAX)  # ViT blocks
    heads: int = positive(3, DEPTH_MAX)  # ViT attention heads
    pooling: Literal["frame_cls", "global_cls", "mean"] = (
        "frame_cls"  # how frames see each other and what the global feature is (models/vision.py)
    )
    max_frames: int = positive(8, 1024)  # longest video the position table holds
    # ViT weights before VLP: random (as built), warmstart (cached under data.root, made when missing) or a file
    init: str = "random"


@dataclass
class TextConfig:
    hf_name: str = ""  # "" = a tiny BertConfig from the fields below; else a local HF model dir/name
    width: int = positive(192, WIDTH_MAX)  # BERT hidden width
    depth: int = positive(2, DEPTH_MAX)  # BERT layers
    heads: int = positive(3, DEPTH_MAX)  # BERT attention heads
    init: str = "random"  # BERT weights before VLP: "random" (as built), "warmstart" or a file (see vision.init)


@dataclass
class FusionConfig:
    layers: int = positive(2, DEPTH_MAX)  # co-attention fusion layers
    width: int = positive(192, WIDTH_MAX)  # fusion hidden width
    heads: int = positive(3, DEPTH_MAX)  # fusion attention heads
    mlp_ratio: float = at_least(4.0, 1.0)  # MLP width / hidden width
    init: Literal["bert", "xavier"] = (
        "bert"  # linear weights: BERT's N(0, 0.02) (papers) or Xavier (see models/fusion.py)
    )


@dataclass
class ModelConfig:
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)


@dataclass
class WarmStartConfig:
    """The uni-modal warm start (`workbench data warmstart`): what `init: warmstart` trains.

    Image: per-patch colour/shape/size + object count on fresh ShapesWorld scenes
    (ImageNet's stand-in). Text: BERT MLM on the pre-training captions (no image).
    """

    vision_steps: int = at_least(300, 0)  # image-only warm-start steps (0 = none)
    text_steps: int = at_least(300, 0)  # text-only (MLM) warm-start steps (0 = none)
    batch_size: int = positive(64, BATCH_MAX)  # warm-start batch size
    lr: float = field(default=1e-3, metadata={"min": 0.0, "max_open": False})  # warm-start AdamW learning rate
    mask_prob: float = ratio(0.15)  # share of caption tokens masked for text MLM
    seed: int = field(default=0, metadata={"min": 0, "max": 2**32 - 1})  # warm-start seed (part of its cache key)


# --------------------------------------------------------------------- objectives
@dataclass
class ITCConfig:
    enabled: bool = True  # image-text contrastive loss on/off
    weight: float = at_least(1.0, 0.0)  # its weight in the total loss
    embed_dim: int = positive(128, WIDTH_MAX)  # width of the contrastive embeddings
    temperature: float = field(
        default=0.07, metadata={"min": 0.001, "max": 0.5}
    )  # softmax temperature of the similarities
    focal_gamma: float = at_least(0.0, 0.0)  # focal weighting of hard pairs (0 = plain InfoNCE)
    queue_size: int = field(
        default=0, metadata={"min": 0, "max": 10_000_000}
    )  # 0 = no momentum encoder / queue (SCL code)
    momentum: float = ratio(0.995)  # momentum encoder EMA rate
    distill_alpha: float = ratio(0.4, closed=True)  # weight of the momentum model's soft targets
    # standardise projected features over the batch: from-scratch encoders learn ITC (see objectives/projection.py)
    batch_norm: bool = False


@dataclass
class ITMConfig:
    enabled: bool = True  # image-text matching loss on/off
    weight: float = at_least(1.0, 0.0)  # its weight in the total loss
    negatives: Literal["hard", "random"] = "hard"  # ITM negatives: hard (from ITC similarity) or random
    hard_mix: float = ratio(
        1.0, closed=True
    )  # with hard: share of a negative draw from ITC's softmax, the rest uniform (objectives/itm.py)
    product: bool = False  # the head also reads text ⊙ image pooled features (ViLBERT); see objectives/itm.py
    batch_norm: bool = False  # standardise the head's input over ITM's batch (as itc.batch_norm); see objectives/itm.py


@dataclass
class MLMConfig:
    enabled: bool = True  # masked language modelling on/off
    weight: float = at_least(1.0, 0.0)  # its weight in the total loss
    mask_prob: float = ratio(0.15)  # share of caption tokens masked
    reuse_mlsc_pass: bool = False  # predict the MLSC pass's masked tokens instead of a separate pass


@dataclass
class SCLConfig:
    enabled: bool = True  # SCL (MVSC + MLSC) on/off
    weight: float = at_least(1.0, 0.0)  # its weight in the total loss
    mvsc: bool = True  # MVSC: recover the fused image CLS from a patch-dropped image, on/off
    mlsc: bool = True  # MLSC: recover the fused text CLS from a masked caption, on/off
    image_mask_ratio: float = ratio(0.8)  # share of image patches masked for MVSC
    text_mask_ratio: float = ratio(0.4)  # share of caption tokens masked for MLSC
    temperature: float = field(default=0.03, metadata={"min": 0.001, "max": 1.0})  # InfoNCE temperature of MVSC/MLSC
    target: Literal["cross_pass", "clean_pass"] = (
        "cross_pass"  # target CLS: from the other masked pass (SCL code) or a clean third pass
    )


@dataclass
class SoftMaskConfig:
    enabled: bool = False  # Grad-CAM soft-masking objective on/off
    weight: float = at_least(1.0, 0.0)  # its weight in the total loss
    mode: Literal["soft", "hard", "random", "off"] = "soft"  # how the Grad-CAM map masks the image
    layer: int = (
        0  # fusion layer whose text->image attention drives Grad-CAM; not the last: only its CLS row reaches ITM
    )
    hard_ratio: float = ratio(0.25)  # share of patches masked in hard mode
    words: Literal["content", "any"] = (
        "content"  # Grad-CAM word: a content word (colour, shape, size, position, count) or any word
    )
    positive: Literal["separate_loss", "itm_batch"] = (
        "separate_loss"  # masked pair: own loss term, or B more rows of ITM's batch (objectives/softmask.py)
    )


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
    randaug_ops: int = at_least(2, 0)  # RandAugment operations per image
    randaug_magnitude: int = field(default=7, metadata={"min": 0, "max": 30})  # RandAugment magnitude
    randaug_set: Literal["color_free", "albef"] = (
        # RandAugment ops: geometric + sharpness only (ShapesWorld: colours are labels) or ALBEF's list (real photos)
        "color_free"
    )


# -------------------------------------------------------------------------- train
@dataclass
class TrainConfig:
    steps: int = field(
        default=300, metadata={"min": 0, "max": 10**12}
    )  # pre-training optimiser steps; 0 = none: the random-init control (same fine-tunes)
    batch_size: int = positive(32, BATCH_MAX)  # image-text pairs per step (global, over all ranks)
    lr: float = field(default=3e-4, metadata={"min": 0.0, "max_open": False})  # peak AdamW learning rate
    weight_decay: float = at_least(0.02, 0.0)  # AdamW weight decay
    head_lr_mult: float = at_least(5.0, 0.0)  # lr multiplier for fusion and heads
    warmup_steps: int = at_least(20, 0)  # linear warm-up steps
    schedule: Literal["cosine", "linear", "constant"] = "cosine"  # learning-rate decay after warm-up
    grad_clip: float = at_least(1.0, 0.0)  # 0 = off
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto = bf16 on CUDA, fp32 on CPU
    seed: int = field(
        default=0, metadata={"min": 0, "max": 2**32 - 1}
    )  # seed of everything random (same seed on CPU => same losses)
    checkpoint_every: int = at_least(100, 0)  # 0 = only at the end
    log_every: int = positive(10)  # steps between logged metrics
    compile: bool = False  # torch.compile the model
    out_dir: str = "outputs"  # local checkpoints: <out_dir>/<run_id>/


# --------------------------------------------------------------------------- eval
@dataclass
class EvalConfig:
    tasks: list[str] = field(
        default_factory=lambda: list(EVAL_TASKS)
    )  # downstream tasks after pre-training ([] = none; or `run --no-eval`)
    split: Literal["val", "test"] = "test"  # split the scores are reported on
    batch_size: int = positive(64, BATCH_MAX)  # batch size of evaluation passes
    rerank_k: int = at_least(16, 0)  # 0 = ITC only
    rerank_score: Literal["itm", "itm+itc", "itm+itc_logit"] = (
        # a re-ranked candidate's score: its ITM logit (ALBEF), + ITC cosine (BLIP), or + ITC logit = cosine /
        # temperature (evaluate/retrieval.py)
        "itm"
    )
    finetune_steps: int = at_least(100, 0)  # optimiser steps of each task fine-tune (vqa, nlvr, ve)
    finetune_lr: float = at_least(1e-4, 0.0)  # fine-tune learning rate
    finetune_batch_size: int = positive(32, BATCH_MAX)  # fine-tune batch size
    head_lr_mult: float = at_least(10.0, 0.0)  # lr multiplier for fusion and task head in fine-tunes
    finetune_layers: Literal["all", "fusion", "last"] = (
        # fusion: encoders frozen (outputs computed once per split); last: only the last fusion layer + head train
        "all"
    )
    finetune_group_size: int = at_least(
        6, 0
    )  # items with the same text share a batch, this many at most (0 = plain shuffle)


# ----------------------------------------------------------------------- tracking
@dataclass
class TrackingConfig:
    enabled: bool = True  # log to MLflow
    uri: str = ""  # "" = $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory
    experiment: str = "workbench"  # MLflow experiment the run is logged under
    run_name: str = ""  # MLflow run name ("" = experiment, short id and overrides)
    system_metrics: bool = (
        True  # log CPU/GPU utilisation and memory as MLflow `system/...` metrics (GPU needs nvidia-ml-py)
    )
    system_metrics_interval: float = field(
        default=10.0, metadata={"min": 0.05, "max": 3600.0}
    )  # seconds between system samples


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    warmstart: WarmStartConfig = field(default_factory=WarmStartConfig)
    objectives: ObjectivesConfig = field(default_factory=ObjectivesConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


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
    return ConfigError(f"unknown config key '{key}'{did_you_mean(key, all_keys())}")


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) is list:
        return f"a list of {typing.get_args(hint)[0].__name__}"
    name = getattr(hint, "__name__", str(hint))
    return f"{'an' if name[:1] in 'aeiou' else 'a'} {name}"


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check `value` against the annotation `hint`; return it in the field's type."""
    origin = typing.get_origin(hint)

    def bad() -> ConfigError:  # built only when raised, with the value cut short (never a huge repr)
        return ConfigError(f"{key}: {brief(value)} is not {_describe(hint)}")

    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(
                f"{key}: {brief(value)} is not one of {', '.join(map(str, allowed))}{did_you_mean(value, allowed)}"
            )
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise bad()
        return [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads '1e6' (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad() from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if not math.isfinite(value):  # nan passes every range check; inf is no setting either
            raise ConfigError(f"{key}: {brief(value)} is not a finite number")
        return float(value)
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise bad()
        return str(value)
    if isinstance(hint, types.UnionType):  # pragma: no cover - no unions in the schema yet
        raise bad()
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
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {brief(data)}")
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
        return key, load_yaml(raw) if raw.strip() else raw
    except YamlError as err:
        raise ConfigError(f"--set {key}: {err.problem}") from None
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
    hint = did_you_mean(name_or_path, known)
    raise ConfigError(f"unknown {kind} {str(name_or_path)!r} (known: {', '.join(known)}){hint}")


def resolve_experiment(experiment: str | Path) -> Path:
    """An experiment is a YAML path or a name under experiments/ (e.g. 'base')."""
    return resolve_named_yaml(experiment, [Path.cwd() / "experiments", EXPERIMENTS_DIR], "experiment")


def read_yaml(path: Path, contents: str = "config sections") -> dict[str, Any]:
    """A YAML mapping (strict: no aliases, no duplicate keys; see strict_yaml); bad YAML or another type is one line
    naming the file (and line)."""
    try:
        data = load_yaml(path.read_text())
    except YamlError as err:
        where = f" line {err.line}" if err.line else ""
        raise ConfigError(f"{path}{where}: {err.problem}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); a config file is YAML text") from None
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
