"""Text encoder: a transformers BERT (tiny random config, or a local checkpoint for real runs)."""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel

from workbench.config import TextConfig
from workbench.errors import ConfigError


def build_bert(cfg: TextConfig, *, vocab_size: int, pad_token_id: int, max_text_len: int) -> BertModel:
    """A tiny BertModel sized by the config, or `hf_name` loaded from local files only (no pooler).

    The tiny random BERT has no dropout, like the tiny random ViT: at init its [CLS]
    output barely depends on the caption (std ~0.004 over captions at width 64), and
    BERT's default 0.1 dropout adds noise ~100x larger, so ITC could never learn.
    """
    if not cfg.hf_name:
        config = BertConfig(
            vocab_size=vocab_size,
            pad_token_id=pad_token_id,
            hidden_size=cfg.width,
            num_hidden_layers=cfg.depth,
            num_attention_heads=cfg.heads,
            intermediate_size=4 * cfg.width,
            max_position_embeddings=max_text_len,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            attn_implementation="sdpa",
        )
        return BertModel(config, add_pooling_layer=False)
    try:
        bert = BertModel.from_pretrained(
            cfg.hf_name, local_files_only=True, attn_implementation="sdpa", add_pooling_layer=False
        )
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"model.text.hf_name: {cfg.hf_name!r} is neither a local model directory nor a model in the "
            f"local Hugging Face cache, and nothing is downloaded — save_pretrained() the model to a "
            f"directory (or `hf download` it where there is network access) and point model.text.hf_name "
            f"there ({type(err).__name__})"
        ) from None
    if vocab_size > bert.config.vocab_size:
        raise ConfigError(
            f"data.tokenizer: its vocabulary ({vocab_size} tokens) is larger than the "
            f"{bert.config.vocab_size} embeddings of model.text.hf_name={cfg.hf_name!r}; use that model's tokenizer"
        )
    if max_text_len > bert.config.max_position_embeddings:
        raise ConfigError(
            f"data.max_text_len: {max_text_len} exceeds the {bert.config.max_position_embeddings} "
            f"positions of model.text.hf_name={cfg.hf_name!r}"
        )
    return bert


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextConfig, *, vocab_size: int, pad_token_id: int, max_text_len: int):
        super().__init__()
        self.bert = build_bert(cfg, vocab_size=vocab_size, pad_token_id=pad_token_id, max_text_len=max_text_len)
        self.width: int = self.bert.config.hidden_size

    def forward(self, text_ids: torch.Tensor, text_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """text_ids, text_mask: long [B, L] (BERT-style: [CLS] ... [SEP] [PAD]*, mask 1 = real token)."""
        tokens = self.bert(input_ids=text_ids, attention_mask=text_mask).last_hidden_state
        return {"text_tokens": tokens, "text_cls": tokens[:, 0]}
