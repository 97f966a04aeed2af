"""Behaviour of the LRP methods beyond conformance: batching, float32, timm options, errors, safety."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import ResPostBlock, VisionTransformer
from torch import nn

import attnmap
from attnmap.errors import InputError, UnsupportedModelError
from attnmap.vit.lrp import check
from attnmap.vit.registry import get_method

FIXTURES = Path(__file__).parent / "fixtures" / "vit"
LRP_SOURCES = Path(attnmap.__file__).parent / "vit" / "lrp"

ALL_METHODS = [
    ("transformer_attribution", {}),
    ("transformer_attribution", {"start_layer": 1}),
    ("lrp", {}),
    ("lrp_rollout", {}),
    ("lrp_attention", {}),
    ("lrp_attention", {"layer": 0, "grad": True}),
]


def _perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Seeded weights with 0.1·randn noise (as the fixture), so attention is far from uniform."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype))
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_(0, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
    return model.eval()


def tiny_vit(cls: type[VisionTransformer] = VisionTransformer, **overrides: object) -> nn.Module:
    torch.manual_seed(0)
    config = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, num_classes=5)
    config.update(overrides)
    return _perturb(cls(**config))


def conv_stem_vit(**overrides: object) -> nn.Module:
    from attnmap.vit.conv_stem import ConvPatchEmbed

    return tiny_vit(embed_layer=ConvPatchEmbed, **overrides)


def images_for(model: nn.Module, batch: int, size: tuple[int, int] = (32, 32), seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    dtype = next(model.parameters()).dtype
    return torch.randn(batch, 3, *size, generator=generator, dtype=dtype)


def _correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.double().flatten().numpy(), b.double().flatten().numpy())[0, 1])


@pytest.mark.parametrize(("method", "options"), ALL_METHODS)
def test_relevance_is_per_sample(method: str, options: dict) -> None:
    model = tiny_vit(reg_tokens=1).double()
    images = images_for(model, 8)
    batched = attnmap.explain(model, images, method, **options)
    for index in (0, 5):
        alone = attnmap.explain(model, images[index : index + 1], method, **options)
        torch.testing.assert_close(
            batched[index : index + 1], alone, rtol=1e-9, atol=1e-12 * alone.abs().max()
        )


def test_batches_larger_than_a_chunk_keep_each_images_target() -> None:
    from attnmap.vit.lrp.methods import CHUNK_SIZE

    model = tiny_vit().double()
    batch = CHUNK_SIZE + 3
    images = images_for(model, batch, seed=4)
    targets = [index % 5 for index in range(batch)]
    batched = attnmap.explain(model, images, "transformer_attribution", target=targets)
    for index in (0, CHUNK_SIZE - 1, CHUNK_SIZE, batch - 1):
        one = images[index : index + 1]
        alone = attnmap.explain(model, one, "transformer_attribution", target=targets[index])
        torch.testing.assert_close(
            batched[index : index + 1], alone, rtol=1e-9, atol=1e-12 * alone.abs().max()
        )
    with pytest.raises(InputError, match="targets for a batch"):
        attnmap.explain(model, images, "lrp", target=[0, 1])


@pytest.fixture(scope="module")
def fixture_model() -> nn.Module:
    vit = timm.create_model("vit_tiny_patch16_224", depth=4, num_classes=10, pretrained=False)
    vit.load_state_dict(torch.load(FIXTURES / "chefer_vit_weights.pt", weights_only=True))
    return vit.eval()


@pytest.mark.slow
@pytest.mark.parametrize(("method", "options"), ALL_METHODS)
def test_float32_correlates_with_float64(fixture_model: nn.Module, method: str, options: dict) -> None:
    with np.load(FIXTURES / "chefer_vit_public.npz") as data:
        images = torch.from_numpy(data["input_images"])
    maps32 = attnmap.explain(fixture_model, images, method, **options)
    maps64 = attnmap.explain(copy.deepcopy(fixture_model).double(), images.double(), method, **options)
    assert maps32.dtype == torch.float32
    for one32, one64 in zip(maps32, maps64, strict=True):
        assert _correlation(one32, one64) >= 0.99


def test_float32_conv_stem_correlates_with_float64() -> None:
    model = conv_stem_vit()
    images = images_for(model, 2)
    for method, options in ALL_METHODS:
        maps32 = attnmap.explain(model, images, method, **options)
        maps64 = attnmap.explain(copy.deepcopy(model).double(), images.double(), method, **options)
        for one32, one64 in zip(maps32, maps64, strict=True):
            assert _correlation(one32, one64) >= 0.99, method


VARIANTS = {
    "registers": lambda: tiny_vit(reg_tokens=2),
    "avg_pool": lambda: tiny_vit(class_token=False, global_pool="avg"),
    "avg_pool_with_prefix": lambda: tiny_vit(global_pool="avg", reg_tokens=1, fc_norm=False),
    "no_embed_class": lambda: tiny_vit(no_embed_class=True, reg_tokens=1),
    "layer_scale": lambda: tiny_vit(init_values=0.5),
    "no_qkv_bias": lambda: tiny_vit(qkv_bias=False),
    "pre_norm": lambda: tiny_vit(pre_norm=True),
    "deit_distilled": lambda: tiny_vit(VisionTransformerDistilled),
    "conv_stem": conv_stem_vit,
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_timm_options_run_and_match_their_model(variant: str) -> None:
    model = VARIANTS[variant]().double()
    images = images_for(model, 2)
    for method, options in ALL_METHODS:
        maps = attnmap.explain(model, images, method, **options)  # the twin check ran inside
        expected = (2, 32, 32) if method == "lrp" else (2, 4, 4)
        assert maps.shape == expected, (method, maps.shape)
        assert torch.isfinite(maps).all()
        assert maps.abs().sum() > 0


def test_dynamic_image_size_and_padding() -> None:
    model = tiny_vit(dynamic_img_size=True, dynamic_img_pad=True).double()
    images = images_for(model, 2, size=(44, 52))
    assert attnmap.explain(model, images, "lrp").shape == (2, 44, 52)
    assert attnmap.explain(model, images, "transformer_attribution").shape == (2, 6, 7)


def test_wrong_image_size_is_an_input_error() -> None:
    model = tiny_vit()
    with pytest.raises(InputError, match="img_size"):
        attnmap.explain(model, torch.randn(1, 3, 40, 40), "lrp_rollout")


def test_wrong_channel_count_is_an_input_error() -> None:
    with pytest.raises(InputError, match="channels"):
        attnmap.explain(tiny_vit(), torch.randn(1, 1, 32, 32), "lrp")


def test_full_lrp_conserves_relevance_through_a_conv_stem() -> None:
    """No bias or pos_embed shares: all relevance of the target logit (1) must reach the pixels."""
    model = conv_stem_vit(class_token=False, global_pool="avg", pos_embed="none").double()
    pixels = attnmap.explain(model, images_for(model, 3), "lrp")
    torch.testing.assert_close(pixels.sum(dim=(1, 2)), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-6)


def test_full_lrp_conserves_relevance_plain_stem() -> None:
    model = tiny_vit(class_token=False, global_pool="avg", pos_embed="none").double()
    pixels = attnmap.explain(model, images_for(model, 2), "lrp")
    torch.testing.assert_close(pixels.sum(dim=(1, 2)), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-6)


class _MaxPoolStemEmbed(timm.layers.PatchEmbed):
    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.proj = nn.Sequential(
            nn.Conv2d(3, 16, 3, 2, 1), nn.MaxPool2d(2), nn.Conv2d(16, self.proj.out_channels, 2, 2)
        )


class _ScaledHeadViT(VisionTransformer):
    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return 2 * super().forward_head(x, pre_logits)


def _with_head(model: nn.Module, head: nn.Module) -> nn.Module:
    model.head = head
    return model


UNSUPPORTED = {
    "attn_pool (AttentionPoolPrr)": lambda: tiny_vit(global_pool="prr"),
    "blocks.0 (ResPostBlock)": lambda: tiny_vit(block_fn=ResPostBlock),
    "patch_embed.proj.1 (MaxPool2d)": lambda: tiny_vit(embed_layer=_MaxPoolStemEmbed),
    "head (AvgPool1d)": lambda: _with_head(tiny_vit(), nn.AvgPool1d(1)),
    "differ from the model's own forward": lambda: tiny_vit(_ScaledHeadViT),
    "got Linear": lambda: nn.Linear(3, 3),
}


@pytest.mark.parametrize("message", sorted(UNSUPPORTED))
def test_unsupported_layers_are_named(message: str) -> None:
    model = UNSUPPORTED[message]()
    with pytest.raises(UnsupportedModelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        attnmap.explain(model, torch.randn(1, 3, 32, 32), "lrp")


def test_model_is_left_untouched() -> None:
    model = tiny_vit(drop_rate=0.1, attn_drop_rate=0.1)
    model.train()
    model.blocks[1].requires_grad_(False)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    images = images_for(model, 2)
    first = attnmap.explain(model, images, "transformer_attribution")
    second = attnmap.explain(model, images, "transformer_attribution")
    torch.testing.assert_close(first, second, rtol=0, atol=0)  # eval semantics although training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert not images.requires_grad


def test_twin_check_reruns_when_weights_change(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = check._model_forward
    monkeypatch.setattr(check, "_model_forward", lambda m, x: calls.append(1) or original(m, x))
    model = tiny_vit()
    images = images_for(model, 1)
    attnmap.explain(model, images, "lrp_attention")
    attnmap.explain(model, images, "lrp_attention")
    assert len(calls) == 1
    with torch.no_grad():
        model.head.weight.mul_(1.5)
    attnmap.explain(model, images, "lrp_attention")
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("method", "options", "message"),
    [
        ("transformer_attribution", {"start_layer": 3}, "start_layer=3 is out of range"),
        ("lrp_rollout", {"start_layer": -1}, "start_layer=-1 is out of range"),
        ("lrp_attention", {"layer": 1.5}, "layer must be an integer"),
        ("lrp_attention", {"grad": "yes"}, "grad must be True or False"),
        ("lrp", {"target": 7}, "out of range"),
    ],
)
def test_bad_options_are_input_errors(method: str, options: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        attnmap.explain(tiny_vit(), torch.randn(1, 3, 32, 32), method, **options)


def test_negative_layer_counts_from_the_end() -> None:
    model = tiny_vit().double()
    images = images_for(model, 1)
    torch.testing.assert_close(
        attnmap.explain(model, images, "lrp_attention", layer=-1),
        attnmap.explain(model, images, "lrp_attention", layer=2),
    )


def test_methods_are_registered() -> None:
    listed = attnmap.methods()
    for name in ("transformer_attribution", "lrp", "lrp_rollout", "lrp_attention"):
        assert name in listed
    assert get_method("lrp").output == "pixels"
    assert get_method("transformer_attribution").needs_grad
    assert get_method("lrp_attention").options() == {"layer": -1, "grad": False}


def test_no_hard_coded_device() -> None:
    for source in LRP_SOURCES.glob("*.py"):
        assert ".cuda(" not in source.read_text(), source.name


@pytest.mark.gpu
def test_runs_on_the_models_device() -> None:
    model = tiny_vit().cuda()
    maps = attnmap.explain(model, images_for(model, 2).cuda(), "transformer_attribution")
    assert maps.device.type == "cuda"


def test_fast_zplus_rules_equal_the_four_term_definition() -> None:
    """(xWᵀ + |x||W|ᵀ)/2 forms equal the textbook x⁺W⁺ᵀ + x⁻W⁻ᵀ rule, for Linear and Conv2d."""
    from attnmap.vit.lrp.rules import REFERENCE_STABILISER, conv_zplus, linear_zplus

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 7, generator=generator, dtype=torch.float64)
    weight = torch.randn(4, 7, generator=generator, dtype=torch.float64)
    relevance = torch.randn(2, 5, 4, generator=generator, dtype=torch.float64)
    xp, xn, wp, wn = x.clamp(min=0), x.clamp(max=0), weight.clamp(min=0), weight.clamp(max=0)
    s = relevance / (xp @ wp.T + xn @ wn.T + 1e-9)
    expected = xp * (s @ wp) + xn * (s @ wn)
    ours = linear_zplus(relevance, x, x @ weight.T, weight, REFERENCE_STABILISER)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)

    image = torch.randn(2, 3, 9, 9, generator=generator, dtype=torch.float64)
    kernel = torch.randn(6, 3, 3, 3, generator=generator, dtype=torch.float64)
    conv = {"stride": (2, 2), "padding": (1, 1), "dilation": (1, 1), "groups": 1}
    out_relevance = torch.randn(2, 6, 5, 5, generator=generator, dtype=torch.float64)
    ip, in_ = image.clamp(min=0).requires_grad_(), image.clamp(max=0).requires_grad_()
    z = nn.functional.conv2d(ip, kernel.clamp(min=0), **conv) + nn.functional.conv2d(
        in_, kernel.clamp(max=0), **conv
    )
    grads = torch.autograd.grad(z, [ip, in_], out_relevance / (z.detach() + 1e-9))
    expected = ip.detach() * grads[0] + in_.detach() * grads[1]
    pre_bias = nn.functional.conv2d(image, kernel, **conv)
    ours = conv_zplus(out_relevance, image, pre_bias, kernel, conv, REFERENCE_STABILISER)
    torch.testing.assert_close(ours, expected, rtol=1e-10, atol=1e-12)


def test_zbox_and_add_rules_conserve_per_sample() -> None:
    from attnmap.vit.lrp.rules import REFERENCE_STABILISER, add_rule, conv_zbox

    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, 3, 16, 16, generator=generator, dtype=torch.float64)
    kernel = torch.randn(8, 3, 4, 4, generator=generator, dtype=torch.float64)
    conv = {"stride": (4, 4), "padding": (0, 0), "dilation": (1, 1), "groups": 1}
    relevance = torch.rand(3, 8, 4, 4, generator=generator, dtype=torch.float64)
    pixels = conv_zbox(relevance, image, kernel, conv)
    torch.testing.assert_close(pixels.sum(dim=(1, 2, 3)), relevance.sum(dim=(1, 2, 3)))

    x0 = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    x1 = torch.randn(1, 5, 4, generator=generator, dtype=torch.float64)
    incoming = torch.randn(3, 5, 4, generator=generator, dtype=torch.float64)
    share0, share1 = add_rule(incoming, x0, x1, REFERENCE_STABILISER)
    torch.testing.assert_close((share0 + share1).sum(dim=(1, 2)), incoming.sum(dim=(1, 2)))
    alone0, _ = add_rule(incoming[:1], x0[:1], x1, REFERENCE_STABILISER)
    torch.testing.assert_close(alone0, share0[:1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reused_buffers_change_no_map(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype) -> None:
    """The relevance pass's workspace only saves allocations: with a fresh tensor for every request
    the maps are the same (a buffer overwritten while still in use would show here)."""
    from attnmap.vit.lrp.rules import Workspace

    models = [tiny_vit().to(dtype), tiny_vit(init_values=0.5, depth=2).to(dtype)]
    methods = [m for m in ALL_METHODS if m[0] != "lrp_attention"] + [("lrp_attention", {"grad": True})]
    reused = [attnmap.explain(m, images_for(m, 3), name, **opts) for m in models for name, opts in methods]
    def fresh_buffer(self: Workspace, role: str, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        return torch.empty(shape, dtype=like.dtype, device=like.device)

    monkeypatch.setattr(Workspace, "get", fresh_buffer)
    fresh = [attnmap.explain(m, images_for(m, 3), name, **opts) for m in models for name, opts in methods]
    for a, b in zip(reused, fresh, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * float(b.abs().max()))


def test_last_block_on_the_readout_rows_equals_the_pass_over_every_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last block runs on the read-out rows only (class token; class + distillation tokens),
    forward and rules: leaving out rows whose relevance is zero changes no map of any LRP method.

    In float64 the two passes agree to rounding. In float32 they sum in different orders, and a map's
    own float32 error (against the float64 map) is up to ~1e-3 of its peak on these models, so there the
    check is that the pruned pass is as accurate as the pass over every row."""
    from attnmap.vit.lrp.readers import build_twin
    from attnmap.vit.lrp.twin import ViTTwin

    models = [
        tiny_vit().double(),
        tiny_vit(VisionTransformerDistilled, init_values=0.5, depth=2).double(),
        tiny_vit(reg_tokens=2, global_pool="token").double(),
    ]
    methods = [*ALL_METHODS, ("lrp_attention", {"grad": True}), ("lrp_rollout", {"start_layer": 1})]
    assert [build_twin(m).readout_rows for m in models] == [1, 2, 1]
    images = [images_for(m, 3) for m in models]

    def maps(dtype: torch.dtype) -> list[torch.Tensor]:
        return [
            attnmap.explain(copy.deepcopy(m).to(dtype), x.to(dtype), name, **opts).double()
            for m, x in zip(models, images, strict=True)
            for name, opts in methods
        ]

    pruned64, pruned32 = maps(torch.float64), maps(torch.float32)
    monkeypatch.setattr(ViTTwin, "readout_rows", property(lambda twin: None))
    every64, every32 = maps(torch.float64), maps(torch.float32)
    for a64, b64, a32, b32 in zip(pruned64, every64, pruned32, every32, strict=True):
        peak = float(b64.abs().max())
        assert peak > 0
        torch.testing.assert_close(a64, b64, rtol=1e-12, atol=1e-12 * peak)
        pruned_error = float((a32 - b64).abs().max()) / peak
        every_row_error = float((b32 - b64).abs().max()) / peak
        # a float32 rounding margin (~100 ulp of the peak) on top of the unpruned pass's own error
        assert pruned_error <= 1.5 * every_row_error + 1e-5, (pruned_error, every_row_error)


