"""NLVR2: is the statement true of the image pair? (METER/ALBEF's pair head.)

The statement is fused with each image separately; the two joint features are
concatenated [B, 4D] -> MLP -> 2 classes (`label`: 1 = True).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.evaluate.finetune import FinetuneTask, classifier_head, joint_features

CLASSES = 2


def pair_features(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """[joint(image, text), joint(image2, text)] -> [B, 4D]."""
    return torch.cat([joint_features(model, batch, "image"), joint_features(model, batch, "image2")], dim=-1)


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
