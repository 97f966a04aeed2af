"""Loading images and preprocessing them from the model's own data config; loading models by spec."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import timm
import torch
from PIL import Image

from attnmap.errors import InputError
from attnmap.vit.models import BUNDLED_MODELS, load_model, load_state_dict
from attnmap.vit.preprocess import data_config, load_image, preprocess


def picture(height: int = 60, width: int = 90) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, num_classes=3, img_size=64)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif"])
def test_load_image_formats(tmp_path, suffix):
    array = picture()
    path = tmp_path / f"img{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(path, array)
    else:
        Image.fromarray(array).save(path)
    loaded = np.asarray(load_image(path))
    assert loaded.shape == (60, 90, 3) and loaded.dtype == np.uint8
    if suffix != ".jpg":
        assert np.array_equal(loaded, array)


def test_sixteen_bit_grey_tiff_is_rescaled(tmp_path):
    path = tmp_path / "grey16.tiff"
    tifffile.imwrite(path, np.array([[0, 65535], [32768, 1000]], dtype=np.uint16))
    loaded = np.asarray(load_image(path))
    assert loaded.shape == (2, 2, 3) and loaded[0, 1, 0] == 255 and loaded[0, 0, 0] == 0


def test_missing_and_unreadable_files_are_clear(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "nope.png")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png at all")
    with pytest.raises(InputError, match="cannot read image"):
        load_image(broken)
    with pytest.raises(InputError, match="directory"):
        load_image(tmp_path)


def test_preprocess_uses_the_models_data_config(tiny_model, tmp_path):
    from timm.data import create_transform

    path = tmp_path / "a.png"
    Image.fromarray(picture()).save(path)
    config = data_config(tiny_model)
    assert config["input_size"] == (3, 64, 64)  # the model's img_size, not the pretrained 224
    tensor, views = preprocess(tiny_model, [path, picture(80, 50)])
    assert tensor.shape == (2, 3, 64, 64) and tensor.dtype == torch.float32
    expected = create_transform(**config)(Image.open(path).convert("RGB"))
    assert torch.allclose(tensor[0], expected)
    assert views[0].shape == (64, 64, 3) and views[0].dtype == np.uint8
    # the view is the model's input before normalisation
    mean, std = torch.tensor(config["mean"])[:, None, None], torch.tensor(config["std"])[:, None, None]
    unnormalised = ((tensor[0] * std + mean) * 255).round().permute(1, 2, 0).numpy()
    assert np.abs(unnormalised - views[0]).max() <= 1


def test_preprocess_follows_model_dtype(tiny_model):
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32).double()
    tensor, _ = preprocess(model, picture())
    assert tensor.dtype == torch.float64 and tensor.shape == (1, 3, 32, 32)


def test_load_model_checkpoint_forms(tmp_path, tiny_model):
    from safetensors.torch import save_file

    kwargs = {"depth": 1, "img_size": 64}
    state = tiny_model.state_dict()
    variants = {
        "raw.pt": state,
        "wrapped.pth": {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3},
        "model.pt": {"model": state},
    }
    for name, payload in variants.items():
        torch.save(payload, tmp_path / name)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    for name in [*variants, "w.safetensors"]:
        model = load_model("timm:vit_tiny_patch16_224", tmp_path / name, **kwargs)
        assert not model.training
        assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
        assert model.head.out_features == 3  # taken from the checkpoint's head


def test_load_model_errors(tmp_path, tiny_model):
    torch.save(tiny_model.state_dict(), tmp_path / "w.pt")
    with pytest.raises(InputError, match="does not fit.*missing: blocks.1"):
        load_model("timm:vit_tiny_patch16_224", tmp_path / "w.pt", depth=2, img_size=64)
    # another input size: position embeddings resampled as timm does (tests/test_model_loading.py)
    assert load_model("timm:vit_tiny_patch16_224", tmp_path / "w.pt", depth=1).pos_embed.shape[1] == 197
    with pytest.raises(InputError, match=r"wrong shape: blocks.0.attn.proj.bias \(192,\) vs \(96,\)"):
        load_model("timm:vit_tiny_patch16_224", tmp_path / "w.pt", depth=1, img_size=64, embed_dim=96)
    with pytest.raises(InputError, match="timm has no model"):
        load_model("timm:vit_nonexistent_thing")
    with pytest.raises(InputError, match="'deit_smal_patch16_224'; similar: deit_small_patch16_224, "):
        load_model("timm:deit_smal_patch16_224")  # a typo: the name meant comes first
    with pytest.raises(InputError, match="Hugging Face hub, which attnmap never does"):
        load_model("timm:hf-hub:MahmoodLab/UNI")
    with pytest.raises(InputError, match="unknown model kind"):
        load_model("torchhub:vit")
    with pytest.raises(InputError, match="checkpoint not found"):
        load_model("timm:vit_tiny_patch16_224", tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(InputError, match="cannot read checkpoint"):
        load_state_dict(tmp_path / "junk.pt")
    with pytest.raises(InputError, match="unknown bundled model.*shapes-vit"):
        load_model("attnmap:nope")
    with pytest.raises(InputError, match="no config.json"):
        load_model(f"hf:{tmp_path}")


def test_bundled_lookup_is_generic(monkeypatch):
    monkeypatch.setitem(BUNDLED_MODELS, "missing-model", "attnmap.no_such_module:load")
    with pytest.raises(InputError, match="not available"):
        load_model("attnmap:missing-model")
    monkeypatch.setitem(BUNDLED_MODELS, "linear", "torch.nn:Identity")
    assert isinstance(load_model("attnmap:linear"), torch.nn.Identity)


def test_hugging_face_local_directory(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=3,
    )
    torch.manual_seed(0)
    original = transformers.ViTForImageClassification(config)
    original.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        '{"image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.5, 0.5], "size": {"height": 32, "width": 32}}'
    )
    assert data_config(original)["mean"] == (0.5, 0.5, 0.5)  # ViTImageProcessor's default
    model = load_model(f"hf:{tmp_path}")
    assert not model.training
    expected = original.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())
    assert data_config(model)["mean"] == (0.1, 0.2, 0.3)
    tensor, views = preprocess(model, picture())
    assert tensor.shape == (1, 3, 32, 32) and views[0].shape == (32, 32, 3)


def _tiny_hf(transformers, config_name: str, model_name: str, **options) -> torch.nn.Module:
    sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    torch.manual_seed(0)
    config = getattr(transformers, config_name)(**sizes, image_size=32, patch_size=8, **options)
    return getattr(transformers, model_name)(config)


@pytest.mark.parametrize(
    ("config_name", "model_name", "mean"),
    [
        ("Dinov2Config", "Dinov2Model", 0.485),  # ImageNet
        ("CLIPVisionConfig", "CLIPVisionModelWithProjection", 0.48145466),  # OpenAI CLIP
        ("BeitConfig", "BeitForImageClassification", 0.5),
        ("DeiTConfig", "DeiTForImageClassificationWithTeacher", 0.485),
        ("ViTConfig", "ViTModel", 0.5),
    ],
)
def test_hugging_face_directories_load_the_class_they_were_saved_from(
    tmp_path, config_name, model_name, mean
):
    """hf:DIR used to build a ViTForImageClassification whatever was saved: random weights for
    CLIP, BEiT, DeiT; the data config (size, normalisation) is the family's, not timm's default."""
    transformers = pytest.importorskip("transformers")
    original = _tiny_hf(transformers, config_name, model_name)
    original.save_pretrained(tmp_path)
    model = load_model(f"hf:{tmp_path}")
    assert type(model) is type(original) and not model.training
    expected = original.state_dict()
    assert model.state_dict().keys() == expected.keys()
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())
    config = data_config(model)
    assert config["input_size"] == (3, 32, 32) and config["mean"][0] == pytest.approx(mean)
    tensor, _ = preprocess(model, picture())
    assert tensor.shape == (1, 3, 32, 32)


def test_hugging_face_image_text_model_gives_its_vision_tower(tmp_path):
    transformers = pytest.importorskip("transformers")
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    text = dict(vision, vocab_size=99, max_position_embeddings=16)
    config = transformers.CLIPConfig(
        vision_config=dict(vision, image_size=32, patch_size=8), text_config=text, projection_dim=8
    )
    torch.manual_seed(0)
    pair = transformers.CLIPModel(config)
    pair.save_pretrained(tmp_path)
    model = load_model(f"hf:{tmp_path}")
    assert type(model).__name__ == "CLIPVisionModelWithProjection"
    expected = {f"vision_model.{k}": v for k, v in pair.vision_model.state_dict().items()}
    expected.update({f"visual_projection.{k}": v for k, v in pair.visual_projection.state_dict().items()})
    assert model.state_dict().keys() == expected.keys()
    assert all(torch.equal(value, expected[key]) for key, value in model.state_dict().items())
    with pytest.raises(InputError, match="num_classes applies to image classifiers"):
        load_model(f"hf:{tmp_path}", num_classes=3)
    other = tmp_path / "mae"
    _tiny_hf(transformers, "ViTMAEConfig", "ViTMAEModel").save_pretrained(other)
    with pytest.raises(InputError, match="holds a vit_mae"):
        load_model(f"hf:{other}")


def test_grayscale_models_get_one_channel_tensors(tmp_path):
    """A model built with in_chans=1 (X-ray, microscopy) takes luminance, not RGB."""
    import attnmap

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, in_chans=1)
    path = tmp_path / "colour.png"
    Image.fromarray(picture()).save(path)
    tensor, views = preprocess(model.eval(), path)
    assert tensor.shape == (1, 1, 32, 32) and views[0].shape == (32, 32, 3)
    mean, std = np.mean(data_config(model)["mean"]), np.mean(data_config(model)["std"])
    grey = np.asarray(Image.fromarray(views[0]).convert("L"), dtype=np.float32) / 255
    np.testing.assert_allclose(tensor[0, 0].numpy(), (grey - mean) / std, atol=0.05)
    assert attnmap.explain(model, tensor, "lrp").shape == (1, 32, 32)
    four = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, in_chans=4)
    with pytest.raises(InputError, match="4-channel"):
        preprocess(four, path)


@pytest.mark.parametrize("mode", ["I;16", "F"])
def test_wide_pil_images_are_rescaled_like_files(tiny_model, tmp_path, mode):
    """A 16-bit or float PIL image given as an object (not a path) went through PIL's convert("RGB"),
    which clips at 255: a white picture. It must give what the same image read from a file gives."""
    rng = np.random.default_rng(0)
    if mode == "I;16":
        image = Image.fromarray(rng.integers(0, 65536, size=(48, 64), dtype=np.uint16))
    else:
        image = Image.fromarray(rng.random((48, 64), dtype=np.float32))
    assert image.mode == mode
    path = tmp_path / "wide.tif"
    image.save(path)
    from_file, _ = preprocess(tiny_model, path)
    from_object, views = preprocess(tiny_model, image)
    torch.testing.assert_close(from_object, from_file, rtol=0, atol=0)
    assert 60 < views[0].mean() < 200  # mid-grey on average, not clipped white


def test_model_arguments_for_non_timm_specs_are_refused(tmp_path):
    """--model-arg depth=2 with hf:DIR or attnmap:NAME was silently ignored."""
    with pytest.raises(InputError, match=r"model arguments \(depth\) apply to timm models"):
        load_model("attnmap:shapes-vit", depth=2)
    with pytest.raises(InputError, match="apply to timm models, not to 'hf:"):
        load_model(f"hf:{tmp_path}", img_size=64)


@pytest.mark.parametrize(
    ("processor", "expected"),
    [
        (  # DeiT / DINOv2 checkpoints: shorter side to 256, centre crop 224, bicubic
            {"size": {"shortest_edge": 256}, "crop_size": {"height": 224, "width": 224}, "resample": 3},
            ((3, 224, 224), "center", 224 / 256, "bicubic"),
        ),
        (  # CLIP: shorter side 224, centre crop 224
            {"size": {"shortest_edge": 224}, "crop_size": {"height": 224, "width": 224},
             "do_center_crop": True},
            ((3, 224, 224), "center", 1.0, "bilinear"),
        ),
        (  # ViT, SigLIP, BEiT: an exact (h, w) resize, no crop
            {"size": {"height": 384, "width": 384}, "do_center_crop": False,
             "crop_size": {"height": 1, "width": 1}},
            ((3, 384, 384), "squash", 1.0, "bilinear"),
        ),
        (  # an old processor: ints, crop on
            {"size": 256, "crop_size": 224, "do_center_crop": True, "resample": 3},
            ((3, 224, 224), "center", 224 / 256, "bicubic"),
        ),
    ],
)
def test_hugging_face_processor_json_gives_the_crop_and_resize_the_model_was_trained_with(
    processor, expected
):
    """A DeiT processor (256 then crop 224) used to make 256 px inputs; ViT's exact resize a crop."""
    from types import SimpleNamespace

    from attnmap.vit.hf_preprocessing import hf_data_config

    config = hf_data_config(processor, SimpleNamespace(image_size=224, num_channels=3))
    assert (config["input_size"], config["crop_mode"], config["interpolation"]) == (
        expected[0], expected[1], expected[3]
    )
    assert config["crop_pct"] == pytest.approx(expected[2])


