"""Image–text and video–text retrieval on a held-out split (ALBEF's recipe).

Every image and caption is encoded once. With ITC: the cosine similarity of every
pair (`eval/<task>_itc/*`), then each row's top `eval.rerank_k` candidates re-scored
by the ITM match logit of a fusion pass, the rest -100 (`eval/<task>/*`); text and
image retrieval are re-ranked separately, as in ALBEF. Without ITM (or with
`rerank_k = 0`) `eval/<task>/*` is the ITC ranking and `eval/<task>_itc/*` is not
logged (it would repeat it). Without ITC every pair is
scored by ITM. Ranking and ties: `retrieval_metrics`.

`eval.rerank_score` says what a candidate's score adds to its ITM logit:
* `itm` (ALBEF): nothing -- ITM alone orders the top k;
* `itm+itc` (BLIP): the ITC cosine, in [-1, 1], a tie-breaker beside logits of a few units;
* `itm+itc_logit`: ITC's own logit, cosine / temperature, the score ITC was trained to
  rank with. Both terms are then logits of a head trained on the pairs, so the sum is a
  product of the two heads' odds: a weak ITM refines ITC's order instead of replacing it
  (README "What the embedded benchmark shows": at `base`, ITM alone ranks far below ITC,
  the logit sum above it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from workbench.config import RunConfig
from workbench.device import autocast, autocast_dtype
from workbench.errors import ConfigError
from workbench.evaluate.references import task_references
from workbench.evaluate.rerank import rerank_rows, score_all_pairs
from workbench.evaluate.retrieval_metrics import retrieval_metrics
from workbench.progress import current as current_phase

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
    patch_positions: Tensor | None = None  # [T*N] positions of patch tokens in image_tokens


def built_objective(objectives: nn.Module, name: str) -> nn.Module | None:
    """The built objective `name` (its heads serve retrieval), or None when it is off."""
    return getattr(objectives, name) if name in getattr(objectives, "built", ()) else None


@torch.no_grad()
def encode_split(model: nn.Module, dataset, tokenizer, cfg: RunConfig, device: torch.device) -> Encoded:
    from workbench.data import tokenize

    dtype = autocast_dtype(cfg.train, device)
    size = cfg.eval.batch_size
    image_tokens, image_cls, frame_cls_positions, patch_positions = [], [], None, None
    loader = DataLoader(
        dataset, batch_size=size, shuffle=False, collate_fn=_images_only, num_workers=cfg.data.num_workers
    )
    for images in loader:
        with autocast(device, dtype):
            out = model.encode_image(images.to(device))
        image_tokens.append(out["image_tokens"])
        image_cls.append(out["image_cls"])
        frame_cls_positions, patch_positions = out["frame_cls_positions"], out.get("patch_positions")
        _tick()
    # one padding length for all captions, so any caption can join any fusion batch
    texts = tokenize(tokenizer, dataset.texts, cfg.data.max_text_len)
    text_ids, text_mask = texts["text_ids"].to(device), texts["text_mask"].to(device)
    text_tokens, text_cls = [], []
    for start in range(0, len(text_ids), size):
        with autocast(device, dtype):
            out = model.encode_text(text_ids[start : start + size], text_mask[start : start + size])
        text_tokens.append(out["text_tokens"])
        text_cls.append(out["text_cls"])
        _tick()
    return Encoded(
        torch.cat(image_tokens),
        frame_cls_positions,
        torch.cat(image_cls),
        torch.cat(text_tokens),
        text_mask,
        torch.cat(text_cls),
        patch_positions,
    )


def _images_only(samples: list[dict]) -> Tensor:
    return torch.stack([sample["image"] for sample in samples])


def itm_pair_scorer(model: nn.Module, itm: nn.Module, enc: Encoded, cfg: RunConfig, device: torch.device):
    """(image_index, text_index) -> ITM match logits [P], one batched fusion pass."""
    dtype = autocast_dtype(cfg.train, device)

    @torch.no_grad()
    def score(image_index: Tensor, text_index: Tensor) -> Tensor:
        image_index, text_index = image_index.to(device), text_index.to(device)
        with autocast(device, dtype):
            fused = model.fuse(
                enc.image_tokens[image_index],
                enc.text_tokens[text_index],
                enc.text_mask[text_index],
                enc.frame_cls_positions,
                pooled_only=True,
            )
            logits = itm.match_logit(fused["joint"]).float()
        _tick()
        return logits

    return score


def _tick() -> None:
    """One batch done, on the running phase's bar (if any)."""
    phase = current_phase()
    if phase is not None:
        phase.advance()


