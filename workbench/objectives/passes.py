"""Fusion-pass recipes: how each named pass of a step is built from the clean batch.

A recipe is a callable ``(ctx) -> fused outputs``; ``StepContext.pass_(name)`` runs
it at most once per step. The builder picks the recipes the enabled objectives need:

* ``clean``: clean image x clean caption (ITM positives, SoftMask's Grad-CAM, SCL
  ``clean_pass`` targets).
* ``masked_text``: MLSC's caption with ``scl.text_mask_ratio`` of its real tokens
  masked x clean image (also MVSC's ``cross_pass`` target, and MLM's pass with
  ``mlm.reuse_mlsc_pass``).
* ``masked_image``: MAE-dropped image x clean caption (MVSC; MLSC's ``cross_pass`` target).
* ``mlm``: BERT-masked caption x clean image (MLM's own pass).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from workbench.objectives.context import StepContext
from workbench.objectives.mlm import IGNORE, bernoulli_positions, corrupt, exact_positions
from workbench.objectives.scl import keep_patch_indices


@dataclass(frozen=True)
class CleanPass:
    return_attention: bool = False  # SoftMask's Grad-CAM differentiates the cross-attention

    def __call__(self, ctx: StepContext) -> dict[str, Tensor]:
        return ctx.fuse(
            ctx.image["image_tokens"],
            ctx.text["text_tokens"],
            ctx.batch["text_mask"],
            return_attention=self.return_attention,
        )


@dataclass(frozen=True)
class MaskedTextPass:
    """Corrupt the caption, re-encode it, fuse it with the clean image; keeps ``mlm_labels``.

    ``exact``: mask exactly ``max(1, round(ratio * n_real))`` tokens per caption
    (MLSC) instead of each token with probability ``ratio`` (BERT MLM).
    ``split``: shares of chosen tokens replaced by [MASK] and by a random id.
    """

    ratio: float
    exact: bool
    split: tuple[float, float]
    mask_id: int
    vocab_size: int

    def __call__(self, ctx: StepContext) -> dict[str, Tensor]:
        text_ids, text_mask = ctx.batch["text_ids"], ctx.batch["text_mask"]
        maskable = ~ctx.special_mask
        choose = exact_positions if self.exact else bernoulli_positions
        positions = choose(maskable, self.ratio, ctx.generator)
        corrupted = corrupt(
            text_ids,
            positions,
            ctx.generator,
            mask_id=self.mask_id,
            vocab_size=self.vocab_size,
            split=self.split,
        )
        text = ctx.encode_text(corrupted, text_mask)
        fused = ctx.fuse(ctx.image["image_tokens"], text["text_tokens"], text_mask)
        return {**fused, "text_ids": corrupted, "mlm_labels": text_ids.masked_fill(~positions, IGNORE)}


@dataclass(frozen=True)
class MaskedImagePass:
    """Drop ``ratio`` of each frame's patches (same positions in all frames), fuse with the clean caption."""

    ratio: float

    def __call__(self, ctx: StepContext) -> dict[str, Tensor]:
        clean = ctx.image
        frames = clean["frame_cls_positions"].numel()
        patches_per_frame = clean["patch_positions"].numel() // frames
        batch_size = ctx.batch["text_ids"].shape[0]
        keep = keep_patch_indices(batch_size, patches_per_frame, self.ratio, ctx.generator, ctx.device)
        image = ctx.encode_image(ctx.batch["image"], keep_patches=keep)
        fused = ctx.fuse(
            image["image_tokens"],
            ctx.text["text_tokens"],
            ctx.batch["text_mask"],
            frame_cls_positions=image["frame_cls_positions"],
        )
        return {**fused, "keep_patches": keep}
