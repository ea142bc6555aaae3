"""SoftMask (reconstructed): hide the patches a word relies on, the pair must still match.

Word-conditional Grad-CAM (ALBEF's recipe): score = ITM match logit of the
positive pairs summed over the batch; A = text->image cross-attention of fusion
layer ``layer``; cam = mean over heads of ``A * relu(dscore/dA)``. One word per
caption picks the row: with ``words: content`` (default) a content word --
colour, shape, size, position, count (``content_words``) -- else any real word;
with ``words: any`` any real word (never a special token or padding; a caption
without one uses its [CLS] row). The row is restricted to patch columns, min-max
normalised to [0, 1] over the patches (all frames together) and detached. In the
last fusion layer only the [CLS] row reaches the joint feature, so every word's
cam there is identically zero: ``check`` refuses that layer.

``mode``: ``soft`` scales the vision encoder's output patch tokens by ``1 - cam``;
``hard`` zeroes the top ``hard_ratio`` patches by cam, only patches with cam > 0
(a constant cam names no region and masks nothing); ``random`` zeroes
``round(hard_ratio * P)`` random patches (the control; it needs no Grad-CAM).

How the masked pair is weighted against ITM (``positive``):

* ``separate_loss`` (default): its own term ``softmask_itm`` = cross-entropy of the
  B masked pairs as positives, times ``softmask.weight``. With both weights 1 the
  masked positives carry as much weight as ITM's whole 3B-row batch (B positives,
  2B negatives), so positives get 2/3 of the ITM-head gradient mass, not 1/3.
* ``itm_batch`` (SCIENCE.md): the B masked rows join ITM's batch, one
  cross-entropy over 4B rows (2B positives : 2B negatives) times ``itm.weight``;
  ``softmask.weight`` is not used, and there is no ``softmask_itm`` loss term
  (its accuracy and masked share are logged as ``itm/masked_acc``, ``itm/masked``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.config import SoftMaskConfig
from workbench.errors import ConfigError
from workbench.objectives.content_words import content_mask
from workbench.objectives.context import StepContext, uniform
from workbench.objectives.passes import CLEAN, CleanPass
from workbench.objectives.spec import BuildInputs, ObjectiveSpec, term_metrics, weighted_on

CAM_MODES = ("soft", "hard")  # the modes that compute Grad-CAM (``random`` needs none)


def grad_cam(attn: Tensor, grad: Tensor) -> Tensor:
    """Mean over heads of ``attn * relu(grad)``: [B, H, L, S] -> [B, L, S]."""
    return (attn * grad.clamp_min(0)).mean(dim=1)


def min_max(values: Tensor) -> Tensor:
    """Scale each row to [0, 1] (a constant row becomes 0)."""
    low = values.min(dim=-1, keepdim=True).values
    high = values.max(dim=-1, keepdim=True).values
    return (values - low) / (high - low).clamp_min(torch.finfo(values.dtype).tiny)


def pick_words(special_mask: Tensor, generator: torch.Generator | None, preferred: Tensor | None = None) -> Tensor:
    """One random word position per caption, long [B]: among the ``preferred`` real words
    (bool [B, L], e.g. content words) when the caption has one, else among its real words;
    0 ([CLS]) when it has none."""
    real = ~special_mask
    eligible = real
    if preferred is not None:
        chosen = real & preferred
        eligible = torch.where(chosen.any(dim=1, keepdim=True), chosen, real)
    scores = uniform(tuple(special_mask.shape), generator, special_mask.device)
    words = scores.masked_fill(~eligible, -1.0).argmax(dim=1)
    return torch.where(real.any(dim=1), words, torch.zeros_like(words))


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
    """True at the ``round(ratio * P)`` patches with the highest cam, bool [B, P] -- only where
    cam > 0: a min-max normalised constant cam (all 0) names no region, so nothing is masked."""
    count = masked_count(cam.shape[1], ratio)
    top = cam.topk(count, dim=1).indices
    chosen = torch.zeros_like(cam, dtype=torch.bool).scatter_(1, top, True)
    return chosen & (cam > 0)


def random_mask(
    batch_size: int, num_patches: int, count: int, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """True at ``count`` random patches per sample, bool [B, P]."""
    scores = uniform((batch_size, num_patches), generator, device)
    chosen = scores.argsort(dim=1)[:, :count]
    return torch.zeros(batch_size, num_patches, dtype=torch.bool, device=device).scatter_(1, chosen, True)


class SoftMask(nn.Module):
    def __init__(self, cfg: SoftMaskConfig, content_ids: list[int] | None = None) -> None:
        super().__init__()
        self.weight = cfg.weight
        self.mode = cfg.mode
        self.layer = cfg.layer
        self.hard_ratio = cfg.hard_ratio
        self.words = cfg.words
        self.in_itm_batch = cfg.positive == "itm_batch"
        # the ITM term reads the masked rows into its own batch: this term adds no loss
        self.names = () if self.in_itm_batch else ("softmask_itm",)
        self.register_buffer("content_ids", torch.tensor(content_ids or [], dtype=torch.long), persistent=False)

    def cam(self, ctx: StepContext) -> Tensor:
        """The word-conditional Grad-CAM of the clean pass, [B, P] in [0, 1]."""
        itm = ctx.modules["itm"]
        clean = ctx.pass_(CLEAN)
        cam = itm_grad_cam(clean, itm.match_logit, self.layer)
        words = pick_words(ctx.special_mask, ctx.generator, self.preferred_words(ctx.batch["text_ids"]))
        return word_cam(cam, words, ctx.image["patch_positions"])

    def preferred_words(self, text_ids: Tensor) -> Tensor | None:
        """Content-word positions under ``words: content`` (None: any real word)."""
        if self.words != "content" or self.content_ids.numel() == 0:
            return None
        return content_mask(text_ids, self.content_ids)

    def patch_weight(self, ctx: StepContext) -> Tensor:
        """How much of each patch to remove, [B, P] in [0, 1]."""
        patch_positions = ctx.image["patch_positions"]
        batch_size, num_patches = ctx.batch["text_ids"].shape[0], patch_positions.numel()
        if self.mode == "random":
            count = masked_count(num_patches, self.hard_ratio)
            return random_mask(batch_size, num_patches, count, ctx.generator, ctx.device).float()
        cam = self.cam(ctx)
        return cam if self.mode == "soft" else hard_mask(cam, self.hard_ratio).float()

    def masked_pair(self, ctx: StepContext) -> dict[str, Tensor]:
        """The masked image x clean caption: its ``joint``, ITM ``logits`` [B, 2] and the mask's share (memoised)."""

        def compute() -> dict[str, Tensor]:
            itm = ctx.modules["itm"]
            weight = self.patch_weight(ctx)
            tokens = apply_soft_mask(ctx.image["image_tokens"], weight, ctx.image["patch_positions"])
            fused = ctx.fuse(tokens, ctx.text["text_tokens"], ctx.batch["text_mask"])
            joint = fused["joint"]
            return {"joint": joint, "logits": itm.logits(joint).float(), "masked": weight.detach().mean()}

        return ctx.memo("softmask_masked_pair", compute)

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        if self.in_itm_batch:
            return {}  # ITM took the masked rows into its batch (and reports on them)
        pair = self.masked_pair(ctx)
        logits = pair["logits"]
        targets = torch.ones(logits.shape[0], dtype=torch.long, device=logits.device)
        return {
            "softmask_itm_loss": F.cross_entropy(logits, targets),
            "softmask_itm_acc": (logits.detach().argmax(dim=1) == targets).float().mean(),
            "softmask_itm_masked": pair["masked"],
        }


