"""Grouped-query attention (timm Eva ``num_kv_heads``, Sapiens2): every method gives the maps of the
same model written as full multi-head attention, its k/v heads repeated for the q heads reading them."""

from __future__ import annotations

import warnings

import pytest
import timm
import torch

import attnmap

METHODS = sorted(attnmap.methods())
SIZES = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=5)


def _build(kv_heads: tuple[int | None, ...]) -> torch.nn.Module:
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_base_patch16_sapiens2", pretrained=False, num_kv_heads=kv_heads, global_pool="token", **SIZES
    )
    return model.double().eval()


@pytest.fixture(scope="module")
def pair() -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    grouped, full = _build((2, 1)), _build((None, None))
    state = {}
    for key, value in grouped.state_dict().items():
        block = key.split(".")[1] if key.startswith("blocks.") else None
        if block is not None and (".k_proj." in key or ".v_proj." in key):
            attn = grouped.blocks[int(block)].attn
            heads = value.reshape(attn.num_kv_heads, -1).repeat_interleave(attn.num_kv_groups, dim=0)
            value = heads.reshape(-1, *value.shape[1:])
        state[key] = value
    full.load_state_dict(state)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(grouped(x), full(x), rtol=1e-10, atol=1e-12)
    return grouped, full, x


@pytest.mark.parametrize("method", METHODS)
def test_grouped_query_attention_gives_the_full_attention_maps(
    single_thread: None, pair, method: str
) -> None:
    grouped, full, x = pair
    assert grouped.blocks[0].attn.num_kv_groups == 2 and grouped.blocks[1].attn.num_kv_groups == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, theirs = (attnmap.explain(m, x, method, target=[1, 4]) for m in (grouped, full))
    assert ours.shape == theirs.shape
    scale = float(theirs.abs().max())
    assert float((ours - theirs).abs().max()) <= 1e-6 * max(scale, 1e-30)
    if method != "attn_gradcam":  # its clamp may zero a map on random weights
        assert float(theirs.amax() - theirs.amin()) > 0
