"""Max-pooled read-outs (timm ``global_pool='max'`` / ``'avgmax'``): the query row is what the pool reads.

The attention methods read one row of A (and the rollouts carry it): for a max pool that row weights
each token by the share of features whose maximum it holds, i.e. the pool's Jacobian averaged over
features. It was read as the patch mean before, a silently different map.
"""

from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

import attnmap
from attnmap.vit.capture import capture
from attnmap.vit.methods import attention_rollout

PREFIX = 2  # class token + 1 register


def _model(pool: str, include_prefix: bool) -> VisionTransformer:
    torch.manual_seed(0)
    model = VisionTransformer(
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=2,
        num_heads=4,
        num_classes=3,
        reg_tokens=PREFIX - 1,
        global_pool=pool,
        pool_include_prefix=include_prefix,
    )
    return model.double().eval()


def _pool_jacobian_row(model: VisionTransformer, x: torch.Tensor) -> torch.Tensor:
    """(B, N): d(Σ_d pooled_d)/d(tokens) summed over features / D, by autograd through timm's own pool."""
    tokens: list[torch.Tensor] = []
    handle = model.norm.register_forward_hook(lambda _m, _i, out: tokens.append(out))
    with torch.no_grad():
        model(x)
    handle.remove()
    final = tokens[0].detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.pool(final).sum(), final)
    return grad.sum(dim=-1) / final.shape[-1]


@pytest.mark.parametrize("include_prefix", [False, True])
@pytest.mark.parametrize("pool", ["max", "avgmax"])
def test_query_row_is_the_pools_jacobian(single_thread: None, pool: str, include_prefix: bool) -> None:
    model = _model(pool, include_prefix)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    captured = capture(model, x)
    expected = _pool_jacobian_row(model, x)
    torch.testing.assert_close(captured.query, expected, rtol=0, atol=1e-12)
    assert captured.query.sum(dim=-1).sub(1).abs().max() < 1e-12
    # the max winners are kept as signal; only avgmax's uniform half is the identity the rollouts drop
    start = 0 if include_prefix else PREFIX
    if pool == "max":
        assert captured.identity_query.abs().max() == 0
    else:
        uniform = torch.zeros_like(captured.query)
        uniform[:, start:] = 0.5 / (captured.query.shape[-1] - start)
        torch.testing.assert_close(captured.identity_query, uniform, rtol=0, atol=0)


@pytest.mark.parametrize("pool", ["max", "avgmax"])
def test_attention_and_rollout_read_the_max_pools_row(single_thread: None, pool: str) -> None:
    model = _model(pool, include_prefix=False)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    query = _pool_jacobian_row(model, x)
    captured = capture(model, x)
    last = captured.attentions[captured.layers()[-1]]
    expected_attention = torch.einsum("bn,bhnm->bm", query, last)[:, PREFIX:] / last.shape[1]
    ours = attnmap.explain(model, x, "attention")
    torch.testing.assert_close(ours.reshape(2, -1), expected_attention, rtol=1e-10, atol=1e-14)

    identity = torch.zeros_like(query)
    if pool == "avgmax":
        identity[:, PREFIX:] = 0.5 / (query.shape[-1] - PREFIX)
    expected_rollout = attention_rollout(captured.attention_list(), query, PREFIX, remove_identity=identity)
    torch.testing.assert_close(
        attnmap.explain(model, x, "rollout").reshape(2, -1), expected_rollout, rtol=1e-10, atol=1e-14
    )
    # the old reading (patch mean) gives another map: the test above would have caught it
    mean_row = torch.zeros_like(query)
    mean_row[:, PREFIX:] = 1.0 / (query.shape[-1] - PREFIX)
    old = attention_rollout(captured.attention_list(), mean_row, PREFIX)
    assert not torch.allclose(old, expected_rollout)


def test_batch_equals_singles_on_a_max_pooled_model(single_thread: None) -> None:
    model = _model("max", include_prefix=False)
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for method in ("attention", "rollout", "grad_rollout", "attn_gradcam"):
        batch = attnmap.explain(model, x, method, target=0)
        singles = torch.cat([attnmap.explain(model, x[i : i + 1], method, target=0) for i in range(3)])
        torch.testing.assert_close(batch, singles, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("pool", ["max", "avgmax"])
def test_lrp_pool_rule_is_lrp0_of_timms_own_pool(pool: str) -> None:
    """R_td = x_td ∂pooled_d/∂x_td · R_d / pooled_d, by autograd through timm's own pool (with a tie)."""
    from timm.layers import global_pool_nlc

    from attnmap.vit.lrp.rules import REFERENCE_STABILISER, max_pool_rule

    generator = torch.Generator().manual_seed(4)
    tokens = torch.randn(2, 7, 5, dtype=torch.float64, generator=generator)
    tokens[0, 3, 2] = tokens[0, 5, 2] = tokens[0, :, 2].max() + 1.0  # a tied maximum: shared
    relevance = torch.randn(2, 5, dtype=torch.float64, generator=generator)
    x = tokens.clone().requires_grad_(True)
    pooled = global_pool_nlc(x, pool_type=pool, num_prefix_tokens=0)
    (grad,) = torch.autograd.grad(pooled, x, grad_outputs=relevance / pooled.detach())
    ours = max_pool_rule(relevance, tokens, pool, REFERENCE_STABILISER)
    torch.testing.assert_close(ours, tokens * grad, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(ours.sum(dim=1), relevance, rtol=1e-7, atol=1e-12)  # conservative
    if pool == "max":
        assert ours[0, 3, 2] == ours[0, 5, 2] == relevance[0, 2] / 2


@pytest.mark.parametrize("pool", ["max", "avgmax"])
def test_every_method_on_a_max_pooled_model(single_thread: None, pool: str) -> None:
    from attnmap.vit.lrp.methods import _readout_rows
    from attnmap.vit.lrp.readers import build_twin

    model = _model(pool, include_prefix=False)
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    for method in attnmap.methods():
        maps = attnmap.explain(model, x, method, target=1)
        assert torch.isfinite(maps).all() and maps.shape[0] == 2, method
    # transformer attribution's rollout starts from the same row as the attention methods
    twin = build_twin(model)
    trace = twin.forward(x, record_from=0, grad_from=None, record_stem=False)
    query = capture(model, x).query
    torch.testing.assert_close(_readout_rows(twin, query, trace), query, rtol=0, atol=1e-15)
