"""Text augmentation: random word masking (SoftMask) and the left/right swap of a flip."""

from __future__ import annotations

import re

import numpy as np

_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
_SIDE = re.compile(r"\b(left|right)\b", re.IGNORECASE)
_SWAP = {"left": "right", "right": "left"}


def mask_words(text: str, ratio: float, mask_token: str, rng: np.random.Generator) -> str:
    """Replace round(ratio * #words) randomly chosen words by `mask_token`; punctuation stays."""
    words = list(_WORD.finditer(text))
    count = int(round(ratio * len(words)))
    if count == 0:
        return text
    chosen = sorted(rng.choice(len(words), size=count, replace=False).tolist())
    pieces, last = [], 0
    for i in chosen:
        match = words[i]
        pieces += [text[last : match.start()], mask_token]
        last = match.end()
    return "".join(pieces) + text[last:]


def swap_left_right(text: str) -> str:
    """'the red circle is left of the blue square' -> '... right of ...' (case kept)."""

    def swap(match: re.Match) -> str:
        word = match.group(1)
        other = _SWAP[word.lower()]
        return other.capitalize() if word[0].isupper() else other

    return _SIDE.sub(swap, text)
