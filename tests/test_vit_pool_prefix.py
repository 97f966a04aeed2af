"""A pool over every token (timm ``pool_include_prefix=True``): the query row covers the prefix too."""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

import attnmap

PREFIX = 3  # class token + 2 registers


def _last_block_attention(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, N) post-softmax attention of the last block, read with timm's own non-fused path."""
    attn = model.blocks[-1].attn
    seen: list[torch.Tensor] = []
    fused, attn.fused_attn = attn.fused_attn, False
    handle = attn.attn_drop.register_forward_hook(lambda module, inputs, output: seen.append(output))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
        attn.fused_attn = fused
    return seen[0]


@pytest.mark.parametrize("include_prefix", [True, False])
def test_attention_query_row_follows_what_the_pool_averages(
    single_thread: None, include_prefix: bool
) -> None:
    torch.manual_seed(0)
    model = (
        VisionTransformer(
            img_size=32,
            patch_size=8,
            embed_dim=32,
            depth=2,
            num_heads=4,
            num_classes=5,
            reg_tokens=2,
            global_pool="avg",
            pool_include_prefix=include_prefix,
        )
        .double()
        .eval()
    )
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    head_mean = _last_block_attention(model, x).mean(dim=1)  # (B, N, N)
    rows = head_mean if include_prefix else head_mean[:, PREFIX:]  # the tokens the pool averages
    expected = rows.mean(dim=1)[:, PREFIX:].reshape(2, 4, 4)
    torch.testing.assert_close(attnmap.explain(model, x, "attention"), expected, rtol=1e-12, atol=0)
    other = (head_mean[:, PREFIX:] if include_prefix else head_mean).mean(dim=1)[:, PREFIX:].reshape(2, 4, 4)
    assert (expected - other).abs().max() > 1e-6  # the two read-outs give different maps here
