"""NLVR2: is the statement true of the image pair? (METER/ALBEF's pair head.)

The statement is fused with each image separately; the two joint features are
concatenated [B, 4D] -> MLP -> 2 classes (`label`: 1 = True).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.evaluate.finetune import SPLIT_WIDE_KEYS, FinetuneTask, classifier_head, joint_features, text_state_key

CLASSES = 2


def pair_features(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """[joint(image, text), joint(image2, text)] -> [B, 4D], both pairs in one fusion pass of
    2B rows (the text repeated): half the calls, larger matrices, the same features."""
    suffix = "_tokens" if "image_tokens" in batch else ""  # encoded (frozen encoders) or raw frames
    both = {f"image{suffix}": torch.cat([batch[f"image{suffix}"], batch[f"image2{suffix}"]])}
    for key in ("text_ids", "text_mask"):
        if key in batch:
            both[key] = torch.cat([batch[key], batch[key]])
    if "text_tokens" in batch:  # past a fusion layer, image2's text state is its own
        both["text_tokens"] = torch.cat([batch["text_tokens"], batch[text_state_key("image2", batch)]])
    both.update({key: batch[key] for key in SPLIT_WIDE_KEYS if key in batch})
    return torch.cat(joint_features(model, both).chunk(2), dim=-1)


def label_loss(logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
    return F.cross_entropy(logits, batch["label"])


def label_correct(logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
    return logits.argmax(dim=1) == batch["label"]


NLVR = FinetuneTask(
    name="nlvr",
    build_head=lambda width, dataset: classifier_head(2 * width, width, CLASSES),
    features=pair_features,
    loss=label_loss,
    correct=label_correct,
)
