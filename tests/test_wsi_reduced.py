"""A slide without a pyramid, segmented on a copy shrunk block by block (`attnmap.wsi.reduced`).

Why: a single-level export has no small level; its level 0 read whole for segmentation took 7 bytes
a pixel (the process was killed at 30k², refused from 33k²). Limits are lowered here so that small
files exercise the rule.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_wsi_formats import RECT, shrink, slide_image, write_pages

from attnmap.errors import InputError
from attnmap.wsi import open_slide, reduced, segment_tissue, tissue
from attnmap.wsi.array_slide import ArraySlide


def test_read_reduced_is_the_box_mean_whatever_the_blocks(monkeypatch) -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(157, 203, 3), dtype=np.uint8)
    slide = ArraySlide(image, "random.png")
    whole = reduced.read_reduced(slide, 0, 4)
    monkeypatch.setattr(reduced, "BLOCK", 32)  # 5×7 blocks, the last row and column cut short
    blocks = reduced.read_reduced(slide, 0, 4)
    assert blocks.shape == (40, 51, 3) and np.array_equal(blocks, whole)
    padded = np.full((160, 204, 3), np.nan)
    padded[:157, :203] = image
    expected = np.nanmean(padded.reshape(40, 4, 51, 4, 3), axis=(1, 3))  # partial boxes: their own pixels
    assert np.abs(blocks - expected).max() <= 0.5 + 1e-9


def test_a_slide_without_a_pyramid_is_segmented_on_a_shrunk_copy(tmp_path: Path, monkeypatch) -> None:
    """The chosen level over the whole-read limit is read shrunk to about the segmentation
    downsample: the tissue equals the one found on the same slide's pyramid level there."""
    monkeypatch.setattr(tissue, "MAX_WHOLE_PIXELS", 100_000)  # the slide: 1024×768
    monkeypatch.setattr(tissue, "SEGMENTATION_DOWNSAMPLE", 8)  # the tissue (256² px) stays 32² px
    monkeypatch.setattr(tissue, "MIN_OVERVIEW_SIDE", 64)
    monkeypatch.setattr(reduced, "BLOCK", 256)
    image = slide_image()
    single = write_pages(tmp_path / "single.tif", [image])
    pyramid = write_pages(tmp_path / "pyramid.tif", [image, shrink(image, 8)])
    with open_slide(single) as slide:
        found = segment_tissue(slide, a_t=0.01, a_h=0.01, progress=False)
        monkeypatch.setattr(tissue, "MAX_SEGMENTATION_PIXELS", 100_000)
        tissue.check_segmentation_size(slide, None)  # the level segment_tissue chooses: never refused
        with pytest.raises(InputError, match=r"leave segmentation.level unset: the level is then read"):
            segment_tissue(slide, level=0)  # a level named is read whole, so refused
    with open_slide(pyramid) as slide:
        reference = segment_tissue(slide, level=1, a_t=0.01, a_h=0.01)
    assert found.parameters["seg_factor"] == 8 and found.seg_level == 0
    assert found.seg_mask().shape == (96, 128)
    assert np.array_equal(found.seg_mask(), reference.mask(1))
    area = sum(cv2.contourArea(p.outer.reshape(-1, 1, 2)) for p in found.contours)
    x0, y0, x1, y1 = RECT
    assert abs(area / ((x1 - x0) * (y1 - y0)) - 1) < 0.1
    strip = ArraySlide(np.zeros((256, 4096, 3), np.uint8), "strip.png")  # a 16:1 strip keeps 64 px
    assert tissue.segmentation_factor(strip, 0) == 4


def test_the_overview_tiles_of_a_one_level_slide_read_it_once(monkeypatch) -> None:
    """Each coarse Deep Zoom tile of a slide without coarse levels was made from the whole slide
    (minutes a tile at 30k²); they are now cut from one overview read block by block."""
    import attnmap.view.deepzoom as deepzoom
    from attnmap.view.deepzoom import SlideTiles

    slide = ArraySlide(slide_image(), "one_level.png")
    addresses = [(level, 0, 0) for level in range(9)] + [(8, 1, 0)]  # downsample 1024 to 4
    monkeypatch.setattr(deepzoom, "MAX_READ_RATIO", 1e9)  # the one-piece read, as the reference
    expected = {address: np.asarray(SlideTiles(slide).image(*address), dtype=int) for address in addresses}
    monkeypatch.setattr(deepzoom, "MAX_READ_RATIO", 2)
    monkeypatch.setattr(deepzoom, "OVERVIEW_SIDE", 256)  # the 1024×768 slide: an overview at 1/4
    reads = []
    read = slide.read_region
    monkeypatch.setattr(slide, "read_region", lambda *args: reads.append(args[2]) or read(*args))
    tiles = SlideTiles(slide)
    for address in addresses:
        image = np.asarray(tiles.image(*address), dtype=int)
        assert image.shape == expected[address].shape
        assert np.abs(image - expected[address]).mean() < 1.0, address
    assert sum(width * height for width, height in reads) == 1024 * 768  # the slide, once


