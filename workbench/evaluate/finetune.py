"""Short fine-tunes of a task head on a *copy* of the pre-trained model, then accuracy.

A task is data (`FinetuneTask`): how to build its head, which features feed it,
its loss and what counts as correct. `finetune` does the rest the same way for
every task: deep-copy the model (the pre-trained weights are never touched), train
backbone + head for `eval.finetune_steps` on the train split (AdamW via
`workbench.optim`: `eval.finetune_lr`, fusion and head at `eval.head_lr_mult` x,
`train.schedule` without warmup), then report accuracy (%) on `eval.split`.
Everything random (head init, dropout, shuffling) draws from RNGs seeded by
`train.seed` inside a forked RNG state, so a fine-tune is reproducible and leaves
the caller's RNG streams where they were.

`eval.finetune_layers`: `all` trains encoders, fusion and head; `fusion` freezes
the two uni-modal encoders (what pre-training put there is what is measured) and
encodes each split once, so a step runs only the fusion layers and the head;
`last` also freezes the fusion below its last layer and computes those layers once
per split too, so a step runs the last layer's pooled rows, the poolers and the head
(a fifth of a `fusion` step with two fusion layers, benchmarks/PERFORMANCE.md).

Fixed work is done once: each split is decoded, resized and tokenised a single
time into memory (`PreloadedSplit`, uint8 frames, cached per process for the
next fine-tune or run), and a step only indexes it and normalises its batch.
`eval.finetune_group_size` keeps up to that many items with the same text in one
batch (ShapesWorld's balanced units: one question over a "yes" and a "no" scene
are consecutive; 6 keeps units of 2 and of 3 whole), so within a batch the text
alone explains little and the gradient has to come from the image.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from workbench.config import RunConfig
from workbench.device import autocast, autocast_dtype
from workbench.optim import build_optimizer, build_scheduler, optimizer_step

Batch = dict[str, Tensor]


@dataclass(frozen=True)
class FinetuneTask:
    name: str  # data task name and metric prefix: eval/<name>/acc
    build_head: Callable[[int, Any], nn.Module]  # (joint width, train dataset) -> head
    features: Callable[[nn.Module, Batch], Tensor]  # (model, batch) -> head input
    loss: Callable[[Tensor, Batch], Tensor]  # (logits, batch) -> scalar
    correct: Callable[[Tensor, Batch], Tensor]  # (logits, batch) -> bool [B]


def classifier_head(in_width: int, hidden_width: int, classes: int) -> nn.Module:
    """METER's task head: Linear -> LayerNorm -> GELU -> Linear."""
    return nn.Sequential(
        nn.Linear(in_width, hidden_width), nn.LayerNorm(hidden_width), nn.GELU(), nn.Linear(hidden_width, classes)
    )


def joint_features(model: nn.Module, batch: Batch, image_key: str = "image") -> Tensor:
    """The fused joint feature [B, 2D] of the batch's (`image_key`, text) pair; from the
    encoders' outputs when the batch carries them (`<image_key>_tokens`, frozen encoders).
    Only the pooled rows of the last fusion layer are computed (`pooled_only`): the head
    reads nothing else, and the rest of that layer was ~30 % of a fine-tune's CPU time.
    With `fusion_from_layer` in the batch the tokens are fusion stream states (`encode`)."""
    if f"{image_key}_tokens" in batch:
        return model.fuse(
            batch[f"{image_key}_tokens"],
            batch[text_state_key(image_key, batch)],
            batch["text_mask"],
            batch["frame_cls_positions"],
            pooled_only=True,
            from_layer=batch.get("fusion_from_layer"),
        )["joint"]
    return model({**batch, "image": batch[image_key]}, pooled_only=True)["joint"]


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {key: value.to(device) if isinstance(value, Tensor) else value for key, value in batch.items()}


MEDIA_KEYS = ("image", "image2")
SPLIT_WIDE_KEYS = ("frame_cls_positions", "fusion_from_layer")  # in `encode`'s output, not per row


