"""A hybrid ViT (CNN stem) built with ``dynamic_img_size`` on an image that is not a multiple of the
stem's reduction: timm computes a floored grid, the padded CNN rounds up; attnmap says so in one line
(it raised a RuntimeError about token counts) and maps every multiple on the stem's grid."""

from __future__ import annotations

import pytest
import timm
import torch

import attnmap
from attnmap.errors import InputError


@pytest.fixture(scope="module")
def hybrid() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_small_resnet26d_224", pretrained=False, img_size=64, embed_dim=32, depth=1, num_heads=4,
        num_classes=3, dynamic_img_size=True,
    ).eval()


@pytest.mark.parametrize("method", ["attention", "rollout", "attn_gradcam", "grad_rollout"])
def test_a_size_off_the_stems_reduction_is_one_line(single_thread: None, hybrid, method: str) -> None:
    with pytest.raises(InputError, match=r"not a multiple of the CNN stem's reduction 32x32") as refused:
        attnmap.explain(hybrid, torch.randn(1, 3, 64, 80), method)
    assert "\n" not in str(refused.value)


def test_a_multiple_of_the_reduction_maps_on_the_stems_grid(single_thread: None, hybrid) -> None:
    maps = attnmap.explain(hybrid, torch.randn(2, 3, 64, 96), "rollout")
    assert maps.shape == (2, 2, 3) and torch.isfinite(maps).all()