def test_a_heatmap_of_a_slide_without_a_pyramid_is_drawn_shrunk_in_bounded_reads(
    tmp_path: Path, monkeypatch
) -> None:
    """An unset vis level on a one-level slide was its level 0: a canvas and a read of the whole
    slide (heavy at 30k², refused from 2^31 px); it is drawn at about downsample 32 (8 here) from
    block reads, as on the same slide's pyramid level there."""
    from attnmap.wsi.heatmap import renderer
    from attnmap.wsi.heatmap.placement import level0_extent
    from attnmap.wsi.heatmap.renderer import render_heatmap
    from attnmap.wsi.heatmap.style import HeatmapStyle

    monkeypatch.setattr(renderer, "MAX_VIS_LEVEL_PIXELS", 100_000)  # the slide: 1024×768
    monkeypatch.setattr(renderer, "VIS_DOWNSAMPLE", 8)
    monkeypatch.setattr(reduced, "BLOCK", 256)
    image = slide_image()
    pyramid = write_pages(tmp_path / "pyramid.tif", [image, shrink(image, 8)])
    xs, ys = np.meshgrid(np.arange(0, 1024, 64), np.arange(0, 768, 64), indexing="ij")
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
    scores = np.random.default_rng(0).random(len(grid))
    with open_slide(pyramid) as slide:
        expected = render_heatmap(slide, grid, scores, HeatmapStyle(vis_level=1), patch_size=64)
    slide = ArraySlide(image, "one_level.png")
    reads = []
    read = slide.read_region
    monkeypatch.setattr(slide, "read_region", lambda *args: reads.append(args[2]) or read(*args))
    drawn = render_heatmap(slide, grid, scores, HeatmapStyle(), patch_size=64)
    assert drawn.shape == expected.shape == (96, 128, 3)
    assert np.abs(drawn.astype(int) - expected).mean() < 1.0
    assert max(width * height for width, height in reads) <= 256 * 256
    assert level0_extent(slide, HeatmapStyle()) == (0.0, 0.0, 1024.0, 768.0)


def test_the_heatmap_tiff_of_a_run_or_the_command_shows_its_progress(tmp_path: Path, capsys) -> None:
    """The pyramidal TIFF of a big slide is minutes of windows, the PNG of 2M patches a minute;
    `wsi heatmap` and `wsi run` drew them with no bar, silent all along."""
    from attnmap.wsi.pipeline.drawing import write_heatmap_files

    image = slide_image()
    pyramid = write_pages(tmp_path / "pyramid.tif", [image, shrink(image, 4)])
    xs, ys = np.meshgrid(np.arange(0, 1024, 128), np.arange(0, 768, 128), indexing="ij")
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
    scores = np.random.default_rng(0).random(len(grid))
    written = write_heatmap_files(pyramid, grid, scores, 128, tmp_path / "heat.png",
                                  tiff=tmp_path / "heat.tif", progress=True)
    assert [path.name for path in written] == ["heat.png", "heat.tif"]
    err = capsys.readouterr().err
    assert "heatmap PNG" in err and "heatmap TIFF page 0" in err


def test_wsi_run_in_process_shows_the_slides_own_bars(tmp_path: Path, monkeypatch) -> None:
    """`wsi run` passed no progress to the slide: a big slide's segmentation, patching and heatmap
    ran minutes under a bar that moves once per slide. In process (one worker) it now asks for them."""
    from synthetic_slide_files import write_pipeline_setup

    from attnmap.wsi.pipeline import run as pipeline_run
    from attnmap.wsi.pipeline.cohort import run_cohort
    from attnmap.wsi.pipeline.config import load_config

    asked = []

    def fake(entry, config, on_stage=None, force=False, progress=False):
        asked.append(progress)
        raise InputError("stopped here")

    monkeypatch.setattr(pipeline_run, "run_slide", fake)
    config = load_config(write_pipeline_setup(tmp_path, n_slides=1))
    run_cohort(config, progress=True, workers=1)
    run_cohort(config, progress=False, workers=1)
    assert asked == [True, False]


def test_outputs_drawn_from_a_shrunk_level_get_their_own_fingerprint(tmp_path: Path, monkeypatch) -> None:
    """Tissue, heatmap and original of a slide whose level is read shrunk were made at full size by
    earlier versions: their fingerprints name the shrinking, so those outputs are redone, not reused.
    A slide read as it is, and a level the user names, keep the fingerprints they had."""
    from attnmap.wsi.heatmap import renderer
    from attnmap.wsi.pipeline import fingerprint
    from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry
    from attnmap.wsi.pipeline.fingerprint import StageFingerprints

    image = slide_image()
    single = write_pages(tmp_path / "single.tif", [image])

    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"weights")  # hashed only: the heatmap's fingerprint chains the model's

    def shrunk(config: PipelineConfig) -> list:
        config.model.checkpoint = str(checkpoint)
        prints = StageFingerprints(SlideEntry(str(single), "single"), config)
        return [fp.inputs.get("shrunk") for fp in (prints.tissue, prints.heatmap, prints.original)]

    assert shrunk(PipelineConfig()) == [None, None, None]  # 1024×768: read whole
    monkeypatch.setattr(tissue, "MAX_WHOLE_PIXELS", 100_000)
    monkeypatch.setattr(tissue, "MIN_OVERVIEW_SIDE", 64)
    monkeypatch.setattr(renderer, "MAX_VIS_LEVEL_PIXELS", 100_000)
    fingerprint._shrink_factors.cache_clear()  # remembered per file version; the limits changed here
    assert shrunk(PipelineConfig()) == [12, 32.0, 32.0]
    named = PipelineConfig()
    named.segmentation.level = 0
    named.heatmap = dataclasses.replace(named.heatmap, vis_level=0)
    assert shrunk(named) == [None, None, None]
