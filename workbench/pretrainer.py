"""The VLP model plus its objective modules: what is trained, checkpointed and evaluated.

Shared by training, evaluation and the attention reports, so a checkpoint is
always rebuilt exactly the way it was made (including the ITC momentum copy).
"""

from __future__ import annotations

import torch
from torch import nn

from workbench import warmstart
from workbench.config import RunConfig
from workbench.models import build_model
from workbench.objectives import build_objectives, special_ids_of
from workbench.objectives.content_words import content_token_ids


class Pretrainer(nn.Module):
    """The VLP model plus the objective modules (which own the heads)."""

    def __init__(self, model: nn.Module, objectives: nn.Module):
        super().__init__()
        self.model = model
        self.objectives = objectives

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.objectives(self.model, batch)


def build(cfg: RunConfig, tokenizer, *, warm_start: bool = False) -> Pretrainer:
    """The model and objectives of `cfg`. `warm_start`: load the `model.<part>.init` weights into
    the encoders (a fresh run; before the objectives, so ITC's momentum copy starts from them too);
    otherwise the caller loads a checkpoint."""
    model = build_model(cfg, tokenizer)
    if warm_start:
        warmstart.apply_init(model, cfg, len(tokenizer))
    objectives = build_objectives(
        cfg.objectives,
        model.dims,
        special_ids_of(tokenizer),
        len(tokenizer),
        model=model,
        content_ids=content_token_ids(tokenizer),
        fusion_layers=cfg.model.fusion.layers,
    )
    return Pretrainer(model, objectives)
