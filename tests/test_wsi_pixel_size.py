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


def write_tiff(path: Path, mpp_x: float, mpp_y: float, *, tiled: bool = True, ome: bool = False) -> Path:
    """A two-level tiled TIFF (or one untiled page) recording ``mpp_x`` / ``mpp_y`` in its
    resolution tags, or in OME-XML only (``ome``)."""
    level0 = image()
    with tifffile.TiffWriter(path) as tif:
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


@pytest.mark.parametrize("layout", ["pyramid", "plain", "ome"])
def test_non_square_pixels_are_warned_of_once_naming_both(tmp_path: Path, layout: str):
    suffix = ".ome.tif" if layout == "ome" else ".tif"  # tifffile writes OME-XML for .ome.tif only
    path = write_tiff(tmp_path / f"{layout}{suffix}", 0.25, 0.275, tiled=layout != "plain",
                      ome=layout == "ome")
    with pytest.warns(UserWarning, match="non-square pixels") as caught, open_slide(path) as slide:
        assert slide.mpp == pytest.approx(0.25, rel=1e-6)
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
