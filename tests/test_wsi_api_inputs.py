"""What users hand the whole-slide drawing and file API directly (found by
bench/drawing_api_sweep.py): tensors from a model, NaN scores, odd arrays for `ArraySlide`,
fractional sizes, out-of-range overlaps, output paths that are folders or whose folder is missing."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from attnmap import InputError
from attnmap.wsi import (
    ArraySlide,
    HeatmapStyle,
    heatmap_center_shift,
    load_features,
    load_scores_h5,
    patch_grid,
    percentiles_against,
    render_heatmap,
    sample_patches,
    save_features,
    save_patch_samples,
    save_scores_h5,
    to_percentiles,
    write_heatmap_tiff,
    write_pyramid_tiff,
)

P = 16
PIXELS = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
COORDS = np.stack(np.meshgrid(np.arange(0, 64, P), np.arange(0, 48, P), indexing="ij"), -1).reshape(-1, 2)
SCORES = np.linspace(0.0, 0.5, len(COORDS))
SCORES[5] = 1.0


def test_nan_scores_are_refused_not_ranked_hottest():
    with pytest.raises(InputError, match="NaN"):
        to_percentiles([1.0, np.nan, 2.0])
    with pytest.raises(InputError, match="NaN"):
        percentiles_against([1.0, np.nan], [1.0, 2.0])
    with pytest.raises(InputError, match="NaN"):
        sample_patches(COORDS, np.where(SCORES == 1.0, np.nan, SCORES), 1)
    np.testing.assert_allclose(to_percentiles([np.inf, 1.0]), [100.0, 50.0])  # infinities rank


def test_tensors_from_a_model_are_taken_as_scores_coords_and_features(tmp_path):
    scores = torch.tensor(SCORES, requires_grad=True)
    np.testing.assert_allclose(to_percentiles(scores), to_percentiles(SCORES))
    slide = ArraySlide(PIXELS)
    style = HeatmapStyle(vis_level=0, alpha=1.0, blank_canvas=True)
    drawn = render_heatmap(slide, torch.tensor(COORDS), scores, style, patch_size=P)
    np.testing.assert_array_equal(drawn, render_heatmap(slide, COORDS, SCORES, style, patch_size=P))
    coords, stored = load_scores_h5(save_scores_h5(tmp_path / "s.h5", COORDS, scores))
    np.testing.assert_array_equal(stored, SCORES)
    features = torch.randn(len(COORDS), 4, requires_grad=True)
    read, _ = load_features(save_features(tmp_path / "f.h5", features, COORDS))
    np.testing.assert_array_equal(read, features.detach().numpy())


def test_sample_patches_refuses_a_negative_or_fractional_count():
    assert len(sample_patches(COORDS, SCORES, 0)[0]) == 0
    for k in (-1, 2.5, True):
        with pytest.raises(InputError, match="whole number"):
            sample_patches(COORDS, SCORES, k)


def test_array_slide_reads_16_bit_and_pil_images_and_refuses_empty_ones_and_bad_mpp():
    wide = ArraySlide(PIXELS.astype(np.uint16) * 257)
    np.testing.assert_array_equal(wide.read_region((0, 0), 0, (64, 48)), PIXELS)
    palette = Image.fromarray(PIXELS).convert("P")
    np.testing.assert_array_equal(
        ArraySlide(palette).read_region((0, 0), 0, (64, 48)), np.asarray(palette.convert("RGB"))
    )
    grey16 = Image.fromarray(PIXELS[..., 0].astype(np.uint16) * 257)
    np.testing.assert_array_equal(ArraySlide(grey16).read_region((0, 0), 0, (64, 48))[..., 1], PIXELS[..., 0])
    with pytest.raises(InputError, match="empty"):
        ArraySlide(np.zeros((0, 5, 3), np.uint8))
    for mpp in (-0.25, 0, float("nan"), "0.25"):
        with pytest.raises(InputError, match="mpp"):
            ArraySlide(PIXELS, mpp=mpp)
    assert ArraySlide(PIXELS, mpp=np.float32(0.5)).mpp == 0.5
    with pytest.raises(InputError, match="pixel type"):
        ArraySlide(PIXELS / 255.0)


def test_patch_grid_refuses_fractional_sizes_and_takes_whole_floats():
    slide = ArraySlide(PIXELS)
    with pytest.raises(InputError, match="whole number"):
        patch_grid(slide, None, 15.5, 16, progress=False)
    with pytest.raises(InputError, match="whole number"):
        patch_grid(slide, None, 16, 7.2, progress=False)
    np.testing.assert_array_equal(
        patch_grid(slide, None, 16.0, 16.0, progress=False), patch_grid(slide, None, 16, 16, progress=False)
    )


def test_heatmap_center_shift_refuses_overlaps_outside_0_1():
    assert [heatmap_center_shift(v) for v in (0.0, 0.5, 0.95)] == [0.375, 0.5, 0.625]
    for overlap in (-0.5, 1.0, 1.5, float("nan")):
        with pytest.raises(InputError, match="overlap"):
            heatmap_center_shift(overlap)


def test_writers_make_missing_folders_and_refuse_folders(tmp_path):
    slide = ArraySlide(PIXELS)
    style = HeatmapStyle(alpha=1.0, blank_canvas=True)
    tiff = write_heatmap_tiff(tmp_path / "new" / "h.tif", slide, COORDS, SCORES, style, patch_size=P,
                              progress=False)
    with tifffile.TiffFile(tiff) as handle:
        assert handle.pages[0].shape == (48, 64, 3)
    for write in (
        lambda: write_heatmap_tiff(tmp_path, slide, COORDS, SCORES, style, patch_size=P, progress=False),
        lambda: write_pyramid_tiff(tmp_path, [((16, 16), lambda: iter([np.zeros((16, 16, 3), np.uint8)]))],
                                   tile=16),
        lambda: save_scores_h5(tmp_path, COORDS, SCORES),
        lambda: save_features(tmp_path, np.zeros((len(COORDS), 2)), COORDS),
    ):
        with pytest.raises(InputError, match="folder"):
            write()
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        save_patch_samples(slide, COORDS, SCORES, tmp_path / "file", patch_size=P)
    with pytest.raises(InputError, match="not found"):
        load_features(tmp_path / "none.h5")


def test_tiff_options_are_checked_before_rendering(tmp_path):
    slide = ArraySlide(PIXELS)
    for options, word in (({"tile": 100}, "multiple of 16"), ({"quality": 0}, "quality")):
        with pytest.raises(InputError, match=word):
            write_heatmap_tiff(tmp_path / "h.tif", slide, COORDS, SCORES, patch_size=P, progress=False,
                               **options)
    with pytest.raises(InputError, match="mpp"):
        write_pyramid_tiff(tmp_path / "p.tif", [((16, 16), lambda: iter([np.zeros((16, 16, 3), np.uint8)]))],
                           mpp=-0.5, tile=16)
    with pytest.raises(InputError, match="patch_size"):
        save_patch_samples(slide, COORDS, SCORES, tmp_path / "out", patch_size=0)
