"""The bundled shapes ViT: the architecture, its preprocessing config, and the shipped weights' accuracy."""

from __future__ import annotations

import json

import pytest
import torch
from timm.data import resolve_data_config
from timm.layers import PatchEmbed
from torch import nn

from attnmap.data.shapes import SHAPE_CLASSES, ShapesDataset
from attnmap.data.shapes_model import (
    RECORD_PATH,
    WEIGHTS_PATH,
    build_shapes_vit,
    load_shapes_vit,
    shapes_vit_record,
)
from attnmap.data.train_shapes import held_out_accuracy, train_shapes_vit
from attnmap.errors import InputError
from attnmap.vit.conv_stem import ConvPatchEmbed


def test_conv_stem_keeps_the_patch_grid_and_uses_only_the_agreed_layer_kinds():
    stem = ConvPatchEmbed(img_size=64, patch_size=8, in_chans=3, embed_dim=32)
    assert isinstance(stem, PatchEmbed) and stem.grid_size == (8, 8) and stem.num_patches == 64
    assert isinstance(stem.proj, nn.Sequential)
    assert all(isinstance(layer, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU)) for layer in stem.proj)
    assert isinstance(stem.proj[-1], nn.Conv2d) and stem.proj[-1].out_channels == 32
    stride = 1
    for layer in stem.proj:
        if isinstance(layer, nn.Conv2d):
            stride *= layer.stride[0]
    assert stride == 8
    tokens = stem(torch.randn(2, 3, 64, 64))
    assert tokens.shape == (2, 64, 32)


def test_conv_stem_refuses_patch_sizes_it_cannot_build():
    with pytest.raises(InputError, match="patch size"):
        ConvPatchEmbed(img_size=60, patch_size=6, embed_dim=16)


def test_built_model_has_a_data_config_timm_can_resolve():
    model = build_shapes_vit()
    config = resolve_data_config({}, model=model)
    assert config["input_size"] == (3, 64, 64)
    assert config["mean"] == (0.5, 0.5, 0.5) and config["std"] == (0.5, 0.5, 0.5)
    assert model.patch_embed.grid_size == (8, 8) and model.num_prefix_tokens == 1
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, len(SHAPE_CLASSES))


def test_bundled_weights_are_small_and_documented():
    assert WEIGHTS_PATH.stat().st_size <= 5 * 1024 * 1024
    record = shapes_vit_record()
    assert record == json.loads(RECORD_PATH.read_text())
    assert record["command"].startswith("attnmap train-shapes")
    assert record["held_out"]["accuracy"] >= 0.97
    assert {"seed", "config", "train_wall_seconds", "classes"} <= set(record)


def test_bundled_model_is_accurate_on_a_fresh_held_out_set():
    model = load_shapes_vit()
    assert not model.training
    held_out = ShapesDataset(300, seed=12345)  # a seed the training stream never used
    torch.manual_seed(0)
    assert held_out_accuracy(model, held_out) >= 0.97


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="train-shapes"):
        load_shapes_vit(tmp_path / "nope.safetensors")


def test_training_routine_writes_loadable_weights_and_a_record(tmp_path):
    out = tmp_path / "tiny.safetensors"
    record = train_shapes_vit(out, seed=0, epochs=1, n_train=64, n_val=16, batch_size=32, command="test",
                              progress=False)
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert record["command"] == "test" and 0.0 <= record["held_out"]["accuracy"] <= 1.0
    model = load_shapes_vit(out)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, len(SHAPE_CLASSES))
    with pytest.raises(InputError):
        train_shapes_vit(tmp_path / "bad.pt", epochs=1, n_train=64, batch_size=32)
