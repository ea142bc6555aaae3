"""SCL: semantic completion — a masked modality's fused CLS must recover the complete one.

* MVSC: ``image_mask_ratio`` of the patches are dropped (MAE-style, the same
  positions in every frame), the rest fused with the complete caption; each fused
  frame CLS (*recovered*) is contrasted with the fused frame CLS of a pass whose
  image is complete (*target*, detached). Averaged over frames.
* MLSC: ``text_mask_ratio`` of the real tokens become [MASK], fused with the
  complete image; the fused text CLS is contrasted with a complete-text pass's.

``target``: ``cross_pass`` (SCL code) takes MVSC's target from the masked-text pass
(its image is complete) and MLSC's from the masked-image pass (its text is
complete): two fusion passes, no clean one. ``clean_pass`` takes both targets from
the clean pass. The loss is the mean of the two InfoNCE directions (SCL's code
sums them: the same thing at twice the weight). No projection head, as in SCL.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from workbench import distributed
from workbench.config import SCLConfig
from workbench.objectives.context import StepContext
from workbench.objectives.contrastive import diagonal_accuracy, symmetric_info_nce
from workbench.objectives.masking import ALL_MASK
from workbench.objectives.passes import (
    CLEAN,
    MASKED_IMAGE,
    MASKED_TEXT,
    CleanPass,
    FusionPass,
    MaskedImagePass,
    MaskedTextPass,
)
from workbench.objectives.spec import BuildInputs, ObjectiveSpec, term_metrics, weighted_on

# the pass whose fused CLS is "recovered", per loss
RECOVERED_PASS = {"mvsc": MASKED_IMAGE, "mlsc": MASKED_TEXT}
# the fused feature each loss compares: per-frame image CLS / text CLS
FEATURE = {"mvsc": "fused_frame_cls", "mlsc": "fused_text_cls"}
# the pass whose fused CLS is the target, per `scl.target` and loss
TARGET_PASS = {
    "cross_pass": {"mvsc": MASKED_TEXT, "mlsc": MASKED_IMAGE},
    "clean_pass": {"mvsc": CLEAN, "mlsc": CLEAN},
}


def completion_loss(recovered: Tensor, target: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE between L2-normalised recovered and detached target, [B, D] or [B, T, D].

    Frames ([B, T, D]) are contrasted frame by frame and averaged. Under DDP the
    other ranks' samples are negatives too (gathered, with gradient for ``recovered``).
    """
    recovered = F.normalize(recovered.float(), dim=-1)
    target = F.normalize(target.detach().float(), dim=-1)
    recovered_all = target_all = None
    offset = distributed.row_offset(recovered.shape[0])
    if distributed.is_active():
        recovered_all, target_all = distributed.gather_with_grad(recovered), distributed.gather(target)
    if recovered.dim() == 3:  # [T, B, D]: one matrix per frame
        recovered, target = recovered.transpose(0, 1), target.transpose(0, 1)
        if recovered_all is not None:
            recovered_all, target_all = recovered_all.transpose(0, 1), target_all.transpose(0, 1)
    loss = symmetric_info_nce(
        recovered, target, temperature, recovered_all=recovered_all, target_all=target_all, offset=offset
    )
    columns = target if target_all is None else target_all
    accuracy = diagonal_accuracy(recovered @ columns.transpose(-1, -2), offset)
    return loss, accuracy


def losses(cfg: SCLConfig) -> tuple[str, ...]:
    """The enabled halves, in the order they run and report."""
    return tuple(name for name in ("mvsc", "mlsc") if getattr(cfg, name))


class SCL(nn.Module):
    """MVSC and/or MLSC (only the enabled halves are computed and reported)."""

    def __init__(self, cfg: SCLConfig) -> None:
        super().__init__()
        self.weight = cfg.weight
        self.temperature = cfg.temperature
        self.names = losses(cfg)
        self.targets = TARGET_PASS[cfg.target]

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name in self.names:
            feature = FEATURE[name]
            recovered = ctx.pass_(RECOVERED_PASS[name])[feature]
            target = ctx.pass_(self.targets[name])[feature]
            out[f"{name}_loss"], out[f"{name}_acc"] = completion_loss(recovered, target, self.temperature)
        return out


def is_on(cfg: SCLConfig) -> bool:
    """Built when enabled with weight > 0 and at least one half is on."""
    return weighted_on(cfg) and bool(losses(cfg))


def passes(cfg: SCLConfig, inputs: BuildInputs) -> dict[str, FusionPass]:
    """The masked passes the enabled halves recover from, and the passes their targets come from.

    The mask ratios are read here: ``image_mask_ratio`` of the patches dropped,
    ``text_mask_ratio`` of the real tokens all set to [MASK] (an exact count per
    caption). MLSC's caption is ``shareable``: MLM may read it (``passes.py``'s rule).
    """
    names = {RECOVERED_PASS[name] for name in losses(cfg)} | {TARGET_PASS[cfg.target][name] for name in losses(cfg)}
    wanted: dict[str, FusionPass] = {}
    if MASKED_IMAGE in names:
        wanted[MASKED_IMAGE] = MaskedImagePass(cfg.image_mask_ratio)
    if MASKED_TEXT in names:
        wanted[MASKED_TEXT] = MaskedTextPass(
            cfg.text_mask_ratio,
            exact=True,
            split=ALL_MASK,
            mask_id=inputs.mask_id,
            vocab_size=inputs.vocab_size,
            shareable=cfg.mlsc,
        )
    if CLEAN in names:
        wanted[CLEAN] = CleanPass()
    return wanted


def build(cfg: SCLConfig, inputs: BuildInputs) -> SCL:
    return SCL(cfg)


SPEC = ObjectiveSpec(
    "scl",
    build=build,
    passes=passes,
    is_on=is_on,
    metrics=lambda cfg: tuple(key for name in losses(cfg) for key in term_metrics(name, "acc")),
)
