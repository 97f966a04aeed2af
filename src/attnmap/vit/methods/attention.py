"""Raw attention: what the query row (CLS) of one block attends to, averaged over heads."""

from __future__ import annotations

import torch
from torch import nn

from attnmap.vit.capture import capture
from attnmap.vit.registry import Target, method


def query_attention(attention: torch.Tensor, query: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """Head-mean attention of the query row onto the patch tokens.

    ``attention`` (B, H, N, N) post-softmax; ``query`` (N,) or (B, N) row weights (one-hot CLS,
    uniform over patch rows, an attention-pool row...); returns (B, N − num_prefix_tokens).
    """
    head_mean = attention.mean(dim=1)
    query = query.to(head_mean.dtype).expand(head_mean.shape[0], head_mean.shape[-1])
    row = torch.einsum("bn,bnm->bm", query, head_mean)
    return row[:, num_prefix_tokens:]


@method(
    "attention",
    "Raw attention of one block (layer=-1): the read-out's row, mean over heads; class independent.",
    needs_grad=False,
)
def attention_map(model: nn.Module, images: torch.Tensor, target: Target, *, layer: int = -1) -> torch.Tensor:
    """Registered wrapper: one no-grad forward recording only block ``layer``."""
    captured = capture(model, images, layers=layer)
    captured.objective(target, "attention", needs_target=False)  # class independent; a bad target is an error
    attention = captured.attentions[captured.layers()[0]]
    scores = query_attention(attention, captured.query_weights(attention), captured.num_prefix_tokens)
    return captured.to_grid(scores)
