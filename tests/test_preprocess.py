"""Loading images and preprocessing them from the model's own data config; loading models by spec."""

from __future__ import annotations

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
    with pytest.raises(InputError, match="wrong shape: pos_embed"):
        load_model("timm:vit_tiny_patch16_224", tmp_path / "w.pt", depth=1)
    with pytest.raises(InputError, match="timm has no model"):
        load_model("timm:vit_nonexistent_thing")
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
