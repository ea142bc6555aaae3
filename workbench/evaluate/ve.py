"""Visual entailment: entailment / neutral / contradiction from the joint feature (3-way head)."""

from __future__ import annotations

from workbench.evaluate.finetune import FinetuneTask, classifier_head, joint_features
from workbench.evaluate.nlvr import label_correct, label_loss

CLASSES = 3

VE = FinetuneTask(
    name="ve",
    build_head=lambda width, dataset: classifier_head(width, 2 * width, CLASSES),
    features=joint_features,
    loss=label_loss,
    correct=label_correct,
)
