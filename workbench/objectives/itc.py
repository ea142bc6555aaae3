"""ITC: image-text contrastive loss on the uni-modal CLS features (ALBEF / SCL).

Captions of the same ``image_id`` are positives of each other (ALBEF's ``idx``
targets), and so are pairs whose captions are the same string (``caption_id``:
a generic caption written for two images is true of both): the target mass of a
row is spread evenly over its positives, so a batch holding two captions of one
image, or one caption of two images, does not push them apart. Without
``image_id`` in the batch, the diagonal is the only positive. With the momentum
queue, queued entries match by ``image_id`` only.

Under DDP the embeddings of every rank are gathered with gradient, so each rank's
rows are contrasted with the whole global batch (ALBEF's ``all_gather_with_grad``);
``logits_i2t`` / ``logits_t2i`` stay this rank's [B, B] block, which is what ITM
draws its hard negatives from (local, as in ALBEF: a cross-rank negative would
need the other rank's token sequences).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench import distributed
from workbench.config import ITCConfig
from workbench.objectives.context import StepContext
from workbench.objectives.contrastive import focal_info_nce, positive_mask, positive_targets
from workbench.objectives.momentum import MomentumQueue
from workbench.objectives.projection import Projection
from workbench.objectives.spec import BuildInputs, ObjectiveSpec, term_metrics


def temperature_range() -> tuple[float, float]:
    """The clamp range of the learnable temperature = the allowed range of its config field."""
    meta = {f.name: f.metadata for f in dataclasses.fields(ITCConfig)}["temperature"]
    return meta["min"], meta["max"]


def batch_ids(batch: dict[str, Tensor]) -> Tensor:
    """``image_id`` when the batch has it, else one id per row (diagonal positives)."""
    if "image_id" in batch:
        return batch["image_id"]
    return torch.arange(batch["text_ids"].shape[0], device=batch["text_ids"].device)


def caption_ids(batch: dict[str, Tensor]) -> tuple[Tensor | None, Tensor | None]:
    """(this rank's caption-string ids, every rank's) or (None, None) when the batch has none."""
    if "caption_id" not in batch:
        return None, None
    ids = batch["caption_id"]
    return ids, (distributed.gather(ids) if distributed.is_active() else ids)


def batch_positive_mask(batch: dict[str, Tensor]) -> Tensor:
    """bool [B, B] of this rank's batch: same image or same caption string (ITM never samples these as negatives)."""
    ids = batch_ids(batch)
    captions = batch.get("caption_id")
    return positive_mask(ids, ids, captions, captions)