def _batches(n: int, size: int) -> int:
    return -(-n // size)


def _count_batches(n_images: int, n_texts: int, size: int, *, itc: bool, itm: bool, rerank_k: int) -> int:
    """Encoding batches + fusion batches of one retrieval evaluation (the length of its bar)."""
    total = _batches(n_images, size) + _batches(n_texts, size)
    if not itc:
        return total + _batches(n_images * n_texts, size)
    if itm and rerank_k:
        total += _batches(n_images * min(rerank_k, n_texts), size) + _batches(n_texts * min(rerank_k, n_images), size)
    return total


@torch.no_grad()
def itc_similarity(itc: nn.Module, enc: Encoded) -> Tensor:
    """[n_images, n_texts] cosine similarity of the ITC embeddings."""
    image_embed = itc.image_embed(enc.image_cls.float())
    text_embed = itc.text_embed(enc.text_cls.float())
    return (image_embed @ text_embed.t()).float().cpu()


def retrieval_scores(
    model: nn.Module,
    objectives: nn.Module,
    dataset,
    tokenizer,
    cfg: RunConfig,
    device: torch.device,
    keep: dict | None = None,
) -> dict[str, tuple[Tensor, Tensor]]:
    """{"itc": (i2t, t2i), "final": (i2t, t2i)} score matrices ("itc" only when ITC is built).
    `keep` (a dict) receives the split's encodings under "encoded", for reuse by later scores."""
    itc, itm = built_objective(objectives, "itc"), built_objective(objectives, "itm")
    if itc is None and itm is None:
        raise ConfigError(
            "eval.tasks: retrieval needs objectives.itc or objectives.itm enabled with weight > 0 "
            "— enable one, or drop retrieval/video_retrieval from eval.tasks"
        )
    size = cfg.eval.batch_size
    phase = current_phase()
    if phase is not None:
        phase.set_total(
            _count_batches(
                len(dataset),
                len(dataset.texts),
                size,
                itc=itc is not None,
                itm=itm is not None,
                rerank_k=cfg.eval.rerank_k,
            )
        )
    enc = encode_split(model, dataset, tokenizer, cfg, device)
    if keep is not None:
        keep["encoded"] = enc
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
    plus = cfg.eval.rerank_score != "itm"
    added = similarity / float(itc.temperature.detach()) if cfg.eval.rerank_score == "itm+itc_logit" else similarity
    out["final"] = (
        rerank_rows(added, k, scorer, size, rows_are_images=True, plus_similarity=plus),
        rerank_rows(added.t(), k, scorer, size, rows_are_images=False, plus_similarity=plus),
    )
    return out


def evaluate_retrieval(
    model: nn.Module,
    objectives: nn.Module,
    cfg: RunConfig,
    tokenizer,
    device: torch.device,
    task: str = "retrieval",
    keep: dict | None = None,
) -> dict[str, float]:
    """`eval/<task>/*` (re-ranked), the split's chance levels `eval/<task>/chance_*`, and, when
    re-ranking changed the ranking source, `eval/<task>_itc/*` (ITC only), in %. Without
    re-ranking both would be the same numbers: only `eval/<task>/*` is logged.

    `keep` (a dict) receives the split's data set and encodings ("dataset", "encoded"):
    the attention score reuses them instead of reading and encoding the split again.
    """
    from workbench.data import task_dataset

    dataset, _ = task_dataset(cfg, tokenizer, task, cfg.eval.split)
    if keep is not None:
        keep["dataset"] = dataset
    scores = retrieval_scores(model, objectives, dataset, tokenizer, cfg, device, keep=keep)
    prefix = METRIC_PREFIX[task]
    metrics: dict[str, float] = {}
    for name, (i2t, t2i) in scores.items():
        if name == "itc" and scores.get("final") is scores["itc"]:
            continue  # no re-ranking: `<task>_itc` would repeat `<task>` metric for metric
        where = prefix if name == "final" else f"{prefix}_itc"
        for key, value in retrieval_metrics(
            i2t, dataset.txt2img, dataset.img2txt, scores_t2i=t2i, texts=dataset.texts
        ).items():
            metrics[f"{where}/{key}"] = value
    metrics.update(task_references(task, cfg, dataset))
    return metrics
