"""Attention capture: the model is left exactly as found, token layouts, model families, errors."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import attnmap
from attnmap.errors import InputError, UnsupportedModelError
from attnmap.vit.capture import AttentionCapture, capture

METHODS = ["attention", "rollout", "attn_gradcam", "grad_rollout"]


def tiny_vit(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    options = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5)
    options.update(kwargs)
    return timm.models.vision_transformer.VisionTransformer(**options)


def model_state(model: nn.Module) -> dict[str, object]:
    """Everything capture might touch, as plain values."""
    return {
        "training": [(name, module.training) for name, module in model.named_modules()],
        "fused": [block.attn.fused_attn for block in model.blocks],
        "hooks": [
            (name, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
            for name, m in model.named_modules()
        ],
        "requires_grad": [(name, p.requires_grad) for name, p in model.named_parameters()],
        "grads": [p.grad is None for p in model.parameters()],
        "checkpointing": model.grad_checkpointing,
    }


def manual_attention(model: nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """Each block's softmax(q kᵀ/√d), recomputed from the block input outside timm's attention code."""
    inputs: list[torch.Tensor] = []
    handles = [b.attn.register_forward_pre_hook(lambda m, a: inputs.append(a[0])) for b in model.blocks]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    maps = []
    for block, x in zip(model.blocks, inputs, strict=True):
        attn = block.attn
        qkv = attn.qkv(x).reshape(x.shape[0], x.shape[1], 3, attn.num_heads, attn.head_dim)
        q, k, _ = qkv.permute(2, 0, 3, 1, 4)
        maps.append(torch.softmax(q @ k.transpose(-2, -1) * attn.head_dim**-0.5, dim=-1))
    return maps


def test_captured_attention_is_the_models_attention_with_fused_attention_on():
    model = tiny_vit().eval()
    assert all(block.attn.fused_attn for block in model.blocks)
    images = torch.randn(3, 3, 32, 32)
    captured = capture(model, images)
    expected = manual_attention(model, images)
    assert captured.layers() == [0, 1]
    for index in range(2):
        assert torch.allclose(captured.attentions[index], expected[index], atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(captured.logits, model(images), atol=1e-5)
    assert captured.num_prefix_tokens == 1 and captured.grid_size == (4, 4) and captured.query_row == "cls"


@pytest.mark.parametrize("name", METHODS)
def test_model_left_exactly_as_found(name):
    model = tiny_vit()
    model.train()
    model.blocks[1].eval()  # a mixed state must come back mixed
    model.blocks[0].attn.fused_attn = False  # and a user's own flag must survive too
    model.set_grad_checkpointing(True)
    for parameter in model.blocks[0].parameters():
        parameter.requires_grad_(False)
    before = model_state(model)
    attnmap.explain(model, torch.randn(2, 3, 32, 32), name)
    assert model_state(model) == before


@pytest.mark.parametrize("name", METHODS)
def test_model_left_exactly_as_found_when_it_raises(name):
    model = tiny_vit().train()
    before = model_state(model)
    with pytest.raises(InputError, match="out of range"):
        attnmap.explain(model, torch.randn(2, 3, 32, 32), name, target=7)
    assert model_state(model) == before
    with pytest.raises(InputError, match="does not fit"):
        attnmap.explain(model, torch.randn(2, 3, 40, 32), name)
    assert model_state(model) == before


def test_restored_when_the_forward_itself_fails():
    model = tiny_vit().train()
    before = model_state(model)

    def explode(module, inputs, output):
        raise RuntimeError("boom")

    handle = model.blocks[1].mlp.register_forward_hook(explode)
    with pytest.raises(RuntimeError, match="boom"), AttentionCapture(model, with_grad=True) as recorder:
        recorder.forward(torch.randn(1, 3, 32, 32))
    handle.remove()
    assert model_state(model) == before


def test_distilled_deit_excludes_both_prefix_tokens_and_reads_both_rows():
    """The model's output is ½ class head + ½ distillation head: the maps read ½ of each token's row,
    as its LRP read-out does (docs/lrp-rules.md)."""
    torch.manual_seed(0)
    model = timm.create_model(
        "deit_tiny_distilled_patch16_224", pretrained=False, depth=2, num_classes=5, img_size=64
    ).eval()
    images = torch.randn(2, 3, 64, 64)
    captured = capture(model, images, layers=-1)
    assert captured.num_prefix_tokens == 2 and captured.attentions[1].shape[-1] == 2 + 16
    assert captured.query_row == "distilled"
    assert torch.equal(captured.query[:, :2], torch.full((2, 2), 0.5)) and not captured.query[:, 2:].any()
    last = manual_attention(model, images)[1].mean(1)
    expected = (0.5 * (last[:, 0, 2:] + last[:, 1, 2:])).reshape(2, 4, 4)
    assert torch.allclose(attnmap.explain(model, images, "attention"), expected, atol=1e-6)
    for name in METHODS:
        assert attnmap.explain(model, images, name).shape == (2, 4, 4)


def test_register_tokens_dinov2_patch14():
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_small_patch14_reg4_dinov2", pretrained=False, img_size=56, depth=2, num_classes=4
    ).eval()
    images = torch.randn(2, 3, 56, 56)
    captured = capture(model, images)
    assert captured.num_prefix_tokens == 5 and captured.grid_size == (4, 4)
    expected = manual_attention(model, images)[-1].mean(1)[:, 0, 5:].reshape(2, 4, 4)
    assert torch.allclose(attnmap.explain(model, images, "attention"), expected, atol=1e-6)
    for name in METHODS:
        maps = attnmap.explain(model, images, name)
        assert maps.shape == (2, 4, 4) and torch.isfinite(maps).all()


def test_dynamic_non_square_input():
    model = tiny_vit(img_size=32, patch_size=16, dynamic_img_size=True).eval()
    images = torch.randn(2, 3, 48, 80)
    for name in METHODS:
        assert attnmap.explain(model, images, name).shape == (2, 3, 5)
    with pytest.raises(InputError, match="multiple of the patch size"):
        attnmap.explain(model, torch.randn(1, 3, 40, 80), "attention")
    padded = tiny_vit(img_size=32, patch_size=16, dynamic_img_size=True, dynamic_img_pad=True).eval()
    assert attnmap.explain(padded, torch.randn(1, 3, 40, 80), "rollout").shape == (1, 3, 5)


def test_no_class_token_uses_mean_of_patch_rows():
    model = tiny_vit(class_token=False, global_pool="avg").eval()
    images = torch.randn(2, 3, 32, 32)
    captured = capture(model, images)
    assert captured.query_row == "patch_mean" and captured.num_prefix_tokens == 0
    expected = manual_attention(model, images)[-1].mean(1).mean(1).reshape(2, 4, 4)
    assert torch.allclose(attnmap.explain(model, images, "attention"), expected, atol=1e-6)
    for name in METHODS:
        assert attnmap.explain(model, images, name).shape == (2, 4, 4)


def hf_vit() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        image_size=32,
        patch_size=8,
        num_labels=5,
    )
    return transformers.ViTForImageClassification(config).eval()


def test_hugging_face_vit_from_local_config():
    model = hf_vit()
    implementation = model.config._attn_implementation
    images = torch.randn(2, 3, 32, 32)
    captured = capture(model, images)
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        reference = model(pixel_values=images, output_attentions=True)
    model.config._attn_implementation = implementation
    for index in range(2):
        assert torch.allclose(captured.attentions[index], reference.attentions[index], atol=1e-6)
    assert torch.allclose(captured.logits, reference.logits, atol=1e-5)
    for name in METHODS:
        assert attnmap.explain(model, images, name).shape == (2, 4, 4)
    assert attnmap.explain(model, torch.randn(1, 3, 48, 40), "grad_rollout").shape == (1, 6, 5)
    assert model.config._attn_implementation == implementation
    assert not model.training


def test_unsupported_models_say_what_is_supported():
    with pytest.raises(UnsupportedModelError, match="supported: timm VisionTransformer"):
        attnmap.explain(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), torch.randn(1, 3, 8, 8), "rollout")
    resnet = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    with pytest.raises(UnsupportedModelError, match="Hugging Face ViTForImageClassification"):
        attnmap.explain(resnet, torch.randn(1, 3, 32, 32), "attention")


def test_bad_inputs_are_named():
    model = tiny_vit().eval()
    with pytest.raises(InputError, match=r"torch.float64.*torch.float32"):
        attnmap.explain(model, torch.randn(1, 3, 32, 32, dtype=torch.float64), "attention")
    with pytest.raises(InputError, match="3-channel"):
        attnmap.explain(model, torch.randn(1, 1, 32, 32), "attention")
    with pytest.raises(InputError, match="out of range"):
        attnmap.explain(model, torch.randn(2, 3, 32, 32), "attention", target=[0, 5])
    with pytest.raises(InputError, match="2 targets for a batch of 3"):
        attnmap.explain(model, torch.randn(3, 3, 32, 32), "grad_rollout", target=[0, 1])
    with pytest.raises(InputError, match="layer 2 out of range"):
        attnmap.explain(model, torch.randn(1, 3, 32, 32), "attention", layer=2)


def test_reduce_keeps_only_the_reduced_maps():
    model = tiny_vit().eval()
    images = torch.randn(2, 3, 32, 32)
    full = capture(model, images)
    reduced = capture(model, images, reduce=lambda attention: attention.mean(1))
    for index in full.layers():
        assert reduced.attentions[index].shape == (2, 17, 17)
        assert torch.allclose(reduced.attentions[index], full.attentions[index].mean(1))
    with pytest.raises(ValueError, match="reduce cannot be combined with with_grad"):
        AttentionCapture(model, with_grad=True, reduce=lambda attention: attention)


def _hybrid_vit() -> nn.Module:
    """A ViT on a small CNN's features (timm HybridEmbed, as in vit_*_r26_s32 / vit_tiny_r_s16_p8)."""
    import functools

    from timm.layers import HybridEmbed

    torch.manual_seed(0)
    backbone = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 24, 2, stride=2)
    )
    embed = functools.partial(HybridEmbed, backbone=backbone)
    return tiny_vit(embed_layer=embed, patch_size=2).eval()  # 32 px → 8x8 features → 4x4 tokens


