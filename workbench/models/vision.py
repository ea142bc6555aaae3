"""Vision encoder: a timm ViT that reads images and videos alike (SCL's flexible encoder).

An image is a 1-frame video. Frames share the ViT, each frame keeps its own CLS
token, and a learned temporal embedding is added to every token of a frame. How
frames see each other inside the ViT -- and what the video's global feature is --
is the `pooling` variant, picked from the `POOLINGS` table by name.

Token layout of the output: [video CLS (global_cls only)] + per frame [frame CLS, patches].
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import nn

from workbench.config import VisionConfig
from workbench.errors import ConfigError


def build_vit(cfg: VisionConfig, image_size: int) -> VisionTransformer:
    """A tiny random ViT from the config fields, or `timm_name` with weights from `checkpoint` (never downloaded)."""
    if not cfg.timm_name:
        return VisionTransformer(
            img_size=image_size,
            patch_size=cfg.patch_size,
            embed_dim=cfg.width,
            depth=cfg.depth,
            num_heads=cfg.heads,
            num_classes=0,
            global_pool="",
        )
    if not timm.is_model(cfg.timm_name):
        raise ConfigError(
            f"model.vision.timm_name: {cfg.timm_name!r} is not a timm model — e.g. 'vit_base_patch16_224'"
        )
    if not cfg.checkpoint or not Path(cfg.checkpoint).is_file():
        raise ConfigError(
            f"model.vision.checkpoint: {cfg.checkpoint!r} is not a file — weights for "
            f"model.vision.timm_name={cfg.timm_name!r} are never downloaded; save them there first, e.g. "
            f"`torch.save(timm.create_model({cfg.timm_name!r}, pretrained=True).state_dict(), PATH)` "
            f"on a machine with network access (or point it at a model.safetensors from the HF cache)"
        )
    not_a_vit = ConfigError(
        f"model.vision.timm_name: {cfg.timm_name!r} must be a timm VisionTransformer with exactly "
        f"one class token and no register tokens (e.g. 'vit_base_patch16_224')"
    )
    try:
        vit = timm.create_model(cfg.timm_name, img_size=image_size, num_classes=0, global_pool="")
    except TypeError:  # not a ViT: no img_size / global_pool arguments
        raise not_a_vit from None
    if not isinstance(vit, VisionTransformer) or vit.cls_token is None or vit.num_prefix_tokens != 1:
        raise not_a_vit
    patch = vit.patch_embed.patch_size[0]
    if image_size % patch:
        raise ConfigError(
            f"data.image_size: {image_size} must be a multiple of the patch size {patch} of "
            f"model.vision.timm_name={cfg.timm_name!r}"
        )
    load_vit_weights(vit, cfg.checkpoint)
    return vit


def load_vit_weights(vit: VisionTransformer, checkpoint: str) -> None:
    """Load a local state dict strictly (timm's own loader silently skips keys when the head is dropped).

    timm's `checkpoint_filter_fn` converts foreign layouts (OpenAI CLIP, DINO, ...) and resamples
    the position embedding to `data.image_size`; only the classifier head may be left unused.
    """
    try:
        state = checkpoint_filter_fn(timm.models.load_state_dict(checkpoint), vit)
        result = vit.load_state_dict(state, strict=False)
    except (RuntimeError, ValueError, KeyError, OSError) as err:
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConfigError(f"model.vision.checkpoint: cannot load {checkpoint!r}: {first_line}") from None
    classifier = vit.pretrained_cfg.get("classifier") or "head"
    unexpected = [k for k in result.unexpected_keys if not k.startswith(f"{classifier}.")]
    if result.missing_keys or unexpected:
        problems = [f"missing {k}" for k in result.missing_keys] + [f"unexpected {k}" for k in unexpected]
        shown = ", ".join(problems[:4]) + (f", ... ({len(problems)} in all)" if len(problems) > 4 else "")
        raise ConfigError(
            f"model.vision.checkpoint: {checkpoint!r} does not hold the weights of this timm model ({shown})"
        )


def run_blocks(vit: VisionTransformer, x: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """The ViT's blocks + final norm; `allowed[q, k]` = query q may attend to key k."""
    x = vit.norm_pre(x)
    for block in vit.blocks:
        x = block(x, attn_mask=allowed)
    return vit.norm(x)


def frame_index(num_frames: int, tokens_per_frame: int, device: torch.device) -> torch.Tensor:
    """Frame number of each position of the flattened [T * P] frame tokens."""
    return torch.arange(num_frames, device=device).repeat_interleave(tokens_per_frame)


class FrameClsPooling(nn.Module):
    """SCL: frame-CLS tokens attend to all tokens of all frames, patches only within their frame.

    Global feature = mean of the frame CLS tokens.
    """

    global_tokens = 0

    def __init__(self, width: int):
        super().__init__()

    def forward(self, vit: VisionTransformer, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, P, D = frames.shape
        allowed = None  # one frame: nothing to mask, so the very same computation as `mean`
        if T > 1:
            frame = frame_index(T, P, frames.device)
            is_cls = torch.arange(T * P, device=frames.device) % P == 0
            allowed = (frame[:, None] == frame[None, :]) | is_cls[:, None]
        tokens = run_blocks(vit, frames.reshape(B, T * P, D), allowed)
        return tokens, tokens[:, ::P].mean(1)


class GlobalClsPooling(nn.Module):
    """One extra learnable video CLS attends to every frame's tokens and is the global feature.

    Frame tokens (CLS and patches) attend only within their own frame.
    """

    global_tokens = 1

    def __init__(self, width: int):
        super().__init__()
        self.video_cls = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.video_cls, std=1e-6)  # as timm initialises its cls_token

    def forward(self, vit: VisionTransformer, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, P, D = frames.shape
        x = torch.cat([self.video_cls.expand(B, -1, -1), frames.reshape(B, T * P, D)], dim=1)
        frame = torch.cat([torch.full((1,), -1, device=frames.device), frame_index(T, P, frames.device)])
        allowed = frame[:, None] == frame[None, :]
        allowed[0] = True  # the video CLS sees everything
        tokens = run_blocks(vit, x, allowed)
        return tokens, tokens[:, 0]


class MeanPooling(nn.Module):
    """Frames encoded independently; global feature = mean over frames of the frame CLS."""

    global_tokens = 0

    def __init__(self, width: int):
        super().__init__()

    def forward(self, vit: VisionTransformer, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, P, D = frames.shape
        tokens = run_blocks(vit, frames.reshape(B * T, P, D), None).reshape(B, T * P, D)
        return tokens, tokens[:, ::P].mean(1)


POOLINGS: dict[str, type[nn.Module]] = {
    "frame_cls": FrameClsPooling,
    "global_cls": GlobalClsPooling,
    "mean": MeanPooling,
}


class VisionEncoder(nn.Module):
    def __init__(self, cfg: VisionConfig, image_size: int):
        super().__init__()
        if cfg.pooling not in POOLINGS:
            raise ConfigError(f"model.vision.pooling: {cfg.pooling!r} is not one of {', '.join(POOLINGS)}")
        self.vit = build_vit(cfg, image_size)
        self.width: int = self.vit.embed_dim
        self.num_patches: int = self.vit.patch_embed.num_patches
        self.max_frames = cfg.max_frames
        # zero init: a pre-trained image ViT starts out unchanged on images
        self.temporal_embed = nn.Parameter(torch.zeros(cfg.max_frames, self.width))
        self.pooling = POOLINGS[cfg.pooling](self.width)

    @property
    def has_global_token(self) -> bool:
        return self.pooling.global_tokens > 0

    def forward(self, image: torch.Tensor, keep_patches: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """image [B,T,3,H,W]; keep_patches long [B,K] (patches kept in every frame, MAE-style drop)."""
        if image.ndim != 5:
            raise ValueError(f"image must be [B, T, 3, H, W], got shape {tuple(image.shape)}")
        B, T = image.shape[:2]
        if T > self.max_frames:
            raise ConfigError(f"model.vision.max_frames: {self.max_frames} is less than the {T} input frames")
        # timm's own CLS concat + position embedding (it knows the no_embed_class variants)
        x = self.vit._pos_embed(self.vit.patch_embed(image.flatten(0, 1)))  # [B*T, 1+N, D]
        if keep_patches is not None:
            index = keep_patches.repeat_interleave(T, dim=0)[..., None].expand(-1, -1, x.shape[-1])
            x = torch.cat([x[:, :1], x[:, 1:].gather(1, index)], dim=1)  # [B*T, 1+K, D]
        frames = x.unflatten(0, (B, T)) + self.temporal_embed[:T, None]  # [B, T, P, D]
        tokens, image_cls = self.pooling(self.vit, frames)
        P = frames.shape[2]
        frame_cls_positions = self.pooling.global_tokens + P * torch.arange(T, device=image.device)
        patch_positions = (frame_cls_positions[:, None] + torch.arange(1, P, device=image.device)).flatten()
        return {
            "image_tokens": tokens,
            "image_cls": image_cls,
            "patch_positions": patch_positions,
            "frame_cls_positions": frame_cls_positions,
        }
