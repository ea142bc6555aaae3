"""ALBEF's two-stage retrieval scoring: ITC similarity for all pairs, ITM for the top k.

`plus_similarity` is BLIP's variant: a candidate's score is its ITM logit plus its
ITC similarity, so a weak ITM refines ITC's order instead of replacing it.

Pure of any model: the caller passes `score_pairs(image_index, text_index) -> [P]`
(a batched fusion pass), so the selection logic is testable with a hand-made score.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

NOT_RERANKED = -100.0  # ALBEF's fill value for pairs outside the top k (below any ITM logit seen)

PairScorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _score_in_chunks(
    image_index: torch.Tensor, text_index: torch.Tensor, score_pairs: PairScorer, batch_size: int
) -> torch.Tensor:
    chunks = [
        score_pairs(image_index[start : start + batch_size], text_index[start : start + batch_size]).float()
        for start in range(0, len(image_index), batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.empty(0)


def rerank_rows(
    similarity: torch.Tensor,
    k: int,
    score_pairs: PairScorer,
    batch_size: int,
    *,
    rows_are_images: bool,
    plus_similarity: bool = False,
) -> torch.Tensor:
    """Each row's top-`k` columns of `similarity` re-scored by `score_pairs` (+ their similarity
    with `plus_similarity`); the rest -100.

    `similarity` is [n_images, n_texts] when `rows_are_images` else [n_texts, n_images];
    the result has the same shape and orientation. Ties in the top k go to the lower
    column index (torch.topk on CPU is stable for equal values only by luck, so
    candidates are chosen from a stable descending sort).
    """
    n_rows, n_cols = similarity.shape
    k = min(k, n_cols)
    order = torch.sort(similarity, dim=1, descending=True, stable=True).indices[:, :k]
    rows = torch.arange(n_rows).repeat_interleave(k)
    cols = order.reshape(-1).cpu()
    image_index, text_index = (rows, cols) if rows_are_images else (cols, rows)
    scores = _score_in_chunks(image_index, text_index, score_pairs, batch_size)
    out = torch.full((n_rows, n_cols), NOT_RERANKED)
    out[rows, cols] = scores.cpu() + (similarity[rows, cols].float().cpu() if plus_similarity else 0.0)
    return out


def score_all_pairs(n_images: int, n_texts: int, score_pairs: PairScorer, batch_size: int) -> torch.Tensor:
    """[n_images, n_texts] ITM scores of every pair (when there is no ITC to shortlist)."""
    image_index = torch.arange(n_images).repeat_interleave(n_texts)
    text_index = torch.arange(n_texts).repeat(n_images)
    return _score_in_chunks(image_index, text_index, score_pairs, batch_size).cpu().reshape(n_images, n_texts)