def test_hugging_face_vit_without_processor_sees_the_whole_image_squashed(tmp_path):
    """ViTImageProcessor resizes to (h, w) without cropping: so does preprocess, and the overlay's
    crop box is the whole original."""
    transformers = pytest.importorskip("transformers")
    from attnmap.vit.original import crop_box

    model = _tiny_hf(transformers, "ViTConfig", "ViTModel")
    assert data_config(model)["crop_mode"] == "squash"
    _, views = preprocess(model, picture(60, 90))
    assert views[0].shape == (32, 32, 3)
    np.testing.assert_allclose(crop_box(model, (90, 60)), (0, 0, 90, 60), atol=0.5)


@pytest.mark.parametrize(
    ("spec", "shown"),
    [
        (Path("models/vit"), "'models/vit'"),
        (123, "int"),
        (None, "NoneType"),
        (torch.nn.Linear(2, 2), "Linear"),
    ],
)
def test_load_model_spec_that_is_not_a_string_is_one_line_error(spec: object, shown: str) -> None:
    """A Path (a folder of weights), a model or another object failed with AttributeError."""
    with pytest.raises(InputError, match=r"model spec must be a string like timm:NAME.*got (.*)$") as raised:
        load_model(spec)
    assert str(raised.value).endswith(f"got {shown}") and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("model", "config", "message"),
    [
        ("timm:vit_tiny_patch16_224", None, r"^model must be a torch\.nn\.Module .*got str"),
        (None, {"input_size": (3, 32, 32), "resize": 40}, r"^preprocess config .*keyword argument 'resize'"),
    ],
)
def test_preprocess_refuses_a_spec_for_a_model_and_a_config_timm_cannot_use(
    tiny_model, model, config, message
):
    """A model spec string (what load_model takes) was an AttributeError ('str' object has no
    attribute 'parameters'), and a config key timm's create_transform does not take a TypeError
    from inside timm."""
    image = np.zeros((32, 32, 3), np.uint8)
    with pytest.raises(InputError, match=message) as error:
        preprocess(tiny_model if model is None else model, [image], config)
    assert "\n" not in str(error.value)


def test_preprocess_config_takes_one_int_input_size_as_timm_does(tiny_model):
    """timm's create_transform takes ``input_size=32`` for a square; preprocess failed on it with
    "'int' object is not iterable" while choosing how large to decode the image."""
    images, views = preprocess(tiny_model, [picture(60, 90)], {"input_size": 32, "crop_pct": 1.0})
    assert images.shape == (1, 3, 32, 32) and views[0].shape == (32, 32, 3)
