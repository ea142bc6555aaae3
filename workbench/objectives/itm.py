"""ITM: does this image match this caption? A binary head on the fused joint feature.

Every pair gets one negative image and one negative caption, drawn from the batch
(loss = cross-entropy over 3B rows: B positives, 2B negatives). ``negatives``:

* ``hard`` (ALBEF): drawn from the in-batch ITC softmax, positives excluded, so
  similar-looking pairs are preferred. Needs ITC; when ITC is not built there is no
  aligned similarity to draw from (raw uni-modal CLS features live in unrelated
  spaces), so the draw falls back to ``random`` (the builder warns).
* ``hard`` with ``hard_mix`` h < 1: a draw is hard with probability h, else uniform
  (weights h * softmax + (1 - h) * uniform, each over the non-positives) -- the
  uniform share gives ITM a clean signal to leave its prior with while the hard share
  shows it ITC's near misses, the pairs re-ranking has to separate.
* ``random`` (SCL code style): uniform over the in-batch non-positives. SCL's code
  swaps in a random image for 50 % of the B rows; here the row layout is the same
  as ``hard`` so that the ablation changes only how negatives are drawn.

On ShapesWorld's generic training captions ("there are two shapes.") the ITC-hardest
"negative" is often a true match, so ``hard`` teaches ITM label noise exactly where it
looks; in the tiny configs ITM left its prior only with ``random`` negatives (README,
"uni-modal warm start").

With SoftMask's ``positive: itm_batch`` the B masked pairs join this batch as
positives (4B rows); see ``objectives/softmask.py`` for how the two forms weigh them.

"Positive" means same ``image_id`` when the batch has ids (another caption of the
same image is not a negative). A row with no non-positive in the batch takes any
other row.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from workbench.config import ITMConfig
from workbench.errors import ConfigError
from workbench.objectives.context import StepContext, multinomial_one
from workbench.objectives.itc import batch_ids, batch_positive_mask
from workbench.objectives.passes import CLEAN, CleanPass
from workbench.objectives.projection import GlobalBatchNorm
from workbench.objectives.spec import BuildInputs, ObjectiveSpec, term_metrics


def negative_weights(similarity: Tensor | None, ids: Tensor, hard_mix: float = 1.0) -> Tensor:
    """Sampling weights [B, B] for negatives: softmax(similarity) (or uniform), positives zeroed;
    with ``hard_mix`` < 1 the rows are distributions mixing the two (``hard_mix`` on the softmax).

    ``ids``: image ids [B] (same id = positive) or a positive mask bool [B, B]
    (``itc.batch_positive_mask``: same image or same caption string).
    Rows left with no mass (every other row shares the image) fall back to
    "any row but myself".
    """
    size = ids.shape[0]
    if size < 2:
        raise ConfigError("objectives.itm: a batch of 1 pair has no in-batch negative — use train.batch_size >= 2")
    positive = ids if ids.dim() == 2 else ids[:, None] == ids[None, :]
    if similarity is None:
        weights = torch.ones(size, size, device=ids.device)
    else:
        weights = F.softmax(similarity.detach().float(), dim=1)
    # diverged features (NaN/inf) must not crash sampling: the NaN then shows in the
    # losses, where the training loop names the step and the term
    weights = torch.nan_to_num(weights, nan=0.0, posinf=0.0, neginf=0.0).masked_fill(positive, 0.0)
    empty = weights.sum(dim=1) <= 0
    if empty.any():
        other = ~torch.eye(size, dtype=torch.bool, device=ids.device)
        weights[empty] = other[empty].float()
    if similarity is None or hard_mix >= 1.0:
        return weights
    uniform = negative_weights(None, ids)
    return hard_mix * weights / weights.sum(dim=1, keepdim=True) + (1 - hard_mix) * uniform / uniform.sum(
        dim=1, keepdim=True
    )


def sample_negatives(
    similarity: Tensor | None, ids: Tensor, generator: torch.Generator | None, hard_mix: float = 1.0
) -> Tensor:
    """One negative column per row: long [B]."""
    return multinomial_one(negative_weights(similarity, ids, hard_mix), generator)


def itm_targets(positives: int, negatives: int, device: torch.device) -> Tensor:
    return torch.cat(
        [
            torch.ones(positives, dtype=torch.long, device=device),
            torch.zeros(negatives, dtype=torch.long, device=device),
        ]
    )


class ITM(nn.Module):
    """The match head and its loss; ``match_logit`` serves retrieval re-ranking and Grad-CAM."""

    names = ("itm",)

    def __init__(
        self,
        joint_width: int,
        negatives: str,
        *,
        weight: float,
        product: bool = False,
        batch_norm: bool = False,
        hard_mix: float = 1.0,
    ) -> None:
        super().__init__()
        self.weight = weight
        self.negatives = negatives
        self.hard_mix = hard_mix
        self.product = product
        width = joint_width * 3 // 2 if product else joint_width
        self.norm = GlobalBatchNorm(width) if batch_norm else None
        self.head = nn.Linear(width, 2)

    def features(self, joint: Tensor) -> Tensor:
        """The head's input: ``joint`` = [text pooled, image pooled], with ``product`` also their
        elementwise product (ViLBERT's alignment head).

        Why the product: in an ITM batch every caption and every image occurs once in a
        positive and once in a negative pair, so any score that adds a text part and an image
        part carries no signal -- only text x image interactions do. From scratch the fusion's
        interactions start second-order small (near-uniform cross-attention), and ITM sits at
        its 1:2 prior (loss 0.64) for the whole budget; the product is a first-order interaction
        the head can learn from the first step.
        """
        if not self.product:
            return joint
        text, image = joint.chunk(2, dim=-1)
        return torch.cat([joint, text * image], dim=-1)

    def logits(self, joint: Tensor, batch_statistics: bool = False) -> Tensor:
        """[N, 2] (no match, match). With ``batch_norm`` the features are standardised by the
        running statistics, or -- ``batch_statistics``, ITM's own mixed batch in training -- by
        the batch's (which also updates the running ones). Other callers (SoftMask's masked
        positives, Grad-CAM, re-ranking) see only positives or single pairs: batch statistics
        of those would remove the very match signal, so they always use the running ones.
        """
        features = self.features(joint)
        if self.norm is not None:
            if batch_statistics and self.training:
                features = self.norm(features)
            else:
                features = F.batch_norm(
                    features, self.norm.running_mean, self.norm.running_var, training=False, eps=self.norm.eps
                )
        return self.head(features)

    def match_logit(self, joint: Tensor) -> Tensor:
        """The "match" class logit [N] (ALBEF ranks and explains with ``itm_head(x)[:, 1]``)."""
        return self.logits(joint)[:, 1]

    def _similarity(self, ctx: StepContext) -> tuple[Tensor | None, Tensor | None]:
        if self.negatives == "hard" and "itc" in ctx.modules:
            sim = ctx.modules["itc"].similarity(ctx)
            return sim["logits_i2t"], sim["logits_t2i"]
        return None, None

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        ids = batch_ids(ctx.batch)
        positives = batch_positive_mask(ctx.batch)
        sim_i2t, sim_t2i = self._similarity(ctx)
        negative_image = sample_negatives(sim_t2i, positives, ctx.generator, self.hard_mix)  # for each caption
        negative_text = sample_negatives(sim_i2t, positives, ctx.generator, self.hard_mix)  # for each image
        image_tokens = ctx.image["image_tokens"]
        text_tokens, text_mask = ctx.text["text_tokens"], ctx.batch["text_mask"]
        positive = ctx.pass_(CLEAN)
        negative = ctx.fuse(
            torch.cat([image_tokens[negative_image], image_tokens]),
            torch.cat([text_tokens, text_tokens[negative_text]]),
            torch.cat([text_mask, text_mask[negative_text]]),
        )
        joints = [positive["joint"], negative["joint"]]
        size = ids.shape[0]
        targets = itm_targets(size, 2 * size, ids.device)
        softmask = ctx.modules.get("softmask")
        masked = None
        if softmask is not None and softmask.in_itm_batch:  # SCIENCE.md: 3B rows + B masked positives
            masked = softmask.masked_pair(ctx)
            joints.append(masked["joint"])
            targets = torch.cat([targets, torch.ones(size, dtype=torch.long, device=ids.device)])
        logits = self.logits(torch.cat(joints), batch_statistics=True).float()
        right = logits.detach().argmax(dim=1) == targets
        out = {"itm_loss": F.cross_entropy(logits, targets), "itm_acc": right[: 3 * size].float().mean()}
        if masked is not None:
            out["itm_masked_acc"] = right[3 * size :].float().mean()
            out["itm_masked"] = masked["masked"]
        return out


def joint_width(dims: dict[str, int]) -> int:
    """Width of the fused ``joint`` feature: [text pooler, image pooler] concatenated."""
    return dims.get("joint_width", 2 * dims["fusion_width"])


def check(cfg: ITMConfig, inputs: BuildInputs) -> None:
    """Hard negatives are drawn from ITC's similarity: without ITC they are drawn uniformly.
    `hard_mix` mixes hard draws with uniform ones: with random negatives it would do nothing."""
    if cfg.hard_mix < 1.0 and cfg.negatives != "hard":
        raise ConfigError(
            f"objectives.itm.hard_mix={cfg.hard_mix} mixes hard negatives with uniform ones, but "
            f"objectives.itm.negatives={cfg.negatives} — set objectives.itm.negatives=hard, or leave hard_mix at 1.0"
        )
    if cfg.negatives == "hard" and "itc" not in inputs.on:
        warnings.warn(
            "objectives.itm.negatives=hard without ITC: negatives are drawn uniformly (as 'random')",
            stacklevel=4,  # the caller of build_objectives
        )


def passes(cfg: ITMConfig, inputs: BuildInputs) -> dict[str, CleanPass]:
    """The clean pass gives the positives; the 2B negative pairs are fused ad hoc in ``forward``."""
    return {CLEAN: CleanPass()}


def build(cfg: ITMConfig, inputs: BuildInputs) -> ITM:
    return ITM(
        joint_width(inputs.dims),
        cfg.negatives,
        weight=cfg.weight,
        product=cfg.product,
        batch_norm=cfg.batch_norm,
        hard_mix=cfg.hard_mix,
    )


SPEC = ObjectiveSpec(  # masked_acc, masked: with SoftMask's positive=itm_batch
    "itm",
    build=build,
    passes=passes,
    check=check,
    metrics=lambda cfg: term_metrics("itm", "acc", "masked_acc", "masked"),
)
