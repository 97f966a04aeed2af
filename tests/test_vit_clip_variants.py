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

import attnmap

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


@pytest.mark.parametrize(
    ("saved", "loads_as"),
    [
        ("MetaClip2VisionModel", "MetaClip2VisionModel"),
        ("MetaClip2Model", "MetaClip2VisionModelWithProjection"),
        ("MetaClip2ForImageClassification", "MetaClip2ForImageClassification"),
        ("ChineseCLIPVisionModel", "ChineseCLIPVisionModel"),
    ],
)
def test_saved_clip_like_folders_load_and_explain(tmp_path, saved: str, loads_as: str) -> None:
    """hf:FOLDER of these families was refused ('holds a metaclip_2_vision_model; attnmap explains the
    model types ...') although attnmap reads them; a whole image-text folder gives its vision tower, as
    a CLIP one does, with exactly the saved weights."""
    from attnmap.vit.models import load_model

    torch.manual_seed(0)
    config_name = saved.replace("ForImageClassification", "Model").replace("Model", "Config")
    config = getattr(transformers, config_name)
    if "Vision" in saved:
        built = config(**CLIP_TOWER)
    else:
        built = config(vision_config=CLIP_TOWER, text_config=TEXT, num_labels=3)
    model = getattr(transformers, saved)(built).eval()
    model.save_pretrained(tmp_path)
    loaded = load_model(f"hf:{tmp_path}")
    assert type(loaded).__name__ == loads_as
    ours = {k.removeprefix("vision_model."): v for k, v in loaded.state_dict().items()}
    theirs = {k.removeprefix("vision_model."): v for k, v in model.state_dict().items()}
    assert all(torch.equal(value, theirs[key]) for key, value in ours.items() if key in theirs)
    x = torch.randn(1, 3, CLIP_TOWER["image_size"], CLIP_TOWER["image_size"])
    target = 1 if "Classification" in saved else torch.randn(_direction(loaded.double(), x.double()).shape)
    maps = attnmap.explain(loaded.double(), x.double(), "transformer_attribution", target=target)
    assert maps.shape == (1, 4, 4) and torch.isfinite(maps).all()


def test_a_folder_of_another_family_is_refused_naming_every_type_attnmap_reads(tmp_path) -> None:
    """The refusal listed HF_MODEL_TYPES only, leaving out the types read as another family's
    (MetaCLIP 2, Chinese-CLIP) and the image-text folders that give their vision tower."""
    from attnmap.errors import InputError
    from attnmap.vit.adapters_hf import SAME_LAYERS
    from attnmap.vit.models import _HF_VISION_TOWERS, load_model

    torch.manual_seed(0)
    transformers.MLCDVisionModel(transformers.MLCDVisionConfig(**CLIP_TOWER)).save_pretrained(tmp_path)
    with pytest.raises(InputError) as refused:
        load_model(f"hf:{tmp_path}")
    message = str(refused.value)
    assert "holds a mlcd_vision_model" in message and "\n" not in message
    for kind in [*SAME_LAYERS, *_HF_VISION_TOWERS]:
        assert kind in message, kind
