"""The run configuration's schema: one small dataclass per component, `RunConfig` holding them.

Constraints live next to the field they constrain (``field(metadata=...)``: min, max) and
the help on the field's line (`workbench config keys` reads both); `loader` reads and
coerces values into these classes and `checks` enforces the ranges and cross-field rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from workbench.tasks import EVAL_TASKS


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
