"""ALBEF's momentum encoder and feature queues for ITC (``objectives.itc.queue_size > 0``).

An exponential moving average (``momentum``) of the model and of ITC's projections
encodes every batch without gradient; its features are pushed into FIFO queues of
``queue_size`` entries that serve as extra negatives. ``distill_alpha`` mixes the
momentum model's softmax into the targets (momentum distillation). Differences
from ALBEF: the whole model is copied (ALBEF copies both encoders, its text encoder
including the fusion layers), alpha is constant (ALBEF ramps it up over the first
epoch), and queued entries keep their ``image_id`` so a queued caption of the same
image is a positive (empty slots have id -1).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

EMPTY_ID = -1


class MomentumQueue(nn.Module):
    def __init__(
        self, model: nn.Module, image_proj: nn.Module, text_proj: nn.Module, *, queue_size: int, momentum: float
    ) -> None:
        super().__init__()
        self.momentum = momentum
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.image_proj = copy.deepcopy(image_proj).requires_grad_(False)
        self.text_proj = copy.deepcopy(text_proj).requires_grad_(False)
        embed_dim = image_proj.out_features
        self.register_buffer("image_queue", F.normalize(torch.randn(queue_size, embed_dim), dim=1))
        self.register_buffer("text_queue", F.normalize(torch.randn(queue_size, embed_dim), dim=1))
        self.register_buffer("id_queue", torch.full((queue_size,), EMPTY_ID, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, online: list[nn.Module]) -> None:
        """EMA step: momentum <- m * momentum + (1 - m) * online, for [model, image_proj, text_proj]."""
        for source, target in zip(online, (self.model, self.image_proj, self.text_proj), strict=True):
            source_params, target_params = list(source.parameters()), list(target.parameters())
            if len(source_params) != len(target_params):
                raise ValueError("the momentum copy does not match the model it was built from")
            for online_param, momentum_param in zip(source_params, target_params, strict=True):
                momentum_param.lerp_(online_param.detach(), 1.0 - self.momentum)

    @torch.no_grad()
    def encode(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """L2-normalised momentum image and text embeddings of the batch."""
        image_cls = self.model.encode_image(batch["image"])["image_cls"]
        text_cls = self.model.encode_text(batch["text_ids"], batch["text_mask"])["text_cls"]
        return F.normalize(self.image_proj(image_cls), dim=-1), F.normalize(self.text_proj(text_cls), dim=-1)

    @torch.no_grad()
    def enqueue(self, image_embed: Tensor, text_embed: Tensor, ids: Tensor) -> None:
        """Overwrite the oldest entries (wrapping around); a batch larger than the queue keeps its last rows."""
        size = self.id_queue.shape[0]
        image_embed, text_embed, ids = image_embed[-size:], text_embed[-size:], ids[-size:]
        slots = (self.pointer + torch.arange(ids.shape[0], device=ids.device)) % size
        self.image_queue[slots] = image_embed.to(self.image_queue.dtype)
        self.text_queue[slots] = text_embed.to(self.text_queue.dtype)
        self.id_queue[slots] = ids
        self.pointer.copy_((self.pointer + ids.shape[0]) % size)
