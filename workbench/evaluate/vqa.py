"""VQA: a classifier over the answer vocabulary on the joint feature (METER/ALBEF style).

Trained with BCE against soft answer scores (`answer_target` [B, A]), scaled by A
as in METER so the loss does not shrink with the vocabulary. A prediction is
correct when its top answer is one of the question's answers (score > 0).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from workbench.evaluate.finetune import FinetuneTask, classifier_head, joint_features


def answer_count(dataset) -> int:
    return len(dataset.answers)


def vqa_loss(logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
    target = batch["answer_target"].float()
    return F.binary_cross_entropy_with_logits(logits, target) * target.shape[1]


def top_answer_in_answers(logits: Tensor, batch: dict[str, Tensor]) -> Tensor:
    top = logits.argmax(dim=1, keepdim=True)
    return batch["answer_target"].gather(1, top).squeeze(1) > 0


VQA = FinetuneTask(
    name="vqa",
    build_head=lambda width, dataset: classifier_head(width, 2 * width, answer_count(dataset)),
    features=joint_features,
    loss=vqa_loss,
    correct=top_answer_in_answers,
)