def _relpos_vit(**options) -> nn.Module:
    from timm.models.vision_transformer_relpos import VisionTransformerRelPos

    torch.manual_seed(0)
    kwargs = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5)
    kwargs.update(options)
    return VisionTransformerRelPos(**kwargs).eval()


def _rope_eva() -> nn.Module:
    """timm's RoPE ViTs (vit_*_rope_*, Perception Encoder): Eva built with attn_type='rope'."""
    from timm.models.eva import Eva

    torch.manual_seed(0)
    return Eva(
        img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5,
        attn_type="rope", use_rot_pos_emb=True, use_abs_pos_emb=False,
    ).eval()


def _parallel_vit(kind: str) -> nn.Module:
    from timm.models.vision_transformer import ParallelScalingBlock, ParallelThingsBlock

    return tiny_vit(block_fn=ParallelScalingBlock if kind == "scaling" else ParallelThingsBlock).eval()


ATTENTION_FAMILIES = {
    "hybrid CNN stem": _hybrid_vit,
    "relpos, avg pool": lambda: _relpos_vit(class_token=False, global_pool="avg"),
    "relpos, CLS, shared bias": lambda: _relpos_vit(
        class_token=True, global_pool="token", shared_rel_pos=True
    ),
    "Eva attn_type='rope'": _rope_eva,
    "ParallelScalingBlock": lambda: _parallel_vit("scaling"),
}


