"""Image/video transforms (torchvision.transforms.v2) on uint8 frames [T, 3, H, W].

Every frame of a video gets the same crop/ops (v2 draws one set of parameters per
call). Training augmentation follows SoftMask (random resized crop + RandAugment).
`augment.randaug_set` picks the ops: `color_free` (ShapesWorld's default) keeps
geometric and sharpness ops only, because ShapesWorld's colour words are labels,
so brightness/colour/contrast/solarize/posterize/equalize/autocontrast would make
captions false; `albef` is ALBEF's list for real photos. A horizontal flip is only
offered together with swapping "left"/"right" in the caption (see `flip_sample`).

Image files take a faster road to the same result (`FrameTransform.image`): the
crop is drawn from the file's header size, the JPEG is decoded at the smallest DCT
scale that still gives the crop >= image_size pixels a side (PIL `draft`), the crop
and resize are one antialiased PIL call on uint8, RandAugment runs on the small
PIL image, and only the final S x S image becomes float. Decoding is then most of
the cost (benchmarks/bench_loader.py). Videos and arrays keep the tensor road.
"""

from __future__ import annotations

import math
from typing import BinaryIO

import numpy as np
import timm
import torch
from PIL import Image
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision import tv_tensors
from torchvision.transforms import v2

from workbench.data.text_augment import swap_left_right
from workbench.errors import DataError

COLOR_FREE_OPS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Sharpness")
# ALBEF's RandomAugment(2, 7, augs=[...]) op list (ALBEF/dataset/__init__.py), for real photos
ALBEF_OPS = (
    "Identity",
    "AutoContrast",
    "Equalize",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
)


class ColorFreeRandAugment(v2.RandAugment):
    """torchvision's RandAugment with its op table restricted to `COLOR_FREE_OPS`."""

    _AUGMENTATION_SPACE = {name: v2.RandAugment._AUGMENTATION_SPACE[name] for name in COLOR_FREE_OPS}


class AlbefRandAugment(v2.RandAugment):
    """torchvision's RandAugment with ALBEF's op table (`ALBEF_OPS`): colour ops included."""

    _AUGMENTATION_SPACE = {name: v2.RandAugment._AUGMENTATION_SPACE[name] for name in ALBEF_OPS}


RANDAUG_SETS = {"color_free": ColorFreeRandAugment, "albef": AlbefRandAugment}


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
        return v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=(cfg.augment.crop_scale_min, 1.0), antialias=True),
                _randaugment(cfg),
            ]
        )
    return v2.Resize((size, size), antialias=True)


def _randaugment(cfg) -> v2.RandAugment:
    return RANDAUG_SETS[cfg.augment.randaug_set](
        num_ops=cfg.augment.randaug_ops, magnitude=cfg.augment.randaug_magnitude
    )


class FrameTransform:
    """uint8 frames [T, 3, H, W] (or an image file, `image`) -> normalised float [T, 3, S, S]."""

    def __init__(self, cfg, train: bool):
        mean, std = normalization(cfg)
        self.pipeline = v2.Compose(
            [
                build_augment(cfg, train),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(mean=list(mean), std=list(std)),
            ]
        )
        self.size = cfg.data.image_size
        self.crop = train and cfg.augment.image
        self.scale, self.ratio = (cfg.augment.crop_scale_min, 1.0), (3 / 4, 4 / 3)  # v2.RandomResizedCrop's
        self.randaugment = _randaugment(cfg) if self.crop else None
        self.mean255 = torch.tensor(mean).view(3, 1, 1) * 255
        self.std255 = torch.tensor(std).view(3, 1, 1) * 255

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return self.pipeline(tv_tensors.Video(frames)).as_subclass(torch.Tensor)

    def image(self, source: str | BinaryIO, flip: bool = False) -> torch.Tensor:
        """An image file (path or binary file) -> float [1, 3, S, S], optionally mirrored.

        The same transform as `__call__` on the decoded image (crop drawn by v2's
        RandomResizedCrop rule from the torch RNG on the file's full size, antialiased
        bilinear resize in uint8), done on a reduced-size decode; the box is rounded to
        whole pixels of that decode. Mirroring after the crop is the same distribution
        as before it (the crop and RandAugment's signed ops are left-right symmetric)."""
        try:
            with Image.open(source) as image:
                pixels = self._crop_resize(image)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:  # PIL: SyntaxError = broken PNG
            raise DataError(
                f"unreadable image {_name(source)}: {' '.join(str(err).split()) or type(err).__name__}"
            ) from None
        if self.randaugment is not None:  # torchvision's PIL kernels: several times faster than its tensor ones here
            augmented = self.randaugment(Image.fromarray(np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())))
            pixels = torch.from_numpy(np.asarray(augmented).copy()).permute(2, 0, 1)
        if flip:
            pixels = pixels.flip(-1)
        return pixels.float().sub_(self.mean255).div_(self.std255).unsqueeze(0)

    def _crop_resize(self, image: Image.Image) -> torch.Tensor:
        """uint8 [3, S, S]: box drawn on the full size, decode at a reduced scale, resize the box."""
        width, height = image.size
        size = self.size
        if self.crop:
            top, left, h, w = v2.RandomResizedCrop.get_params(image, list(self.scale), list(self.ratio))
        else:
            top, left, h, w = 0, 0, height, width
        # the smallest decode in which the box still spans >= size pixels each way (JPEG DCT scaling: 1/2, 1/4, 1/8)
        image.draft("RGB", (math.ceil(width * size / w), math.ceil(height * size / h)))
        fx, fy = image.size[0] / width, image.size[1] / height
        array = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
        x0, y0 = round(left * fx), round(top * fy)
        x1, y1 = max(x0 + 1, round((left + w) * fx)), max(y0 + 1, round((top + h) * fy))
        crop = np.array(array[y0:y1, x0:x1])  # [h, w, 3] copied (PIL's buffer is read-only)
        box = torch.from_numpy(crop).permute(2, 0, 1)  # channels-last strides: torch's fast uint8 resize
        return v2.functional.resize(box, [size, size], antialias=True)  # channels-last out: HWC views are free


def _name(source) -> str:
    return str(getattr(source, "name", source))


def flip_sample(frames: torch.Tensor, text: str, masks: torch.Tensor | None = None):
    """Mirror frames (and masks [K, H, W]) left-right and swap left/right in the text."""
    flipped = frames.flip(-1)
    return flipped, swap_left_right(text), (masks.flip(-1) if masks is not None else None)
