"""Recall@K for image–text (or video–text) retrieval from one score matrix.

Ranks are 0-based: rank 0 = the correct item is first.

* Text retrieval (image query): rank of an image = best rank among its captions,
  i.e. the number of *wrong* captions scoring at least as high as its best caption.
* Image retrieval (caption query): rank of a caption = the number of wrong images
  scoring at least as high as its one image.

Ties are pessimistic: a wrong item with exactly the true item's score counts as
ranked above it, so a constant score matrix gets rank n-1 (not a lucky 0) and the
result never depends on sort stability. NaN scores count as -inf (a NaN true score
ranks below every wrong one). Without ties this equals ALBEF's argsort ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

RECALL_AT = (1, 5, 10)
METRIC_KEYS = ("tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "r_mean")


def _as_numpy(scores: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().float().cpu().numpy()
    scores = np.asarray(scores, dtype=np.float64)
    return np.where(np.isnan(scores), -np.inf, scores)


def captions_per_image(txt2img: Sequence[int], n_images: int) -> list[list[int]]:
    """Invert a caption -> image map into image -> [caption indices]."""
    img2txt: list[list[int]] = [[] for _ in range(n_images)]
    for text_index, image_index in enumerate(txt2img):
        if not 0 <= int(image_index) < n_images:
            raise ValueError(f"txt2img[{text_index}] = {image_index} is not an image index in [0, {n_images})")
        img2txt[int(image_index)].append(text_index)
    return img2txt


def text_retrieval_ranks(scores_i2t: np.ndarray, img2txt: Sequence[Sequence[int]]) -> np.ndarray:
    """[n_images] rank of each image's best caption among all captions (pessimistic ties)."""
    ranks = np.empty(len(img2txt), dtype=np.int64)
    for image_index, (row, captions) in enumerate(zip(scores_i2t, img2txt)):
        if len(captions) == 0:
            raise ValueError(f"image {image_index} has no caption")
        is_true = np.zeros(row.shape[0], dtype=bool)
        is_true[list(captions)] = True
        best_true = row[is_true].max()
        ranks[image_index] = int(np.count_nonzero(row[~is_true] >= best_true))
    return ranks


def image_retrieval_ranks(scores_i2t: np.ndarray, txt2img: Sequence[int]) -> np.ndarray:
    """[n_texts] rank of each caption's one image among all images (pessimistic ties)."""
    scores_t2i = scores_i2t.T
    targets = np.asarray(txt2img, dtype=np.int64)
    true_scores = scores_t2i[np.arange(len(targets)), targets]
    at_least_as_high = scores_t2i >= true_scores[:, None]
    return at_least_as_high.sum(axis=1) - 1  # the true image itself is always counted once


def recall_at(ranks: np.ndarray, k: int) -> float:
    """% of queries whose correct item is within the top k."""
    return 100.0 * float(np.mean(ranks < k))


def retrieval_metrics(
    scores_i2t: np.ndarray | torch.Tensor,
    txt2img: Sequence[int],
    img2txt: Sequence[Sequence[int]] | None = None,
    scores_t2i: np.ndarray | torch.Tensor | None = None,
) -> dict[str, float]:
    """{tr_r1, tr_r5, tr_r10, ir_r1, ir_r5, ir_r10, r_mean} in % from `scores_i2t [n_images, n_texts]`.

    `txt2img[j]` = the image of caption j; `img2txt[i]` = captions of image i
    (derived from `txt2img` when not given; must agree with it when given).
    `scores_t2i [n_texts, n_images]` ranks images for image retrieval when the two
    directions were scored separately (ITM re-ranking); default `scores_i2t.T`.
    """
    scores = _as_numpy(scores_i2t)
    if scores.ndim != 2 or scores.shape[1] != len(txt2img):
        raise ValueError(f"scores_i2t has shape {scores.shape}; expected [n_images, {len(txt2img)}]")
    derived = captions_per_image(txt2img, scores.shape[0])
    if img2txt is not None and [sorted(c) for c in img2txt] != derived:
        raise ValueError("img2txt and txt2img disagree about which captions belong to which image")
    t2i = scores.T if scores_t2i is None else _as_numpy(scores_t2i)
    if t2i.shape != scores.T.shape:
        raise ValueError(f"scores_t2i has shape {t2i.shape}; expected {scores.T.shape}")
    tr_ranks = text_retrieval_ranks(scores, derived)
    ir_ranks = image_retrieval_ranks(t2i.T, txt2img)
    metrics = {f"tr_r{k}": recall_at(tr_ranks, k) for k in RECALL_AT}
    metrics |= {f"ir_r{k}": recall_at(ir_ranks, k) for k in RECALL_AT}
    metrics["r_mean"] = float(np.mean([metrics[key] for key in METRIC_KEYS[:-1]]))
    return metrics
