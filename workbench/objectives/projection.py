"""ITC's projection head: a linear map, optionally standardised over the global batch.

Randomly initialised encoders give nearly the same CLS feature for every input
(cosine ≈ 0.999 between ShapesWorld images at init): the shared component swamps
the differences, so InfoNCE has almost no gradient and stays at log(batch) for
hundreds of steps while the other objectives shape the encoders. Standardising each
projected dimension over the batch (BatchNorm without affine, as in SimCLR's head)
removes the shared component, so ITC learns from the first step.
``objectives.itc.batch_norm`` turns it on; the papers' heads are plain linear (their
encoders are pre-trained), so it is off by default and on in the tiny CPU configs.

Under DDP the statistics are those of the global batch (rows gathered with
gradient), so N processes compute what one process does on the same global batch;
``nn.SyncBatchNorm`` would do the same but runs on GPUs only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench import distributed


class GlobalBatchNorm(nn.Module):
    """BatchNorm1d without affine whose training statistics span every rank's rows."""

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, training=False, eps=self.eps)
        rows = distributed.gather_with_grad(x)  # every rank normalises (and tracks) the global batch
        normed = F.batch_norm(
            rows, self.running_mean, self.running_var, training=True, momentum=self.momentum, eps=self.eps
        )
        offset = distributed.row_offset(x.shape[0])
        return normed[offset : offset + x.shape[0]]


class Projection(nn.Linear):
    """``nn.Linear`` (so checkpoints without batch norm keep their keys), then the optional norm."""

    def __init__(self, in_features: int, out_features: int, *, batch_norm: bool = False) -> None:
        super().__init__(in_features, out_features)
        self.norm = GlobalBatchNorm(out_features) if batch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        projected = super().forward(x)
        return projected if self.norm is None else self.norm(projected)
