"""Synthetic slides: OpenSlide reads every level and the mpp, masks match the pixels, seeds reproduce."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import openslide
import pytest
import tifffile

from attnmap.data.synthetic_slides import load_mask, load_masks, make_cohort, make_slide, tumour_outline
from attnmap.errors import InputError


@pytest.fixture(scope="module")
def tumour_slide(tmp_path_factory: pytest.TempPathFactory):
    return make_slide(tmp_path_factory.mktemp("slides") / "pos.tif", seed=11, size=(2048, 1536), tumour=True)


def test_openslide_sees_the_pyramid_and_mpp(tumour_slide) -> None:
    with openslide.OpenSlide(str(tumour_slide.path)) as slide:
        assert slide.level_dimensions == ((2048, 1536), (1024, 768), (512, 384))
        assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5, rel=1e-6)
        assert float(slide.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(0.5, rel=1e-6)
        region = np.asarray(slide.read_region((0, 0), 2, (512, 384)).convert("RGB"))
    np.testing.assert_array_equal(region, tifffile.imread(tumour_slide.path, level=2))
    description = json.loads(tifffile.TiffFile(tumour_slide.path).pages[0].description)
    assert description["method"] == "synthetic_slide" and json.loads(description["parameters"])["seed"] == 11


def test_masks_agree_with_the_pixels(tumour_slide) -> None:
    tissue, tumour, downsample = load_masks(tumour_slide.path)
    assert downsample == 16 and tissue.shape == (1536 // 16, 2048 // 16)
    assert tumour.any() and not (tumour & ~tissue).any()
    assert 0.1 < tissue.mean() < 0.8
    level0 = tifffile.imread(tumour_slide.path, level=0).astype(np.float64)
    small = cv2.resize(level0, (tissue.shape[1], tissue.shape[0]), interpolation=cv2.INTER_AREA)
    brightness = small.mean(axis=2)
    eroded = cv2.erode(tissue.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    background = ~cv2.dilate(tissue.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    inner_tumour = cv2.erode(tumour.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    # white background, pink tissue, darker and bluer tumour
    assert brightness[background].min() > 225
    assert brightness[eroded & ~tumour].mean() < brightness[background].mean() - 20
    assert brightness[inner_tumour].mean() < brightness[eroded & ~tumour].mean() - 25
    red_minus_blue = small[..., 0] - small[..., 2]
    assert red_minus_blue[inner_tumour].mean() < red_minus_blue[eroded & ~tumour].mean() - 10
    # lymphoid aggregates: inside tissue, never tumour, darker than plain stroma
    lymphoid = tumour_slide.lymphoid_mask
    stroma = eroded & ~tumour & ~cv2.dilate(lymphoid.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert lymphoid.any() and not (lymphoid & tumour).any() and not (lymphoid & ~tissue).any()
    np.testing.assert_array_equal(load_mask(tumour_slide.path, "lymphoid"), lymphoid)
    with pytest.raises(InputError, match="no mask"):
        load_mask(tumour_slide.path, "stroma")
    assert brightness[lymphoid].mean() < brightness[stroma].mean() - 15


def test_same_seed_same_slide_and_negative_has_no_tumour(tmp_path: Path, tumour_slide) -> None:
    again = make_slide(tmp_path / "again.tif", seed=11, size=(2048, 1536), tumour=True)
    for level in range(3):
        np.testing.assert_array_equal(
            tifffile.imread(again.path, level=level), tifffile.imread(tumour_slide.path, level=level)
        )
    np.testing.assert_array_equal(again.tumour_mask, tumour_slide.tumour_mask)
    negative = make_slide(tmp_path / "neg.tif", seed=12, size=(1024, 1024), tumour=False, compression="zlib")
    assert negative.label == 0 and not negative.tumour_mask.any() and negative.tissue_mask.any()
    assert negative.lymphoid_mask.any()  # look-alike distractors on negative slides too


def test_cohort_csv(tmp_path: Path) -> None:
    csv_path = make_cohort(tmp_path, n_slides=4, seed=3, size=(1024, 1024))
    with open(csv_path) as handle:
        rows = list(csv.DictReader(handle))
    assert [row["slide_id"] for row in rows] == [f"synth_3_{i:03d}" for i in range(4)]
    assert sorted(int(row["label"]) for row in rows) == [0, 0, 1, 1]
    assert len({row["case_id"] for row in rows}) == 4
    for row in rows:
        _, tumour, _ = load_masks(tmp_path / f"{row['slide_id']}.tif")
        assert tumour.any() == (row["label"] == "1")


def test_tumour_outline_is_in_level0_coordinates(tumour_slide) -> None:
    contours = tumour_outline(tumour_slide.tumour_mask, tumour_slide.mask_downsample)
    assert contours and all(c.dtype == np.int32 and c.shape[1:] == (1, 2) for c in contours)
    redrawn = np.zeros((1536, 2048), np.uint8)
    cv2.drawContours(redrawn, contours, -1, 1, thickness=-1)
    small = cv2.resize(redrawn, (128, 96), interpolation=cv2.INTER_AREA) > 0
    assert (small == tumour_slide.tumour_mask).mean() > 0.98


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": (100, 4096)}, "at least 512"),
        ({"mpp": 0.0}, "mpp"),
        ({"compression": "lzma"}, "compression"),
    ],
)
def test_bad_parameters_are_named(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        make_slide(tmp_path / "bad.tif", seed=0, **{"size": (1024, 1024), **kwargs})
