"""Tissue segmentation and patch grids: CLAM conformance on the fixtures, real tissue, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attnmap.errors import InputError
from attnmap.wsi import heatmap_center_shift, open_slide, patch_grid, segment_tissue
from attnmap.wsi.tissue import PRESETS

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures" / "heatmap"
REAL_SLIDE = HERE / "data" / "cmu_small_region.svs"
CLAM_SEGMENTATION = dict(level=2, sthresh=15, mthresh=11, close=2, a_t=1, a_h=1, max_n_holes=2)


@pytest.fixture(scope="module")
def clam():
    return dict(np.load(FIXTURES / "clam_heatmap_public_inputs.npz"))


@pytest.fixture(scope="module")
def slide():
    with open_slide(FIXTURES / "clam_synth_slide.tif") as handle:
        yield handle


@pytest.fixture(scope="module")
def tissue(slide):
    return segment_tissue(slide, **CLAM_SEGMENTATION)


def test_contours_match_clam(tissue, clam):
    assert len(tissue.contours) == 2
    np.testing.assert_array_equal(tissue.contours[0].outer, clam["contour_0"].reshape(-1, 2))
    assert len(tissue.contours[0].holes) == 1
    np.testing.assert_array_equal(tissue.contours[0].holes[0], clam["contour_0_hole_0"].reshape(-1, 2))
    np.testing.assert_array_equal(tissue.contours[1].outer, clam["contour_1"].reshape(-1, 2))
    assert tissue.contours[1].holes == []


def test_tissue_mask_matches_clam(tissue, clam):
    mask, reference = tissue.mask(2), clam["tissue_mask_l2"]
    assert mask.shape == reference.shape and mask.dtype == bool
    assert (mask & reference).sum() / (mask | reference).sum() >= 0.999
    level0 = tissue.mask(0)
    assert level0.shape == (4096, 4096)
    assert np.mean(level0[2::4, 2::4] == mask) > 0.995
    assert tissue.fraction() == pytest.approx(reference.mean(), abs=1e-3)


def test_patch_grids_match_clam(slide, tissue, clam):
    fp = patch_grid(slide, tissue, patch_size=256, step=256, level=0, contour_check="four_pt", padding=True)
    assert fp.dtype == np.int64
    np.testing.assert_array_equal(fp, clam["coords_fp"])
    block = patch_grid(slide, tissue, patch_size=256, step=256, contour_check="four_pt_hard",
                       center_shift=heatmap_center_shift(0.0))
    np.testing.assert_array_equal(block, clam["coords_block"])


def test_center_shift_rule():
    assert heatmap_center_shift(0.0) == 0.375
    assert heatmap_center_shift(0.5) == 0.5
    assert heatmap_center_shift(0.9) == 0.5
    assert heatmap_center_shift(0.96) == 0.625


def test_grid_options(slide, tissue, clam):
    dense = patch_grid(slide, tissue, patch_size=256, step=128, contour_check="center")
    assert len(dense) > 3 * len(clam["coords_fp"])
    roi = ((1000, 1200), (2600, 2400))
    inside = patch_grid(slide, tissue, roi=roi)
    assert len(inside) > 0
    assert np.all(inside >= roi[0]) and np.all(inside < roi[1])
    no_pad = patch_grid(slide, tissue, padding=False, contour_check="basic")
    assert np.all(no_pad + 256 <= 4096)
    whole = patch_grid(slide, None, patch_size=512, step=512, level=1)
    assert len(whole) == 16 and whole[1].tolist() == [0, 1024]


def test_presets_apply(slide):
    assert set(PRESETS) == {"tcga", "bwh_biopsy", "bwh_resection"}
    biopsy = segment_tissue(slide, level=2, preset="bwh_biopsy")
    assert biopsy.parameters["sthresh"] == 15 and biopsy.parameters["a_t"] == 1
    assert len(biopsy.contours) == 2


def test_real_tissue_is_found_and_patched():
    with open_slide(REAL_SLIDE) as slide:
        tissue = segment_tissue(slide, preset="bwh_biopsy")
        assert 0.25 < tissue.fraction() < 0.6
        mask = tissue.mask(0)
        coords = patch_grid(slide, tissue, patch_size=256, step=256)
        assert len(coords) >= 30
        for x, y in coords:
            points = [(x + 128 + dx, y + 128 + dy) for dx in (-64, 64) for dy in (-64, 64)]
            assert any(mask[py, px] for px, py in points if px < mask.shape[1] and py < mask.shape[0])
        hard = patch_grid(slide, tissue, patch_size=256, step=256, contour_check="four_pt_hard")
        assert 0 < len(hard) < len(coords)
        assert np.mean([mask[y : y + 256, x : x + 256].mean() for x, y in hard]) > 0.8
        patch = slide.read_region(tuple(coords[0]), 0, (256, 256))
        assert patch.shape == (256, 256, 3)


def test_bad_inputs(slide, tissue):
    with pytest.raises(InputError, match="level 5 does not exist"):
        segment_tissue(slide, level=5)
    with pytest.raises(InputError, match="preset"):
        segment_tissue(slide, preset="nope")
    with pytest.raises(InputError, match="odd"):
        segment_tissue(slide, level=2, mthresh=4)
    with pytest.raises(InputError, match="level 3 does not exist"):
        patch_grid(slide, tissue, level=3)
    with pytest.raises(InputError, match="contour_check"):
        patch_grid(slide, tissue, contour_check="sideways")
    with pytest.raises(InputError, match="positive"):
        patch_grid(slide, tissue, step=0)
    with pytest.raises(InputError, match="level 9 does not exist"):
        tissue.mask(9)


def test_negative_segmentation_parameters_are_refused(slide):
    """The API took them (the config and CLI check ranges): a_t=-1 kept every speck as tissue."""
    for name in ("sthresh", "close", "a_t", "a_h", "max_n_holes"):
        with pytest.raises(InputError, match=f"must not be negative, got {name}=-1"):
            segment_tissue(slide, level=2, **{name: -1})


class _Pyramid:
    """Level geometry only (patch_grid with tissue=None reads no pixels)."""

    def __new__(cls, dimensions: list[tuple[int, int]]):
        from attnmap.wsi.slide import Slide

        slide = Slide()
        slide.path, slide.mpp = "<pyramid>", None
        slide.level_dimensions = tuple(dimensions)
        slide.level_downsamples = tuple(dimensions[0][0] / width for width, _ in dimensions)
        return slide


@pytest.mark.parametrize(("level_width", "downsample"), [(410, 2.5), (683, 1.5), (341, 3)])
def test_a_level_at_an_odd_downsample_is_tiled_without_overlap(level_width: int, downsample: float):
    """Level 1 at 2.5 / 1.5: CLAM's int(downsample) stepped 2 / 1 level-0 px per level px, so the
    32-px patches read there overlapped (by a fifth / a third) and their squares missed the grid."""
    slide = _Pyramid([(1024, 768), (level_width, round(768 / downsample))])
    coords = patch_grid(slide, None, patch_size=32, step=32, level=1)
    span = round(32 * slide.level_downsamples[1])  # a 32-px level-1 patch in level-0 px
    assert span == round(32 * downsample)
    assert set(np.diff(np.unique(coords[:, 0]))) == {span}


def test_a_near_integer_downsample_keeps_clams_grid():
    """Level sizes rounded: 4.0001 steps 4 level-0 px per level px as CLAM's int() does; 3.9999
    steps 4 too (CLAM's int() gives 3, overlapping the patches by a quarter)."""
    for width0 in (40001, 39999):
        slide = _Pyramid([(width0, 1024), (10000, 256)])
        coords = patch_grid(slide, None, patch_size=64, step=64, level=1)
        assert set(np.diff(np.unique(coords[:, 0]))) == {256}


def test_grids_at_odd_downsamples_get_a_new_fingerprint(tmp_path: Path):
    """Patches made with CLAM's int() grid on a level at 2.5 must not be reused; patches at whole
    downsamples keep their fingerprint (no new key: nothing to recompute)."""
    import tifffile

    from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry
    from attnmap.wsi.pipeline.fingerprint import StageFingerprints

    image = np.full((640, 640, 3), 200, np.uint8)
    keys = {}
    for name, size in (("whole", 160), ("odd", 256)):  # level 1 at 4 and at 2.5
        path = tmp_path / f"{name}.tif"
        with tifffile.TiffWriter(path) as tif:
            tif.write(image, tile=(128, 128), photometric="rgb", subfiletype=0)
            tif.write(image[:size, :size], tile=(128, 128), photometric="rgb", subfiletype=1)
        config = PipelineConfig()
        config.patching.level = 1
        keys[name] = StageFingerprints(SlideEntry(str(path), name), config).patches.inputs.get("grid")
    assert keys == {"whole": None, "odd": "downsample"}
