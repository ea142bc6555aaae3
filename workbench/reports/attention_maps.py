"""Rebuild a trained run from MLflow and compute its per-word attention maps.

A run is rebuilt from its `config.yaml` artifact and its last checkpoint by
`recorded_run` (as `workbench eval` rebuilds it: local `train.out_dir/<run_id>/`
first, else the MLflow artifact, read in place from a local store). Maps reuse
the evaluation code: `cross_attention_maps` (text->image attention, last fusion
layer, max over heads: SCL's figures) and SoftMask's word-conditional Grad-CAM
(`itm_grad_cam` + `word_cam`, fusion layer `objectives.softmask.layer`). Scores
use `in_object_share`, the definition behind `eval/attention/in_object`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench import recorded_run, tracking
from workbench import tags as tag
from workbench.config import RunConfig
from workbench.data import task_dataset, tokenize
from workbench.errors import ConfigError
from workbench.evaluate.attention import cross_attention_maps, in_object_share, patch_grid, single_object_pairs
from workbench.objectives import special_ids_of
from workbench.objectives.softmask import itm_grad_cam, word_cam
from workbench.reports.store import quiet_downloads


@dataclass
class LoadedRun:
    run_id: str
    cfg: RunConfig
    model: torch.nn.Module
    objectives: torch.nn.Module
    tokenizer: object
    logged_in_object: float | None  # the run's eval/attention/in_object, when it logged one
    name: str = ""  # how a reader knows the run: 'baseline/seed0' for a sweep child, else 'run 1a2b3c4d'


def run_name(run_id: str, tags: dict[str, str]) -> str:
    """'<variant>/seed<seed>' for a sweep's child run (tags workbench.variant/seed), else 'run <id[:8]>'."""
    variant, seed = tags.get(tag.VARIANT), tags.get(tag.SEED)
    if variant and seed is not None:
        return f"{variant}/seed{seed}"
    return f"run {run_id[:8]}"


def load_run(run_id: str, tracking_uri: str = "") -> LoadedRun:
    """Model + objectives of a finished run, in eval mode on CPU (restored as `workbench eval` restores it)."""
    client = tracking.client(tracking_uri)
    try:
        run = client.get_run(run_id)
    except Exception:
        raise ConfigError(f"RUN_ID {run_id!r}: no such run in {tracking.resolve_uri(tracking_uri)}") from None
    tracking.refuse_if_pruned(run, "RUN_ID")
    with quiet_downloads():
        cfg = recorded_run.load_run_config(run_id, tracking_uri)
        rebuilt = recorded_run.rebuild(run_id, cfg, torch.device("cpu"))
    model, objectives = rebuilt.pretrainer.model, rebuilt.pretrainer.objectives
    model.eval()
    objectives.eval()
    return LoadedRun(
        run_id,
        cfg,
        model,
        objectives,
        rebuilt.tokenizer,
        run.data.metrics.get("eval/attention/in_object"),
        run_name(run_id, run.data.tags),
    )


@dataclass
class HeldOut:
    """`n` held-out images with a caption naming one object, and that object's mask."""

    images: torch.Tensor  # float [n, T, 3, H, W], normalised as the model saw them
    captions: list[str]
    objects: list[dict]  # the named object's record (shape, color, ...)
    masks: torch.Tensor  # bool [n, H, W]
    image_ids: list[int]


def held_out(loaded: LoadedRun, n: int) -> HeldOut:
    """The first `n` images of `eval.split` whose caption names one object (the score's images)."""
    dataset, _ = task_dataset(loaded.cfg, loaded.tokenizer, "retrieval", loaded.cfg.eval.split)
    pairs = single_object_pairs(dataset, n)
    if not pairs:
        raise ConfigError(
            f"run {loaded.run_id}: no held-out image of data.root={loaded.cfg.data.root} has object masks "
            "and a caption naming one object (attention figures need ShapesWorld-style `objects`)"
        )
    return HeldOut(
        images=torch.stack([dataset[i]["image"] for i, _, _ in pairs]),
        captions=[dataset.texts[t] for _, t, _ in pairs],
        objects=[dataset.objects[i][k] for i, _, k in pairs],
        masks=torch.stack([dataset.masks(i)[k] for i, _, k in pairs]).bool(),
        image_ids=[i for i, _, _ in pairs],
    )


