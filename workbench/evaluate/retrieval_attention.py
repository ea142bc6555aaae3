"""`eval/attention/in_object` from the retrieval split's encodings, not a second pass over it.

Same score as `attention.attention_in_object` (fused text CLS of a caption naming one
object -> last fusion layer's attention, max over heads, share inside the object's
mask), but the images and captions were already encoded by the retrieval task: only
the fusion passes of the chosen pairs run here, and no image is read twice.
"""

from __future__ import annotations

import torch
from torch import nn

from workbench.device import autocast, autocast_dtype
from workbench.evaluate.attention import HEAD_REDUCTIONS, in_object_share, patch_grid, single_object_pairs


@torch.no_grad()
def attention_in_object_encoded(
    model: nn.Module, dataset, enc, cfg, device: torch.device, n: int | None = None
) -> dict[str, float]:
    """{"eval/attention/in_object": mean share} from `enc` (retrieval.Encoded of `dataset`); {} without masks."""
    pairs = single_object_pairs(dataset, n)
    if not pairs or enc.patch_positions is None:
        return {}
    dtype = autocast_dtype(cfg.train, device)
    frames = len(enc.frame_cls_positions)
    shares = []
    for start in range(0, len(pairs), cfg.eval.batch_size):
        chunk = pairs[start : start + cfg.eval.batch_size]
        images = torch.tensor([i for i, _, _ in chunk], device=enc.image_tokens.device)
        texts = torch.tensor([t for _, t, _ in chunk], device=enc.text_tokens.device)
        with autocast(device, dtype):
            fused = model.fuse(
                enc.image_tokens[images],
                enc.text_tokens[texts],
                enc.text_mask[texts],
                enc.frame_cls_positions,
                return_attention=True,
            )
        per_head = HEAD_REDUCTIONS["max"](fused["cross_attn"][-1])  # [B, L, S]
        maps = patch_grid(per_head[:, 0][:, enc.patch_positions].float(), frames=frames)  # text CLS row
        masks = torch.stack([dataset.masks(i)[k] for i, _, k in chunk]).bool()  # [B, H, W]
        shares.append(in_object_share(maps, masks[:, None]).mean(dim=1).cpu())  # mean over frames
    return {"eval/attention/in_object": float(torch.cat(shares).mean())}
