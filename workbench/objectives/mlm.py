"""MLM: the fused text stream predicts masked caption tokens (BERT recipe).

``mask_prob`` of the real tokens are chosen (independently per token); of those
80 % become [MASK], 10 % a random vocabulary id, 10 % stay as they are. Special
tokens and padding are never chosen. The head (dense -> GELU -> LayerNorm ->
decoder) is *not* tied to the word embeddings: it reads the fusion width, which
need not equal the text encoder's, and the head stays a self-contained module.

With ``mlm.reuse_mlsc_pass`` MLM predicts the tokens of the MLSC masked-text pass
instead of running its own: one fusion pass fewer, but the masking then follows
MLSC (``scl.text_mask_ratio`` of the real tokens, an exact count per caption) with
the 80/10/10 split applied to it. The rule is the one cross-objective rule of
``passes.py``; without MLSC, MLM runs its own pass.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from workbench.config import MLMConfig
from workbench.errors import ConfigError
from workbench.objectives.context import StepContext
from workbench.objectives.masking import BERT_SPLIT, IGNORE
from workbench.objectives.passes import MaskedTextPass, ReuseMaskedText
from workbench.objectives.spec import BuildInputs, ObjectiveSpec, term_metrics

OWN_PASS = "mlm"  # BERT-masked caption x clean image


class MLMHead(nn.Sequential):
    """BERT's prediction head: dense -> GELU -> LayerNorm -> vocabulary logits."""

    def __init__(self, width: int, vocab_size: int) -> None:
        super().__init__(nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width), nn.Linear(width, vocab_size))


def masked_lm_loss(head: nn.Module, fused_text: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(mean CE over predicted positions, accuracy); 0 (still in the graph) when none is masked."""
    chosen = labels != IGNORE
    logits = head(fused_text[chosen]).float()
    targets = labels[chosen]
    count = chosen.sum().clamp_min(1)
    loss = F.cross_entropy(logits, targets, reduction="sum") / count
    accuracy = (logits.detach().argmax(dim=-1) == targets).float().sum() / count
    return loss, accuracy


class MLM(nn.Module):
    names = ("mlm",)

    def __init__(self, fusion_width: int, vocab_size: int, *, weight: float, pass_name: str) -> None:
        super().__init__()
        self.weight = weight
        self.pass_name = pass_name  # OWN_PASS, or "masked_text" when it reads the MLSC pass
        self.head = MLMHead(fusion_width, vocab_size)

    def forward(self, ctx: StepContext) -> dict[str, Tensor]:
        fused = ctx.pass_(self.pass_name)
        loss, accuracy = masked_lm_loss(self.head, fused["fused_text"], fused["mlm_labels"])
        return {"mlm_loss": loss, "mlm_acc": accuracy}


def passes(cfg: MLMConfig, inputs: BuildInputs) -> dict[str, MaskedTextPass | ReuseMaskedText]:
    """MLM's own BERT-masked pass, or (``reuse_mlsc_pass``) a request to read MLSC's instead."""
    own = MaskedTextPass(
        cfg.mask_prob, exact=False, split=BERT_SPLIT, mask_id=inputs.mask_id, vocab_size=inputs.vocab_size
    )
    return {OWN_PASS: ReuseMaskedText(own) if cfg.reuse_mlsc_pass else own}


def build(cfg: MLMConfig, inputs: BuildInputs) -> MLM:
    return MLM(inputs.dims["fusion_width"], inputs.vocab_size, weight=cfg.weight, pass_name=inputs.pass_name(OWN_PASS))


def check(cfg: MLMConfig, inputs: BuildInputs) -> None:
    """A mask probability of 0 masks no token: the loss is exactly 0 and the term trains nothing."""
    if cfg.mask_prob == 0:
        raise ConfigError(
            "objectives.mlm.mask_prob: 0.0 with objectives.mlm.enabled=true masks no token (its loss is exactly 0); "
            "give a value in (0, 1) or set objectives.mlm.enabled=false"
        )


SPEC = ObjectiveSpec("mlm", build=build, passes=passes, check=check, metrics=lambda cfg: term_metrics("mlm", "acc"))
