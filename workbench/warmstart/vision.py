"""Image half of the uni-modal warm start: attribute recognition on fresh ShapesWorld scenes.

Heads on the ViT's patch tokens predict each patch's colour, shape and size
(background = class 0); heads on the CLS token predict the object count and which
"colour shape" objects the image holds (so the CLS, which ITC reads, knows them too). Only
the ViT's weights are kept: the heads are thrown away, as an ImageNet classifier's are.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.data.shapes_attributes import OBJECT_KINDS, PATCH_LABELS, labelled_scenes

MAX_OBJECTS = 4  # ShapesWorld's scenes hold 1..4 objects


class AttributeHeads(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.patch = nn.ModuleDict({name: nn.Linear(width, len(classes)) for name, classes in PATCH_LABELS.items()})
        self.count = nn.Linear(width, MAX_OBJECTS)
        self.present = nn.Linear(width, len(OBJECT_KINDS))

    def losses(self, tokens: torch.Tensor, patch_positions: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        """Mean cross-entropy of each target, and the patch colour accuracy (a progress number)."""
        patches = tokens[:, patch_positions]  # [B, P, D]
        out = {}
        for name, head in self.patch.items():
            logits = head(patches).flatten(0, 1).float()
            out[name] = F.cross_entropy(logits, batch[name].flatten())
            if name == "color":
                out["color_acc"] = (logits.argmax(1) == batch[name].flatten()).float().mean().detach()
        cls = tokens[:, 0]
        out["count"] = F.cross_entropy(self.count(cls).float(), batch["objects"] - 1)
        out["present"] = F.binary_cross_entropy_with_logits(self.present(cls).float(), batch["present"])
        return out


def train_vision(
    encoder: nn.Module,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    image_size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, float]:
    """Train `encoder` (a `VisionEncoder`) in place; returns the last step's losses."""
    torch.manual_seed(seed)
    rng = np.random.default_rng([seed, 1])
    patch = image_size // int(encoder.num_patches**0.5)
    heads = AttributeHeads(encoder.width)
    params = list(encoder.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    encoder.train()
    last: dict[str, float] = {}
    for step in range(steps):
        batch = labelled_scenes(
            rng, batch_size, px=image_size, patch=patch, max_objects=MAX_OBJECTS, mean=mean, std=std
        )
        out = encoder(batch["image"])
        losses = heads.losses(out["image_tokens"], out["patch_positions"], batch)
        loss = sum(value for key, value in losses.items() if not key.endswith("_acc"))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        last = {key: float(value.detach()) for key, value in losses.items()}
        if on_step is not None:
            on_step(step + 1, float(loss.detach()))
    return last
