"""MLM: the fused text stream predicts masked caption tokens (BERT recipe).

``mask_prob`` of the real tokens are chosen (independently per token); of those
80 % become [MASK], 10 % a random vocabulary id, 10 % stay as they are. Special
tokens and padding are never chosen. The head (dense -> GELU -> LayerNorm ->
decoder) is *not* tied to the word embeddings: it reads the fusion width, which
need not equal the text encoder's, and the head stays a self-contained module.

With ``mlm.reuse_mlsc_pass`` MLM predicts the tokens of the MLSC masked-text pass
instead of running its own: one fusion pass fewer, but the masking then follows
MLSC (``scl.text_mask_ratio`` of the real tokens, an exact count per caption) with
the 80/10/10 split applied to it (see ``passes.MaskedTextPass``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.objectives.context import StepContext, randint, uniform

IGNORE = -100  # label of positions that are not predicted (torch's ignore_index)
BERT_SPLIT = (0.8, 0.1)  # share of chosen tokens -> [MASK], -> random id; the rest keep


def bernoulli_positions(
    maskable: Tensor, prob: float, generator: torch.Generator | None
) -> Tensor:
    """Each maskable position chosen independently with probability ``prob``."""
    return (uniform(tuple(maskable.shape), generator, maskable.device) < prob) & maskable


def exact_positions(maskable: Tensor, ratio: float, generator: torch.Generator | None) -> Tensor:
    """Exactly ``max(1, round(ratio * n))`` of the n maskable positions of each row (0 if n = 0)."""
    count = maskable.sum(dim=1)
    chosen = torch.round(count.float() * ratio).long().clamp_min(1).minimum(count)
    scores = uniform(tuple(maskable.shape), generator, maskable.device).masked_fill(~maskable, 2.0)
    rank = scores.argsort(dim=1).argsort(dim=1)
    return rank < chosen[:, None]


def corrupt(
    text_ids: Tensor,
    positions: Tensor,
    generator: torch.Generator | None,
    *,
    mask_id: int,
    vocab_size: int,
    split: tuple[float, float] = BERT_SPLIT,
) -> Tensor:
    """Replace chosen positions: ``split[0]`` -> [MASK], ``split[1]`` -> random id, rest unchanged."""
    to_mask, to_random = split
    draw = uniform(tuple(text_ids.shape), generator, text_ids.device)
    random_ids = randint(vocab_size, tuple(text_ids.shape), generator, text_ids.device)
    out = text_ids.clone()
    out[positions & (draw < to_mask)] = mask_id
    swap = positions & (draw >= to_mask) & (draw < to_mask + to_random)
    out[swap] = random_ids[swap]
    return out


def mask_tokens(
    text_ids: Tensor,
    special_mask: Tensor,
    prob: float,
    generator: torch.Generator | None,
    mask_id: int,
    vocab_size: int,
    split: tuple[float, float] = BERT_SPLIT,
) -> tuple[Tensor, Tensor]:
    """BERT masking -> (corrupted ids, labels with ``IGNORE`` where nothing is predicted)."""
    positions = bernoulli_positions(~special_mask, prob, generator)
    corrupted = corrupt(
        text_ids, positions, generator, mask_id=mask_id, vocab_size=vocab_size, split=split
    )
    return corrupted, text_ids.masked_fill(~positions, IGNORE)


class MLMHead(nn.Sequential):
    """BERT's prediction head: dense -> GELU -> LayerNorm -> vocabulary logits."""

    def __init__(self, width: int, vocab_size: int) -> None:
        super().__init__(
            nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width), nn.Linear(width, vocab_size)
        )


def masked_lm_loss(head: nn.Module, fused_text: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(mean CE over predicted positions, accuracy); 0 (still in the graph) when none is masked."""
    chosen = labels != IGNORE
    logits = head(fused_text[chosen]).float()
    targets = labels[chosen]
    count = chosen.sum().clamp_min(1)
    loss = F.cross_entropy(logits, targets, reduction="sum") / count
    accuracy = (logits.detach().argmax(dim=-1) == targets).float().sum() / count
    return loss, accuracy


class MLM(nn.Module):
    names = ("mlm",)

    def __init__(self, fusion_width: int, vocab_size: int, *, weight: float, pass_name: str) -> None:
        super().__init__()
        self.weight = weight
        self.pass_name = pass_name  # "mlm" (own pass) or "masked_text" (the MLSC pass)
        self.head = MLMHead(fusion_width, vocab_size)

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        fused = ctx.pass_(self.pass_name)
        loss, accuracy = masked_lm_loss(self.head, fused["fused_text"], fused["mlm_labels"])
        return {"mlm_loss": loss, "mlm_acc": accuracy}
