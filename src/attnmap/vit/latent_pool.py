"""timm's attention-pool head (``AttentionPoolLatent``, ``global_pool='map'``) run on its explicit
path while the attention methods record: its latent query's attention row is the read-out's row.

The pool's ``forward`` is replaced on the instance for the recording only
(`restore_instance_forward` puts back what was there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn


def restore_instance_forward(module: nn.Module, previous: Callable[..., Any] | None) -> None:
    module.__dict__.pop("forward", None)
    if previous is not None:
        module.__dict__["forward"] = previous


def latent_pool_forward(pool: nn.Module, adapter: Any) -> Callable[..., torch.Tensor]:
    """timm ``AttentionPoolLatent.forward`` on its explicit (non-fused) path, recording the latent row."""

    def forward(x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, channels = x.shape
        if pool.pos_embed is not None:
            x = x + pool.pos_embed.unsqueeze(0).to(x.dtype)
        q = pool.q(pool.latent.expand(batch, -1, -1))
        q = q.reshape(batch, pool.latent_len, pool.num_heads, pool.head_dim).transpose(1, 2)
        k, v = (
            pool.kv(x)
            .reshape(batch, tokens, 2, pool.num_heads, pool.head_dim)
            .permute(2, 0, 3, 1, 4)
            .unbind(0)
        )
        q, k = pool.q_norm(q), pool.k_norm(k)
        logits = (q * pool.scale) @ k.transpose(-2, -1)
        if attn_mask is not None:
            logits = logits + attn_mask
        attn = logits.softmax(dim=-1)
        adapter.latent_rows = attn.detach().mean(dim=1)[:, 0]  # (B, tokens)
        x = (attn @ v).transpose(1, 2).reshape(batch, pool.latent_len, channels)
        x = pool.proj_drop(pool.proj(x))
        if pool.mlp is not None:
            x = x + pool.mlp(pool.norm(x))
        if pool.pool == "token":
            x = x[:, 0]
        elif pool.pool == "avg":
            x = x.mean(1)
        return x

    return forward
