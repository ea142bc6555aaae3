"""Text->image cross-attention maps and how much of their mass lands on the true object.

`cross_attention_maps` and `in_object_share` are small and pure so the report
figures reuse them; `attention_in_object` is the `eval/attention/in_object` score
on held-out ShapesWorld retrieval images (SCIENCE.md "Attention figures").
"""

from __future__ import annotations

import math
import re
from typing import Literal

import torch
import torch.nn.functional as F

HEAD_REDUCTIONS = {
    "max": lambda attn: attn.amax(dim=1),  # SCL's figures: max over heads
    "mean": lambda attn: attn.mean(dim=1),
}


def patch_grid(attn_to_patches: torch.Tensor, frames: int) -> torch.Tensor:
    """[B, T*N] attention over patch tokens (frame-major) -> [B, T, h, w] with h = w = sqrt(N)."""
    batch, total = attn_to_patches.shape
    side = math.isqrt(total // frames)
    if side * side * frames != total:
        raise ValueError(f"{total} patch tokens do not form {frames} square grid(s)")
    return attn_to_patches.reshape(batch, frames, side, side)


@torch.no_grad()
def cross_attention_maps(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    layer: int = -1,
    reduce: Literal["max", "mean"] = "max",
    query_position: int | torch.Tensor = 0,
) -> torch.Tensor:
    """Text->image attention of fusion layer `layer`, [B, T, h, w] over each frame's patches.

    The query is the fused text CLS (`query_position=0`) or a word position (an int
    for all samples or a long [B] tensor). Heads are reduced by `reduce`. The maps
    are the raw attention probabilities on patch tokens (CLS tokens left out, not
    renormalised), so maps of different runs stay comparable.
    """
    if reduce not in HEAD_REDUCTIONS:
        raise ValueError(f"reduce={reduce!r} is not one of {', '.join(HEAD_REDUCTIONS)}")
    image = model.encode_image(batch["image"])
    text = model.encode_text(batch["text_ids"], batch["text_mask"])
    fused = model.fuse(
        image["image_tokens"],
        text["text_tokens"],
        batch["text_mask"],
        image["frame_cls_positions"],
        return_attention=True,
    )
    attn = fused["cross_attn"][layer]  # [B, heads, L, S]
    per_head = HEAD_REDUCTIONS[reduce](attn)  # [B, L, S]
    rows = torch.as_tensor(query_position, device=per_head.device).expand(per_head.shape[0])
    query_rows = per_head[torch.arange(per_head.shape[0], device=per_head.device), rows]  # [B, S]
    on_patches = query_rows[:, image["patch_positions"]]
    return patch_grid(on_patches.float(), frames=len(image["frame_cls_positions"]))


def mask_on_patch_grid(object_mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Pixel mask [..., H, W] -> [..., h, w] fraction of each patch's area inside the object."""
    mask = object_mask.float()
    lead = mask.shape[:-2]
    pooled = F.adaptive_avg_pool2d(mask.reshape(-1, 1, *mask.shape[-2:]), grid)
    return pooled.reshape(*lead, *grid)


def in_object_share(patch_map: torch.Tensor, object_mask: torch.Tensor) -> torch.Tensor:
    """Share of attention mass inside the object: sum(map * area-in-object) / sum(map).

    `patch_map` [..., h, w] (non-negative), `object_mask` [..., H, W] boolean pixels,
    downsampled to the patch grid by area (a patch half inside counts half).
    Returns [...]; a map with no mass scores 0.
    """
    inside = mask_on_patch_grid(object_mask.to(patch_map.device), tuple(patch_map.shape[-2:]))
    total = patch_map.sum(dim=(-2, -1))
    mass_inside = (patch_map * inside).sum(dim=(-2, -1))
    return torch.where(total > 0, mass_inside / total.clamp_min(torch.finfo(total.dtype).tiny), 0.0)


def named_object(caption: str, objects: list[dict]) -> int | None:
    """Index of the one object `caption` names, or None when it names none or several.

    An object is named when its shape word occurs in the caption and so does its
    colour, unless the caption names no colour of the image at all ("the circle is
    on the left" names every circle; "a red circle and a blue circle" names two).
    """
    words = set(re.findall(r"[a-z]+", caption.lower()))
    colours_named = words & {o["color"] for o in objects}
    hits = [k for k, o in enumerate(objects) if o["shape"] in words and (not colours_named or o["color"] in words)]
    return hits[0] if len(hits) == 1 else None


def single_object_pairs(dataset, limit: int | None = None) -> list[tuple[int, int, int]]:
    """(image index, caption index, object index): per image its first caption naming one object."""
    pairs = []
    for image_index, objects in enumerate(dataset.objects):
        for text_index in dataset.img2txt[image_index] if objects else ():
            obj = named_object(dataset.texts[text_index], objects)
            if obj is not None:
                pairs.append((image_index, text_index, obj))
                break
        if limit is not None and len(pairs) >= limit:
            break
    return pairs


def object_word_positions(tokens: list[str], obj: dict) -> list[int]:
    """Token positions of the words naming `obj` (its shape and colour words)."""
    return [i for i, token in enumerate(tokens) if token in (obj.get("shape"), obj.get("color"))]


def gradcam_layer(cfg) -> int | None:
    """The fusion layer whose Grad-CAM is scored (`objectives.softmask.layer`), or None when it is
    the last layer (every word's Grad-CAM is zero there)."""
    layers = cfg.model.fusion.layers
    layer = cfg.objectives.softmask.layer
    if not -layers <= layer < layers or layer % layers == layers - 1:
        return None
    return layer


def gradcam_in_object(
    model: torch.nn.Module, itm: torch.nn.Module, cfg, tokenizer, device: torch.device, n: int | None = None
) -> dict[str, float]:
    """Does the word-conditional Grad-CAM (SoftMask's map) of an object word land on that object?

    Per held-out image (a caption naming one object): the in-object share of the Grad-CAM map
    of the object's shape and colour words (fusion layer `objectives.softmask.layer`, ITM match
    score), against the object's area fraction on the patch grid -- what a uniform map scores.
    `eval/attention/gradcam_in_object`, `eval/attention/object_area` (means) and
    `eval/attention/gradcam_beats_area` (share of images whose map beats the area). {} when
    there are no masks or the layer is the last one.
    """
    from workbench.data import task_dataset, tokenize
    from workbench.device import autocast_dtype

    layer = gradcam_layer(cfg)
    if layer is None:
        return {}
    dataset, _ = task_dataset(cfg, tokenizer, "retrieval", cfg.eval.split)
    pairs = single_object_pairs(dataset, n)
    dtype = autocast_dtype(cfg.train, device)
    shares, areas = [], []
    for start in range(0, len(pairs), cfg.eval.batch_size):
        chunk = pairs[start : start + cfg.eval.batch_size]
        text = tokenize(tokenizer, [dataset.texts[t] for _, t, _ in chunk], cfg.data.max_text_len)
        rows, words = [], []
        for row, (i, _, k) in enumerate(chunk):
            tokens = tokenizer.convert_ids_to_tokens(text["text_ids"][row].tolist())
            for position in object_word_positions(tokens, dataset.objects[i][k]):
                rows.append(row)
                words.append(position)
        if not rows:
            continue
        rows_t = torch.tensor(rows)
        batch = {
            "image": torch.stack([dataset[i]["image"] for i, _, _ in chunk])[rows_t].to(device),
            "text_ids": text["text_ids"][rows_t].to(device),
            "text_mask": text["text_mask"][rows_t].to(device),
        }
        maps = word_gradcam_maps(model, itm, batch, words, layer, dtype)
        masks = torch.stack([dataset.masks(chunk[r][0])[chunk[r][2]] for r in rows]).bool()[:, None]
        word_share = in_object_share(maps, masks).mean(dim=1).cpu()  # [W], mean over frames
        word_area = mask_on_patch_grid(masks, tuple(maps.shape[-2:])).mean(dim=(-3, -2, -1)).cpu()
        for row in sorted(set(rows)):  # one score per image: the mean over its object words
            chosen = rows_t == row
            shares.append(word_share[chosen].mean())
            areas.append(word_area[chosen][0])
    if not shares:
        return {}
    share, area = torch.stack(shares), torch.stack(areas)
    return {
        "eval/attention/gradcam_in_object": float(share.mean()),
        "eval/attention/object_area": float(area.mean()),
        # the same number as the share's reference (reports/references.py): what a uniform map scores
        "eval/attention/chance_gradcam_in_object": float(area.mean()),
        "eval/attention/gradcam_beats_area": float((share > area).float().mean()),
    }


def word_gradcam_maps(
    model: torch.nn.Module,
    itm: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    words: list[int],
    layer: int,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    """Grad-CAM of the ITM match score at fusion `layer` for word position `words[i]` of row i,
    on the patch grid: [rows, frames, grid, grid]."""
    from workbench.device import autocast
    from workbench.objectives.softmask import itm_grad_cam, word_cam

    device = batch["image"].device
    with torch.enable_grad(), autocast(device, dtype):
        image = model.encode_image(batch["image"])
        text = model.encode_text(batch["text_ids"], batch["text_mask"])
        fused = model.fuse(
            image["image_tokens"],
            text["text_tokens"],
            batch["text_mask"],
            image["frame_cls_positions"],
            return_attention=True,
        )
        cam = itm_grad_cam(fused, itm.match_logit, layer)
    per_patch = word_cam(cam, torch.tensor(words, device=device), image["patch_positions"])
    return patch_grid(per_patch, frames=len(image["frame_cls_positions"]))


def attention_in_object(
    model: torch.nn.Module, cfg, tokenizer, device: torch.device, n: int | None = None
) -> dict[str, float]:
    """{"eval/attention/in_object": mean share} over held-out retrieval images (`eval.split`).

    Query = fused text CLS of a caption that names a single object; map = last fusion
    layer, max over heads (SCL's figures). Uses the first `n` eligible images (None =
    all). Data without object masks (real data) yields {} — the score is undefined there.
    """
    from workbench.data import task_dataset, tokenize
    from workbench.device import autocast, autocast_dtype

    dataset, _ = task_dataset(cfg, tokenizer, "retrieval", cfg.eval.split)
    pairs = single_object_pairs(dataset, n)
    if not pairs:
        return {}
    dtype = autocast_dtype(cfg.train, device)
    shares = []
    for start in range(0, len(pairs), cfg.eval.batch_size):
        chunk = pairs[start : start + cfg.eval.batch_size]
        text = tokenize(tokenizer, [dataset.texts[t] for _, t, _ in chunk], cfg.data.max_text_len)
        batch = {
            "image": torch.stack([dataset[i]["image"] for i, _, _ in chunk]).to(device),
            "text_ids": text["text_ids"].to(device),
            "text_mask": text["text_mask"].to(device),
        }
        with autocast(device, dtype):
            maps = cross_attention_maps(model, batch, layer=-1, reduce="max")  # [B, T, h, w]
        masks = torch.stack([dataset.masks(i)[k] for i, _, k in chunk]).bool()  # [B, H, W]
        shares.append(in_object_share(maps, masks[:, None]).mean(dim=1).cpu())  # mean over frames
    return {"eval/attention/in_object": float(torch.cat(shares).mean())}
