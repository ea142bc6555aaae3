"""Build the enabled objectives, run them over one step, weight and sum their losses.

A term is built only when ``enabled`` and ``weight > 0`` (dinov2 style): a disabled
term has no module, no parameters, no loss key and no fusion pass. Terms run in
``BUILDERS`` order; they share encodings and fusion passes through ``StepContext``.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor, nn

from workbench.config import ObjectivesConfig

from workbench.errors import ConfigError
from workbench.objectives.context import Recipe, StepContext
from workbench.objectives.itc import ITC
from workbench.objectives.itm import ITM
from workbench.objectives.mlm import BERT_SPLIT, MLM
from workbench.objectives.passes import CleanPass, MaskedImagePass, MaskedTextPass
from workbench.objectives.scl import RECOVERED_PASS, SCL, TARGET_PASS
from workbench.objectives.softmask import SoftMask

REQUIRED_DIMS = ("vision_width", "text_width", "fusion_width")


def is_on(cfg: ObjectivesConfig, name: str) -> bool:
    """Whether objective ``name`` is built under ``cfg``."""
    section = getattr(cfg, name)
    on = section.enabled and section.weight > 0
    if name == "scl":
        on = on and (section.mvsc or section.mlsc)
    if name == "softmask":
        on = on and section.mode != "off"
    return on


def _mlm_reuses_mlsc(cfg: ObjectivesConfig) -> bool:
    """MLM reads the MLSC pass only when MLSC runs (otherwise there is nothing to reuse)."""
    return cfg.mlm.reuse_mlsc_pass and is_on(cfg, "scl") and cfg.scl.mlsc


def joint_width(dims: dict[str, int]) -> int:
    """Width of the fused ``joint`` feature: [text pooler, image pooler] concatenated."""
    return dims.get("joint_width", 2 * dims["fusion_width"])


# (objectives config, model dims, vocabulary size, model, content-word ids) -> the term's module
Builder = Callable[[ObjectivesConfig, dict, int, "nn.Module | None", "list[int] | None"], nn.Module]

BUILDERS: dict[str, Builder] = {
    "itc": lambda cfg, dims, vocab, model, words: ITC(dims["vision_width"], dims["text_width"], cfg.itc, model),
    "itm": lambda cfg, dims, vocab, model, words: ITM(
        joint_width(dims), cfg.itm.negatives, weight=cfg.itm.weight, product=cfg.itm.product,
        batch_norm=cfg.itm.batch_norm,
    ),
    "mlm": lambda cfg, dims, vocab, model, words: MLM(
        dims["fusion_width"],
        vocab,
        weight=cfg.mlm.weight,
        pass_name="masked_text" if _mlm_reuses_mlsc(cfg) else "mlm",
    ),
    "scl": lambda cfg, dims, vocab, model, words: SCL(cfg.scl),
    "softmask": lambda cfg, dims, vocab, model, words: SoftMask(cfg.softmask, words),
}


def _check(cfg: ObjectivesConfig, dims: dict, special_ids: dict[str, int], vocab_size: int) -> None:
    missing = [key for key in REQUIRED_DIMS if key not in dims]
    if missing:
        raise ValueError(f"build_objectives: dims lacks {missing} (needs {list(REQUIRED_DIMS)})")
    if is_on(cfg, "softmask") and not is_on(cfg, "itm"):
        raise ConfigError(
            "objectives.softmask.enabled=true needs ITM (its masked pair is an ITM positive) — "
            "set objectives.itm.enabled=true with objectives.itm.weight > 0, "
            "or objectives.softmask.enabled=false"
        )
    masks_text = is_on(cfg, "mlm") or (is_on(cfg, "scl") and cfg.scl.mlsc)
    if masks_text and "mask" not in special_ids:
        raise ValueError("build_objectives: special_ids needs 'mask' (the [MASK] id) for MLM/MLSC")
    if masks_text and vocab_size < 1:
        raise ValueError(f"build_objectives: vocab_size must be >= 1, got {vocab_size}")
    if is_on(cfg, "itm") and cfg.itm.negatives == "hard" and not is_on(cfg, "itc"):
        warnings.warn(
            "objectives.itm.negatives=hard without ITC: negatives are drawn uniformly (as 'random')",
            stacklevel=3,
        )


def _recipes(cfg: ObjectivesConfig, special_ids: dict[str, int], vocab_size: int) -> dict[str, Recipe]:
    """Only the passes some built objective may request."""
    mask_id = special_ids.get("mask", -1)
    softmask_attention = is_on(cfg, "softmask") and cfg.softmask.mode in ("soft", "hard")
    recipes: dict[str, Recipe] = {"clean": CleanPass(return_attention=softmask_attention)}
    scl_losses = [name for name in ("mvsc", "mlsc") if is_on(cfg, "scl") and getattr(cfg.scl, name)]
    scl_passes = {RECOVERED_PASS[n] for n in scl_losses} | {TARGET_PASS[cfg.scl.target][n] for n in scl_losses}
    if "masked_image" in scl_passes:
        recipes["masked_image"] = MaskedImagePass(cfg.scl.image_mask_ratio)
    reuse = is_on(cfg, "mlm") and _mlm_reuses_mlsc(cfg)
    if "masked_text" in scl_passes:
        recipes["masked_text"] = MaskedTextPass(
            ratio=cfg.scl.text_mask_ratio,
            exact=True,
            split=BERT_SPLIT if reuse else (1.0, 0.0),  # MLSC alone: every chosen token -> [MASK]
            mask_id=mask_id,
            vocab_size=vocab_size,
        )
    if is_on(cfg, "mlm") and not reuse:
        recipes["mlm"] = MaskedTextPass(
            ratio=cfg.mlm.mask_prob, exact=False, split=BERT_SPLIT, mask_id=mask_id, vocab_size=vocab_size
        )
    return recipes


class Objectives(nn.Module):
    """The built terms (``objectives.itc``, ``objectives.itm``, ...) and their weighted sum."""

    def __init__(self, terms: dict[str, nn.Module], recipes: dict[str, Recipe], special_ids: dict[str, int]) -> None:
        super().__init__()
        for name, term in terms.items():
            self.add_module(name, term)
        self.built = tuple(terms)
        self.recipes = recipes
        self.special_ids = dict(special_ids)

    @property
    def loss_names(self) -> tuple[str, ...]:
        return tuple(name for term in self.built for name in getattr(self, term).names)

    def context(
        self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> StepContext:
        modules = {name: getattr(self, name) for name in self.built}
        return StepContext(
            model, batch, self.recipes, special_ids=self.special_ids, generator=generator, modules=modules
        )

    def compute(self, ctx: StepContext) -> dict[str, Tensor]:
        """Run every built term on ``ctx``: raw, weighted and total losses plus metrics."""
        out: dict[str, Tensor] = {}
        total: Tensor | None = None
        for term_name in self.built:
            term = getattr(self, term_name)
            result = term(ctx)
            for name in term.names:
                raw = result.pop(f"{name}_loss")
                weighted = term.weight * raw
                out[f"loss/{name}"] = raw
                out[f"loss_weighted/{name}"] = weighted
                total = weighted if total is None else total + weighted
                prefix = f"{name}_"
                for key in [k for k in result if k.startswith(prefix)]:
                    out[f"{name}/{key[len(prefix):]}"] = result.pop(key).detach().float()
            if result:
                raise KeyError(f"objective {term_name} returned unexpected keys {sorted(result)}")
        if total is None:
            total = torch.zeros((), device=ctx.device, requires_grad=True)
        out["loss"] = total
        return out

    def forward(
        self, model: nn.Module, batch: dict[str, Tensor], generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        return self.compute(self.context(model, batch, generator))


def build_objectives(
    cfg: ObjectivesConfig,
    dims: dict[str, int],
    special_ids: dict[str, int] | None = None,
    vocab_size: int | None = None,
    *,
    model: nn.Module | None = None,
    content_ids: list[int] | None = None,
) -> Objectives:
    """The enabled objectives for a model of sizes ``dims`` (``VLPModel.dims``).

    ``dims``: ``vision_width``, ``text_width``, ``fusion_width`` (+ optional
    ``joint_width``, default 2 x fusion width; ``vocab_size`` when not given apart).
    ``special_ids``: token ids never masked nor picked as Grad-CAM words, with
    ``"mask"`` the [MASK] id (e.g. ``{"pad": 0, "cls": 2, "sep": 3, "mask": 4}``).
    ``model``: needed only for ``objectives.itc.queue_size > 0`` (ITC keeps a momentum copy of it).
    ``content_ids``: the vocabulary's content-word ids (``content_words.content_token_ids``), the
    words SoftMask's Grad-CAM conditions on under ``softmask.words: content``.
    """
    special_ids = special_ids or {}
    vocab_size = dims.get("vocab_size", 0) if vocab_size is None else vocab_size
    _check(cfg, dims, special_ids, vocab_size)
    terms = {
        name: build(cfg, dims, vocab_size, model, content_ids) for name, build in BUILDERS.items() if is_on(cfg, name)
    }
    return Objectives(terms, _recipes(cfg, special_ids, vocab_size), special_ids)
