"""Labelled ShapesWorld scenes drawn in memory: the image targets of the uni-modal warm start.

The papers start VLP from uni-modal encoders pre-trained elsewhere (a CLIP/ImageNet
ViT, BERT). ShapesWorld's stand-in for ImageNet is attribute recognition on fresh
scenes (never the data set's own images): every patch is labelled with the colour,
shape and size of the object covering most of it (class 0 = background), every
image with its object count and which "colour shape" objects it holds. A ViT that learns this has patch tokens that say
"part of a large red circle" -- what the fusion's words must find -- but it has
never seen a caption.
"""

from __future__ import annotations

import numpy as np
import torch

from workbench.data.shapes_scene import COLORS, SHAPES, SIZE_RADII, render, sample_scene

BACKGROUND_LABEL = "background"
PATCH_LABELS: dict[str, tuple[str, ...]] = {
    "color": (BACKGROUND_LABEL, *COLORS),
    "shape": (BACKGROUND_LABEL, *SHAPES),
    "size": (BACKGROUND_LABEL, *SIZE_RADII),
}
OBJECT_KINDS = tuple(f"{color} {shape}" for color in COLORS for shape in SHAPES)  # what `present` marks
MIN_OBJECT_SHARE = 0.25  # a patch belongs to an object when that object covers >= 25 % of it


def patch_owner(masks: np.ndarray, patch: int, min_share: float = MIN_OBJECT_SHARE) -> np.ndarray:
    """Per patch (row-major), 1 + index of the object covering most of it, 0 for background.

    `masks` uint8 [K, H, W]; a patch whose largest object covers less than `min_share` is background.
    """
    k, height, width = masks.shape
    rows, cols = height // patch, width // patch
    if k == 0:
        return np.zeros(rows * cols, dtype=np.int64)
    share = masks.reshape(k, rows, patch, cols, patch).mean(axis=(2, 4)).reshape(k, rows * cols)
    best = share.argmax(axis=0)
    return np.where(share.max(axis=0) >= min_share, best + 1, 0).astype(np.int64)


def labelled_scenes(
    rng: np.random.Generator,
    count: int,
    *,
    px: int,
    patch: int,
    max_objects: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> dict[str, torch.Tensor]:
    """`count` random scenes: `image` float [count, 1, 3, px, px] (normalised like the data),
    per-patch long labels `color`/`shape`/`size` [count, P], `objects` long [count] (1..max) and
    `present` float [count, len(OBJECT_KINDS)] (1 where a "colour shape" is in the scene)."""
    images, labels, counts, present = [], {name: [] for name in PATCH_LABELS}, [], []
    for _ in range(count):
        n_objects = int(rng.integers(1, max_objects + 1))
        scene = sample_scene(rng, px, n_objects)
        picture, masks = render(scene, px)
        owner = patch_owner(masks, patch)
        for name, classes in PATCH_LABELS.items():
            table = np.array([0] + [classes.index(getattr(obj, name)) for obj in scene])
            labels[name].append(table[owner])
        images.append(np.asarray(picture))
        counts.append(n_objects)
        present.append([float(kind in {obj.name for obj in scene}) for kind in OBJECT_KINDS])
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
    pixels = (pixels - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    out = {name: torch.from_numpy(np.stack(values)) for name, values in labels.items()}
    return {"image": pixels[:, None], "objects": torch.tensor(counts), "present": torch.tensor(present), **out}
