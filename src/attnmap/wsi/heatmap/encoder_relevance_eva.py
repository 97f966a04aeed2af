"""The frozen-gate forward of timm's Eva blocks (EVA02, DINOv3 and other rotary-position ViTs).

Why: rotary position embeddings act on the queries and keys only, so once the attention weights are
held constant (`attnmap.wsi.heatmap.encoder_relevance`) they need no relevance rule at all; an Eva
block is then a pre-norm ViT block whose q/k/v may be separate projections (or one ``qkv`` with
separate biases), whose LayerScale is a plain ``gamma`` and whose MLP may be SwiGLU. This module
mirrors `timm.models.eva.EvaBlock` with `EvaAttention` or `timm.layers.AttentionRope` (grouped-query
heads included) with those gates frozen; "mixed" RoPE models rotate each block by its own angles.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.eva import Eva


def eva_tokens(model: Eva, frozen: object, tokens: torch.Tensor) -> torch.Tensor:
    """Patch tokens (after the stem) → the tokens after the last block (before the final norm)."""
    from attnmap.wsi.heatmap.encoder_relevance import _attention, _mlp, _norm

    x, rope = model._pos_embed(tokens)  # positions added, prefix tokens joined: linear in the tokens
    x = _norm(frozen, model.norm_pre, x)
    mixed = getattr(model, "rope_mixed", False) and rope is not None  # one rotation per block
    for index, block in enumerate(model.blocks):
        attn = block.attn
        normed = _norm(frozen, block.norm1, x)
        rotation = rope[index] if mixed else rope
        out = attn.proj(_attention(frozen, attn, normed, *_qkv(attn, normed), rope=rotation))
        x = x + (out if block.gamma_1 is None else block.gamma_1 * out)
        out = _mlp(frozen, block.mlp, _norm(frozen, block.norm2, x))
        x = x + (out if block.gamma_2 is None else block.gamma_2 * out)
    return x


def _qkv(attn: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q, k, v), each (B, N, heads · head_dim), as `EvaAttention` projects them."""
    if attn.qkv is None:
        return attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
    if getattr(attn, "q_bias", None) is None:  # AttentionRope: the qkv projection's own bias
        qkv = attn.qkv(x)
    else:
        bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
        qkv = attn.qkv(x) + bias if attn.qkv_bias_separate else F.linear(x, attn.qkv.weight, bias)
    return qkv.chunk(3, dim=-1)
