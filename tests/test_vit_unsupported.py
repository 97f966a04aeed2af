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
