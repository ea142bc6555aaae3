"""ITM: does this image match this caption? A binary head on the fused joint feature.

Every pair gets one negative image and one negative caption, drawn from the batch
(loss = cross-entropy over 3B rows: B positives, 2B negatives). ``negatives``:

* ``hard`` (ALBEF): drawn from the in-batch ITC softmax, positives excluded, so
  similar-looking pairs are preferred. Needs ITC; when ITC is not built there is no
  aligned similarity to draw from (raw uni-modal CLS features live in unrelated
  spaces), so the draw falls back to ``random`` (the builder warns).
* ``random`` (SCL code style): uniform over the in-batch non-positives. SCL's code
  swaps in a random image for 50 % of the B rows; here the row layout is the same
  as ``hard`` so that the ablation changes only how negatives are drawn.

"Positive" means same ``image_id`` when the batch has ids (another caption of the
same image is not a negative). A row with no non-positive in the batch takes any
other row.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.config import ConfigError
from workbench.objectives.context import StepContext, multinomial_one
from workbench.objectives.itc import batch_ids, batch_positive_mask


def negative_weights(similarity: Tensor | None, ids: Tensor) -> Tensor:
    """Sampling weights [B, B] for negatives: softmax(similarity) (or uniform), positives zeroed.

    ``ids``: image ids [B] (same id = positive) or a positive mask bool [B, B]
    (``itc.batch_positive_mask``: same image or same caption string).
    Rows left with no mass (every other row shares the image) fall back to
    "any row but myself".
    """
    size = ids.shape[0]
    if size < 2:
        raise ConfigError(
            "objectives.itm: a batch of 1 pair has no in-batch negative — use train.batch_size >= 2"
        )
    positive = ids if ids.dim() == 2 else ids[:, None] == ids[None, :]
    if similarity is None:
        weights = torch.ones(size, size, device=ids.device)
    else:
        weights = F.softmax(similarity.detach().float(), dim=1)
    # diverged features (NaN/inf) must not crash sampling: the NaN then shows in the
    # losses, where the training loop names the step and the term
    weights = torch.nan_to_num(weights, nan=0.0, posinf=0.0, neginf=0.0).masked_fill(positive, 0.0)
    empty = weights.sum(dim=1) <= 0
    if empty.any():
        other = ~torch.eye(size, dtype=torch.bool, device=ids.device)
        weights[empty] = other[empty].float()
    return weights


def sample_negatives(
    similarity: Tensor | None, ids: Tensor, generator: torch.Generator | None
) -> Tensor:
    """One negative column per row: long [B]."""
    return multinomial_one(negative_weights(similarity, ids), generator)


def itm_targets(positives: int, negatives: int, device: torch.device) -> Tensor:
    return torch.cat(
        [
            torch.ones(positives, dtype=torch.long, device=device),
            torch.zeros(negatives, dtype=torch.long, device=device),
        ]
    )


class ITM(nn.Module):
    """The match head and its loss; ``match_logit`` serves retrieval re-ranking and Grad-CAM."""

    names = ("itm",)

    def __init__(self, joint_width: int, negatives: str, *, weight: float) -> None:
        super().__init__()
        self.weight = weight
        self.negatives = negatives
        self.head = nn.Linear(joint_width, 2)

    def logits(self, joint: Tensor) -> Tensor:
        return self.head(joint)

    def match_logit(self, joint: Tensor) -> Tensor:
        """The "match" class logit [N] (ALBEF ranks and explains with ``itm_head(x)[:, 1]``)."""
        return self.head(joint)[:, 1]

    def _similarity(self, ctx: StepContext) -> tuple[Tensor | None, Tensor | None]:
        if self.negatives == "hard" and "itc" in ctx.modules:
            sim = ctx.modules["itc"].similarity(ctx)
            return sim["logits_i2t"], sim["logits_t2i"]
        return None, None

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        ids = batch_ids(ctx.batch)
        positives = batch_positive_mask(ctx.batch)
        sim_i2t, sim_t2i = self._similarity(ctx)
        negative_image = sample_negatives(sim_t2i, positives, ctx.generator)  # for each caption
        negative_text = sample_negatives(sim_i2t, positives, ctx.generator)  # for each image
        image_tokens = ctx.image["image_tokens"]
        text_tokens, text_mask = ctx.text["text_tokens"], ctx.batch["text_mask"]
        positive = ctx.pass_("clean")
        negative = ctx.fuse(
            torch.cat([image_tokens[negative_image], image_tokens]),
            torch.cat([text_tokens, text_tokens[negative_text]]),
            torch.cat([text_mask, text_mask[negative_text]]),
        )
        logits = self.logits(torch.cat([positive["joint"], negative["joint"]]))
        size = ids.shape[0]
        targets = itm_targets(size, 2 * size, logits.device)
        return {
            "itm_loss": F.cross_entropy(logits.float(), targets),
            "itm_acc": (logits.detach().argmax(dim=1) == targets).float().mean(),
        }
