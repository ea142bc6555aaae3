"""InfoNCE math shared by ITC and SCL: pure functions on hand-made tensors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def positive_mask(
    row_id: Tensor, column_id: Tensor, row_caption: Tensor | None = None, column_caption: Tensor | None = None
) -> Tensor:
    """bool [R, C]: the pair (row, column) is a positive — same id, or same caption string.

    ``row_caption`` / ``column_caption`` are caption-string ids; ``column_caption``
    may cover only the first columns (e.g. the batch, not a queue behind it).
    """
    positive = row_id[:, None] == column_id[None, :]
    if row_caption is not None and column_caption is not None:
        covered = column_caption.shape[0]
        same_text = row_caption[:, None] == column_caption[None, :]
        positive[:, :covered] |= same_text
    return positive


def positive_targets(
    row_id: Tensor, column_id: Tensor, row_caption: Tensor | None = None, column_caption: Tensor | None = None
) -> Tensor:
    """Row-normalised target distribution [R, C]: mass spread evenly over the positive columns.

    With ``arange`` ids this is the identity (plain InfoNCE); with image ids, the
    other captions of the same image count as positives too (ALBEF's ``idx``);
    with caption ids, so does every pair whose caption is the same string (a
    generic "there is one shape." is true of each image it was written for, so
    it is not pushed away from them: soft targets over the positives).
    """
    positive = positive_mask(row_id, column_id, row_caption, column_caption).float()
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


def symmetric_info_nce(
    recovered: Tensor,
    target: Tensor,
    temperature: float,
    *,
    recovered_all: Tensor | None = None,
    target_all: Tensor | None = None,
    offset: int = 0,
) -> Tensor:
    """Symmetric InfoNCE between L2-normalised [B, D] features, positives on the diagonal.

    Also accepts [..., B, D] stacks (e.g. one matrix per video frame) and averages them.
    Across ranks, ``recovered_all`` / ``target_all`` are every rank's features
    gathered ([..., N, D]): rows are this rank's B samples, columns all N, and the
    positive of row i is column ``offset + i``. The mean over ranks of this loss is
    the one-process loss of the whole batch.
    """
    if recovered_all is None and target_all is None:
        logits = (recovered @ target.transpose(-1, -2) / temperature).float()
        columns_logits = logits.transpose(-1, -2)
    else:
        recovered_all = recovered if recovered_all is None else recovered_all
        target_all = target if target_all is None else target_all
        logits = (recovered @ target_all.transpose(-1, -2) / temperature).float()
        columns_logits = (target @ recovered_all.transpose(-1, -2) / temperature).float()
    rows_per_matrix, size = logits.shape[-2:]
    labels = offset + torch.arange(rows_per_matrix, device=logits.device)
    labels = labels.repeat(logits.numel() // (rows_per_matrix * size))
    rows = F.cross_entropy(logits.reshape(-1, size), labels)  # every matrix has B rows: mean of means
    columns = F.cross_entropy(columns_logits.reshape(-1, size), labels)
    return (rows + columns) / 2


def diagonal_accuracy(logits: Tensor, offset: int = 0) -> Tensor:
    """Share of rows whose argmax is their own column ``offset + row`` (detached)."""
    logits = logits.detach().reshape(-1, *logits.shape[-2:])
    labels = offset + torch.arange(logits.shape[-2], device=logits.device)
    return (logits.argmax(dim=-1) == labels).float().mean()
