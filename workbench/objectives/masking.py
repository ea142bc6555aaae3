"""Masking helpers: which caption tokens and which image patches a masked pass hides.

One masking path: the fusion passes (``passes.MaskedTextPass``, ``passes.MaskedImagePass``),
the text warm start and the tests all call these functions, so what a test measures is
what training does. Random draws go through ``context``'s helpers (a seeded generator
fixes them).
"""

from __future__ import annotations

import torch
from torch import Tensor

from workbench.objectives.context import randint, uniform

IGNORE = -100  # label of positions that are not predicted (torch's ignore_index)
BERT_SPLIT = (0.8, 0.1)  # share of chosen tokens -> [MASK], -> random id; the rest keep
ALL_MASK = (1.0, 0.0)  # every chosen token -> [MASK] (MLSC's caption)


# ----------------------------------------------------------------------- text
def bernoulli_positions(maskable: Tensor, prob: float, generator: torch.Generator | None) -> Tensor:
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
    *,
    exact: bool = False,
) -> tuple[Tensor, Tensor]:
    """Mask a caption batch -> (corrupted ids, labels with ``IGNORE`` where nothing is predicted).

    ``exact``: mask exactly ``max(1, round(prob * n_real))`` tokens per caption (MLSC)
    instead of each real token with probability ``prob`` (BERT MLM). Special tokens
    and padding (``special_mask``) are never chosen.
    """
    choose = exact_positions if exact else bernoulli_positions
    positions = choose(~special_mask, prob, generator)
    corrupted = corrupt(text_ids, positions, generator, mask_id=mask_id, vocab_size=vocab_size, split=split)
    return corrupted, text_ids.masked_fill(~positions, IGNORE)


# -------------------------------------------------------------------- patches
def kept_patch_count(num_patches: int, mask_ratio: float) -> int:
    """``round((1 - ratio) * N)`` patches survive the drop, at least one."""
    return max(1, round((1.0 - mask_ratio) * num_patches))


def keep_patch_indices(
    batch_size: int,
    num_patches: int,
    mask_ratio: float,
    generator: torch.Generator | None,
    device: torch.device,
) -> Tensor:
    """Random kept patch indices per sample, long [B, K] sorted (K = ``kept_patch_count``)."""
    kept = kept_patch_count(num_patches, mask_ratio)
    scores = uniform((batch_size, num_patches), generator, device)
    return scores.argsort(dim=1)[:, :kept].sort(dim=1).values
