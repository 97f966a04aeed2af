"""The A·V and Q·Kᵀ rules of one attention layer, computed in the layout the forward left behind.

Same rules as `attnmap.vit.lrp.rules.attention_value_rule` and `query_key_rule` (LRP-0 per head,
see Chefer et al. 2021): for O = A·V, S = R_O ⊘ O, R_A = A ⊙ (S·Vᵀ), R_V = V ⊙ (Aᵀ·S); for the
unscaled scores Q·Kᵀ, S' = (R_A ⊘ Q·Kᵀ)/2, R_Q/2 = Q ⊙ (S'·K), R_K/2 = K ⊙ (S'ᵀ·Q).

Why a separate path: q, k and v are strided views of the fused qkv output (B, N, 3, H, d) and the
relevance arrives as merged heads (B, N, D). A per-head batched matmul over (B, H) would first copy
every operand into a contiguous (B·H, N, d) block and the three results back into the qkv layout.
Within one sample, heads are a plain stride, so one ``bmm`` per sample reads the views in place and
the products are written straight into the (B, N, 3D) relevance of the qkv output. Relevance is per
sample, so looping over the (at most `CHUNK_SIZE`) samples changes nothing in the result.

When the relevance of O sits on a few leading token rows only (the last block of a class-token
read-out), the rules run on those rows (`_leading_rows_relevance`): R_A and R_Q are zero on the
other rows, and R_K, R_V sum over the rows that hold relevance only.
"""

from __future__ import annotations

import torch

from attnmap.vit.lrp.rules import Stabiliser, Workspace


def _on_scaled_scores(stab: Stabiliser, scale: float) -> tuple[Stabiliser, float]:
    """The Q·Kᵀ rule's division R_A ⊘ 2·(q·kᵀ), with the same ε, done on the forward's scaled scores
    (q·scale)·kᵀ: the stabiliser with ε·scale and the factor 2/scale."""
    return Stabiliser(eps=stab.eps * scale, follow_sign=stab.follow_sign), 2.0 / scale


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, N, H·d) → (B, H, N, d) view."""
    batch, tokens, width = t.shape
    return t.view(batch, tokens, heads, width // heads).transpose(1, 2)


def attention_relevance(
    merged: torch.Tensor,
    o: torch.Tensor,
    attn: torch.Tensor,
    qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    stab: Stabiliser,
    attention_only: bool,
    work: Workspace | None = None,
    keep_attention: bool = True,
    rows: int | None = None,
    scaled_scores: torch.Tensor | None = None,
    scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """R_A (B, H, N, N) and, unless ``attention_only``, the (B, N, 3D) relevance of q, k, v.

    ``merged``: relevance of O = A·V with heads merged (B, N, D), already halved; ``o`` the forward's
    O (B, N, D); ``qkv``: q, k, v as (B, H, N, d), q and k as they entered the scores. Without
    ``keep_attention`` R_A lives in ``work`` (valid until the next block's call), as does the q, k, v
    relevance (consumed by the caller's qkv rule). ``rows``: ``merged`` holds only the first ``rows``
    token rows, the relevance of the others being zero (None: every row). ``scaled_scores``: the
    forward's (q·``scale``)·kᵀ, which the Q·Kᵀ rule then divides by instead of multiplying q and k
    again (None: recomputed).
    """
    if rows is not None:
        return _leading_rows_relevance(
            merged, o, attn, qkv, stab, attention_only, work, keep_attention, scaled_scores, scale
        )
    query, key, value = qkv
    batch, heads, tokens, head_dim = value.shape

    def buffer(role: str, like: torch.Tensor) -> torch.Tensor:
        return torch.empty_like(like) if work is None else work.get(role, like.shape, like)

    s = _heads(stab.divide(merged, o, out=None if work is None else work.get("s_o", o.shape, o)), heads)
    r_attn = torch.empty_like(attn) if keep_attention else buffer("r_attn", attn)
    for b in range(batch):
        torch.bmm(s[b], value[b].transpose(-1, -2), out=r_attn[b])
    r_attn.mul_(attn)
    if attention_only:
        return r_attn, None
    shape = (batch, tokens, 3, heads, head_dim)
    r_qkv = merged.new_empty(shape) if work is None else work.get("r_qkv", shape, merged)
    r_q, r_k, r_v = (r_qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, H, N, d) views
    scores = buffer("scores", attn) if scaled_scores is None else scaled_scores
    for b in range(batch):
        torch.mul(value[b], torch.bmm(attn[b].transpose(-1, -2), s[b]), out=r_v[b])
        if scaled_scores is None:
            torch.bmm(query[b], key[b].transpose(-1, -2), out=scores[b])  # recomputed, unscaled
    rule, factor = (stab, 2.0) if scaled_scores is None else _on_scaled_scores(stab, scale)
    s_scores = rule.divide(r_attn, scores, factor=factor, out=buffer("scores_denominator", attn))
    for b in range(batch):
        torch.mul(query[b], torch.bmm(s_scores[b], key[b]), out=r_q[b])
        torch.mul(key[b], torch.bmm(s_scores[b].transpose(-1, -2), query[b]), out=r_k[b])
    return r_attn, r_qkv.view(batch, tokens, -1)


def _leading_rows_relevance(
    merged: torch.Tensor,
    o: torch.Tensor,
    attn: torch.Tensor,
    qkv: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    stab: Stabiliser,
    attention_only: bool,
    work: Workspace | None,
    keep_attention: bool,
    scaled_scores: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`attention_relevance` for relevance on the first k = ``merged.shape[1]`` rows of O only.

    The same rules with the zero rows left out: S = R_O ⊘ O and R_A, the scores and R_Q exist on
    those k rows, and the products that sum over rows (R_V = V ⊙ (Aᵀ·S), R_K = K ⊙ (S'ᵀ·Q)) sum
    over those k rows only, which is everything they would add up.
    """
    query, key, value = qkv
    batch, heads, tokens, head_dim = value.shape
    rows = merged.shape[1]
    s = _heads(stab.divide(merged, o[:, :rows]), heads)  # (B, H, k, d)
    if keep_attention or work is None:
        r_attn = torch.zeros_like(attn)
    else:
        r_attn = work.get("r_attn", attn.shape, attn).zero_()
    top = r_attn[:, :, :rows]
    torch.mul(s @ value.transpose(-1, -2), attn[:, :, :rows], out=top)
    if attention_only:
        return r_attn, None
    r_qkv = merged.new_zeros(batch, tokens, 3, heads, head_dim)
    r_qkv[:, :, 2] = (value * (attn[:, :, :rows].transpose(-1, -2) @ s)).transpose(1, 2)
    queries = query[:, :, :rows]
    if scaled_scores is None:
        scores, rule, factor = queries @ key.transpose(-1, -2), stab, 2.0  # recomputed, unscaled (B, H, k, N)
    else:
        scores, (rule, factor) = scaled_scores[:, :, :rows], _on_scaled_scores(stab, scale)
    s_scores = rule.divide(top, scores, factor=factor)
    r_qkv[:, :rows, 0] = (queries * (s_scores @ key)).transpose(1, 2)
    r_qkv[:, :, 1] = (key * (s_scores.transpose(-1, -2) @ queries)).transpose(1, 2)
    return r_attn, r_qkv.view(batch, tokens, -1)
