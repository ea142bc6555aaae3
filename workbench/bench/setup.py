"""What a benchmark runs: the base and paper configs with every objective on, a batch, one step.

* ``base``: the tiny CPU default on ShapesWorld (a real batch from the pre-training stream).
* ``paper``: ViT-B/16 + BERT-base + 6 fusion layers at 224 px, randomly initialised
  (``timm_name=""``, ``hf_name=""`` build those shapes from the config fields) on a
  synthetic batch, so no weights or data are needed.
* ``quick``: either one shrunk to tiny widths, for a smoke test that takes seconds.

"Every objective on" = the config's objectives plus SoftMask (off in both YAMLs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from workbench.config import RunConfig, load_config
from workbench.device import autocast, autocast_dtype
from workbench.errors import ConfigError
from workbench.models import VLPModel
from workbench.models.vlp import compile_model
from workbench.objectives import build_objectives, special_ids_of
from workbench.optim import build_optimizer, build_scheduler, optimizer_step
from workbench.pretrainer import Pretrainer

CONFIGS = ("base", "paper")
ALL_OBJECTIVES_ON = ["objectives.softmask.enabled=true"]
# the paper config without local weights, data or tokenizer: random init at the same shapes;
# precision auto = the paper's bf16 on CUDA, fp32 on CPU (no fast bf16 matmul there)
PAPER_RANDOM_INIT = [
    "model.vision.timm_name=",
    "model.vision.checkpoint=",
    "model.text.hf_name=",
    "data.image_size=224",
    "data.generate=false",
    "train.precision=auto",
]
QUICK_MODEL = [
    "model.vision.width=32",
    "model.vision.depth=1",
    "model.vision.heads=2",
    "model.text.width=32",
    "model.text.depth=1",
    "model.text.heads=2",
    "model.fusion.width=32",
    "model.fusion.layers=2",
    "model.fusion.heads=2",
    "objectives.itc.embed_dim=16",
    "objectives.softmask.layer=0",
    "train.log_every=2",
]
# bert-base-uncased's vocabulary size and special ids: the paper config's synthetic captions
BERT_BASE_VOCAB = 30522
BERT_BASE_SPECIAL_IDS = {"pad": 0, "unk": 100, "cls": 101, "sep": 102, "mask": 103}
# the paper config on CPU is heavy: a few pairs per step; --quick: a few pairs everywhere
PAPER_CPU_BATCH = 2
QUICK_BATCH = 4


def bench_config(name: str, *, quick: bool = False, overrides: list[str] | None = None) -> RunConfig:
    """The named config with every objective on (``quick``: at tiny widths)."""
    if name not in CONFIGS:
        raise ConfigError(f"bench --config: {name!r} is not one of {', '.join(CONFIGS)}")
    extra = ALL_OBJECTIVES_ON + (PAPER_RANDOM_INIT if name == "paper" else [])
    return load_config(name, extra + (QUICK_MODEL if quick else []) + list(overrides or []))


def default_batch_size(name: str, cfg: RunConfig, device: torch.device, *, quick: bool = False) -> int:
    if quick:
        return QUICK_BATCH
    if name == "paper" and device.type == "cpu":
        return PAPER_CPU_BATCH
    return cfg.train.batch_size


@dataclass
class Vocabulary:
    """What the model and objectives need to know of a tokenizer."""

    size: int
    pad_id: int
    special_ids: dict[str, int]

    @classmethod
    def of(cls, tokenizer: Any) -> Vocabulary:
        return cls(len(tokenizer), tokenizer.pad_token_id, special_ids_of(tokenizer))


PAPER_VOCABULARY = Vocabulary(BERT_BASE_VOCAB, BERT_BASE_SPECIAL_IDS["pad"], BERT_BASE_SPECIAL_IDS)


def build_pretrainer(cfg: RunConfig, vocab: Vocabulary) -> Pretrainer:
    """The model + the enabled objectives, as `train.build` makes them from a tokenizer."""
    model = VLPModel(
        cfg.model,
        vocab_size=vocab.size,
        pad_token_id=vocab.pad_id,
        image_size=cfg.data.image_size,
        max_text_len=cfg.data.max_text_len,
    )
    objectives = build_objectives(cfg.objectives, model.dims, vocab.special_ids, vocab.size, model=model)
    return Pretrainer(model, objectives)


def synthetic_batch(cfg: RunConfig, vocab: Vocabulary, batch_size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random images and BERT-style captions ([CLS] words [SEP] [PAD]*) of INTERFACES.md's batch layout.

    Caption lengths are spread over [max_text_len / 2, max_text_len]; the batch is
    padded to its longest caption, as `Collate` pads.
    """
    generator = torch.Generator().manual_seed(seed)
    size, length = cfg.data.image_size, cfg.data.max_text_len
    first_word = max(vocab.special_ids.values()) + 1
    lengths = torch.randint(max(3, length // 2), length + 1, (batch_size,), generator=generator)
    lengths[0] = length
    ids = torch.randint(first_word, vocab.size, (batch_size, length), generator=generator)
    mask = (torch.arange(length)[None] < lengths[:, None]).long()
    ids[:, 0] = vocab.special_ids["cls"]
    ids[torch.arange(batch_size), lengths - 1] = vocab.special_ids["sep"]
    ids = ids.masked_fill(mask == 0, vocab.pad_id)
    return {
        "image": torch.randn(batch_size, 1, 3, size, size, generator=generator),
        "text_ids": ids,
        "text_mask": mask,
        "image_id": torch.arange(batch_size),
    }


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class TrainStep:
    """One optimisation step as `train.run` takes it: forward under autocast, then
    `optim.optimizer_step` (backward with the fp16 loss scaler, clipping, AdamW, lr schedule).

    `backward` and `update` split that update in two, so the profiler can label the halves.
    """

    def __init__(self, pretrainer: Pretrainer, cfg: RunConfig, device: torch.device):
        self.pretrainer = pretrainer.to(device).train()
        self.device = device
        self.dtype = autocast_dtype(cfg.train, device)
        self.grad_clip = cfg.train.grad_clip
        self.optimizer = build_optimizer(pretrainer.model, pretrainer.objectives, cfg.train)
        self.scheduler = build_scheduler(self.optimizer, cfg.train)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.params = [p for p in pretrainer.parameters() if p.requires_grad]
        if cfg.train.compile:  # as train.run does
            compile_model(pretrainer.model)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with autocast(self.device, self.dtype):
            return self.pretrainer(batch)

    def backward(self, out: dict[str, torch.Tensor]) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out["loss"]).backward()

    def update(self) -> None:
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.forward(batch)
        optimizer_step(out["loss"], self.optimizer, self.scheduler, self.scaler, self.params, self.grad_clip)
        return out