def text_state_key(image_key: str, batch: Batch) -> str:
    """Where the text paired with `image_key` is: past a fusion layer the text stream depends on
    the image it attended to, so `image2` has its own (`image2_text_tokens`)."""
    own = f"{image_key}_text_tokens"
    return own if own in batch else "text_tokens"


class PreloadedSplit:
    """A task split in memory as one batch: uint8 frames resized to `data.image_size`,
    token ids padded to the split's longest text, labels; `batch(rows)` normalises."""

    def __init__(self, dataset, collate, cfg: RunConfig):
        from torchvision import tv_tensors

        from workbench.data.transforms import build_augment, normalization

        resize = build_augment(cfg, train=False)
        transform = dataset.transform
        dataset.transform = lambda frames: resize(tv_tensors.Video(frames)).as_subclass(torch.Tensor)
        try:
            self.data = collate([dataset[index] for index in range(len(dataset))])
        finally:
            dataset.transform = transform
        mean, std = normalization(cfg)
        self.mean = torch.tensor(mean).view(1, 1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 1, 3, 1, 1)
        self.texts = [entry.get("question", entry.get("sentence", "")) for entry in dataset.entries]
        self.answers = getattr(dataset, "answers", None)

    def __len__(self) -> int:
        return len(self.texts)

    def batch(self, rows: Tensor, encoded: dict[str, Tensor] | None = None) -> Batch:
        """Rows of the split; with `encoded` (from `encode`) the encoders' outputs replace frames and ids."""
        if encoded is None:
            out = {key: value[rows] for key, value in self.data.items()}
        else:  # frames and ids are replaced by what the encoders made of them
            out = {key: value[rows] for key, value in self.data.items() if key not in (*MEDIA_KEYS, "text_ids")}
            out.update({key: value[rows] for key, value in encoded.items() if key not in SPLIT_WIDE_KEYS})
            out.update({key: encoded[key] for key in SPLIT_WIDE_KEYS if key in encoded})
        for key in MEDIA_KEYS:
            if key in out:
                out[key] = (out[key].float() / 255.0 - self.mean) / self.std
        if "text_mask" in out:  # drop the split's padding columns this batch does not need
            length = max(1, int(out["text_mask"].sum(dim=1).max()))
            out["text_mask"] = out["text_mask"][:, :length]
            for key in ("text_ids", "text_tokens", "image2_text_tokens"):
                if key in out:
                    out[key] = out[key][:, :length]
        return out

    @torch.no_grad()
    def encode(
        self, model: nn.Module, cfg: RunConfig, device: torch.device, fusion_layers: int | None = None
    ) -> dict[str, Tensor]:
        """The (frozen) encoders' outputs for every row, once: `image_tokens` (and `image2_tokens`),
        `text_tokens`, `frame_cls_positions`; kept on `device`. With `fusion_layers` k the tokens are
        the fusion's stream states after its (frozen) bridges and first k layers instead, each image
        with its own text state (`image2_text_tokens`), and `fusion_from_layer` = k."""
        dtype = autocast_dtype(cfg.train, device)
        size = cfg.eval.batch_size
        out: dict[str, list[Tensor]] = {}
        positions = None
        for start in range(0, len(self), size):
            batch = to_device(self.batch(torch.arange(start, min(start + size, len(self)))), device)
            with autocast(device, dtype):
                ids = self.data["text_ids"][start : start + size].to(device)
                mask = self.data["text_mask"][start : start + size].to(device)
                text_tokens = model.encode_text(ids, mask)["text_tokens"]
                for key in (key for key in MEDIA_KEYS if key in batch):
                    image = model.encode_image(batch[key])
                    image_tokens, text, positions = image["image_tokens"], text_tokens, image["frame_cls_positions"]
                    if fusion_layers is not None:
                        text, image_tokens = model.fusion.streams(image_tokens, text_tokens, mask, layers=fusion_layers)
                    out.setdefault(f"{key}_tokens", []).append(image_tokens.float())
                    if key == "image" or fusion_layers is not None:
                        out.setdefault("text_tokens" if key == "image" else f"{key}_text_tokens", []).append(
                            text.float()
                        )
        encoded: dict = {key: torch.cat(values) for key, values in out.items()}
        encoded["frame_cls_positions"] = positions
        if fusion_layers is not None:
            encoded["fusion_from_layer"] = fusion_layers
        return encoded


