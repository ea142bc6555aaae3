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
from torch.utils.data import DataLoader

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


def joint_features(model: nn.Module, batch: Batch) -> Tensor:
    """The fused joint feature [B, 2D] of the batch's (image, text) pair."""
    return model(batch)["joint"]


def to_device(batch: Batch, device: torch.device) -> Batch:
    return {key: value.to(device) if isinstance(value, Tensor) else value for key, value in batch.items()}


def _forever(loader: DataLoader) -> Iterator[Batch]:
    while True:
        yield from loader


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


def train_copy(
    task: FinetuneTask, model: nn.Module, train_set, collate, cfg: RunConfig, device: torch.device
) -> tuple[nn.Module, nn.Module]:
    """(fine-tuned copy of `model`, trained head). Call inside a seeded RNG state."""
    backbone = copy.deepcopy(model).to(device)
    head = task.build_head(2 * model.dims["fusion_width"], train_set).to(device)
    train_cfg = finetune_config(cfg)
    optimizer = build_optimizer(backbone, head, train_cfg)
    scheduler = build_scheduler(optimizer, train_cfg)
    dtype = autocast_dtype(cfg.train, device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    loader = DataLoader(
        train_set,
        batch_size=cfg.eval.finetune_batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(cfg.train.seed),
        collate_fn=collate,
        num_workers=cfg.data.num_workers,
        drop_last=len(train_set) > cfg.eval.finetune_batch_size,
    )
    params = [p for p in itertools.chain(backbone.parameters(), head.parameters()) if p.requires_grad]
    backbone.train()
    head.train()
    for batch in itertools.islice(_forever(loader), cfg.eval.finetune_steps):
        batch = to_device(batch, device)
        with autocast(device, dtype):
            logits = head(task.features(backbone, batch))
        loss = task.loss(logits.float(), batch)
        optimizer_step(loss, optimizer, scheduler, scaler, params, cfg.train.grad_clip)
    return backbone, head


@torch.no_grad()
def accuracy(
    task: FinetuneTask, backbone: nn.Module, head: nn.Module, eval_set, collate, cfg: RunConfig, device: torch.device
) -> float:
    """% of `eval_set` the fine-tuned model gets right."""
    backbone.eval()
    head.eval()
    dtype = autocast_dtype(cfg.train, device)
    loader = DataLoader(
        eval_set, batch_size=cfg.eval.batch_size, shuffle=False, collate_fn=collate, num_workers=cfg.data.num_workers
    )
    right, total = 0, 0
    for batch in loader:
        batch = to_device(batch, device)
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
    from workbench.data import task_dataset

    train_set, train_collate = task_dataset(cfg, tokenizer, task.name, "train")
    eval_set, eval_collate = task_dataset(cfg, tokenizer, task.name, cfg.eval.split)
    with torch.random.fork_rng(devices=_cuda_devices(device)):
        torch.manual_seed(cfg.train.seed)
        backbone, head = train_copy(task, model, train_set, train_collate, cfg, device)
        score = accuracy(task, backbone, head, eval_set, eval_collate, cfg, device)
    return backbone, head, score


def finetune(task: FinetuneTask, model: nn.Module, cfg: RunConfig, tokenizer, device: torch.device) -> dict[str, float]:
    """{f"eval/{task.name}/acc": %} after a short fine-tune of a copy of `model`."""
    return {f"eval/{task.name}/acc": finetuned(task, model, cfg, tokenizer, device)[2]}
