"""The backward relevance pass through a recorded twin forward (Chefer et al., CVPR 2021).

Order, from the output down: the target's seed (one-hot of value 1 for a class, output ⊙ d for
a direction) → head (z⁺, when the model has one) → fc_norm (identity) → pooling
(class/distillation token, or LRP-0 of the token mean) → final norm (identity) → every block in
reverse → (full LRP only) pos_embed add rule → patch embedding convolutions → pixels.

Through one block (reverse): add rule of the MLP residual; fc2 and fc1 (z⁺), GELU and norm2 as
identity; clone; add rule of the attention residual; proj (z⁺); heads split; A·V rule → R_A/2,
R_V/2 (R_A/2 is the block's "attention relevance"); softmax as identity; Q·Kᵀ rule → R_Q/2, R_K/2;
qkv (z⁺); norm1 identity; clone. Layer scale is an elementwise product: LRP-0 makes it identity.
Gated MLPs: the product value ⊙ act(gate) gives each factor half (AttnLRP's uniform rule); norms
inside the attention or MLP, qk_norm and RoPE are identity (docs/lrp-rules.md).

The pass stops as soon as the caller has what it asked for: a method that reads block s's
attention relevance never runs block s's Q·Kᵀ and qkv rules nor anything below it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from attnmap.vit.lrp.attention import attention_relevance
from attnmap.vit.lrp.block import BlockTrace, BlockTwin
from attnmap.vit.lrp.rules import (
    Stabiliser,
    Workspace,
    add_rule,
    clone_rule,
    linear_zplus,
    max_pool_rule,
    mean_rule,
    passthrough_rule,
)
from attnmap.vit.lrp.stem import stem_relevance
from attnmap.vit.lrp.twin import Trace, ViTTwin
from attnmap.vit.pooling import MAX_POOLS


@dataclass
class Relevance:
    """Per-block attention relevance R_A/2 (B, H, N, N), or what the pass's ``reduce`` made of it (for
    the maps read from attention); for full LRP, the pixel map (B, H, W)."""

    attention: dict[int, torch.Tensor]
    pixels: torch.Tensor | None = None


def head_relevance(twin: ViTTwin, trace: Trace, seed: torch.Tensor, stab: Stabiliser) -> torch.Tensor:
    """Relevance of the final-norm tokens (B, N, D), from the relevance ``seed`` at the model's output."""
    if twin.head_w is None:
        pooled = seed.to(trace.pooled.dtype)
    else:
        pooled = linear_zplus(seed, trace.pooled.detach(), trace.z_head.detach(), twin.head_w, stab)
    if twin.pooler is not None:  # activation identity, dense z⁺
        pooled = linear_zplus(pooled, trace.pool_out.detach(), trace.z_pooler.detach(), twin.pooler[0], stab)
    tokens = trace.final_tokens.detach()
    if twin.global_pool == "" and not twin.distilled:
        return passthrough_rule(pooled, tokens, stab)
    relevance = torch.zeros_like(tokens)
    dim = tokens.shape[-1]
    if twin.distilled:
        relevance[:, 0] = passthrough_rule(pooled[:, :dim], tokens[:, 0], stab)
        relevance[:, 1] = passthrough_rule(pooled[:, dim:], tokens[:, 1], stab)
    elif twin.global_pool == "token":
        relevance[:, 0] = passthrough_rule(pooled, tokens[:, 0], stab)
    elif twin.global_pool == "cls_mean":
        relevance[:, 0] = passthrough_rule(pooled[:, :dim], tokens[:, 0], stab)
        relevance[:, twin.pool_start :] = mean_rule(pooled[:, dim:], tokens[:, twin.pool_start :], stab)
    elif twin.global_pool == "map":
        start = 0 if twin.pool_include_prefix else twin.num_prefix
        relevance[:, start:] = twin.attn_pool.relevance(trace.pool, pooled, stab)
    else:
        start = 0 if twin.pool_include_prefix else twin.num_prefix
        if twin.global_pool in MAX_POOLS:
            relevance[:, start:] = max_pool_rule(pooled, tokens[:, start:], twin.global_pool, stab)
        else:
            relevance[:, start:] = mean_rule(pooled, tokens[:, start:], stab)
    return relevance


