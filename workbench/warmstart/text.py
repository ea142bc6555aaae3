"""Text half of the uni-modal warm start: BERT MLM on the pre-training captions, no image.

The stand-in for a pre-trained BERT: contextual token features (a colour word
knows which shape it belongs to) before any caption meets its image. Masking
follows the VLP MLM (`objectives.mlm`: 80/10/10, special tokens never masked).

MLM alone never trains the [CLS] output, which is what ITC reads: after MLM it is
nearly the same for every caption, and ITC then learned less from the warm start
than from random weights (demo budget). So the [CLS] output of the unmasked caption
also predicts the caption's bag of words (multi-label), a text-only summary target.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from workbench.data import tokenize
from workbench.objectives.context import special_token_mask
from workbench.objectives.masking import mask_tokens
from workbench.objectives.mlm import MLMHead, masked_lm_loss


def train_text(
    encoder: nn.Module,
    captions: list[str],
    tokenizer,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    mask_prob: float,
    max_text_len: int,
    special_ids: dict[str, int],
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, float]:
    """Train `encoder` (a `TextEncoder`) in place on `captions`; returns the last step's loss/accuracy."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    encoded = tokenize(tokenizer, captions, max_text_len)
    head = MLMHead(encoder.width, len(tokenizer))
    summary = nn.Linear(encoder.width, len(tokenizer))
    params = list(encoder.parameters()) + list(head.parameters()) + list(summary.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    encoder.train()
    last: dict[str, float] = {}
    for step in range(steps):
        rows = torch.randint(len(captions), (batch_size,), generator=generator)
        mask = encoded["text_mask"][rows]
        length = int(mask.sum(1).max())
        ids, mask = encoded["text_ids"][rows, :length], mask[:, :length]
        corrupted, labels = mask_tokens(
            ids,
            special_token_mask(ids, mask, special_ids),
            mask_prob,
            generator,
            special_ids["mask"],
            len(tokenizer),
        )
        loss, accuracy = masked_lm_loss(head, encoder(corrupted, mask)["text_tokens"], labels)
        words = torch.zeros(len(rows), len(tokenizer)).scatter_(1, ids, 1.0)
        words[:, sorted(set(special_ids.values()))] = 0.0
        bag = F.binary_cross_entropy_with_logits(summary(encoder(ids, mask)["text_cls"]).float(), words)
        loss = loss + bag
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        last = {"loss": float(loss.detach()), "bag_of_words": float(bag.detach()), "mlm_acc": float(accuracy)}
        if on_step is not None:
            on_step(step + 1, float(loss.detach()))
    return last
