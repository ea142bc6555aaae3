"""Tokenizers: ShapesWorld's own word-level BERT-style tokenizer, and loading any local one.

ShapesWorld has a closed vocabulary of a few dozen words, so a WordLevel model
over exactly those words (lower-cased, punctuation split off, `[CLS] ... [SEP]`)
is all it needs; it is saved next to the data with `save_pretrained` and loaded
like any Hugging Face tokenizer, so real data only swaps the directory.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from workbench.errors import DataError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")  # [PAD] = id 0


def build_tokenizer(words: Iterable[str]):
    """A transformers PreTrainedTokenizerFast over `words` (specials first, then sorted words)."""
    # deferred: transformers imports torch and takes seconds; `workbench.data.shapes` (which
    # imports this module) stays free of both until it writes the tokenizer
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in sorted(set(words) - set(SPECIAL_TOKENS)):
        vocab[word] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()  # whitespace + punctuation split
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    backend.decoder = decoders.WordPiece(cleanup=True)  # "square ." -> "square."
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def tokenizer_path(data_cfg) -> Path:
    """`data.tokenizer`, or `<data.root>/tokenizer` (ShapesWorld's own) when empty."""
    return Path(data_cfg.tokenizer) if data_cfg.tokenizer else Path(data_cfg.root) / "tokenizer"


def load_tokenizer(data_cfg):
    """Load the configured local tokenizer directory (never downloads)."""
    from transformers import AutoTokenizer  # deferred: see build_tokenizer

    path = tokenizer_path(data_cfg)
    if not path.is_dir():
        raise DataError(
            f"tokenizer not found: looked in {path} (data.tokenizer={data_cfg.tokenizer!r}; "
            f"'' means <data.root>/tokenizer, which ShapesWorld generation writes)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as err:
        raise DataError(f"could not load the tokenizer in {path}: {' '.join(str(err).split())}") from None
    for role in ("pad_token", "mask_token", "cls_token", "sep_token"):
        if getattr(tokenizer, role) is None:
            raise DataError(f"tokenizer in {path} has no {role}; a BERT-style tokenizer is required")
    return tokenizer
