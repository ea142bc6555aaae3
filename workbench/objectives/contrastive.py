"""InfoNCE math shared by ITC and SCL: pure functions on hand-made tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def positive_targets(row_id: Tensor, column_id: Tensor) -> Tensor:
    """Row-normalised target distribution [R, C]: mass spread over the columns whose id matches.

    With ``arange`` ids this is the identity (plain InfoNCE); with image ids, the
    other captions of the same image count as positives too (ALBEF's ``idx``).
    """
    positive = (row_id[:, None] == column_id[None, :]).float()
    return positive / positive.sum(dim=1, keepdim=True).clamp_min(1.0)


def focal_info_nce(logits: Tensor, targets: Tensor, gamma: float) -> Tensor:
    """Cross-entropy whose every target term is weighted by ``(1 - p)^gamma``.

    loss = mean_i  -sum_j t_ij (1 - p_ij)^gamma log p_ij,  p = softmax(logits_i).
    ``targets``: long [N] class indices or float [N, M] distributions. gamma = 0 is
    plain cross-entropy. The weight is not detached (as in focal loss); 1 - p is
    floored at float eps so gamma < 1 keeps a finite gradient at p = 1.
    """
    logits = logits.float()
    if targets.dtype == torch.long:
        targets = F.one_hot(targets, logits.shape[1]).float()
    log_p = F.log_softmax(logits, dim=1)
    terms = targets * log_p
    if gamma:
        one_minus_p = (-torch.expm1(log_p)).clamp_min(torch.finfo(log_p.dtype).eps)
        terms = terms * one_minus_p.pow(gamma)
    return -terms.sum(dim=1).mean()


def symmetric_info_nce(recovered: Tensor, target: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE between L2-normalised [B, D] features, positives on the diagonal.

    Also accepts [..., B, D] stacks (e.g. one matrix per video frame) and averages them.
    """
    logits = (recovered @ target.transpose(-1, -2) / temperature).float()
    size = logits.shape[-1]
    labels = torch.arange(size, device=logits.device).repeat(logits.numel() // (size * size))
    rows = F.cross_entropy(logits.reshape(-1, size), labels)  # every matrix has B rows: mean of means
    columns = F.cross_entropy(logits.transpose(-1, -2).reshape(-1, size), labels)
    return (rows + columns) / 2


def diagonal_accuracy(logits: Tensor) -> Tensor:
    """Share of rows whose argmax is their own column (detached)."""
    logits = logits.detach().reshape(-1, *logits.shape[-2:])
    labels = torch.arange(logits.shape[-1], device=logits.device)
    return (logits.argmax(dim=-1) == labels).float().mean()