@pytest.mark.parametrize("family", sorted(ATTENTION_FAMILIES))
def test_more_timm_families_are_read(single_thread, family):
    """timm attention modules computing A the same way (RelPosAttention, AttentionRope, ViT-22B
    parallel blocks, hybrid stems): the captured A is the model's; every attention method runs."""
    model = ATTENTION_FAMILIES[family]()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    captured = capture(model, images)
    with torch.no_grad():
        expected = model(images)
    torch.testing.assert_close(captured.logits, expected, rtol=1e-5, atol=1e-5)
    for index in captured.layers():
        attention = captured.attentions[index]
        assert attention.shape[-1] == captured.num_tokens
        torch.testing.assert_close(attention.sum(-1), torch.ones_like(attention.sum(-1)))
    for name in METHODS:
        maps = attnmap.explain(model, images, name)
        assert maps.shape == (2, 4, 4), (family, name)
        assert torch.isfinite(maps).all()


def test_hybrid_vit_checks_the_image_channels_not_the_feature_channels():
    model = _hybrid_vit()
    with pytest.raises(InputError, match="3-channel images, got 1"):
        attnmap.explain(model, torch.randn(1, 1, 32, 32), "attention")


def test_blocks_without_one_attention_module_are_refused_in_one_line():
    """ParallelThingsBlock runs several attention modules side by side: no single A to read."""
    with pytest.raises(UnsupportedModelError, match=r"^blocks\.0 \(ParallelThingsBlock") as error:
        attnmap.explain(_parallel_vit("things"), torch.randn(1, 3, 32, 32), "rollout")
    assert "\n" not in str(error.value)


