"""Slides laid out as scanners and converters write them, beyond the layouts of test_wsi_formats:
each must open with its own pyramid and put patches, tissue and heat where the tissue is, or be
refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from attnmap.errors import InputError
from attnmap.wsi import ArraySlide, Slide, open_slide, segment_tissue, write_heatmap_tiff

WIDTH, HEIGHT = 1024, 768
RECT = (512, 128, 768, 384)  # the tissue at level 0: x0, y0, x1, y1


def slide_image() -> np.ndarray:
    """Near-white glass with one pink rectangle of tissue at `RECT`."""
    image = np.full((HEIGHT, WIDTH, 3), 240, np.uint8)
    x0, y0, x1, y1 = RECT
    noise = np.random.default_rng(0).integers(0, 40, size=(y1 - y0, x1 - x0), dtype=np.uint8)
    image[y0:y1, x0:x1] = np.stack([200 - noise, 100 + noise, 170 - noise // 2], axis=2)
    return image


def box_shrink(image: np.ndarray, factor: int) -> np.ndarray:
    height, width = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    blocks = image[:height, :width].reshape(height // factor, factor, width // factor, factor, -1)
    return blocks.mean(axis=(1, 3)).round().astype(np.uint8)


def test_a_tiled_label_and_macro_among_the_pages_are_no_levels(tmp_path: Path) -> None:
    """A converter that writes the label and macro as tiled pages (NewSubfileType 1, like the
    levels): OpenSlide's generic TIFF took every tiled page for a level, so the macro (640×384)
    sat between levels 1 and 2 and the label became the coarsest level, which segmentation then
    chose and found no tissue on (the heatmap was drawn on the label)."""
    image = slide_image()
    levels = [image, box_shrink(image, 2), box_shrink(image, 4)]
    label = np.full((300, 300, 3), 60, np.uint8)
    macro = np.full((384, 640, 3), 200, np.uint8)
    path = tmp_path / "converted.tif"
    with tifffile.TiffWriter(path) as tif:
        for index, page in enumerate([*levels, macro, label]):
            tif.write(page, tile=(128, 128), photometric="rgb", compression="zlib", metadata=None,
                      subfiletype=int(index > 0), resolution=(2e4 / 2 ** min(index, 2),) * 2,
                      resolutionunit="CENTIMETER")
    with open_slide(path) as slide:
        assert slide.level_dimensions == ((1024, 768), (512, 384), (256, 192))
        assert slide.level_downsamples == (1.0, 2.0, 4.0)
        coarsest = slide.read_region((0, 0), 2, (256, 192))
        np.testing.assert_array_equal(coarsest, levels[2])
        tissue = segment_tissue(slide, a_t=0.01, a_h=0.01, progress=False)
        assert tissue.seg_level == 2
        xs, ys = np.nonzero(tissue.mask(0).T)
        np.testing.assert_allclose((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), RECT, atol=8)


def test_a_heatmap_tiff_at_no_level_of_the_slide_is_refused_in_one_line(tmp_path: Path, monkeypatch) -> None:
    """``level=-1`` (the PNG's "choose a level") on a slide without a pyramid, whose chosen level is
    drawn shrunk: page 0 was planned at the level's size and rendered shrunk, and writing it ended
    in "RuntimeError: generator raised StopIteration"."""
    import attnmap.wsi.heatmap.renderer as renderer

    monkeypatch.setattr(renderer, "MAX_VIS_LEVEL_PIXELS", 1 << 10)  # this one-level slide counts as huge
    slide = ArraySlide(slide_image(), "one_level.tif")
    coords = np.array([[512, 128], [640, 256]])
    for level in (-1, 1):
        with pytest.raises(InputError, match=f"level {level} does not exist in one_level.tif"):
            write_heatmap_tiff(tmp_path / "heat.tif", slide, coords, [0.0, 1.0], patch_size=128,
                               level=level, progress=False)
    assert not (tmp_path / "heat.tif").exists()


def test_a_level_the_slide_lacks_names_the_setting_that_asked_for_it() -> None:
    """Segmentation and patching levels both ended in "level 5 does not exist in ...", which left
    the user of `wsi patch --seg-level 1 --patch-level 5` guessing which one to change."""
    from attnmap.cli.wsi_stages import FLAGS
    from attnmap.wsi import patch_grid
    from attnmap.wsi.setting_names import option_names

    slide = ArraySlide(slide_image(), "scan.tif")
    asks = {"segmentation.level": lambda: segment_tissue(slide, level=5, progress=False),
            "patching.level": lambda: patch_grid(slide, None, 64, 64, level=5, progress=False)}
    for key, ask in asks.items():
        with pytest.raises(InputError, match=rf"^{key}: level 5 does not exist in scan.tif: it has 1 level"):
            ask()
        option = FLAGS[key]
        with option_names(FLAGS), pytest.raises(InputError, match=rf"^--{option}: level 5 does not exist"):
            ask()


def test_libvips_default_resolution_is_no_pixel_size(tmp_path: Path) -> None:
    """`vips tiffsave IMAGE OUT.tif --tile --pyramid` (the conversion attnmap's own hint suggests)
    writes libvips' default 1 pixel per mm, as 10 px/cm, on an image that recorded no resolution;
    OpenSlide read it as 1000 µm per pixel, which the scale bar and the cohort's resolution check
    took for the scan's."""
    from attnmap.wsi.pixel_size import tiff_mpp_xy

    image = slide_image()
    for unit, per_unit, name in (("CENTIMETER", 10.0, "vips_cm.tif"), ("INCH", 25.4, "vips_inch.tif")):
        path = tmp_path / name
        with tifffile.TiffWriter(path) as tif:
            for index, page in enumerate((image, box_shrink(image, 2))):
                tif.write(page, tile=(128, 128), photometric="rgb", compression="jpeg", metadata=None,
                          subfiletype=int(index > 0), resolution=(per_unit, per_unit), resolutionunit=unit)
        with open_slide(path) as slide:
            assert slide.level_count == 2
            assert slide.mpp is None and slide.mpp_xy is None, name
        assert tiff_mpp_xy(path) == (None, None), name  # what tiffslide and tifffile read


class LevelsInMemory(Slide):
    """Levels given as arrays, their downsample OpenSlide's (the mean of the two sides' ratios)."""

    def __init__(self, levels: list[np.ndarray]) -> None:
        self.path, self.mpp, self._levels = "levels in memory", None, levels
        self.level_dimensions = tuple((level.shape[1], level.shape[0]) for level in levels)
        (width, height), sizes = self.level_dimensions[0], self.level_dimensions
        self.level_downsamples = tuple((width / w + height / h) / 2 for w, h in sizes)

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self._levels[level][y : y + height, x : x + width]


def write_rounded_level(path: Path) -> tuple[Path, list[np.ndarray]]:
    """A SubIFD pyramid (read by tiffslide, which floors location / downsample as `Slide` does)
    whose level 1 is 1024×768 at downsample 3, its sides rounded: 341×256, per-axis ratios (3.003,
    3.0), downsample 3.0015. Striped, so that any shift of a block read shows."""
    import cv2

    image = slide_image()
    image[::7] = (90, 40, 120)
    image[:, ::5] = (60, 30, 90)
    levels = [image, cv2.resize(image, (341, 256), interpolation=cv2.INTER_AREA)]
    with tifffile.TiffWriter(path) as tif:
        tif.write(levels[0], subifds=1, tile=(128, 128), photometric="rgb", compression="zlib", metadata=None)
        tif.write(levels[1], subfiletype=1, tile=(128, 128), photometric="rgb", compression="zlib")
    return path, levels


def test_a_level_read_block_by_block_fits_the_level_read_whole(tmp_path: Path, monkeypatch) -> None:
    """A level whose sides were rounded (1024×768 at downsample 3: 341×256) has per-axis ratios
    (3.003, 3.0) other than its downsample (3.0015), which `read_region` divides by. The overview of
    a level too large to read whole placed each block by the ratios, so block k was read from the
    wrong place, by more pixels the further it lay: seams in the segmented overview and the heatmap's
    slide."""
    from attnmap.wsi import reduced

    path, levels = write_rounded_level(tmp_path / "ome_like.tif")
    monkeypatch.setattr(reduced, "BLOCK", 64)  # several blocks on this small level
    with open_slide(path) as slide:
        assert slide.level_dimensions[1] == (341, 256)
        whole = slide.read_region((0, 0), 1, (341, 256))
        np.testing.assert_array_equal(whole, levels[1])
        expected = reduced._shrink_partial(whole, 2, reduced.reduced_size((341, 256), 2))
        np.testing.assert_array_equal(reduced.read_reduced(slide, 1, 2), expected)
        corner = reduced.read_reduced(slide, 1, 2, region=(130, 66, 140, 130))
        np.testing.assert_array_equal(corner, reduced._shrink_partial(whole[66:196, 130:270], 2, (70, 65)))


def test_a_heatmap_drawn_window_by_window_lies_on_the_level_it_is_drawn_at(tmp_path: Path) -> None:
    """The slide under a heatmap PNG was read per window from the window's corner times the level's
    per-axis ratio, which `read_region` divides by the downsample instead: on a level whose sides
    were rounded every window after the first showed the slide shifted under the patches."""
    import cv2

    from attnmap.wsi import HeatmapStyle, render_heatmap

    path, levels = write_rounded_level(tmp_path / "ome_like.tif")
    with open_slide(path) as slide:
        style = HeatmapStyle(vis_level=1, alpha=0.0)  # the slide alone
        for block in (64, 100, 4096):
            drawn = render_heatmap(slide, [[0, 0]], [1.0], style, patch_size=64, block=block)
            np.testing.assert_array_equal(drawn, levels[1], err_msg=f"windows of {block} px")
    # ratios (3.1, 3.0), downsample 3.05 (tifffile keeps no such SubIFD level; a Slide of arrays
    # floors as tiffslide does): a window 64 px on lay 3 px off when placed by the ratios
    wide = cv2.resize(levels[0], (330, 256), interpolation=cv2.INTER_AREA)
    with LevelsInMemory([levels[0], wide]) as slide:
        roi = ((301, 37), (1000, 700))  # drawn as CLAM reads it: one region from the ROI's corner
        style = HeatmapStyle(vis_level=1, alpha=0.0, roi=roi)
        whole = render_heatmap(slide, [[400, 100]], [1.0], style, patch_size=64, block=4096)
        np.testing.assert_array_equal(whole, slide.read_region(roi[0], 1, whole.shape[1::-1]))
        for block in (64, 100):
            drawn = render_heatmap(slide, [[400, 100]], [1.0], style, patch_size=64, block=block)
            np.testing.assert_array_equal(drawn, whole, err_msg=f"ROI in windows of {block} px")
