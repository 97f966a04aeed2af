"""Slides whose µm per pixel differ in x and y: x is reported, with one warning naming both."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile

from attnmap.wsi import open_slide
from attnmap.wsi.pixel_size import ANISOTROPY_TOLERANCE


def image(width: int = 512, height: int = 384) -> np.ndarray:
    picture = np.full((height, width, 3), 240, np.uint8)
    picture[100:300, 120:400] = (200, 110, 170)
    return picture


def write_tiff(
    path: Path, mpp_x: float, mpp_y: float, *, tiled: bool = True, ome: bool = False, subifd: bool = False
) -> Path:
    """A two-level tiled TIFF (or one untiled page) recording ``mpp_x`` / ``mpp_y`` in its
    resolution tags, or in OME-XML only (``ome``); ``subifd``: its reduced level in a SubIFD."""
    level0 = image()
    with tifffile.TiffWriter(path) as tif:
        if subifd:  # the pyramid OpenSlide reads as one level: tiffslide opens it
            resolution = {"resolution": (1e4 / mpp_x, 1e4 / mpp_y), "resolutionunit": "CENTIMETER"}
            tif.write(level0, tile=(128, 128), photometric="rgb", subifds=1, metadata=None, **resolution)
            tif.write(level0[::2, ::2], tile=(128, 128), photometric="rgb", subfiletype=1, metadata=None)
            return path
        if ome:
            tif.write(level0, tile=(128, 128), photometric="rgb", compression="zlib",
                      metadata={"axes": "YXS", "PhysicalSizeX": mpp_x, "PhysicalSizeY": mpp_y})
            return path
        levels = [level0, level0[::2, ::2]] if tiled else [level0]
        for index, level in enumerate(levels):
            tif.write(level, photometric="rgb", compression="zlib", subfiletype=int(index > 0),
                      resolution=(1e4 / mpp_x / 2**index, 1e4 / mpp_y / 2**index),
                      resolutionunit="CENTIMETER", metadata=None, **({"tile": (128, 128)} if tiled else {}))
    return path


@pytest.mark.parametrize("layout", ["pyramid", "plain", "ome", "subifd"])
def test_non_square_pixels_are_warned_of_once_naming_both(tmp_path: Path, layout: str):
    suffix = ".ome.tif" if layout == "ome" else ".tif"  # tifffile writes OME-XML for .ome.tif only
    path = write_tiff(tmp_path / f"{layout}{suffix}", 0.25, 0.275, tiled=layout != "plain",
                      ome=layout == "ome", subifd=layout == "subifd")
    with pytest.warns(UserWarning, match="non-square pixels") as caught, open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.25, rel=1e-6)
        assert slide.mpp_xy == pytest.approx((0.25, 0.275), rel=1e-6)  # y's kept for the outputs
        if layout == "subifd":
            assert slide.reader == "tiffslide"
    messages = [str(item.message) for item in caught if "non-square" in str(item.message)]
    assert len(messages) == 1 and "\n" not in messages[0], messages
    assert "0.25 µm per pixel in x" in messages[0] and "0.275 in y" in messages[0]
    assert str(path) in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same file opened again in the process: said once
        with open_slide(path) as slide:
            assert slide.mpp == pytest.approx(0.25, rel=1e-6)


def test_square_pixels_within_the_tolerance_say_nothing(tmp_path: Path):
    near = 0.25 * (1 + ANISOTROPY_TOLERANCE / 2)  # a rounding of the resolution tags, not a shape
    for name, y in (("square", 0.25), ("near", near)):
        path = write_tiff(tmp_path / f"{name}.tif", 0.25, y)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with open_slide(path) as slide:
                assert slide.mpp == pytest.approx(0.25, rel=1e-6)
                assert slide.mpp_xy == pytest.approx((0.25, y), rel=1e-6)


def test_an_image_without_pixel_size_has_neither_axis_and_one_given_has_both():
    from attnmap.wsi import ArraySlide

    assert ArraySlide(image()).mpp_xy is None
    assert ArraySlide(image(), mpp=0.5).mpp_xy == (0.5, 0.5)


def _resolutions_um(path: Path) -> list[tuple[float, float, int]]:
    """(x, y) µm per pixel of each page of a TIFF, from its XResolution / YResolution tags (in
    pixels per centimetre), with the page's width."""
    pages = []
    with tifffile.TiffFile(path) as tif:
        for page in tif.pages:
            assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
            (x_n, x_d), (y_n, y_d) = page.tags["XResolution"].value, page.tags["YResolution"].value
            pages.append((1e4 * x_d / x_n, 1e4 * y_d / y_n, page.shape[1]))
    return pages


@pytest.mark.parametrize("source", ["tags", "ome"])
def test_a_heatmap_tiff_records_each_axis_resolution_of_a_non_square_slide(tmp_path: Path, source: str):
    """The y resolution was x's: a viewer stretched the overlay by mpp-y / mpp-x against the slide."""
    from attnmap.wsi import HeatmapStyle, write_heatmap_tiff

    suffix = ".ome.tif" if source == "ome" else ".tif"
    path = write_tiff(tmp_path / f"slide{suffix}", 0.25, 0.275, ome=source == "ome")
    with pytest.warns(UserWarning, match="non-square pixels") as caught, open_slide(path) as slide:
        coords = np.array([[0, 0], [128, 0], [0, 128], [128, 128]])
        out = write_heatmap_tiff(tmp_path / "heat.tif", slide, coords, np.arange(4.0), HeatmapStyle(),
                                 patch_size=128, tile=128, progress=False)
    pages = _resolutions_um(out)
    assert len(pages) >= 2
    for x, y, width in pages:
        downsample = image().shape[1] / width  # the slide's level-0 width over the page's
        assert x == pytest.approx(0.25 * downsample, rel=1e-6)
        assert y == pytest.approx(0.275 * downsample, rel=1e-6)
    assert all("heatmap TIFF" not in str(item.message) for item in caught)  # the warning said x for y


def test_a_heatmap_tiff_of_a_square_slide_records_one_resolution(tmp_path: Path):
    from attnmap.wsi import HeatmapStyle, write_heatmap_tiff

    with open_slide(write_tiff(tmp_path / "square.tif", 0.5, 0.5)) as slide:
        out = write_heatmap_tiff(tmp_path / "heat.tif", slide, np.array([[0, 0]]), np.array([1.0]),
                                 HeatmapStyle(), patch_size=128, tile=128, progress=False)
    x, y, _ = _resolutions_um(out)[0]
    assert x == pytest.approx(0.5, rel=1e-6) and y == pytest.approx(0.5, rel=1e-6)