def is_on(cfg: SoftMaskConfig) -> bool:
    """Built when enabled with weight > 0 and a mode other than ``off``."""
    return weighted_on(cfg) and cfg.mode != "off"


def passes(cfg: SoftMaskConfig, inputs: BuildInputs) -> dict[str, CleanPass]:
    """Grad-CAM differentiates the clean pass's cross-attention; the masked pair is fused ad hoc."""
    return {CLEAN: CleanPass(return_attention=True)} if cfg.mode in CAM_MODES else {}


def build(cfg: SoftMaskConfig, inputs: BuildInputs) -> SoftMask:
    return SoftMask(cfg, inputs.content_ids)


def check(cfg: SoftMaskConfig, inputs: BuildInputs) -> None:
    """Grad-CAM of the last fusion layer is zero for every word (only its [CLS] row reaches the
    ITM score): a soft or hard mask drawn from it masks nothing."""
    layers = inputs.fusion_layers
    if layers is None or cfg.mode not in CAM_MODES or not -layers <= cfg.layer < layers:
        return  # unknown depth, no Grad-CAM, or out of range (config.validate's own rule)
    if cfg.layer % layers == layers - 1:
        raise ConfigError(
            f"objectives.softmask.layer: {cfg.layer} is the last of model.fusion.layers={layers} fusion "
            f"layers, where only the [CLS] row reaches the ITM score: every word's Grad-CAM is zero and "
            f"mode={cfg.mode!r} would mask nothing — allowed: "
            + (f"0..{layers - 2}" if layers > 1 else "none (use model.fusion.layers >= 2 or mode=random)")
        )


def metrics(cfg: SoftMaskConfig) -> tuple[str, ...]:
    """Its own term, unless its masked rows join ITM's batch (then ITM logs them)."""
    return () if cfg.positive == "itm_batch" else term_metrics("softmask_itm", "acc", "masked")


SPEC = ObjectiveSpec(
    "softmask",
    build=build,
    passes=passes,
    is_on=is_on,
    check=check,
    metrics=metrics,
    needs={"itm": "its masked pair is an ITM positive"},
)
