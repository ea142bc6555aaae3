"""The two-stream VLP model: vision encoder + text encoder + co-attention fusion.

It returns dicts of named tensors; the objectives decide what to do with them
(masked passes call `encode_image(..., keep_patches=...)` and `fuse` themselves).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch._functorch.config as functorch_config
from torch import nn

from workbench.config import ModelConfig, RunConfig
from workbench.errors import ConfigError
from workbench.models.fusion import CoAttentionFusion
from workbench.models.text import TextEncoder
from workbench.models.vision import VisionEncoder


class VLPModel(nn.Module):
    def __init__(
        self, model_cfg: ModelConfig, *, vocab_size: int, pad_token_id: int, image_size: int, max_text_len: int
    ):
        super().__init__()
        self.vision = VisionEncoder(model_cfg.vision, image_size)
        self.text = TextEncoder(
            model_cfg.text, vocab_size=vocab_size, pad_token_id=pad_token_id, max_text_len=max_text_len
        )
        self.fusion = CoAttentionFusion(
            model_cfg.fusion,
            vision_width=self.vision.width,
            text_width=self.text.width,
            image_global_token=self.vision.has_global_token,
        )
        self.vocab_size = vocab_size

    @property
    def dims(self) -> dict[str, int]:
        """Sizes the objectives' heads are built from."""
        return {
            "vision_width": self.vision.width,
            "text_width": self.text.width,
            "fusion_width": self.fusion.text_bridge.out_features,
            "num_patches": self.vision.num_patches,  # N, patches per frame
            "vocab_size": self.vocab_size,
        }

    def encode_image(self, image: torch.Tensor, keep_patches: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.vision(image, keep_patches)

    def encode_text(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.text(text_ids, text_mask)

    def fuse(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        frame_cls_positions: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        return_attention: bool = False,
        pooled_only: bool = False,
        from_layer: int | None = None,
    ) -> dict[str, Any]:
        """The fusion's outputs; `pooled_only`: only the pooled ones, cheaper; `from_layer`: the token
        inputs are fusion stream states after that many layers (models/fusion.py)."""
        return self.fusion(
            image_tokens,
            text_tokens,
            text_mask,
            frame_cls_positions,
            image_mask,
            return_attention,
            pooled_only,
            from_layer,
        )

    def forward(
        self, batch: dict[str, torch.Tensor], *, return_attention: bool = False, pooled_only: bool = False
    ) -> dict[str, Any]:
        """encode_image ∪ encode_text ∪ fuse of the clean (image, text) pair of the batch."""
        image = self.encode_image(batch["image"])
        text = self.encode_text(batch["text_ids"], batch["text_mask"])
        fused = self.fuse(
            image["image_tokens"],
            text["text_tokens"],
            batch["text_mask"],
            image["frame_cls_positions"],
            return_attention=return_attention,
            pooled_only=pooled_only,
        )
        return {**image, **text, **fused}


def compile_model(model: VLPModel) -> None:
    """``train.compile``: compile the encoders and the fusion in place (state-dict keys unchanged).

    The objectives stay eager: they draw random masks and negatives with a generator
    (which dynamo cannot trace at dynamic caption lengths) and SoftMask takes a
    gradient w.r.t. the fusion's attention maps (see ``fusion.explicit_attention``)
    with ``retain_graph=True``. Train a compiled model inside ``compiled_training()``.
    """
    for module in (model.vision, model.text, model.fusion):
        module.compile()


def compiled_training() -> contextlib.AbstractContextManager:
    """Where a compiled model is trained: compiled backwards without donated buffers.

    SoftMask's ``retain_graph=True`` is allowed only then (donated buffers save memory,
    not time). The setting is process-wide and read when a graph is compiled (lazily,
    at the first step) and at each backward, so it must hold for the whole training;
    leaving the block restores the value it had before.
    """
    return functorch_config.patch(donated_buffer=False)


def build_model(cfg: RunConfig, tokenizer: Any) -> VLPModel:
    """The model for a run; the tokenizer fixes the vocabulary size and the padding id."""
    if tokenizer.pad_token_id is None:
        raise ConfigError("data.tokenizer: the tokenizer has no padding token (pad_token) — the model needs one")
    return VLPModel(
        cfg.model,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        image_size=cfg.data.image_size,
        max_text_len=cfg.data.max_text_len,
    )