_PRELOADED: dict[tuple, PreloadedSplit] = {}
_PRELOADED_MAX = 6  # splits kept per process (3 tasks x train + eval)


def preloaded(cfg: RunConfig, tokenizer, task: str, split: str) -> PreloadedSplit:
    """The split in memory, loaded once per process for these data files and settings."""
    from workbench.data import task_dataset
    from workbench.data.readers import data_path

    path = data_path(cfg.data, f"{task}_{split}.json")
    stat = path.stat()
    key = (
        str(path.resolve()),
        stat.st_mtime_ns,
        stat.st_size,
        task,
        split,
        cfg.data.image_size,
        cfg.data.max_text_len,
        cfg.data.image_root,
        cfg.model.vision.timm_name,
        id(tokenizer),
    )
    if key not in _PRELOADED:
        if len(_PRELOADED) >= _PRELOADED_MAX:
            _PRELOADED.pop(next(iter(_PRELOADED)))
        dataset, collate = task_dataset(cfg, tokenizer, task, split)
        _PRELOADED[key] = PreloadedSplit(dataset, collate, cfg)
    return _PRELOADED[key]


def batch_rows(split: PreloadedSplit, batch_size: int, seed: int, group_size: int) -> Iterator[Tensor]:
    """Endless shuffled row batches (a new permutation per epoch; the last partial batch of an
    epoch is dropped when the split holds more than one batch). With `group_size` > 0, runs
    of up to `group_size` items sharing a text (in file order) are shuffled as units and stay adjacent."""
    generator = torch.Generator().manual_seed(seed)
    groups: dict[str, list[int]] = {}
    for row, text in enumerate(split.texts):
        groups.setdefault(text if group_size else str(row), []).append(row)
    size = max(1, group_size)
    units = [group[start : start + size] for group in groups.values() for start in range(0, len(group), size)]
    while True:
        order = torch.randperm(len(units), generator=generator).tolist()
        rows = torch.tensor([row for unit in order for row in units[unit]])
        full = len(rows) // batch_size * batch_size if len(rows) > batch_size else len(rows)
        for start in range(0, full, batch_size):
            yield rows[start : start + batch_size]


def _cuda_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def finetune_config(cfg: RunConfig):
    """`train` settings for the fine-tune's optimiser: eval's lr, multiplier and step budget."""
    return dataclasses.replace(
        cfg.train,
        lr=cfg.eval.finetune_lr,
        head_lr_mult=cfg.eval.head_lr_mult,
        steps=max(1, cfg.eval.finetune_steps),
        warmup_steps=0,
    )


def frozen_modules(backbone: nn.Module, layers: str) -> list[nn.Module]:
    """What `eval.finetune_layers` keeps fixed: nothing (`all`), the encoders (`fusion`), or
    also the fusion's bridges and every layer but the last (`last`)."""
    if layers == "all":
        return []
    frozen = [backbone.vision, backbone.text]
    if layers == "last":
        fusion = backbone.fusion
        frozen += [
            fusion.text_bridge,
            fusion.image_bridge,
            fusion.token_type,
            *fusion.text_layers[:-1],
            *fusion.image_layers[:-1],
        ]
    return frozen


def precomputed_fusion_layers(backbone: nn.Module, layers: str) -> int | None:
    """How many fusion layers `encode` runs once per split (None: none, the encoders' outputs)."""
    return len(backbone.fusion.text_layers) - 1 if layers == "last" else None


