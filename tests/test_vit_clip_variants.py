"""Hugging Face families whose vision transformer is CLIP's layer for layer under another model type
(MetaCLIP 2, Chinese-CLIP) give CLIP's maps with the same weights, for every method.

They were refused as "not a supported Vision Transformer (its attention ... is of a kind attnmap
cannot read)" although their attention, norms, MLP and pooling are CLIP's.
"""

from __future__ import annotations

import pytest
import torch
from test_vit_hf_variants import METHODS, SIZES, TEXT, _assert_same, _direction, _images, _maps, _twin
from torch import nn

transformers = pytest.importorskip("transformers")

CLIP_TOWER = dict(SIZES, hidden_act="quick_gelu")


def _vision_pair(name: str, clip_name: str, **extra: object) -> tuple[nn.Module, ...]:
    """``name``'s model (its config class is the name less Model/WithProjection) and CLIP's
    ``clip_name`` holding the same weights, and a direction in their output."""
    torch.manual_seed(0)
    config = getattr(transformers, name.replace("WithProjection", "").replace("Model", "Config"))
    model = getattr(transformers, name)(config(**CLIP_TOWER, **extra)).double().eval()
    clip_config = transformers.CLIPVisionConfig(**CLIP_TOWER, **extra)
    clip = _twin(model, getattr(transformers, clip_name), clip_config)
    return model, clip, _direction(model, _images(1))


@pytest.fixture(scope="module")
def clip_like_pairs() -> dict[str, tuple[nn.Module, ...]]:
    torch.manual_seed(0)
    head = transformers.MetaClip2ForImageClassification(
        transformers.MetaClip2Config(vision_config=CLIP_TOWER, text_config=TEXT, num_labels=5)
    ).double().eval()
    clip_config = transformers.CLIPConfig(vision_config=CLIP_TOWER, text_config=TEXT, num_labels=5)
    clip_head = _twin(head, transformers.CLIPForImageClassification, clip_config)
    return {
        "MetaClip2VisionModel": _vision_pair("MetaClip2VisionModel", "CLIPVisionModel"),
        "MetaClip2VisionModelWithProjection": _vision_pair(
            "MetaClip2VisionModelWithProjection", "CLIPVisionModelWithProjection", projection_dim=16
        ),
        "MetaClip2ForImageClassification": (head, clip_head, [1, 3]),
        "ChineseCLIPVisionModel": _vision_pair("ChineseCLIPVisionModel", "CLIPVisionModel"),
    }


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "name",
    [
        "MetaClip2VisionModel",
        "MetaClip2VisionModelWithProjection",
        "MetaClip2ForImageClassification",
        "ChineseCLIPVisionModel",
    ],
)
def test_clip_architectures_under_other_names_give_clips_maps(
    single_thread: None, clip_like_pairs, name: str, method: str
) -> None:
    model, clip, target = clip_like_pairs[name]
    x = _images(4)
    _assert_same(_maps(model, x, method, target), _maps(clip, x, method, target), method)
