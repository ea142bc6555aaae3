"""Which caption tokens are content words -- the words SoftMask's Grad-CAM may condition on.

A word-conditional Grad-CAM of "." or "the" explains nothing: the token names no
region. Content words name something visible: colour, shape, size, position,
count ("red", "circle", "large", "left", "two"). The rule is tokenizer-agnostic so
it holds for real data too: a vocabulary entry is a content word when it is
alphabetic (not punctuation, not a "##" word piece) and not a function word.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Articles, auxiliaries, pronouns, conjunctions, prepositions that do not say where,
# and the generic nouns of captions ("image", "shape", "object") that name no region.
FUNCTION_WORDS = frozenset(
    """
    a an the this that these those there here it its they them their is are was were be been being
    has have had do does did not no and or but if of for with without to from in into on onto at by
    as than then so very too also just only each every some any all both either neither
    what which who whom whose where when why how can could would should will may might must
    image images picture photo shape shapes object objects thing things contains contain containing
    """.split()
)


def is_content_word(token: str) -> bool:
    return token.isalpha() and token.lower() not in FUNCTION_WORDS


def content_token_ids(tokenizer) -> list[int]:
    """Ids of the vocabulary's content words (special tokens never are)."""
    special = set(tokenizer.all_special_ids)
    return sorted(
        index for token, index in tokenizer.get_vocab().items() if index not in special and is_content_word(token)
    )


def content_mask(text_ids: Tensor, content_ids: Tensor) -> Tensor:
    """True where a caption token is a content word, bool like `text_ids`."""
    return torch.isin(text_ids, content_ids.to(text_ids.device))
