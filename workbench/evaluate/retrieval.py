"""Image–text and video–text retrieval on a held-out split (ALBEF's recipe).

Every image and caption is encoded once. With ITC: the cosine similarity of every
pair (`eval/<task>_itc/*`), then each row's top `eval.rerank_k` candidates re-scored
by the ITM match logit of a fusion pass, the rest -100 (`eval/<task>/*`); text and
image retrieval are re-ranked separately, as in ALBEF. Without ITM (or with
`rerank_k = 0`) `eval/<task>/*` is the ITC ranking. Without ITC every pair is
scored by ITM. Ranking and ties: `retrieval_metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from workbench.config import ConfigError, RunConfig
from workbench.device import autocast, autocast_dtype
from workbench.evaluate.references import task_references
from workbench.evaluate.rerank import rerank_rows, score_all_pairs
from workbench.evaluate.retrieval_metrics import retrieval_metrics

METRIC_PREFIX = {"retrieval": "eval/retrieval", "video_retrieval": "eval/video_retrieval"}


@dataclass
class Encoded:
    """Uni-modal encodings of a whole retrieval split (kept for the fusion passes)."""

    image_tokens: Tensor  # [n_images, S, Dv]
    frame_cls_positions: Tensor  # [T]
    image_cls: Tensor  # [n_images, Dv]
    text_tokens: Tensor  # [n_texts, L, Dt]
    text_mask: Tensor  # [n_texts, L]
    text_cls: Tensor  # [n_texts, Dt]


def built_objective(objectives: nn.Module, name: str) -> nn.Module | None:
    """The built objective `name` (its heads serve retrieval), or None when it is off."""
    return getattr(objectives, name) if name in getattr(objectives, "built", ()) else None


@torch.no_grad()
def encode_split(model: nn.Module, dataset, tokenizer, cfg: RunConfig, device: torch.device) -> Encoded:
    from workbench.data import tokenize

    dtype = autocast_dtype(cfg.train, device)
    size = cfg.eval.batch_size
    image_tokens, image_cls, frame_cls_positions = [], [], None
    loader = DataLoader(dataset, batch_size=size, shuffle=False, collate_fn=_images_only,
                        num_workers=cfg.data.num_workers)
    for images in loader:
        with autocast(device, dtype):
            out = model.encode_image(images.to(device))
        image_tokens.append(out["image_tokens"])
        image_cls.append(out["image_cls"])
        frame_cls_positions = out["frame_cls_positions"]
    # one padding length for all captions, so any caption can join any fusion batch
    texts = tokenize(tokenizer, dataset.texts, cfg.data.max_text_len)
    text_ids, text_mask = texts["text_ids"].to(device), texts["text_mask"].to(device)
    text_tokens, text_cls = [], []
    for start in range(0, len(text_ids), size):
        with autocast(device, dtype):
            out = model.encode_text(text_ids[start : start + size], text_mask[start : start + size])
        text_tokens.append(out["text_tokens"])
        text_cls.append(out["text_cls"])
    return Encoded(torch.cat(image_tokens), frame_cls_positions, torch.cat(image_cls),
                   torch.cat(text_tokens), text_mask, torch.cat(text_cls))


def _images_only(samples: list[dict]) -> Tensor:
    return torch.stack([sample["image"] for sample in samples])


def itm_pair_scorer(model: nn.Module, itm: nn.Module, enc: Encoded, cfg: RunConfig, device: torch.device):
    """(image_index, text_index) -> ITM match logits [P], one batched fusion pass."""
    dtype = autocast_dtype(cfg.train, device)

    @torch.no_grad()
    def score(image_index: Tensor, text_index: Tensor) -> Tensor:
        image_index, text_index = image_index.to(device), text_index.to(device)
        with autocast(device, dtype):
            fused = model.fuse(enc.image_tokens[image_index], enc.text_tokens[text_index],
                               enc.text_mask[text_index], enc.frame_cls_positions)
            return itm.match_logit(fused["joint"]).float()

    return score


@torch.no_grad()
def itc_similarity(itc: nn.Module, enc: Encoded) -> Tensor:
    """[n_images, n_texts] cosine similarity of the ITC embeddings."""
    image_embed = itc.image_embed(enc.image_cls.float())
    text_embed = itc.text_embed(enc.text_cls.float())
    return (image_embed @ text_embed.t()).float().cpu()


def retrieval_scores(
    model: nn.Module, objectives: nn.Module, dataset, tokenizer, cfg: RunConfig, device: torch.device
) -> dict[str, tuple[Tensor, Tensor]]:
    """{"itc": (i2t, t2i), "final": (i2t, t2i)} score matrices ("itc" only when ITC is built)."""
    itc, itm = built_objective(objectives, "itc"), built_objective(objectives, "itm")
    if itc is None and itm is None:
        raise ConfigError(
            "eval.tasks: retrieval needs objectives.itc or objectives.itm enabled with weight > 0 "
            "— enable one, or drop retrieval/video_retrieval from eval.tasks"
        )
    enc = encode_split(model, dataset, tokenizer, cfg, device)
    size = cfg.eval.batch_size
    if itc is None:
        scores = score_all_pairs(len(dataset), len(dataset.texts), itm_pair_scorer(model, itm, enc, cfg, device), size)
        return {"final": (scores, scores.t())}
    similarity = itc_similarity(itc, enc)
    out = {"itc": (similarity, similarity.t())}
    if itm is None or cfg.eval.rerank_k == 0:
        out["final"] = out["itc"]
        return out
    scorer = itm_pair_scorer(model, itm, enc, cfg, device)
    k = cfg.eval.rerank_k
    out["final"] = (
        rerank_rows(similarity, k, scorer, size, rows_are_images=True),
        rerank_rows(similarity.t(), k, scorer, size, rows_are_images=False),
    )
    return out


def evaluate_retrieval(
    model: nn.Module, objectives: nn.Module, cfg: RunConfig, tokenizer, device: torch.device, task: str = "retrieval"
) -> dict[str, float]:
    """`eval/<task>/*` (re-ranked), with ITC `eval/<task>_itc/*` (ITC only), and the
    split's chance levels `eval/<task>/chance_*`, in %."""
    from workbench.data import task_dataset

    dataset, _ = task_dataset(cfg, tokenizer, task, cfg.eval.split)
    scores = retrieval_scores(model, objectives, dataset, tokenizer, cfg, device)
    prefix = METRIC_PREFIX[task]
    metrics: dict[str, float] = {}
    for name, (i2t, t2i) in scores.items():
        where = prefix if name == "final" else f"{prefix}_itc"
        for key, value in retrieval_metrics(
            i2t, dataset.txt2img, dataset.img2txt, scores_t2i=t2i, texts=dataset.texts
        ).items():
            metrics[f"{where}/{key}"] = value
    metrics.update(task_references(task, cfg, dataset))
    return metrics