def global_batch_ids(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(this rank's ids, every rank's ids in rank order); one process: ``batch_ids`` twice."""
    ids = batch_ids(batch)
    if not distributed.is_active():
        return ids, ids
    if "image_id" in batch:
        return ids, distributed.gather(ids)
    offset = distributed.row_offset(ids.shape[0])  # row positions in the global batch
    return ids + offset, torch.arange(ids.shape[0] * distributed.world_size(), device=ids.device)


def positive_accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """Share of rows whose argmax lands on a positive (detached)."""
    hit = targets.detach().gather(1, logits.detach().argmax(dim=1, keepdim=True)) > 0
    return hit.float().mean()


class ITC(nn.Module):
    """Projections (optionally batch-normed, then L2 norm), learnable temperature and (focal) symmetric InfoNCE.

    With ``queue_size > 0`` (needs ``model``) the momentum encoder's queued features
    are extra negatives/positives and ``distill_alpha`` softens the targets (ALBEF).
    """

    names = ("itc",)

    def __init__(self, vision_width: int, text_width: int, cfg: ITCConfig, model: nn.Module | None = None) -> None:
        super().__init__()
        self.weight = cfg.weight
        self.focal_gamma = cfg.focal_gamma
        self.distill_alpha = cfg.distill_alpha
        self.image_proj = Projection(vision_width, cfg.embed_dim, batch_norm=cfg.batch_norm)
        self.text_proj = Projection(text_width, cfg.embed_dim, batch_norm=cfg.batch_norm)
        self.temperature = nn.Parameter(torch.tensor(float(cfg.temperature)))
        self.temperature_min, self.temperature_max = temperature_range()
        self.momentum: MomentumQueue | None = None
        if cfg.queue_size > 0:
            if model is None:
                raise ValueError("objectives.itc.queue_size > 0 copies the model: build_objectives(..., model=model)")
            self.momentum = MomentumQueue(
                model, self.image_proj, self.text_proj, queue_size=cfg.queue_size, momentum=cfg.momentum
            )

    def image_embed(self, image_cls: Tensor) -> Tensor:
        return F.normalize(self.image_proj(image_cls), dim=-1)

    def text_embed(self, text_cls: Tensor) -> Tensor:
        return F.normalize(self.text_proj(text_cls), dim=-1)

    def similarity(self, ctx: StepContext) -> dict[str, Tensor]:
        """In-batch logits (memoised per step; ITM's hard negatives read them too)."""
        return ctx.memo("itc", lambda: self._similarity(ctx))

    def _similarity(self, ctx: StepContext) -> dict[str, Tensor]:
        with torch.no_grad():  # ALBEF clamps in place before every use
            self.temperature.clamp_(self.temperature_min, self.temperature_max)
        image_embed = self.image_embed(ctx.image["image_cls"])
        text_embed = self.text_embed(ctx.text["text_cls"])
        if not distributed.is_active():
            logits = image_embed @ text_embed.t() / self.temperature
            return {
                "image_embed": image_embed,
                "text_embed": text_embed,
                "logits_i2t": logits,
                "logits_t2i": logits.t(),
                "logits_i2t_all": logits,
                "logits_t2i_all": logits.t(),
            }
        # rows: this rank's samples; columns: every rank's, in rank order
        logits_i2t_all = image_embed @ distributed.gather_with_grad(text_embed).t() / self.temperature
        logits_t2i_all = text_embed @ distributed.gather_with_grad(image_embed).t() / self.temperature
        offset = distributed.row_offset(image_embed.shape[0])
        local = slice(offset, offset + image_embed.shape[0])
        return {
            "image_embed": image_embed,
            "text_embed": text_embed,
            "logits_i2t": logits_i2t_all[:, local],
            "logits_t2i": logits_t2i_all[:, local],
            "logits_i2t_all": logits_i2t_all,
            "logits_t2i_all": logits_t2i_all,
        }

    def _with_queue(self, ctx: StepContext, sim: dict[str, Tensor], ids: Tensor, ids_all: Tensor) -> tuple[Tensor, ...]:
        """Logits against [momentum batch features (every rank's), queue], their distilled targets, the hard ones."""
        momentum = self.momentum
        momentum.update([ctx.model, self.image_proj, self.text_proj])
        image_m, text_m = momentum.encode(ctx.batch)
        image_m_all, text_m_all = distributed.gather(image_m), distributed.gather(text_m)
        image_all = torch.cat([image_m_all, momentum.image_queue.clone()])
        text_all = torch.cat([text_m_all, momentum.text_queue.clone()])
        captions, captions_all = caption_ids(ctx.batch)
        targets = positive_targets(ids, torch.cat([ids_all, momentum.id_queue]), captions, captions_all)
        temperature = self.temperature
        logits_i2t = sim["image_embed"] @ text_all.t() / temperature
        logits_t2i = sim["text_embed"] @ image_all.t() / temperature
        with torch.no_grad():
            alpha = self.distill_alpha
            targets_i2t = alpha * F.softmax(image_m @ text_all.t() / temperature, dim=1) + (1 - alpha) * targets
            targets_t2i = alpha * F.softmax(text_m @ image_all.t() / temperature, dim=1) + (1 - alpha) * targets
        momentum.enqueue(image_m_all, text_m_all, ids_all)  # the same on every rank
        return logits_i2t, logits_t2i, targets_i2t, targets_t2i, targets

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        sim = self.similarity(ctx)
        ids, ids_all = global_batch_ids(ctx.batch)
        if self.momentum is None:
            positives = positive_targets(ids, ids_all, *caption_ids(ctx.batch))
            logits_i2t, logits_t2i = sim["logits_i2t_all"], sim["logits_t2i_all"]
            targets_i2t = targets_t2i = positives
        else:
            logits_i2t, logits_t2i, targets_i2t, targets_t2i, positives = self._with_queue(ctx, sim, ids, ids_all)
        loss_i2t = focal_info_nce(logits_i2t, targets_i2t, self.focal_gamma)
        loss_t2i = focal_info_nce(logits_t2i, targets_t2i, self.focal_gamma)
        accuracy = (positive_accuracy(logits_i2t, positives) + positive_accuracy(logits_t2i, positives)) / 2
        return {
            "itc_loss": (loss_i2t + loss_t2i) / 2,
            "itc_acc": accuracy,
            "itc_temperature": self.temperature.detach().clone(),
        }


def build(cfg: ITCConfig, inputs: BuildInputs) -> ITC:
    return ITC(inputs.dims["vision_width"], inputs.dims["text_width"], cfg, inputs.model)


SPEC = ObjectiveSpec(  # reads the uni-modal CLS features: no fusion pass
    "itc", build=build, metrics=lambda cfg: term_metrics("itc", "acc", "temperature")
)
