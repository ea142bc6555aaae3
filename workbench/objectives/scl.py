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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench import distributed
from workbench.config import SCLConfig
from workbench.objectives.context import StepContext, uniform
from workbench.objectives.contrastive import diagonal_accuracy, symmetric_info_nce

# the pass whose fused CLS is "recovered", per loss
RECOVERED_PASS = {"mvsc": "masked_image", "mlsc": "masked_text"}
# the fused feature each loss compares: per-frame image CLS / text CLS
FEATURE = {"mvsc": "fused_frame_cls", "mlsc": "fused_text_cls"}
# the pass whose fused CLS is the target, per `scl.target` and loss
TARGET_PASS = {
    "cross_pass": {"mvsc": "masked_text", "mlsc": "masked_image"},
    "clean_pass": {"mvsc": "clean", "mlsc": "clean"},
}


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


class SCL(nn.Module):
    """MVSC and/or MLSC (only the enabled halves are computed and reported)."""

    def __init__(self, cfg: SCLConfig) -> None:
        super().__init__()
        self.weight = cfg.weight
        self.temperature = cfg.temperature
        self.names = tuple(name for name in ("mvsc", "mlsc") if getattr(cfg, name))
        self.targets = TARGET_PASS[cfg.target]

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for name in self.names:
            feature = FEATURE[name]
            recovered = ctx.pass_(RECOVERED_PASS[name])[feature]
            target = ctx.pass_(self.targets[name])[feature]
            out[f"{name}_loss"], out[f"{name}_acc"] = completion_loss(recovered, target, self.temperature)
        return out
