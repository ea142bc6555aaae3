"""Fusion passes: what each named pass of a step computes, and how objectives share them.

A pass is a frozen dataclass called with the step context (``(ctx) -> fused outputs``);
``StepContext.pass_(name)`` runs it at most once per step. Each objective module
declares the passes it reads (``ObjectiveSpec.passes``: name -> pass) and ``plan``
merges the requests of the objectives that are built:

* Two requests for one name must be the same pass: frozen dataclasses compare by
  value, so a mismatch (say two mask ratios) is a ``PassConflict``, not a silent pick.
  A pass may define ``merge`` for a difference that is safe to unite (``CleanPass``:
  the attention maps SoftMask needs cost the other readers nothing).
* The one cross-objective rule, written here and nowhere else: MLM under
  ``mlm.reuse_mlsc_pass`` asks for a ``ReuseMaskedText``. When MLSC's masked-text pass
  is built (``shareable``), MLM reads that pass -- which then corrupts its chosen
  tokens with MLM's 80/10/10 split -- instead of running its own: one fusion pass fewer,
  masking at MLSC's ratio. Otherwise (no MLSC; an MVSC target pass alone is not
  shared, MLM must not change MVSC's target) MLM runs its own pass.

Shared pass names:

* ``clean``: clean image x clean caption (ITM positives, SoftMask's Grad-CAM, SCL
  ``clean_pass`` targets).
* ``masked_text``: MLSC's masked caption x clean image (also MVSC's ``cross_pass``
  target, and MLM's pass with ``mlm.reuse_mlsc_pass``).
* ``masked_image``: MAE-dropped image x clean caption (MVSC; MLSC's ``cross_pass`` target).

Which objective asks for which, with what ratios, reads in its own module.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

from torch import Tensor

from workbench.objectives.context import StepContext
from workbench.objectives.masking import keep_patch_indices, mask_tokens

CLEAN, MASKED_TEXT, MASKED_IMAGE = "clean", "masked_text", "masked_image"


class FusionPass(Protocol):
    def __call__(self, ctx: StepContext) -> dict[str, Tensor]: ...


class PassConflict(ValueError):
    """Two objectives ask for one pass name with different definitions (a wiring bug, not bad input)."""


@dataclass(frozen=True)
class CleanPass:
    return_attention: bool = False  # SoftMask's Grad-CAM differentiates the cross-attention

    def merge(self, other: CleanPass) -> CleanPass:
        """Attention maps are extra outputs the other readers ignore: return them if anyone asks."""
        return CleanPass(self.return_attention or other.return_attention)

    def __call__(self, ctx: StepContext) -> dict[str, Tensor]:
        return ctx.fuse(
            ctx.image["image_tokens"],
            ctx.text["text_tokens"],
            ctx.batch["text_mask"],
            return_attention=self.return_attention,
        )


@dataclass(frozen=True)
class MaskedTextPass:
    """Mask the caption (``masking.mask_tokens``), re-encode it, fuse it with the clean image; keeps ``mlm_labels``.

    ``exact``: mask exactly ``max(1, round(ratio * n_real))`` tokens per caption
    (MLSC) instead of each token with probability ``ratio`` (BERT MLM).
    ``split``: shares of chosen tokens replaced by [MASK] and by a random id.
    ``shareable``: MLSC's pass, which MLM may read (the rule in this module's docstring).
    """

    ratio: float
    exact: bool
    split: tuple[float, float]
    mask_id: int
    vocab_size: int
    shareable: bool = False

    def __post_init__(self) -> None:
        if self.mask_id < 0:
            raise ValueError("build_objectives: special_ids needs 'mask' (the [MASK] id) for MLM/MLSC's masked text")
        if self.vocab_size < 1:
            raise ValueError(f"build_objectives: vocab_size must be >= 1, got {self.vocab_size}")

    def __call__(self, ctx: StepContext) -> dict[str, Tensor]:
        text_ids, text_mask = ctx.batch["text_ids"], ctx.batch["text_mask"]
        corrupted, labels = mask_tokens(
            text_ids,
            ctx.special_mask,
            self.ratio,
            ctx.generator,
            self.mask_id,
            self.vocab_size,
            self.split,
            exact=self.exact,
        )
        text = ctx.encode_text(corrupted, text_mask)
        fused = ctx.fuse(ctx.image["image_tokens"], text["text_tokens"], text_mask)
        return {**fused, "text_ids": corrupted, "mlm_labels": labels}


@dataclass(frozen=True)
class MaskedImagePass:
    """Drop ``ratio`` of each frame's patches (same positions in all frames), fuse with the clean caption."""

    ratio: float

    def __call__(self, ctx: StepContext) -> dict[str, Tensor]:
        clean = ctx.image
        frames = clean["frame_cls_positions"].numel()
        patches_per_frame = clean["patch_positions"].numel() // frames
        batch_size = ctx.batch["text_ids"].shape[0]
        keep = keep_patch_indices(batch_size, patches_per_frame, self.ratio, ctx.generator, ctx.device)
        image = ctx.encode_image(ctx.batch["image"], keep_patches=keep)
        fused = ctx.fuse(
            image["image_tokens"],
            ctx.text["text_tokens"],
            ctx.batch["text_mask"],
            frame_cls_positions=image["frame_cls_positions"],
        )
        return {**fused, "keep_patches": keep}


@dataclass(frozen=True)
class ReuseMaskedText:
    """A request to read the shareable ``masked_text`` pass with ``own``'s split, else to run ``own``."""

    own: MaskedTextPass


@dataclass(frozen=True)
class PassPlan:
    """The passes a step may run, and which pass serves a request made under another name."""

    passes: dict[str, FusionPass]
    served_by: dict[str, str]  # requested name -> the pass that serves it (only where they differ)


def plan(requests: Iterable[tuple[str, Mapping[str, FusionPass]]]) -> PassPlan:
    """Merge ``(objective, {name: pass})`` requests into one set of passes (rules: module docstring)."""
    passes: dict[str, FusionPass] = {}
    asked_by: dict[str, str] = {}
    for objective, wanted in requests:
        for name, recipe in wanted.items():
            if name in passes:
                recipe = _merge(name, passes[name], recipe, asked_by[name], objective)
            passes[name] = recipe
            asked_by.setdefault(name, objective)
    return _reuse_masked_text(passes)


def _merge(name: str, have: FusionPass, want: FusionPass, first: str, second: str) -> FusionPass:
    if have == want:
        return have
    if type(have) is type(want) and hasattr(have, "merge"):
        return have.merge(want)
    raise PassConflict(
        f"fusion pass {name!r}: {first} asks for {have}, {second} for {want} -- one name must be one pass"
    )


def _reuse_masked_text(passes: dict[str, FusionPass]) -> PassPlan:
    """The one cross-objective rule: a ``ReuseMaskedText`` reads the shareable MLSC pass, else runs its own."""
    served_by: dict[str, str] = {}
    shared = passes.get(MASKED_TEXT)
    for name, recipe in list(passes.items()):
        if not isinstance(recipe, ReuseMaskedText):
            continue
        if isinstance(shared, MaskedTextPass) and shared.shareable:
            passes[MASKED_TEXT] = replace(shared, split=recipe.own.split)
            del passes[name]
            served_by[name] = MASKED_TEXT
        else:
            passes[name] = recipe.own
    return PassPlan(passes, served_by)