def encoded_split(split: PreloadedSplit, backbone: nn.Module, cfg: RunConfig, device: torch.device) -> dict | None:
    """The frozen part's outputs for every row of `split` (None when nothing is frozen)."""
    if cfg.eval.finetune_layers == "all":
        return None
    return split.encode(backbone, cfg, device, precomputed_fusion_layers(backbone, cfg.eval.finetune_layers))


def train_copy(
    task: FinetuneTask, model: nn.Module, train_set: PreloadedSplit, cfg: RunConfig, device: torch.device
) -> tuple[nn.Module, nn.Module]:
    """(fine-tuned copy of `model`, trained head). Call inside a seeded RNG state."""
    backbone = copy.deepcopy(model).to(device)
    head = task.build_head(2 * model.dims["fusion_width"], train_set).to(device)
    frozen = frozen_modules(backbone, cfg.eval.finetune_layers)
    for module in frozen:
        module.requires_grad_(False)
    encoded = encoded_split(train_set, backbone, cfg, device)
    train_cfg = finetune_config(cfg)
    optimizer = build_optimizer(backbone, head, train_cfg)
    scheduler = build_scheduler(optimizer, train_cfg)
    dtype = autocast_dtype(cfg.train, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    rows = batch_rows(train_set, cfg.eval.finetune_batch_size, cfg.train.seed, cfg.eval.finetune_group_size)
    params = [p for p in itertools.chain(backbone.parameters(), head.parameters()) if p.requires_grad]
    backbone.train()
    head.train()
    for module in frozen:
        module.eval()  # frozen: no dropout either
    for batch_index in itertools.islice(rows, cfg.eval.finetune_steps):
        batch = to_device(train_set.batch(batch_index, encoded), device)
        with autocast(device, dtype):
            logits = head(task.features(backbone, batch))
        loss = task.loss(logits.float(), batch)
        optimizer_step(loss, optimizer, scheduler, scaler, params, cfg.train.grad_clip)
    return backbone, head


@torch.no_grad()
def accuracy(
    task: FinetuneTask,
    backbone: nn.Module,
    head: nn.Module,
    eval_set: PreloadedSplit,
    cfg: RunConfig,
    device: torch.device,
) -> float:
    """% of `eval_set` the fine-tuned model gets right."""
    backbone.eval()
    head.eval()
    dtype = autocast_dtype(cfg.train, device)
    encoded = encoded_split(eval_set, backbone, cfg, device)
    right, total = 0, 0
    for start in range(0, len(eval_set), cfg.eval.batch_size):
        rows = torch.arange(start, min(start + cfg.eval.batch_size, len(eval_set)))
        batch = to_device(eval_set.batch(rows, encoded), device)
        with autocast(device, dtype):
            logits = head(task.features(backbone, batch))
        hits = task.correct(logits.float(), batch)
        right += int(hits.sum())
        total += hits.numel()
    return 100.0 * right / max(total, 1)


def finetuned(
    task: FinetuneTask, model: nn.Module, cfg: RunConfig, tokenizer, device: torch.device
) -> tuple[nn.Module, nn.Module, float]:
    """(fine-tuned copy of `model`, its head, accuracy % on `eval.split`); `model` is untouched."""
    train_set = preloaded(cfg, tokenizer, task.name, "train")
    eval_set = preloaded(cfg, tokenizer, task.name, cfg.eval.split)
    with torch.random.fork_rng(devices=_cuda_devices(device)):
        torch.manual_seed(cfg.train.seed)
        backbone, head = train_copy(task, model, train_set, cfg, device)
        score = accuracy(task, backbone, head, eval_set, cfg, device)
    return backbone, head, score


def finetune(task: FinetuneTask, model: nn.Module, cfg: RunConfig, tokenizer, device: torch.device) -> dict[str, float]:
    """{f"eval/{task.name}/acc": %} after a short fine-tune of a copy of `model`."""
    return {f"eval/{task.name}/acc": finetuned(task, model, cfg, tokenizer, device)[2]}