def test_hugging_face_dinov3_attention_methods():
    """HF DINOv3 (RoPE, registers): the attention methods read it as HF's eager attention gives it,
    at any input size; LRP too (its twin applies the rotation)."""
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "DINOv3ViTModel"):
        pytest.skip("transformers without DINOv3")
    config = transformers.DINOv3ViTConfig(
        hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=3, image_size=32,
        patch_size=8, num_register_tokens=2,
    )
    torch.manual_seed(0)
    model = transformers.DINOv3ViTModel(config).eval()
    implementation = model.config._attn_implementation
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    captured = capture(model, images)
    assert captured.num_prefix_tokens == 3 and captured.query_row == "cls"
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        reference = model(pixel_values=images, output_attentions=True)
    model.config._attn_implementation = implementation
    for index in range(2):
        torch.testing.assert_close(captured.attentions[index], reference.attentions[index], atol=1e-6, rtol=0)
    torch.testing.assert_close(captured.logits, reference.pooler_output, atol=1e-5, rtol=0)
    direction = torch.randn(48, generator=torch.Generator().manual_seed(2))
    for name in METHODS:
        assert attnmap.explain(model, images, name, target=direction).shape == (2, 4, 4)
    assert attnmap.explain(model, torch.randn(1, 3, 40, 48), "rollout").shape == (1, 5, 6)
    pixels = attnmap.explain(model, torch.randn(1, 3, 40, 48), "lrp", target=direction)  # RoPE at 5×6
    assert pixels.shape == (1, 40, 48) and torch.isfinite(pixels).all() and pixels.std() > 0
    assert model.config._attn_implementation == implementation


def test_compiled_and_data_parallel_wrappers_are_explained_as_their_model():
    """torch.compile / nn.DataParallel wrap the ViT: they were refused, and preprocess crashed on the
    compiled wrapper or fell back to timm's 224 px default for DataParallel."""
    from attnmap.vit.preprocess import data_config

    model = tiny_vit().eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for wrapped in (torch.compile(model), nn.DataParallel(model)):
        assert data_config(wrapped)["input_size"] == (3, 32, 32)
        for name in [*METHODS, "lrp"]:
            torch.testing.assert_close(
                attnmap.explain(wrapped, images, name), attnmap.explain(model, images, name), rtol=0, atol=0
            )


def test_image_text_models_point_to_their_vision_tower():
    """A whole CLIP model is refused in one line that says which part attnmap explains; that part runs."""
    transformers = pytest.importorskip("transformers")
    sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = transformers.CLIPConfig(
        vision_config=dict(sizes, image_size=32, patch_size=8),
        text_config=dict(sizes, vocab_size=99, max_position_embeddings=16),
    )
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    images = torch.randn(1, 3, 32, 32)
    for name in ("attention", "lrp"):
        hint = r"explain its vision tower \(model.vision_model"
        with pytest.raises(UnsupportedModelError, match=hint) as error:
            attnmap.explain(model, images, name)
        assert "\n" not in str(error.value)
    direction = torch.randn(32)
    assert attnmap.explain(model.vision_model, images, "lrp", target=direction).shape == (1, 32, 32)
