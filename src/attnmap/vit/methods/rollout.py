"""Attention rollout (Abnar & Zuidema 2020): how attention flows from the query row to the patches.

Per block: fuse heads into M (B, N, N); optionally zero the weakest entries; add the identity (the
residual path) and renormalise rows: M̂ = (M + I) / rowsum(M + I). The rollout J = M̂_{L−1}⋯M̂_s,
read at the query row. Only that row is needed, so it is carried as a vector (qᵀM̂_{L−1})M̂_{L−2}⋯:
O(N²) per block instead of the O(N³) of the full matrix product.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from attnmap.errors import InputError
from attnmap.vit.adapters import adapter_for
from attnmap.vit.capture import capture, start_block
from attnmap.vit.registry import Target, method

HEAD_FUSIONS = ("mean", "max", "min")


def fuse_heads(attention: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """(B, H, N, N) → (B, N, N) by the mean, max or min over heads."""
    if head_fusion == "mean":
        return attention.mean(dim=1)
    if head_fusion == "max":
        return attention.amax(dim=1)
    if head_fusion == "min":
        return attention.amin(dim=1)
    raise InputError(f"unknown head_fusion {head_fusion!r}; choose one of {', '.join(HEAD_FUSIONS)}")


def discard_weakest(fused: torch.Tensor, discard_ratio: float, num_prefix_tokens: int) -> torch.Tensor:
    """Zero the smallest ``discard_ratio`` fraction of each image's entries in the patch columns.

    Entries attending to prefix tokens (CLS, registers) are always kept: they carry no image
    location, and dropping them would only reshuffle mass onto the patches.
    """
    if not 0.0 <= discard_ratio < 1.0:
        raise InputError(f"discard_ratio must lie in [0, 1), got {discard_ratio}")
    patch_part = fused[:, :, num_prefix_tokens:]
    flat = patch_part.reshape(fused.shape[0], -1)
    count = int(flat.shape[1] * discard_ratio)
    if count == 0:
        return fused
    weakest = flat.topk(count, dim=1, largest=False).indices
    kept = flat.scatter(1, weakest, 0.0).reshape(patch_part.shape)
    return torch.cat([fused[:, :, :num_prefix_tokens], kept], dim=2)


def attention_rollout(
    attentions: Sequence[torch.Tensor],
    query: torch.Tensor,
    num_prefix_tokens: int,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    remove_identity: bool | torch.Tensor = True,
) -> torch.Tensor:
    """Rollout of ``attentions`` (blocks s..L−1 in order) at the ``query`` row(s), (N,) or (B, N).

    Each attention is (B, H, N, N), fused here with ``head_fusion``, or (B, N, N) already fused.
    Returns (B, N − num_prefix_tokens): the query row of M̂_{L−1}⋯M̂_s at the patch columns, minus
    (``remove_identity``) the share of the path that never leaves the residual stream,
    q ⊙ Π 1/rowsum(M_l + I). For a CLS query that share sits on the CLS column only, so patch maps
    are unchanged; for a patch-mean query (average-pooled models) it is a uniform ≈ 1/P offset that
    would drown the signal (see docs/average_pooling.md). A tensor (B, N) removes the path of that
    part of the query only (`attnmap.vit.capture.Captured.identity_query`).
    """
    if not attentions:
        raise InputError("rollout needs at least one block's attention")
    batch, tokens = attentions[0].shape[0], attentions[0].shape[-1]
    row = query.to(attentions[0].dtype).expand(batch, tokens)
    identity_path = identity_part(row, remove_identity)
    for attention in reversed(attentions):
        fused = attention if attention.ndim == 3 else fuse_heads(attention, head_fusion)
        fused = discard_weakest(fused, discard_ratio, num_prefix_tokens)
        fused = fused + torch.eye(tokens, dtype=fused.dtype, device=fused.device)
        row_sums = fused.sum(dim=-1)
        fused = fused / row_sums.unsqueeze(-1)
        row = torch.bmm(row.unsqueeze(1), fused).squeeze(1)
        identity_path = identity_path / row_sums
    return (row - identity_path)[:, num_prefix_tokens:]


def identity_part(query: torch.Tensor, remove_identity: bool | torch.Tensor) -> torch.Tensor:
    """The part of the (B, N) query row whose identity path is removed (see `attention_rollout`)."""
    if isinstance(remove_identity, torch.Tensor):
        return remove_identity.to(query.dtype).expand_as(query)
    return query if remove_identity else torch.zeros_like(query)


@method(
    "rollout",
    "Attention rollout (Abnar & Zuidema): head-fused attention + identity, rows normalised, "
    "multiplied from start_layer to the last block; class independent.",
    needs_grad=False,
)
def rollout(
    model: nn.Module,
    images: torch.Tensor,
    target: Target,
    *,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
) -> torch.Tensor:
    """Registered wrapper: one no-grad forward recording blocks start_layer..L−1."""
    if head_fusion not in HEAD_FUSIONS:
        raise InputError(f"unknown head_fusion {head_fusion!r}; choose one of {', '.join(HEAD_FUSIONS)}")
    if not 0.0 <= discard_ratio < 1.0:
        raise InputError(f"discard_ratio must lie in [0, 1), got {discard_ratio}")
    num_blocks = adapter_for(model).num_blocks
    start = start_block(start_layer, num_blocks)
    # fuse heads inside the forward: keeps L × (B, N, N) in memory instead of L × (B, H, N, N)
    fuse = functools.partial(fuse_heads, head_fusion=head_fusion)
    captured = capture(model, images, layers=range(start, num_blocks), reduce=fuse)
    captured.objective(target, "rollout", needs_target=False)  # class independent; checked
    attentions = captured.attention_list()
    query = captured.query_weights(attentions[0])
    scores = attention_rollout(
        attentions,
        query,
        captured.num_prefix_tokens,
        head_fusion,
        discard_ratio,
        remove_identity=captured.identity_query,
    )
    return captured.to_grid(scores)
