"""METER-style co-attention fusion: two streams (text, image) of pre-norm layers.

In every layer each stream does self-attention -> cross-attention to the other
stream's previous state -> FFN, each a pre-norm residual branch (pre-norm trains
stably from scratch; a final LayerNorm closes each stream). Attention runs on
`scaled_dot_product_attention`; with `return_attention=True` the text->image
cross-attention is computed explicitly so its probabilities can be returned,
still in the autograd graph for Grad-CAM.

`pooled_only=True` is for callers that read only the pooled outputs (the joint
feature of fine-tunes and ITM scoring): the last layer then computes just the rows
the poolers read (text CLS, frame CLS), the other tokens serving only as keys and
values. Every row is computed independently, so the pooled outputs are those of the
full pass (to float rounding); with two layers a fine-tune step takes ~0.7x the
CPU time (benchmarks/PERFORMANCE.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from workbench.config import FusionConfig

TEXT, IMAGE = 0, 1  # token-type ids


class Attention(nn.Module):
    """Multi-head attention of `x` over `context`; `key_mask` [B,S] bool, True = may be attended to."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(width, width)
        self.key = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.out = nn.Linear(width, width)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # [B, H, N, d]

    def forward(
        self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None, return_probs: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        q = self.split_heads(self.query(x))
        k = self.split_heads(self.key(context))
        v = self.split_heads(self.value(context))
        mask = None if key_mask is None else key_mask[:, None, None, :]
        if return_probs:
            mixed, probs = explicit_attention(q, k, v, mask)
        else:
            probs = None
            mixed = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(mixed.transpose(1, 2).flatten(2)), probs


@torch.compiler.disable  # eager even under train.compile: Grad-CAM differentiates w.r.t. `probs`, so it
def explicit_attention(  # must be a tensor of the autograd graph, not hidden inside a compiled node
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(QK^T / sqrt(d)) V written out, to hand back the probabilities too."""
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(dim=-1)
    return probs @ v, probs


class CoAttentionBlock(nn.Module):
    """One stream of one fusion layer: self-attention -> cross-attention -> FFN (pre-norm)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm_self = nn.LayerNorm(width)
        self.self_attn = Attention(width, heads)
        self.norm_cross = nn.LayerNorm(width)
        self.norm_context = nn.LayerNorm(width)
        self.cross_attn = Attention(width, heads)
        self.norm_mlp = nn.LayerNorm(width)
        self.mlp = Mlp(width, int(width * mlp_ratio))

    def forward(
        self,
        x: torch.Tensor,
        x_mask: torch.Tensor | None,
        context: torch.Tensor,
        context_mask: torch.Tensor | None,
        return_attention: bool = False,
        rows: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`rows` (positions in `x`): compute and return only those rows; all of `x` still gives keys and values."""
        h = self.norm_self(x)
        query = h
        if rows is not None:
            x, query = x[:, rows], h[:, rows]
        x = x + self.self_attn(query, h, x_mask)[0]
        update, cross_probs = self.cross_attn(
            self.norm_cross(x), self.norm_context(context), context_mask, return_attention
        )
        x = x + update
        x = x + self.mlp(self.norm_mlp(x))
        return x, cross_probs


def init_bert_weights(module: nn.Module) -> None:
    """BERT's init: trunc_normal(0.02) for linear/embedding weights, zero bias, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
    if isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_xavier_linear(module: nn.Module) -> None:
    """Xavier-uniform linear weights (biases stay 0): `model.fusion.init: xavier`.

    BERT's std 0.02 makes every linear map of a width-64..192 fusion shrink its input
    ~5-10x, so at init the cross-attention is near uniform and a text x image
    interaction passes through several such shrinking maps before it reaches ITM's
    head: ITM sits at its 1:2 prior for the whole tiny budget. Xavier keeps unit scale
    through each map, and ITM learns (README, "uni-modal warm start").
    """
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)


class CoAttentionFusion(nn.Module):
    def __init__(self, cfg: FusionConfig, *, vision_width: int, text_width: int, image_global_token: bool):
        super().__init__()
        width = cfg.width
        self.image_global_token = image_global_token  # pooling=global_cls: image token 0 is the video CLS
        self.text_bridge = nn.Linear(text_width, width)
        self.image_bridge = nn.Linear(vision_width, width)
        self.token_type = nn.Embedding(2, width)
        self.text_layers = nn.ModuleList(CoAttentionBlock(width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.image_layers = nn.ModuleList(CoAttentionBlock(width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers))
        self.text_norm = nn.LayerNorm(width)
        self.image_norm = nn.LayerNorm(width)
        self.text_pooler = nn.Sequential(nn.Linear(width, width), nn.Tanh())
        self.image_pooler = nn.Sequential(nn.Linear(width, width), nn.Tanh())
        self.apply(init_bert_weights)
        if cfg.init == "xavier":
            self.apply(init_xavier_linear)

    def bridged(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(text, image) encoder outputs mapped to the fusion width, with their token-type embedding."""
        return (
            self.text_bridge(text_tokens) + self.token_type.weight[TEXT],
            self.image_bridge(image_tokens) + self.token_type.weight[IMAGE],
        )

    def streams(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        layers: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(text, image) stream states after the bridges and the first `layers` layers (all by default),
        before the final norms: what `forward(..., from_layer=layers)` continues from. A fine-tune that
        trains only the last layer computes the frozen ones once per split (`eval.finetune_layers=last`)."""
        text_keep = text_mask.bool()
        image_keep = None if image_mask is None else image_mask.bool()
        text, image = self.bridged(image_tokens, text_tokens)
        for text_layer, image_layer in list(zip(self.text_layers, self.image_layers, strict=True))[:layers]:
            text, image = (
                text_layer(text, text_keep, image, image_keep)[0],
                image_layer(image, image_keep, text, text_keep)[0],
            )
        return text, image

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        frame_cls_positions: torch.Tensor,
        image_mask: torch.Tensor | None = None,
        return_attention: bool = False,
        pooled_only: bool = False,
        from_layer: int | None = None,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """Masks: 1/True = a real token. `cross_attn[i]`: layer i's text->image probabilities [B,H,L,S].

        `pooled_only`: the last layer computes only the rows the poolers read; the output then has
        the CLS features and `joint` but no `fused_text`/`fused_image` (and `cross_attn[-1]` has L = 1).
        `from_layer` k: the token inputs are `streams(..., layers=k)`'s states (bridges and the first
        k layers done), so only layers k.. run (`cross_attn` then lists only those).
        """
        text_keep = text_mask.bool()
        image_keep = None if image_mask is None else image_mask.bool()
        text, image = (text_tokens, image_tokens) if from_layer is not None else self.bridged(image_tokens, text_tokens)
        text_rows = image_rows = None
        if pooled_only:  # text CLS; [video CLS +] frame CLS tokens
            text_rows = frame_cls_positions.new_zeros(1)
            image_rows = frame_cls_positions
            if self.image_global_token:
                image_rows = torch.cat([frame_cls_positions.new_zeros(1), frame_cls_positions])
        cross_attn = []
        last = len(self.text_layers) - 1
        for index, (text_layer, image_layer) in enumerate(zip(self.text_layers, self.image_layers, strict=True)):
            if index < (from_layer or 0):
                continue
            pooled_layer = pooled_only and index == last
            new_text, probs = text_layer(
                text, text_keep, image, image_keep, return_attention, rows=text_rows if pooled_layer else None
            )
            image, _ = image_layer(image, image_keep, text, text_keep, rows=image_rows if pooled_layer else None)
            text = new_text
            cross_attn.append(probs)
        text, image = self.text_norm(text), self.image_norm(image)
        fused_text_cls = text[:, 0]
        if pooled_only:
            fused_frame_cls = image[:, image.shape[1] - len(frame_cls_positions) :]
        else:
            fused_frame_cls = image[:, frame_cls_positions]
        fused_image_cls = image[:, 0] if self.image_global_token else fused_frame_cls.mean(1)
        out = {} if pooled_only else {"fused_text": text, "fused_image": image}
        out |= {
            "fused_text_cls": fused_text_cls,
            "fused_frame_cls": fused_frame_cls,
            "fused_image_cls": fused_image_cls,
            "joint": torch.cat([self.text_pooler(fused_text_cls), self.image_pooler(fused_image_cls)], dim=-1),
        }
        if return_attention:
            out["cross_attn"] = cross_attn
        return out
