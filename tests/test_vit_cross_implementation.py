"""Same weights, two implementations, same maps: timm ViT vs HF ViT, timm DINOv2 vs HF Dinov2Model.

The weights are copied by role (q/k/v split of timm's fused qkv), which is what timm's and HF's
converters do; in float64 every method must agree to 1e-6 relative.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import attnmap
from attnmap.vit.lrp.block import is_norm
from attnmap.vit.lrp.readers_hf import _role, find_trunk

transformers = pytest.importorskip("transformers")
METHODS = sorted(attnmap.methods())
SIZE, PATCH, WIDTH, HEADS = 28, 7, 32, 4


def _copy(target: torch.Tensor, source: torch.Tensor) -> None:
    assert target.shape == source.shape, (target.shape, source.shape)
    target.copy_(source)


@torch.no_grad()
def copy_timm_to_hf(timm_model: nn.Module, hf_model: nn.Module) -> None:
    trunk, layers = find_trunk(hf_model)
    embeddings = trunk.embeddings
    _copy(embeddings.cls_token, timm_model.cls_token)
    _copy(embeddings.position_embeddings, timm_model.pos_embed)
    conv = next(m for m in embeddings.modules() if isinstance(m, nn.Conv2d))
    _copy(conv.weight, timm_model.patch_embed.proj.weight)
    _copy(conv.bias, timm_model.patch_embed.proj.bias)
    for block, layer in zip(timm_model.blocks, layers, strict=True):
        linears = {_role(name): m for name, m in layer.named_modules() if isinstance(m, nn.Linear)}
        for role, weight, bias in zip(
            "qkv", block.attn.qkv.weight.chunk(3), block.attn.qkv.bias.chunk(3), strict=True
        ):
            _copy(linears[role].weight, weight)
            _copy(linears[role].bias, bias)
        for role, source in (("out", block.attn.proj), ("fc1", block.mlp.fc1), ("fc2", block.mlp.fc2)):
            _copy(linears[role].weight, source.weight)
            _copy(linears[role].bias, source.bias)
        norms = [m for m in layer.modules() if is_norm(m)]
        for norm, source in zip(norms, (block.norm1, block.norm2), strict=True):
            _copy(norm.weight, source.weight)
            _copy(norm.bias, source.bias)
        scales = [m for m in layer.modules() if "LayerScale" in type(m).__name__]
        if scales:
            for scale, source in zip(scales, (block.ls1, block.ls2), strict=True):
                _copy(scale.lambda1, source.gamma)
    _copy(trunk.layernorm.weight, timm_model.norm.weight)
    _copy(trunk.layernorm.bias, timm_model.norm.bias)
    if hasattr(hf_model, "classifier"):
        _copy(hf_model.classifier.weight, timm_model.head.weight)
        _copy(hf_model.classifier.bias, timm_model.head.bias)


def _pair(**timm_options: object) -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    options = dict(img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=2, num_heads=HEADS)
    options.update(timm_options)
    config = dict(
        hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=2, num_attention_heads=HEADS
    )
    config.update(image_size=SIZE, patch_size=PATCH, layer_norm_eps=1e-6)
    return VisionTransformer(**options).double().eval(), config


def _maps(model: nn.Module, x: torch.Tensor, method: str, target: object) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return attnmap.explain(model, x, method, target=target)


def _assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    scale = float(theirs.abs().max())
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= 1e-6 * max(scale, 1e-30)


@pytest.fixture(scope="module")
def vit_pair() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    timm_model, config = _pair(num_classes=5)
    hf_model = transformers.ViTForImageClassification(transformers.ViTConfig(**config, num_labels=5))
    hf_model = hf_model.double().eval()
    copy_timm_to_hf(timm_model, hf_model)
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf_model(pixel_values=x).logits, timm_model(x), rtol=1e-10, atol=1e-12)
    return timm_model, hf_model, x


@pytest.mark.parametrize("method", METHODS)
def test_timm_vit_and_hf_vit_give_the_same_maps(single_thread: None, vit_pair, method: str) -> None:
    timm_model, hf_model, x = vit_pair
    _assert_same(_maps(hf_model, x, method, [1, 3]), _maps(timm_model, x, method, [1, 3]))


@pytest.fixture(scope="module")
def dinov2_pair() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    timm_model, config = _pair(num_classes=0, init_values=0.5)
    hf_model = transformers.Dinov2Model(transformers.Dinov2Config(**config, mlp_ratio=4)).double().eval()
    copy_timm_to_hf(timm_model, hf_model)
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(
            hf_model(pixel_values=x).pooler_output, timm_model(x), rtol=1e-10, atol=1e-12
        )
    direction = torch.randn(WIDTH, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    return timm_model, hf_model, x, direction


@pytest.mark.parametrize("method", METHODS)
def test_timm_dinov2_and_hf_dinov2_give_the_same_maps_along_a_direction(
    single_thread: None, dinov2_pair, method: str
) -> None:
    timm_model, hf_model, x, direction = dinov2_pair
    _assert_same(_maps(hf_model, x, method, direction), _maps(timm_model, x, method, direction))