def test_attention_rules_in_the_qkv_layout_equal_the_per_head_rules() -> None:
    from attnmap.vit.lrp.attention import attention_relevance
    from attnmap.vit.lrp.rules import (
        REFERENCE_STABILISER,
        SIGN_STABILISER,
        attention_value_rule,
        query_key_rule,
    )

    generator = torch.Generator().manual_seed(0)
    batch, tokens, heads, head_dim = 2, 7, 3, 4
    width = heads * head_dim
    qkv = torch.randn(batch, tokens, 3 * width, generator=generator, dtype=torch.float64)
    q, k, v = qkv.view(batch, tokens, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    attn = (q @ k.transpose(-1, -2)).softmax(dim=-1)
    o = (attn @ v).transpose(1, 2).reshape(batch, tokens, width)
    merged = torch.randn(batch, tokens, width, generator=generator, dtype=torch.float64)
    for stab in (REFERENCE_STABILISER, SIGN_STABILISER):
        r_attn, r_qkv = attention_relevance(merged, o, attn, (q, k, v), stab, attention_only=False)
        per_head = merged.view(batch, tokens, heads, head_dim).transpose(1, 2)
        o_heads = o.view(batch, tokens, heads, head_dim).transpose(1, 2)
        expected_attn, r_value = attention_value_rule(per_head, attn, v, o_heads, stab)
        r_query, r_key = query_key_rule(expected_attn, q, k, q @ k.transpose(-1, -2), stab, scale=0.5)
        expected = torch.stack([r.transpose(1, 2) for r in (r_query, r_key, r_value)], dim=2)
        torch.testing.assert_close(r_attn, expected_attn, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(r_qkv, expected.reshape(batch, tokens, -1), rtol=1e-12, atol=1e-14)
        for scale in (0.125, 0.3):  # the forward's scaled scores (q·scale)·kᵀ instead of q·kᵀ again
            scaled = (q * scale) @ k.transpose(-1, -2)
            for rows in (None, 2):
                given = merged if rows is None else merged[:, :rows]
                _, on_scaled = attention_relevance(
                    given, o, attn, (q, k, v), stab, False, rows=rows, scaled_scores=scaled, scale=scale
                )
                _, recomputed = attention_relevance(given, o, attn, (q, k, v), stab, False, rows=rows)
                torch.testing.assert_close(on_scaled, recomputed, rtol=1e-12, atol=1e-14)


def test_clone_rule_is_zero_exactly_where_the_input_is() -> None:
    from attnmap.vit.lrp.rules import SIGN_STABILISER, clone_rule

    generator = torch.Generator().manual_seed(0)
    x, branch0, branch1 = torch.randn(3, 2, 5, 4, generator=generator)
    assert torch.equal(clone_rule(branch0.clone(), branch1, x, SIGN_STABILISER), branch0 + branch1)
    x[1, 3, 2] = 0.0
    expected = (branch0 + branch1).masked_fill(x == 0, 0)
    assert torch.equal(clone_rule(branch0.clone(), branch1, x, SIGN_STABILISER), expected)


def test_models_in_training_mode_get_their_eval_maps() -> None:
    """Dropout in modules the twin runs itself (timm Eva's position dropout, patch dropout, a Hugging
    Face embedding's dropout) must be off: the maps are those of the model in eval mode."""
    from timm.models.eva import Eva

    torch.manual_seed(0)
    eva = Eva(
        img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5,
        pos_drop_rate=0.5, patch_drop_rate=0.5, proj_drop_rate=0.5, attn_drop_rate=0.5,
    )
    models = [_perturb(eva).double()]
    try:
        import transformers
    except ImportError:  # pragma: no cover - the hf extra is not installed
        transformers = None
    if transformers is not None:
        torch.manual_seed(0)
        config = transformers.ViTConfig(
            hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=3, image_size=32,
            patch_size=8, num_labels=5, hidden_dropout_prob=0.5, attention_probs_dropout_prob=0.5,
        )
        models.append(transformers.ViTForImageClassification(config).double().eval())
    for model in models:
        images = images_for(model, 2)
        expected = {name: attnmap.explain(model, images, name) for name in ("lrp", "transformer_attribution")}
        model.train()
        for name, maps in expected.items():
            torch.testing.assert_close(attnmap.explain(model, images, name), maps, rtol=0, atol=0)
        assert all(module.training for module in model.modules())


def test_timm_rope_vits_with_generic_rope_attention() -> None:
    """timm's RoPE ViTs (vit_*_rope_*, Perception Encoder) are Eva with AttentionRope blocks."""
    from timm.models.eva import Eva

    torch.manual_seed(0)
    model = Eva(
        img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5, attn_type="rope",
        use_rot_pos_emb=True, use_abs_pos_emb=False, init_values=0.1, qkv_fused=False,
    )
    model = _perturb(model).double()
    images = images_for(model, 2)
    for method, options in ALL_METHODS:
        maps = attnmap.explain(model, images, method, **options)  # the twin check ran inside
        assert maps.shape == ((2, 32, 32) if method == "lrp" else (2, 4, 4)), method
        assert torch.isfinite(maps).all() and maps.abs().sum() > 0, method
    gqa = Eva(
        img_size=32, patch_size=8, embed_dim=48, depth=1, num_heads=4, num_kv_heads=2, attn_type="rope",
        use_rot_pos_emb=True, qkv_fused=False,
    )
    # grouped-query attention is read as full attention with repeated k/v heads (it was refused; the
    # maps equal those of the model written that way: tests/test_lrp_grouped_query.py)
    maps = attnmap.explain(gqa.double().eval(), images_for(gqa.double(), 1), "lrp")  # twin check inside
    assert maps.shape == (1, 32, 32) and torch.isfinite(maps).all() and maps.abs().sum() > 0


def test_timm_mixed_rope_gives_each_block_its_own_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """timm's mixed RoPE (vit_*_rope_mixed_*) learns the frequencies per block: the twin applies block
    i's table in block i, which the twin check proves (a twin reusing block 0's table is refused)."""
    from attnmap.vit.lrp import block as lrp_block

    def build() -> nn.Module:
        torch.manual_seed(0)
        sizes = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=5)
        model = timm.create_model("vit_small_patch16_rope_mixed_224", init_values=0.5, **sizes)
        return model.double().eval()

    model = build()
    images = images_for(model, 2)
    for method, options in ALL_METHODS:
        maps = attnmap.explain(model, images, method, **options)  # the twin check ran inside
        assert torch.isfinite(maps).all() and maps.abs().sum() > 0, method
    first_table_only = lrp_block.Rope.at
    monkeypatch.setattr(lrp_block.Rope, "at", lambda rope, index: first_table_only(rope, 0))
    with pytest.raises(UnsupportedModelError, match="differ from the model's own forward"):
        attnmap.explain(build(), images, "lrp")


def test_img_size_not_a_multiple_of_the_patch() -> None:
    """timm builds it (the convolution drops the last rows and columns): LRP follows the model, and
    the dropped pixels get no relevance."""
    model = tiny_vit(img_size=(36, 42), class_token=False, global_pool="avg", pos_embed="none").double()
    images = images_for(model, 2, size=(36, 42))
    pixels = attnmap.explain(model, images, "lrp")
    assert pixels.shape == (2, 36, 42)
    assert pixels[:, 32:].abs().max() == 0 and pixels[:, :, 40:].abs().max() == 0
    torch.testing.assert_close(pixels.sum(dim=(1, 2)), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-6)
    assert attnmap.explain(model, images, "transformer_attribution").shape == (2, 4, 5)


@pytest.mark.parametrize(
    "options", [{}, {"class_token": True, "global_pool": "token", "shared_rel_pos": True}]
)
def test_relative_position_vit(options: dict) -> None:
    """timm VisionTransformerRelPos: the bias on the attention logits takes no relevance (like BEiT's)."""
    from timm.models.vision_transformer_relpos import VisionTransformerRelPos

    torch.manual_seed(0)
    config = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5)
    config["init_values"] = 0.3
    model = _perturb(VisionTransformerRelPos(**config, **options)).double()
    images = images_for(model, 2)
    for method, method_options in ALL_METHODS:
        maps = attnmap.explain(model, images, method, **method_options)  # the twin check ran inside
        assert maps.shape == ((2, 32, 32) if method == "lrp" else (2, 4, 4)), method
        assert torch.isfinite(maps).all() and maps.abs().sum() > 0, method
    if not options:  # average pooled, no absolute positions: all relevance reaches the pixels
        pixels = attnmap.explain(model, images, "lrp")
        ones = torch.ones(2, dtype=torch.float64)
        torch.testing.assert_close(pixels.sum(dim=(1, 2)), ones, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", ["lrp", "transformer_attribution", "lrp_rollout", "lrp_attention"])
def test_eva_with_dynamic_padding_explains_the_padded_image(method: str) -> None:
    """An Eva built with dynamic_img_pad pads the image to whole patches in its patch embedding; the
    LRP twin ran its stem on the unpadded image, so its grid had fewer patches than the tokens:
    lrp failed with a RuntimeError and the patch-level methods returned (4, 2, 3) maps for 2 images.
    The maps of an image must be those of the same image zero-padded as the model pads it."""
    from timm.models.eva import Eva

    torch.manual_seed(0)
    model = Eva(
        img_size=28, patch_size=14, embed_dim=32, depth=2, num_heads=2, num_classes=4,
        use_rot_pos_emb=True, dynamic_img_size=True, dynamic_img_pad=True,
    ).double().eval()
    images = torch.randn(2, 3, 40, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images, (0, 6, 0, 2))  # to 42 x 56: 3 x 4 patches of 14
    maps = attnmap.explain(model, images, method)
    reference = attnmap.explain(model, padded, method)
    if method == "lrp":
        assert maps.shape == (2, 40, 50)
        reference = reference[:, :40, :50]
    else:
        assert maps.shape == (2, 3, 4)
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0
    torch.testing.assert_close(maps, reference, rtol=1e-9, atol=1e-12)


def _eva(**kwargs: object) -> nn.Module:
    from timm.models.eva import Eva

    torch.manual_seed(0)
    return Eva(img_size=28, patch_size=14, embed_dim=32, depth=1, num_heads=2, num_classes=4, **kwargs).eval()


def _beit() -> nn.Module:
    from timm.models.beit import Beit

    torch.manual_seed(0)
    return Beit(img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=4).eval()


def _relpos() -> nn.Module:
    from timm.models.vision_transformer_relpos import VisionTransformerRelPos

    torch.manual_seed(0)
    return VisionTransformerRelPos(
        img_size=32, patch_size=16, embed_dim=32, depth=1, num_heads=2, num_classes=4
    ).eval()


@pytest.mark.parametrize("method", ["lrp", "transformer_attribution"])
@pytest.mark.parametrize(
    ("build", "shape", "message"),
    [
        (_eva, (1, 3, 42, 42), "42x42 does not fit the model, which takes 28x28"),
        (lambda: _eva(dynamic_img_size=True), (1, 3, 40, 50), "not a multiple of the patch size"),
        (_eva, (1, 1, 28, 28), "3-channel images, got 1"),
        (_beit, (1, 3, 48, 48), "48x48 does not fit the model, which takes 32x32"),
        (_relpos, (1, 3, 48, 48), "48x48 does not fit the model, which takes 32x32"),
    ],
)
def test_wrong_images_of_the_other_timm_families_are_input_errors(build, shape, message, method) -> None:
    """The Eva, Beit and RelPos twins run the model's own patch embedding, whose size and channel
    checks are AssertionErrors and RuntimeErrors: the LRP methods let them through as tracebacks
    where the attention methods said what is wrong."""
    with pytest.raises(InputError, match=message):
        attnmap.explain(build(), torch.randn(*shape), method)


@pytest.mark.parametrize("family", ["vit", "eva"])
@pytest.mark.parametrize("method", ["lrp", "transformer_attribution", "lrp_rollout", "lrp_attention"])
def test_a_fine_tuning_head_of_dropout_and_linear_gives_its_linears_maps(family: str, method: str) -> None:
    """head = Sequential(Dropout, Linear), the usual fine-tuning head, was refused ('head (Sequential)
    has no LRP rule'); dropout is the identity in eval mode, so the maps are those of the Linear."""
    build = {"vit": lambda: tiny_vit().double(), "eva": lambda: _eva().double()}[family]
    plain, wrapped = build(), build()
    wrapped.head = nn.Sequential(nn.Dropout(0.2), nn.Identity(), plain.head)
    size = 28 if family == "eva" else 32
    images = torch.randn(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    for target in (None, 1):
        expected = attnmap.explain(plain, images, method, target=target)
        torch.testing.assert_close(attnmap.explain(wrapped, images, method, target=target), expected)
    wrapped.head = nn.Sequential(nn.Linear(plain.head.in_features, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    with pytest.raises(UnsupportedModelError, match=r"head \(Sequential\) has no LRP rule"):
        attnmap.explain(wrapped, images, method)


@pytest.mark.parametrize("method", ["lrp", "transformer_attribution", "lrp_rollout", "lrp_attention"])
def test_lrp_methods_inside_autocast_compute_in_the_models_dtype(method: str) -> None:
    """Inside torch.autocast (a mixed-precision inference script) the LRP methods failed with
    'dot: expected both vectors to have same dtype, but found BFloat16 and Float'. Their rules are
    written for the model's dtype: autocast is switched off for them, and the maps are the same."""
    model = tiny_vit()
    images = images_for(model, 2)
    expected = attnmap.explain(model, images, method)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = attnmap.explain(model, images, method)
        assert torch.is_autocast_enabled("cpu")  # the caller's autocast is back on afterwards
    assert maps.dtype == expected.dtype
    torch.testing.assert_close(maps, expected, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", ["lrp", "transformer_attribution", "lrp_rollout", "lrp_attention"])
def test_lrp_methods_refuse_a_half_precision_model(method: str, dtype: torch.dtype) -> None:
    """A model cast to float16 or bfloat16 (a GPU inference script's ``model.half()``) got LRP maps
    computed in that dtype, where the ε-rule's sums lose the signal: on the bundled shapes ViT one
    bfloat16 LRP map correlated -0.74 with the float64 one, a silently inverted map. They are refused
    in one line saying what to do; the map of the model in float32 is what they explain."""
    model = tiny_vit().to(dtype)
    images = images_for(model, 2)
    with pytest.raises(InputError, match=rf"^{method}: the model is in {dtype}.*model\.float\(\)") as error:
        attnmap.explain(model, images, method)
    assert "\n" not in str(error.value)
    assert next(model.parameters()).dtype == dtype  # the model is left as it was
    attnmap.explain(model, images, "grad_rollout")  # the gradient and attention methods still run
    attnmap.explain(model.float(), images.float(), method)


@pytest.mark.parametrize("method", ["lrp", "transformer_attribution", "lrp_rollout", "lrp_attention"])
def test_lrp_methods_refuse_images_of_another_dtype_as_the_attention_methods_do(method: str) -> None:
    """float64 images given to a float32 model were cast to float32 without a word by the LRP
    methods (the attention methods refuse them): a user asking for README's float64 reference
    numbers got float32 ones. The LRP methods now refuse them with the same line."""
    model = tiny_vit()
    images = images_for(model, 2).double()
    message = r"^images are torch.float64 but the model's parameters are torch.float32"
    with pytest.raises(InputError, match=message):
        attnmap.explain(model, images, method)
    with pytest.raises(InputError, match=message):
        attnmap.explain(model, images, "rollout")
