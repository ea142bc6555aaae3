"""SoftMask (reconstructed): hide the patches a word relies on, the pair must still match.

Word-conditional Grad-CAM (ALBEF's recipe): score = ITM match logit of the
positive pairs summed over the batch; A = text->image cross-attention of fusion
layer ``layer``; cam = mean over heads of ``A * relu(dscore/dA)``. One real word
per caption (never a special token or padding; a caption without one uses its
[CLS] row) picks the row; the row is restricted to patch columns, min-max
normalised to [0, 1] over the patches (all frames together) and detached.

``mode``: ``soft`` scales the vision encoder's output patch tokens by ``1 - cam``;
``hard`` zeroes the top ``hard_ratio`` patches by cam; ``random`` zeroes as many
random patches (the control; it needs no Grad-CAM). The masked pair is one more
ITM positive, reported as ``softmask_itm`` through the ITM head.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.config import SoftMaskConfig
from workbench.objectives.context import StepContext, uniform


def grad_cam(attn: Tensor, grad: Tensor) -> Tensor:
    """Mean over heads of ``attn * relu(grad)``: [B, H, L, S] -> [B, L, S]."""
    return (attn * grad.clamp_min(0)).mean(dim=1)


def min_max(values: Tensor) -> Tensor:
    """Scale each row to [0, 1] (a constant row becomes 0)."""
    low = values.min(dim=-1, keepdim=True).values
    high = values.max(dim=-1, keepdim=True).values
    return (values - low) / (high - low).clamp_min(torch.finfo(values.dtype).tiny)


def pick_words(special_mask: Tensor, generator: torch.Generator | None) -> Tensor:
    """One random real-word position per caption, long [B]; 0 ([CLS]) when a caption has none."""
    scores = uniform(tuple(special_mask.shape), generator, special_mask.device)
    scores = scores.masked_fill(special_mask, -1.0)
    words = scores.argmax(dim=1)
    return torch.where((~special_mask).any(dim=1), words, torch.zeros_like(words))


def word_cam(cam: Tensor, words: Tensor, patch_positions: Tensor) -> Tensor:
    """The chosen word's row of a [B, L, S] cam, patch columns only, min-max normalised: [B, P]."""
    rows = cam[torch.arange(cam.shape[0], device=cam.device), words]  # [B, S]
    return min_max(rows[:, patch_positions].detach().float())


def itm_grad_cam(fused: dict[str, Tensor], match_logit, layer: int) -> Tensor:
    """Grad-CAM [B, L, S] of a fusion output (``return_attention=True``) for the ITM match score.

    The graph is kept (the same pass feeds the losses); nothing is accumulated
    into parameter gradients.
    """
    attn = fused["cross_attn"][layer]
    if not attn.requires_grad:  # evaluation under no_grad: plain attention is all there is
        return attn.mean(dim=1).detach()
    score = match_logit(fused["joint"]).sum()
    (grad,) = torch.autograd.grad(score, attn, retain_graph=True)
    return grad_cam(attn, grad).detach()


def apply_soft_mask(image_tokens: Tensor, patch_weight: Tensor, patch_positions: Tensor) -> Tensor:
    """Multiply the patch tokens by ``1 - patch_weight`` ([B, P]); CLS tokens stay as they are."""
    scale = torch.ones(image_tokens.shape[:2], device=image_tokens.device, dtype=image_tokens.dtype)
    scale[:, patch_positions] = 1.0 - patch_weight.to(scale.dtype)
    return image_tokens * scale.unsqueeze(-1)


def masked_count(num_patches: int, ratio: float) -> int:
    return round(ratio * num_patches)


def hard_mask(cam: Tensor, ratio: float) -> Tensor:
    """True at the ``round(ratio * P)`` patches with the highest cam, bool [B, P]."""
    count = masked_count(cam.shape[1], ratio)
    top = cam.topk(count, dim=1).indices
    return torch.zeros_like(cam, dtype=torch.bool).scatter_(1, top, True)


def random_mask(
    batch_size: int, num_patches: int, count: int, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """True at ``count`` random patches per sample, bool [B, P]."""
    scores = uniform((batch_size, num_patches), generator, device)
    chosen = scores.argsort(dim=1)[:, :count]
    return torch.zeros(batch_size, num_patches, dtype=torch.bool, device=device).scatter_(1, chosen, True)


class SoftMask(nn.Module):
    names = ("softmask_itm",)

    def __init__(self, cfg: SoftMaskConfig) -> None:
        super().__init__()
        self.weight = cfg.weight
        self.mode = cfg.mode
        self.layer = cfg.layer
        self.hard_ratio = cfg.hard_ratio
        self._warned = False

    @property
    def needs_attention(self) -> bool:
        return self.mode in ("soft", "hard")

    def cam(self, ctx: StepContext) -> Tensor:
        """The word-conditional Grad-CAM of the clean pass, [B, P] in [0, 1]."""
        itm = ctx.modules["itm"]
        clean = ctx.pass_("clean")
        self._warn_if_last_layer(len(clean["cross_attn"]))
        cam = itm_grad_cam(clean, itm.match_logit, self.layer)
        words = pick_words(ctx.special_mask, ctx.generator)
        return word_cam(cam, words, ctx.image["patch_positions"])

    def _warn_if_last_layer(self, layers: int) -> None:
        """In the last fusion layer only the [CLS] row reaches the joint feature: word rows get no gradient."""
        if self.layer % layers == layers - 1 and not self._warned:
            self._warned = True
            warnings.warn(
                f"objectives.softmask.layer={self.layer} is the last of {layers} fusion layers: only its "
                "[CLS] row reaches the ITM score, so every word's Grad-CAM is zero and nothing is masked "
                "— use an earlier layer (e.g. objectives.softmask.layer=0)",
                stacklevel=2,
            )

    def patch_weight(self, ctx: StepContext) -> Tensor:
        """How much of each patch to remove, [B, P] in [0, 1]."""
        patch_positions = ctx.image["patch_positions"]
        batch_size, num_patches = ctx.batch["text_ids"].shape[0], patch_positions.numel()
        if self.mode == "random":
            count = masked_count(num_patches, self.hard_ratio)
            return random_mask(batch_size, num_patches, count, ctx.generator, ctx.device).float()
        cam = self.cam(ctx)
        return cam if self.mode == "soft" else hard_mask(cam, self.hard_ratio).float()

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        itm = ctx.modules["itm"]
        weight = self.patch_weight(ctx)
        tokens = apply_soft_mask(ctx.image["image_tokens"], weight, ctx.image["patch_positions"])
        fused = ctx.fuse(tokens, ctx.text["text_tokens"], ctx.batch["text_mask"])
        logits = itm.logits(fused["joint"]).float()
        targets = torch.ones(logits.shape[0], dtype=torch.long, device=logits.device)
        return {
            "softmask_itm_loss": F.cross_entropy(logits, targets),
            "softmask_itm_acc": (logits.detach().argmax(dim=1) == targets).float().mean(),
            "softmask_itm_masked": weight.detach().mean(),
        }
