"""Refusing a model names where its attention is (or that it has none), in one line."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import attnmap
from attnmap.errors import UnsupportedModelError


def _refusal(model: nn.Module) -> str:
    with pytest.raises(UnsupportedModelError) as refused:
        attnmap.explain(model.eval(), torch.randn(1, 3, 32, 32), "rollout")
    message = str(refused.value)
    assert "\n" not in message
    return message


def test_windowed_attention_is_named_with_its_path() -> None:
    swin = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(2, 2),
        window_size=2,
        num_classes=3,
    )
    assert "first at layers.0.blocks.0.attn (WindowAttention)" in _refusal(swin)


def test_a_network_without_attention_says_so() -> None:
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())  # "Flatten" is no attention
    assert "(no attention modules)" in _refusal(cnn)


@pytest.mark.parametrize("method", ["rollout", "lrp"])
def test_a_classifier_wrapping_a_readable_transformer_points_to_it(method: str) -> None:
    """timm's Qwen3-VL tower classifier holds its transformer at model.encoder, which attnmap reads."""
    model = timm.create_model(
        "qwen3_vit_88m", pretrained=False, img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=4,
        num_classes=3,
    ).eval()
    with pytest.raises(UnsupportedModelError) as refused:
        attnmap.explain(model, torch.randn(1, 3, 32, 32), method)
    assert "its transformer is model.encoder (a Qwen3VitEncoder)" in str(refused.value)
    assert "\n" not in str(refused.value)
    tokens = model.encoder(torch.randn(1, 3, 32, 32))
    direction = torch.randn(tokens.shape[1:])
    maps = attnmap.explain(model.encoder, torch.randn(1, 3, 32, 32), "rollout", target=direction)
    assert maps.shape == (1, 4, 4)


def test_vit_mae_is_refused_with_the_model_its_weights_load_into() -> None:
    """ViTMAE drops and shuffles patches at random; its weights are a ViTModel's (tested: same output
    when the MAE keeps every patch in order)."""
    transformers = pytest.importorskip("transformers")
    sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4)
    sizes.update(image_size=32, patch_size=8)
    torch.manual_seed(0)
    mae = transformers.ViTMAEModel(transformers.ViTMAEConfig(**sizes, mask_ratio=0.0)).eval()
    message = _refusal(mae)
    assert "shuffles and drops its patch tokens at random" in message
    assert "its weights load into a ViTModel (add_pooling_layer=False)" in message
    vit = transformers.ViTModel(transformers.ViTConfig(**sizes), add_pooling_layer=False).eval()
    assert not any(vit.load_state_dict(mae.state_dict(), strict=False))
    x = torch.randn(1, 3, 32, 32)
    in_order = torch.arange(16.0).unsqueeze(0)  # MAE's noise: keeps the patches in their order
    with torch.no_grad():
        ours = mae(pixel_values=x, noise=in_order).last_hidden_state
        torch.testing.assert_close(ours, vit(pixel_values=x).last_hidden_state)
    assert attnmap.explain(vit, x, "rollout").shape == (1, 4, 4)


@pytest.mark.parametrize("method", ["rollout", "lrp"])
def test_an_image_text_model_is_sent_to_its_vision_tower_only_where_attnmap_reads_it(method: str) -> None:
    """SigLIP 2's classifier was told to explain its vision tower (a Siglip2VisionModel), which attnmap
    refuses in turn; CLIP's is sent to its tower, which runs every method."""
    transformers = pytest.importorskip("transformers")
    layers = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4)
    tower = dict(layers, intermediate_size=64, patch_size=8)
    text = dict(layers, intermediate_size=32, vocab_size=64)
    torch.manual_seed(0)
    siglip2 = transformers.Siglip2ForImageClassification(
        transformers.Siglip2Config(vision_config=dict(tower, num_patches=16), text_config=text, num_labels=3)
    ).eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(UnsupportedModelError) as refused:
        attnmap.explain(siglip2, x, method)
    message = str(refused.value)
    assert "\n" not in message and "explain its vision tower" not in message
    assert "Siglip2Attention" in message or "got Siglip2ForImageClassification" in message
    clip = transformers.CLIPModel(
        transformers.CLIPConfig(vision_config=dict(tower, image_size=32), text_config=text)
    ).eval()
    with pytest.raises(UnsupportedModelError) as refused:
        attnmap.explain(clip, x, method)
    assert "explain its vision tower (model.vision_model, a CLIPVisionModel)" in str(refused.value)
    direction = torch.randn(32)
    assert attnmap.explain(clip.vision_model, x, method, target=direction).shape[0] == 1


class _Wrapper(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def test_an_lrp_refusal_points_to_a_part_only_for_what_runs_there() -> None:
    """Qwen3-VL's tower classifier: its encoder runs the attention methods but has no LRP rule, and the
    LRP refusal said so nowhere (it sent the user there). A wrapped timm ViT: LRP runs on the part."""
    size = dict(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=4)
    qwen = timm.create_model("qwen3_vit_88m", pretrained=False, num_classes=3, **size).eval()
    x = torch.randn(1, 3, 32, 32)
    with pytest.raises(UnsupportedModelError) as refused:
        attnmap.explain(qwen, x, "lrp")
    message = str(refused.value)
    assert "model.encoder (a Qwen3VitEncoder)" in message and "attention methods only" in message
    direction = torch.randn(qwen.encoder(x).shape[1:])
    with pytest.raises(UnsupportedModelError):
        attnmap.explain(qwen.encoder, x, "lrp", target=direction)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=3, **size).eval()
    with pytest.raises(UnsupportedModelError) as refused:
        attnmap.explain(_Wrapper(vit), x, "lrp")
    message = str(refused.value)
    assert "model.inner (a VisionTransformer)" in message and "attention methods only" not in message
    assert attnmap.explain(vit, x, "lrp").shape == (1, 32, 32)
