"""Recall@K for image–text (or video–text) retrieval from one score matrix.

Ranks are 0-based: rank 0 = the correct item is first.

* Text retrieval (image query): rank of an image = best rank among its captions,
  i.e. the number of *wrong* captions scoring at least as high as its best caption.
* Image retrieval (caption query): rank of a caption = the number of wrong images
  scoring at least as high as its one image.

Shared captions: given the caption strings (`texts`), a caption is correct for
every image that has the same string among its captions (case and spacing
ignored). "there is one shape." written for three images is then a right answer
for each of them, and retrieving any of the three for it is right, instead of
the two others counting as wrong items ranked above the true one.

Ties are pessimistic: a wrong item with exactly the true item's score counts as
ranked above it, so a constant score matrix gets rank n-1 (not a lucky 0) and the
result never depends on sort stability. NaN scores count as -inf (a NaN true score
ranks below every wrong one). Without ties this equals ALBEF's argsort ranking.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from workbench.tasks import RETRIEVAL_METRICS

RECALL_AT = (1, 5, 10)
METRIC_KEYS = RETRIEVAL_METRICS  # spelled once, in tasks.py


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


def correct_pairs(txt2img: Sequence[int], n_images: int, texts: Sequence[str] | None = None) -> np.ndarray:
    """bool [n_images, n_texts]: caption j is a right answer for image i (its own image, or,
    with `texts`, any image that has the same caption string)."""
    from workbench.data.readers import caption_key

    correct = np.zeros((n_images, len(txt2img)), dtype=bool)
    correct[np.asarray(txt2img, dtype=np.int64), np.arange(len(txt2img))] = True
    if texts is None:
        return correct
    if len(texts) != len(txt2img):
        raise ValueError(f"texts has {len(texts)} captions; txt2img has {len(txt2img)}")
    images_of: dict[str, set[int]] = {}
    keys = [caption_key(text) for text in texts]
    for key, image_index in zip(keys, txt2img, strict=True):
        images_of.setdefault(key, set()).add(int(image_index))
    for text_index, key in enumerate(keys):
        correct[sorted(images_of[key]), text_index] = True
    return correct


def ranks_from_correct(scores: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """[rows] number of wrong columns scoring at least as high as the row's best correct column."""
    if not correct.any(axis=1).all():
        raise ValueError(f"row {int(np.flatnonzero(~correct.any(axis=1))[0])} has no correct item")
    best = np.where(correct, scores, -np.inf).max(axis=1)
    return np.count_nonzero((scores >= best[:, None]) & ~correct, axis=1)


def text_retrieval_ranks(scores_i2t: np.ndarray, img2txt: Sequence[Sequence[int]]) -> np.ndarray:
    """[n_images] rank of each image's best caption among all captions (pessimistic ties)."""
    ranks = np.empty(len(img2txt), dtype=np.int64)
    for image_index, (row, captions) in enumerate(zip(scores_i2t, img2txt, strict=True)):
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
    texts: Sequence[str] | None = None,
) -> dict[str, float]:
    """{tr_r1, tr_r5, tr_r10, ir_r1, ir_r5, ir_r10, r_mean} in % from `scores_i2t [n_images, n_texts]`.

    `txt2img[j]` = the image of caption j; `img2txt[i]` = captions of image i
    (derived from `txt2img` when not given; must agree with it when given).
    `scores_t2i [n_texts, n_images]` ranks images for image retrieval when the two
    directions were scored separately (ITM re-ranking); default `scores_i2t.T`.
    `texts[j]` = caption j's string: identical strings are right for all their images.
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
    if texts is None:
        tr_ranks = text_retrieval_ranks(scores, derived)
        ir_ranks = image_retrieval_ranks(t2i.T, txt2img)
    else:
        correct = correct_pairs(txt2img, scores.shape[0], texts)
        tr_ranks = ranks_from_correct(scores, correct)
        ir_ranks = ranks_from_correct(t2i, correct.T)
    metrics = {f"tr_r{k}": recall_at(tr_ranks, k) for k in RECALL_AT}
    metrics |= {f"ir_r{k}": recall_at(ir_ranks, k) for k in RECALL_AT}
    metrics["r_mean"] = float(np.mean([metrics[key] for key in METRIC_KEYS[:-1]]))
    return metrics
