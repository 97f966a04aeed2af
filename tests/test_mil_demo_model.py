"""The shipped tiny encoder and demo CLAM_SB: they load, and attention finds tumour on unseen slides."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attnmap.data.mil_demo import (
    DEMO_MODEL_NAME,
    DEMO_RECORD_NAME,
    PATCH_SIZE,
    held_out_slide,
    load_demo_clam,
    slide_bag,
)
from attnmap.data.tiny_encoder import (
    TINY_FEATURE_DIM,
    WEIGHTS_DIR,
    load_tiny_encoder,
    seeded_tiny_encoder,
)
from attnmap.evaluate.mil_localisation import attention_localisation, patch_labels_from_mask
from attnmap.mil import CLAM_SB, attention_scores, load_clam
from attnmap.wsi.encoders import load_encoder


def test_tiny_encoder_is_registered_and_matches_its_recipe() -> None:
    encoder = load_encoder("attnmap:tiny")
    assert encoder.feature_dim == TINY_FEATURE_DIM
    recipe = json.loads((WEIGHTS_DIR / "tiny_encoder.json").read_text())
    rebuilt = seeded_tiny_encoder(int(json.loads(recipe["parameters"])["seed"])).state_dict()
    shipped = encoder.model.state_dict()
    for key, value in rebuilt.items():
        if key.startswith("features."):
            torch.testing.assert_close(shipped[key], value, rtol=0, atol=0)
    patch = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    with torch.inference_mode():
        first = encoder.model(encoder.transform(patch)[None])
        second = load_tiny_encoder().model(encoder.transform(patch)[None])
    assert first.shape == (1, TINY_FEATURE_DIM)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_shipped_demo_model_loads_as_clam_sb() -> None:
    model = load_clam(WEIGHTS_DIR / DEMO_MODEL_NAME)
    assert isinstance(model, CLAM_SB) and model.embed_dim == TINY_FEATURE_DIM and model.n_classes == 2
    again = load_demo_clam()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[key], value, rtol=0, atol=0)
    record = json.loads((WEIGHTS_DIR / DEMO_RECORD_NAME).read_text())
    assert record["attention_auc"] >= 0.9 and record["seed"] == 7 and "mil_demo" in record["command"]


@pytest.mark.slow
def test_demo_attention_finds_tumour_on_fresh_held_out_slides(tmp_path: Path) -> None:
    model = load_demo_clam()
    encoder = load_tiny_encoder()
    aucs = []
    for index in (101, 102, 103):  # never used by the build (it generated its own cohorts)
        slide = held_out_slide(tmp_path / f"tumour_{index}.tif", index=index, size=(2048, 2048))
        coords, features = slide_bag(slide.path, encoder)
        labels = patch_labels_from_mask(coords, PATCH_SIZE, slide.tumour_mask, slide.mask_downsample)
        assert 0 < labels.sum() < len(labels)
        scores = attention_scores(model, torch.from_numpy(features), kind="raw")
        aucs.append(attention_localisation(scores, labels)["auc"])
        assert model(torch.from_numpy(features)).prediction.item() == 1
    assert min(aucs) >= 0.9, aucs
    normal = held_out_slide(tmp_path / "normal.tif", index=104, size=(2048, 2048), tumour=False)
    _, features = slide_bag(normal.path, encoder)
    assert model(torch.from_numpy(features)).prediction.item() == 0
