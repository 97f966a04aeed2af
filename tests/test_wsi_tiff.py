"""Streamed heatmap TIFFs (OpenSlide opens every level, mpp kept), tile streams, scores h5, samples."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from attnmap.errors import InputError
from attnmap.wsi import (
    HeatmapRenderer,
    HeatmapStyle,
    load_scores_h5,
    open_slide,
    patch_grid,
    render_heatmap,
    sample_patches,
    save_patch_samples,
    save_scores_h5,
    segment_tissue,
    write_heatmap_tiff,
)
from attnmap.wsi.heatmap.stream import iter_tiles, plan_pyramid

FIXTURES = Path(__file__).parent / "fixtures" / "heatmap"


def write_synthetic_slide(path: Path, size: int = 2048, mpp: float = 0.5) -> Path:
    """A 3-level page pyramid: white glass with two pink 'tissue' discs."""
    ys, xs = np.mgrid[0:size, 0:size]
    tissue = ((xs - size * 0.35) ** 2 + (ys - size * 0.4) ** 2 < (size * 0.22) ** 2) | (
        (xs - size * 0.72) ** 2 + (ys - size * 0.7) ** 2 < (size * 0.15) ** 2)
    image = np.full((size, size, 3), 242, np.uint8)
    noise = np.random.default_rng(0).integers(0, 30, size=(size, size), dtype=np.uint8)
    image[tissue] = np.stack([220 - noise, 120 + noise, 190 - noise // 2], axis=2)[tissue]
    with tifffile.TiffWriter(path) as tif:
        for level in range(3):
            ppcm = 1e4 / (mpp * 2**level)
            tif.write(image[:: 2**level, :: 2**level], tile=(256, 256), photometric="rgb", compression="zlib",
                      subfiletype=int(level > 0), resolution=(ppcm, ppcm), resolutionunit="CENTIMETER",
                      metadata=None)
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = write_synthetic_slide(tmp_path_factory.mktemp("slide") / "synthetic.tif")
    slide = open_slide(path)
    tissue = segment_tissue(slide, level=2, sthresh=15, mthresh=11, close=2, a_t=1, a_h=1, max_n_holes=2)
    coords = patch_grid(slide, tissue, patch_size=128, step=64)
    scores = np.random.default_rng(1).normal(size=len(coords))
    yield slide, tissue, coords, scores
    slide.close()


def test_tile_stream_equals_render(synthetic):
    slide, tissue, coords, scores = synthetic
    style = HeatmapStyle(vis_level=1, blur=True, overlap=0.5)
    renderer = HeatmapRenderer(slide, coords, scores, style, patch_size=128, tissue=tissue)
    tiles = list(iter_tiles(renderer, tile=256))
    assert len(tiles) == 16
    stitched = np.vstack([np.hstack(tiles[row * 4 : row * 4 + 4]) for row in range(4)])
    expected = render_heatmap(slide, coords, scores, style, patch_size=128, tissue=tissue)
    np.testing.assert_array_equal(stitched, expected)


def test_heatmap_tiff_opens_in_openslide_with_all_levels(synthetic, tmp_path):
    slide, tissue, coords, scores = synthetic
    path = write_heatmap_tiff(tmp_path / "heatmap.tif", slide, coords, scores, patch_size=128, level=0,
                              tissue=tissue, progress=False)
    with openslide.OpenSlide(str(path)) as viewer:
        assert viewer.level_dimensions == ((2048, 2048), (1024, 1024), (512, 512), (256, 256))
        assert viewer.level_downsamples == (1.0, 2.0, 4.0, 8.0)
        assert float(viewer.properties["openslide.mpp-x"]) == pytest.approx(0.5, rel=1e-4)
        page0 = np.asarray(viewer.read_region((0, 0), 0, (2048, 2048)))[:, :, :3].astype(int)
        page2 = np.asarray(viewer.read_region((0, 0), 2, (512, 512)))[:, :, :3].astype(int)
    expected0, expected2 = (
        render_heatmap(slide, coords, scores, HeatmapStyle(vis_level=level), patch_size=128, tissue=tissue)
        for level in (0, 2)
    )
    assert np.abs(page0 - expected0).mean() < 2.0
    assert np.abs(page2 - expected2).mean() < 3.0
    with tifffile.TiffFile(path) as tif:
        assert [page.subfiletype for page in tif.pages] == [0, 1, 1, 1]
        assert all(page.compression == tifffile.COMPRESSION.JPEG and page.is_tiled for page in tif.pages)
        record = json.loads(tif.pages[0].description)
    assert record["method"] == "clam_heatmap" and "attnmap_version" in record


def test_tiff_at_a_reduced_level(synthetic, tmp_path):
    slide, tissue, coords, scores = synthetic
    assert [p.size for p in plan_pyramid(slide, 1, 256)] == [(1024, 1024), (512, 512), (256, 256)]
    path = write_heatmap_tiff(tmp_path / "l1.tif", slide, coords, scores, patch_size=128, level=1,
                              metadata={"note": "mine"}, progress=False)
    with openslide.OpenSlide(str(path)) as viewer:
        assert viewer.level_dimensions[0] == (1024, 1024) and viewer.level_count == 3
        assert float(viewer.properties["openslide.mpp-x"]) == pytest.approx(1.0, rel=1e-4)
        assert json.loads(viewer.properties["tiff.ImageDescription"]) == {"note": "mine"}


def test_scores_h5_round_trip(tmp_path):
    coords = np.array([[0, 0], [256, 512], [512, 0]])
    scores = np.array([0.25, -1.5, 3.0], dtype=np.float32)
    path = save_scores_h5(tmp_path / "slide_blockmap.h5", coords, scores.reshape(-1, 1),
                          metadata={"method": "clam"}, attrs={"patch_size": 256})
    with h5py.File(path) as handle:
        assert handle["attention_scores"].shape == (3, 1) and handle["attention_scores"].dtype == np.float32
        assert handle["coords"].shape == (3, 2) and handle["coords"].dtype == np.int64
        assert handle.attrs["method"] == "clam" and handle.attrs["patch_size"] == 256
    loaded_coords, loaded_scores = load_scores_h5(path)
    np.testing.assert_array_equal(loaded_coords, coords)
    np.testing.assert_array_equal(loaded_scores, scores.astype(np.float64))
    with pytest.raises(InputError, match="3 scores for 2 coords"):
        save_scores_h5(tmp_path / "bad.h5", coords[:2], scores)
    with pytest.raises(InputError, match="not found"):
        load_scores_h5(tmp_path / "missing.h5")


def test_top_k_matches_clam_sampler():
    clam = np.load(FIXTURES / "clam_heatmap_public_inputs.npz")
    picked, percentiles = sample_patches(clam["coords_block"], clam["scores_block"], 15, "topk")
    np.testing.assert_array_equal(picked, clam["sample_topk_coords"])
    np.testing.assert_array_equal(percentiles, clam["sample_topk_scores"])


def test_patch_samples_written_as_pngs(synthetic, tmp_path):
    slide, _, coords, scores = synthetic
    paths = save_patch_samples(slide, coords, scores, tmp_path, patch_size=128, top_k=3, bottom_k=2,
                               metadata={"method": "clam"})
    assert len(paths) == 5
    best = int(np.argmax(scores))
    x, y = coords[best]
    assert paths[0].parent.name == "topk_high_attention"
    assert paths[0].name == f"0_synthetic_x_{x}_y_{y}_a_100.000.png"
    assert paths[3].parent.name == "bottomk_low_attention"
    with Image.open(paths[0]) as image:
        assert image.size == (128, 128) and image.text["method"] == "clam"
        np.testing.assert_array_equal(np.asarray(image), slide.read_region((x, y), 0, (128, 128)))
