"""The attention-pool head (timm ``AttentionPoolLatent``, SigLIP's multi-head attention pooling) for LRP.

A learned latent query attends over the final tokens; the result goes through a projection and a
residual MLP. For LRP it is one more attention block (docs/lrp-rules.md): relevance from the pooled
output passes the MLP residual (add rule, z⁺ through fc2 and fc1, norm identity), the projection
(z⁺), then A·V (LRP-0) with R_A/2 and R_V/2; R_A/2 continues through Q·Kᵀ to the keys (the
latent's own share, a parameter, is dropped); keys and values go back to the tokens through the
key/value projection (z⁺). Its attention row (head mean) is the query row of every map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attnmap.errors import UnsupportedModelError
from attnmap.vit.lrp.block import apply_norm, linear, read_activation, read_norm, weight_and_bias
from attnmap.vit.lrp.rules import (
    Stabiliser,
    add_rule,
    attention_value_rule,
    clone_rule,
    linear_zplus,
    query_key_rule,
)


@dataclass
class PoolTrace:
    tokens: torch.Tensor  # input tokens (B, N, D), before the head's own pos_embed
    x: torch.Tensor  # tokens the keys/values are computed from
    kv: torch.Tensor  # (B, N, 2D) with bias, layout [k; v]
    q: torch.Tensor  # (B, H, 1, d) after q_norm
    k: torch.Tensor  # (B, H, N, d) after k_norm
    attn: torch.Tensor  # (B, H, 1, N)
    o: torch.Tensor  # (B, 1, D)
    z_proj: torch.Tensor
    y: torch.Tensor  # projection output with bias (B, 1, D)
    n: torch.Tensor | None = None
    pre_act: torch.Tensor | None = None
    hidden: torch.Tensor | None = None
    z_fc2: torch.Tensor | None = None

    def row(self) -> torch.Tensor:
        """(B, N) head-mean attention of the latent query."""
        return self.attn.detach().mean(dim=1)[:, 0]


@dataclass
class PoolTwin:
    num_heads: int
    head_dim: int
    scale: float
    latent: torch.Tensor  # (1, 1, D)
    weights: dict[str, torch.Tensor | None]
    pos_embed: torch.Tensor | None
    q_norm: nn.Module | None
    k_norm: nn.Module | None
    norm: nn.Module | None
    act: nn.Module | None

    @classmethod
    def read_timm(cls, pool: nn.Module) -> PoolTwin:
        from timm.layers import Mlp
        from timm.layers.attention_pool import AttentionPoolLatent

        if type(pool) is not AttentionPoolLatent or pool.latent_len != 1 or pool.pool != "token":
            raise UnsupportedModelError(
                f"attn_pool ({type(pool).__name__}): only AttentionPoolLatent with one latent query "
                "has an LRP rule"
            )
        wt: dict[str, torch.Tensor | None] = {}
        wt["q_w"], wt["q_b"] = weight_and_bias(pool.q, "attn_pool.q")
        wt["kv_w"], wt["kv_b"] = weight_and_bias(pool.kv, "attn_pool.kv")
        wt["proj_w"], wt["proj_b"] = weight_and_bias(pool.proj, "attn_pool.proj")
        act = None
        if pool.mlp is not None:
            if type(pool.mlp) is not Mlp:
                raise UnsupportedModelError(f"attn_pool.mlp ({type(pool.mlp).__name__}) has no LRP rule")
            wt["fc1_w"], wt["fc1_b"] = weight_and_bias(pool.mlp.fc1, "attn_pool.mlp.fc1")
            wt["fc2_w"], wt["fc2_b"] = weight_and_bias(pool.mlp.fc2, "attn_pool.mlp.fc2")
            act = read_activation(pool.mlp.act, "attn_pool.mlp.act")
            read_norm(pool.mlp.norm, "attn_pool.mlp.norm")  # only Identity / norms
        return cls(
            num_heads=pool.num_heads,
            head_dim=pool.head_dim,
            scale=pool.scale,
            latent=pool.latent.detach(),
            weights=wt,
            pos_embed=None if pool.pos_embed is None else pool.pos_embed.detach().unsqueeze(0),
            q_norm=read_norm(pool.q_norm, "attn_pool.q_norm"),
            k_norm=read_norm(pool.k_norm, "attn_pool.k_norm"),
            norm=read_norm(pool.norm, "attn_pool.norm") if pool.mlp is not None else None,
            act=act,
        )

    @classmethod
    def read_siglip(cls, head: nn.Module) -> PoolTwin:
        """Hugging Face SigLIP ``*MultiheadAttentionPoolingHead``: probe, nn.MultiheadAttention, norm, MLP."""
        attention = getattr(head, "attention", None)
        probe = getattr(head, "probe", None)
        mlp = getattr(head, "mlp", None)
        if not isinstance(attention, nn.MultiheadAttention) or probe is None or probe.shape[1] != 1:
            raise UnsupportedModelError(f"head ({type(head).__name__}) has no LRP rule")
        if attention.in_proj_weight is None or not attention.batch_first:
            raise UnsupportedModelError(f"head.attention ({type(attention).__name__}) layout has no LRP rule")
        dim = attention.embed_dim
        w, b = attention.in_proj_weight.detach(), attention.in_proj_bias
        b = None if b is None else b.detach()
        wt: dict[str, torch.Tensor | None] = {
            "q_w": w[:dim],
            "q_b": None if b is None else b[:dim],
            "kv_w": w[dim:],
            "kv_b": None if b is None else b[dim:],
        }
        wt["proj_w"], wt["proj_b"] = weight_and_bias(attention.out_proj, "head.attention.out_proj")
        wt["fc1_w"], wt["fc1_b"] = weight_and_bias(mlp.fc1, "head.mlp.fc1")
        wt["fc2_w"], wt["fc2_b"] = weight_and_bias(mlp.fc2, "head.mlp.fc2")
        head_dim = dim // attention.num_heads
        return cls(
            num_heads=attention.num_heads,
            head_dim=head_dim,
            scale=head_dim**-0.5,
            latent=probe.detach(),
            weights=wt,
            pos_embed=None,
            q_norm=None,
            k_norm=None,
            norm=read_norm(head.layernorm, "head.layernorm"),
            act=read_activation(mlp.activation_fn, "head.mlp.activation_fn"),
        )

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, PoolTrace]:
        wt = self.weights
        batch, count, dim = tokens.shape
        x = tokens if self.pos_embed is None else tokens + self.pos_embed
        _, q = linear(self.latent.expand(batch, -1, -1), wt["q_w"], wt["q_b"])
        q = q.reshape(batch, 1, self.num_heads, self.head_dim).transpose(1, 2)
        _, kv = linear(x, wt["kv_w"], wt["kv_b"])
        k, v = kv.reshape(batch, count, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = apply_norm(self.q_norm, q), apply_norm(self.k_norm, k)
        attn = ((q @ k.transpose(-1, -2)) * self.scale).softmax(dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(batch, 1, dim)
        z_proj, y = linear(o, wt["proj_w"], wt["proj_b"])
        trace = PoolTrace(tokens, x, kv, q, k, attn, o, z_proj, y)
        out = y
        if self.act is not None:
            trace.n = apply_norm(self.norm, y)
            _, trace.pre_act = linear(trace.n, wt["fc1_w"], wt["fc1_b"])
            trace.hidden = self.act(trace.pre_act)
            trace.z_fc2, mlp_out = linear(trace.hidden, wt["fc2_w"], wt["fc2_b"])
            out = y + mlp_out
        return out[:, 0], trace

    def relevance(self, trace: PoolTrace, relevance: torch.Tensor, stab: Stabiliser) -> torch.Tensor:
        """(B, D) relevance of the pooled output → (B, N, D) relevance of the input tokens."""
        wt = self.weights
        r = relevance.unsqueeze(1)
        y = trace.y.detach()
        if self.act is not None:
            mlp_out = trace.z_fc2 + (wt["fc2_b"] if wt["fc2_b"] is not None else 0)
            r_res, r_mlp = add_rule(r, y, mlp_out.detach(), stab)
            hidden = linear_zplus(r_mlp, trace.hidden.detach(), trace.z_fc2.detach(), wt["fc2_w"], stab)
            normed = linear_zplus(
                hidden, trace.n.detach(), trace.pre_act.detach(), wt["fc1_w"], stab, bias=wt["fc1_b"]
            )
            r = clone_rule(r_res, normed, y, stab)
        merged = linear_zplus(r, trace.o.detach(), trace.z_proj.detach(), wt["proj_w"], stab, scale=0.5)
        batch, count, _ = trace.x.shape
        per_head = merged.reshape(batch, 1, self.num_heads, self.head_dim).transpose(1, 2)
        kv = trace.kv.detach()
        _, v = kv.reshape(batch, count, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        o_heads = trace.o.detach().view(batch, 1, self.num_heads, self.head_dim).transpose(1, 2)
        r_attn, r_value = attention_value_rule(per_head, trace.attn.detach(), v, o_heads, stab)
        q, k = trace.q.detach(), trace.k.detach()
        _, r_key = query_key_rule(r_attn, q, k, q @ k.transpose(-1, -2), stab, scale=0.5)
        r_kv = torch.stack([r_key.transpose(1, 2), r_value.transpose(1, 2)], dim=2).reshape(batch, count, -1)
        r_x = linear_zplus(r_kv, trace.x.detach(), kv, wt["kv_w"], stab, bias=wt["kv_b"])
        if self.pos_embed is not None:
            r_x, _ = add_rule(r_x, trace.tokens.detach(), self.pos_embed, stab)
        return r_x