@dataclass
class WordMaps:
    """Per word of one caption: maps [W, T, h, w] over each frame's patch grid."""

    words: list[str]
    positions: list[int]  # token positions of the words
    cross: torch.Tensor  # text->image cross-attention (raw probabilities)
    gradcam: torch.Tensor | None  # word-conditional Grad-CAM in [0, 1]; None without ITM


def _tokens(loaded: LoadedRun, caption: str) -> tuple[dict[str, torch.Tensor], list[int], list[str]]:
    text = tokenize(loaded.tokenizer, [caption], loaded.cfg.data.max_text_len)
    ids = text["text_ids"][0].tolist()
    specials = set(special_ids_of(loaded.tokenizer).values())
    positions = [
        p
        for p, (token, on) in enumerate(zip(ids, text["text_mask"][0].tolist(), strict=True))
        if on and token not in specials
    ]
    return text, positions, loaded.tokenizer.convert_ids_to_tokens([ids[p] for p in positions])


def word_batch(
    loaded: LoadedRun, image: torch.Tensor, caption: str
) -> tuple[dict[str, torch.Tensor], list[int], list[str]]:
    """The pair repeated once per word: batch row w asks about word w."""
    text, positions, words = _tokens(loaded, caption)
    rows = max(1, len(positions))
    batch = {
        "image": image[None].expand(rows, *image.shape),
        "text_ids": text["text_ids"].expand(rows, -1),
        "text_mask": text["text_mask"].expand(rows, -1),
    }
    return batch, positions, words


def gradcam_maps(loaded: LoadedRun, batch: dict[str, torch.Tensor], positions: torch.Tensor) -> torch.Tensor | None:
    """SoftMask's word-conditional Grad-CAM of row `positions[b]` of each batch row: [B, T, h, w]."""
    itm = getattr(loaded.objectives, "itm", None)
    if itm is None:
        return None
    model = loaded.model
    with torch.enable_grad():
        image = model.encode_image(batch["image"])
        text = model.encode_text(batch["text_ids"], batch["text_mask"])
        fused = model.fuse(
            image["image_tokens"],
            text["text_tokens"],
            batch["text_mask"],
            image["frame_cls_positions"],
            return_attention=True,
        )
        cam = itm_grad_cam(fused, itm.match_logit, loaded.cfg.objectives.softmask.layer)
    per_patch = word_cam(cam, positions, image["patch_positions"])
    return patch_grid(per_patch, frames=len(image["frame_cls_positions"]))


def word_maps(loaded: LoadedRun, image: torch.Tensor, caption: str) -> WordMaps:
    """Cross-attention and Grad-CAM for every word of `caption` on `image` ([T, 3, H, W])."""
    batch, positions, words = word_batch(loaded, image, caption)
    query = torch.tensor(positions or [0])
    cross = cross_attention_maps(loaded.model, batch, layer=-1, reduce="max", query_position=query)
    return WordMaps(words, positions, cross, gradcam_maps(loaded, batch, query))


def object_word_rows(words: list[str], obj: dict) -> list[int]:
    """Rows of the words that name the object (its shape or colour word)."""
    return [i for i, word in enumerate(words) if word in (obj.get("shape"), obj.get("color"))]


def cls_maps(loaded: LoadedRun, data: HeldOut) -> torch.Tensor:
    """[CLS]-query cross-attention [n, T, h, w] of each held-out pair (the eval score's maps)."""
    text = tokenize(loaded.tokenizer, data.captions, loaded.cfg.data.max_text_len)
    return cross_attention_maps(loaded.model, {"image": data.images, **text}, layer=-1, reduce="max")


def in_object_scores(data: HeldOut, cls: torch.Tensor, maps: list[WordMaps]) -> dict[str, float]:
    """Share of attention mass inside the named object, averaged over the images:
    `cls_cross` = [CLS] query (eval/attention/in_object's definition, on these images),
    `word_cross` / `word_gradcam` = the object's own words (`maps`: one per image, or none for [CLS] only)."""
    scores = {"cls_cross": float(in_object_share(cls, data.masks[:, None]).mean())}
    for name in ("cross", "gradcam"):
        shares = []
        for word_map, obj, mask in zip(maps, data.objects, data.masks, strict=bool(maps)):
            rows = object_word_rows(word_map.words, obj)
            chosen = getattr(word_map, name)
            if rows and chosen is not None:
                shares.append(in_object_share(chosen[rows], mask[None, None]).mean())
        scores[f"word_{name}"] = float(torch.stack(shares).mean()) if shares else float("nan")
    return scores