def block_relevance(
    block: BlockTwin,
    bt: BlockTrace,
    relevance: torch.Tensor,
    stab: Stabiliser,
    attention_only: bool,
    work: Workspace | None = None,
    keep_attention: bool = True,
    rows: int | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Relevance of the block's input (None when ``attention_only``) and its attention relevance R_A/2
    (held in ``work`` without ``keep_attention``).

    ``rows``: the block was run on its first ``rows`` output tokens (the last block of a class-token
    read-out, see `ViTTwin.readout_rows`), and ``relevance`` and the trace above the attention hold
    those rows only. The other rows would carry zero relevance, so the rules above the attention
    (the MLP, both add rules and proj: three quarters of the block's matrix products) run on those
    rows alone; the A·V and Q·Kᵀ rules spread the relevance over every token.
    """
    wt = block.weights
    x = bt.x if rows is None else bt.x[:, :rows]
    # Temporaries and relevances that die inside the block live in ``work``; the block's output
    # relevance too (role "x_residual": the next block reads it before writing that role again).
    h_residual, mlp_share = add_rule(
        relevance, bt.h, bt.mlp_out(block), stab, bt.out, work, role="h_residual"
    )
    hidden = linear_zplus(
        mlp_share,
        bt.fc2_input(),
        bt.y_fc2,
        wt["fc2_w"],
        stab,
        block.abs_weight("fc2"),
        bias=wt["fc2_b"],
        work=work,
        spend_output=True,
        result_role="r_hidden",
    )
    if block.glu:  # value ⊙ act(gate): uniform rule, half to each factor; act is identity
        hidden = torch.cat([hidden * 0.5, hidden * 0.5], dim=-1)
    normed2 = linear_zplus(
        hidden,
        bt.n2,
        bt.pre_act,
        wt["fc1_w"],
        stab,
        block.abs_weight("fc1"),
        bias=wt["fc1_b"],
        work=work,
        spend_output=True,
        result_role="r_normed",
    )
    h_total = clone_rule(h_residual, normed2, bt.h, stab)
    x_residual, attn_share = add_rule(
        h_total, x, bt.attn_out(block), stab, total_input=bt.h, work=work, role="x_residual"
    )
    # Halved here once, so R_A/2 and R_V/2 come out of the A·V rule directly (it is linear in R).
    merged = linear_zplus(
        attn_share,
        bt.proj_input(),
        bt.y_proj,
        wt["proj_w"],
        stab,
        block.abs_weight("proj"),
        bias=wt["proj_b"],
        scale=0.5,
        work=work,
        spend_output=True,
        result_role="r_merged",
    )
    r_attn, r_qkv = attention_relevance(
        merged,
        bt.o,
        bt.attn,
        bt.heads(block),
        stab,
        attention_only,
        work,
        keep_attention,
        rows,
        bt.scaled_scores,
        block.scale,
    )
    if r_qkv is None:
        return None, r_attn
    normed1 = linear_zplus(
        r_qkv,
        bt.n1,
        bt.qkv,
        wt["qkv_w"],
        stab,
        block.abs_weight("qkv"),
        bias=wt["qkv_b"],
        work=work,
        spend_output=True,
        result_role="r_normed",
    )
    if rows is not None:  # the residual's relevance back on every token row (zero past ``rows``)
        x_residual, leading = torch.zeros_like(normed1), x_residual
        x_residual[:, :rows] = leading
    return clone_rule(x_residual, normed1, bt.x, stab), r_attn


def embedding_relevance(
    twin: ViTTwin, trace: Trace, relevance: torch.Tensor, stab: Stabiliser
) -> torch.Tensor:
    """Relevance of the first block's input → input pixels (B, H, W), summed over colour channels."""
    prefix = twin.num_prefix
    if not twin.exact_embedding:
        # generic embedding: each token = its own value (the patch embedding; the class/distillation
        # token parameter) + everything the model added (positions), found as the difference; the
        # add rule over all tokens, as for timm ViTs; prefix tokens hold no pixels
        own = torch.cat([twin.raw_prefix(trace.first_tokens), trace.patch_tokens], dim=1)
        tokens, _ = add_rule(relevance, own, trace.first_tokens - own, stab)
        patches = passthrough_rule(tokens[:, prefix:], trace.patch_tokens, stab)
    elif trace.pos_embed is None:
        patches = relevance[:, prefix:]
    elif twin.model.no_embed_class:
        patches, _ = add_rule(relevance[:, prefix:], trace.patch_tokens, trace.pos_embed, stab)
    else:
        tokens, _ = add_rule(relevance, trace.prefixed_tokens, trace.pos_embed, stab)
        patches = passthrough_rule(tokens[:, prefix:], trace.patch_tokens, stab)
    batch, _, dim = patches.shape
    grid = patches.transpose(1, 2).reshape(batch, dim, *trace.grid)
    pixels = stem_relevance(twin.stem, trace.stem, grid, stab)
    return pixels.sum(dim=1)


def relevance_pass(
    twin: ViTTwin,
    trace: Trace,
    seed: torch.Tensor,
    stab: Stabiliser,
    stop_block: int,
    to_pixels: bool = False,
    reduce: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    token_seed: torch.Tensor | None = None,
) -> Relevance:
    """Propagate ``seed`` (relevance at the model's output) down to block ``stop_block``'s attention
    (or to the pixels). Consumes ``trace``: each block's Linear outputs are overwritten by their
    rules' temporaries once read. ``token_seed``: relevance a score put on the final tokens directly
    (it read them beside the pooled output), added to what the head and pool rules give them.

    ``reduce(index, R_A)``, when given, turns each block's R_A/2 into what the method keeps (e.g. a
    head mean) as soon as it exists; R_A itself then lives in one reused buffer instead of one new
    (B, H, N, N) tensor per block. Full LRP keeps no attention relevance at all.
    """
    result = Relevance(attention={})
    work = Workspace()
    keep = reduce is None and not to_pixels
    rows = trace.rows  # the last block was run on these rows only
    with torch.no_grad():
        relevance = head_relevance(twin, trace, seed, stab)
        if token_seed is not None:
            relevance = relevance + token_seed.to(relevance.dtype)
        for block in reversed(twin.blocks[stop_block:]):
            attention_only = block.index == stop_block and not to_pixels
            relevance, attention = block_relevance(
                block, trace.blocks[block.index], relevance, stab, attention_only, work, keep, rows
            )
            rows = None  # below the last block's attention, every token holds relevance
            if reduce is not None:
                result.attention[block.index] = reduce(block.index, attention)
            elif keep:
                result.attention[block.index] = attention
        if to_pixels:
            result.pixels = embedding_relevance(twin, trace, relevance, stab)
    return result
