"""Image/video transforms (torchvision.transforms.v2) on uint8 frames [T, 3, H, W].

Every frame of a video gets the same crop/ops (v2 draws one set of parameters per
call). Training augmentation follows SoftMask (random resized crop + RandAugment)
but RandAugment is restricted to geometric and sharpness ops: ShapesWorld's colour
words are labels, so brightness/colour/contrast/solarize/posterize/equalize/
autocontrast would make captions false. A horizontal flip is only offered together
with swapping "left"/"right" in the caption (see `flip_sample`).
"""

from __future__ import annotations

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import tv_tensors
from torchvision.transforms import v2

from workbench.data.text_augment import swap_left_right

COLOR_FREE_OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Sharpness")


class ColorFreeRandAugment(v2.RandAugment):
    """torchvision's RandAugment with its op table restricted to `COLOR_FREE_OPS`."""

    _AUGMENTATION_SPACE = {name: v2.RandAugment._AUGMENTATION_SPACE[name] for name in COLOR_FREE_OPS}


def normalization(cfg) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std: the named timm model's pretraining statistics, else ImageNet's (timm constants)."""
    name = cfg.model.vision.timm_name
    pretrained = timm.get_pretrained_cfg(name) if name else None
    if pretrained is not None and pretrained.mean and pretrained.std:
        return tuple(pretrained.mean), tuple(pretrained.std)
    return IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


def build_augment(cfg, train: bool) -> v2.Transform:
    """uint8 -> uint8 resize (eval) or crop + colour-free RandAugment (train with augment.image)."""
    size = cfg.data.image_size
    if train and cfg.augment.image:
        return v2.Compose([
            v2.RandomResizedCrop(size, scale=(cfg.augment.crop_scale_min, 1.0), antialias=True),
            ColorFreeRandAugment(num_ops=cfg.augment.randaug_ops, magnitude=cfg.augment.randaug_magnitude),
        ])
    return v2.Resize((size, size), antialias=True)


class FrameTransform:
    """uint8 frames [T, 3, H, W] -> normalised float [T, 3, S, S]."""

    def __init__(self, cfg, train: bool):
        mean, std = normalization(cfg)
        self.pipeline = v2.Compose([
            build_augment(cfg, train),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(mean), std=list(std)),
        ])

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return self.pipeline(tv_tensors.Video(frames)).as_subclass(torch.Tensor)


def flip_sample(frames: torch.Tensor, text: str, masks: torch.Tensor | None = None):
    """Mirror frames (and masks [K, H, W]) left-right and swap left/right in the text."""
    flipped = frames.flip(-1)
    return flipped, swap_left_right(text), (masks.flip(-1) if masks is not None else None)
