"""One training step's shared state, so objectives reuse encodings and fusion passes.

Fusion passes are the expensive part of a step. Every objective asks the context
for a pass *by name* (``ctx.pass_("masked_text")``); the first request runs it,
later ones get the memo. ``ctx.fusion_passes`` counts ``model.fuse`` calls, so a
test or benchmark can see what a toggle costs.

Random choices go through the helpers at the bottom: they draw from ``generator``
(on the generator's device) when one is given, else from the global RNG.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

Recipe = Callable[["StepContext"], dict[str, Tensor]]


class StepContext:
    """The model, the batch, the clean uni-modal encodings and a memo of fusion passes."""

    def __init__(
        self,
        model: nn.Module,
        batch: dict[str, Tensor],
        recipes: dict[str, Recipe],
        *,
        special_ids: dict[str, int],
        generator: torch.Generator | None = None,
        modules: dict[str, nn.Module] | None = None,
    ) -> None:
        self.model = model
        self.batch = batch
        self.special_ids = special_ids
        self.generator = generator
        self.modules = modules or {}  # the built objectives, e.g. softmask uses modules["itm"]
        self._recipes = recipes
        self._passes: dict[str, dict[str, Tensor]] = {}
        self._memo: dict[str, Any] = {}
        self.fusion_passes = 0
        self.encoder_passes = 0

    # ------------------------------------------------------------- encodings
    @property
    def image(self) -> dict[str, Tensor]:
        """``encode_image`` of the clean batch images (computed once)."""
        return self.memo("image", lambda: self.encode_image(self.batch["image"]))

    @property
    def text(self) -> dict[str, Tensor]:
        """``encode_text`` of the clean captions (computed once)."""
        return self.memo("text", lambda: self.encode_text(self.batch["text_ids"], self.batch["text_mask"]))

    @property
    def device(self) -> torch.device:
        return self.batch["text_ids"].device

    @property
    def special_mask(self) -> Tensor:
        """True where a caption token is special or padding (never masked, never a 'word')."""
        return self.memo(
            "special_mask",
            lambda: special_token_mask(self.batch["text_ids"], self.batch["text_mask"], self.special_ids),
        )

    def encode_image(self, image: Tensor, keep_patches: Tensor | None = None) -> dict[str, Tensor]:
        self.encoder_passes += 1
        return self.model.encode_image(image, keep_patches=keep_patches)

    def encode_text(self, text_ids: Tensor, text_mask: Tensor) -> dict[str, Tensor]:
        self.encoder_passes += 1
        return self.model.encode_text(text_ids, text_mask)

    # ---------------------------------------------------------------- fusion
    def fuse(
        self,
        image_tokens: Tensor,
        text_tokens: Tensor,
        text_mask: Tensor,
        *,
        frame_cls_positions: Tensor | None = None,
        return_attention: bool = False,
    ) -> dict[str, Tensor]:
        """One counted ``model.fuse`` call (frame layout defaults to the clean image encoding's)."""
        self.fusion_passes += 1
        if frame_cls_positions is None:
            frame_cls_positions = self.image["frame_cls_positions"]
        return self.model.fuse(
            image_tokens,
            text_tokens,
            text_mask,
            frame_cls_positions,
            return_attention=return_attention,
        )

    def pass_(self, name: str) -> dict[str, Tensor]:
        """The named fusion pass, run on first request and memoised for the step."""
        if name not in self._passes:
            if name not in self._recipes:
                known = ", ".join(sorted(self._recipes)) or "none"
                raise KeyError(f"no fusion pass named {name!r} in this step (built: {known})")
            self._passes[name] = self._recipes[name](self)
        return self._passes[name]

    @property
    def passes_run(self) -> list[str]:
        return list(self._passes)

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


# ------------------------------------------------------------------ helpers
def special_ids_of(tokenizer: Any) -> dict[str, int]:
    """``{"pad": 0, "cls": 2, ...}`` from a transformers tokenizer's special tokens."""
    return {
        name.removesuffix("_token"): tokenizer.convert_tokens_to_ids(token)
        for name, token in tokenizer.special_tokens_map.items()
        if isinstance(token, str)
    }


def special_token_mask(text_ids: Tensor, text_mask: Tensor, special_ids: dict[str, int]) -> Tensor:
    """True at padding and at every id listed in ``special_ids`` ([CLS], [SEP], [PAD], [MASK], ...)."""
    ids = torch.tensor(sorted(set(special_ids.values())), device=text_ids.device, dtype=text_ids.dtype)
    return torch.isin(text_ids, ids) | ~text_mask.bool()


def _draw_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    """U[0, 1) of ``shape`` on ``device``, drawn from ``generator`` (or the global RNG)."""
    draw = torch.rand(shape, generator=generator, device=_draw_device(generator, device))
    return draw.to(device)


def randint(high: int, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    draw = torch.randint(high, shape, generator=generator, device=_draw_device(generator, device))
    return draw.to(device)


def multinomial_one(weights: Tensor, generator: torch.Generator | None) -> Tensor:
    """One index per row of non-negative ``weights`` [N, M] -> long [N]."""
    source = weights.to(_draw_device(generator, weights.device), torch.float32)
    return torch.multinomial(source, 1, generator=generator).squeeze(1).to(weights.device)
