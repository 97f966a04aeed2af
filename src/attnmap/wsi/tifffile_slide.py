"""TIFF pyramids that neither OpenSlide nor tiffslide reads, read lazily through tifffile's zarr view.

Why: an OME-TIFF whose RGB samples are stored plane by plane (axes ``SYX``, as some converters write
it) is refused by OpenSlide (SubIFDs) and by tiffslide ("series with axes='SYX' not supported"),
and the in-memory reader then loaded its full-resolution level whole, pyramid lost: gigabytes for
a real slide. tifffile reads any tile or strip of any level on demand, whatever the sample layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from attnmap.errors import InputError
from attnmap.wsi.pixel_size import square_pair, tiff_mpp_xy
from attnmap.wsi.pixels import as_rgb8, sample_converter
from attnmap.wsi.slide import Slide
from attnmap.wsi.slide_files import first_line, quiet_tifffile, same_image

_READABLE_AXES = {"YX", "YXS", "SYX"}


class TifffileSlide(Slide):
    """The first series of a TIFF, its levels (largest first) read region by region."""

    reader = "tifffile"

    def __init__(self, path: str | Path) -> None:
        import tifffile
        import zarr

        self.path = str(path)
        with quiet_tifffile():
            self._tif = tifffile.TiffFile(path)
            try:
                levels = [(owner, owner.levels[index], index) for owner, index in _pyramid(self._tif)]
                self._axes = levels[0][1].axes
                if self._axes not in _READABLE_AXES:
                    raise InputError(f"cannot read slide {path}: a TIFF series with axes {self._axes}")
                self._convert = sample_converter(levels[0][1].keyframe, self.path)
                self._arrays = [zarr.open(owner.aszarr(level=index), mode="r") for owner, _, index in levels]
                self._level0_page = levels[0][1].keyframe
            except BaseException:
                self._tif.close()
                raise
        height_axis, width_axis = self._axes.index("Y"), self._axes.index("X")
        self.level_dimensions = tuple(
            (int(array.shape[width_axis]), int(array.shape[height_axis])) for array in self._arrays
        )
        width0, height0 = self.level_dimensions[0]
        # OpenSlide's rule: the mean of the two axes' ratios
        self.level_downsamples = tuple(
            (width0 / width + height0 / height) / 2 for width, height in self.level_dimensions
        )
        self.mpp, self.mpp_y = square_pair(*tiff_mpp_xy(Path(path), self._level0_page), path)
        try:  # the pixel type, checked once at open as for the other readers (floats are refused)
            self.read_region((0, 0), self.level_count - 1, (1, 1))
        except InputError:
            self.close()
            raise

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        window = {"Y": slice(y, y + height), "X": slice(x, x + width), "S": slice(None)}
        with quiet_tifffile():
            try:
                pixels = np.asarray(self._arrays[level][tuple(window[axis] for axis in self._axes)])
            except Exception as error:  # noqa: BLE001 - decoder errors name neither file nor place
                raise InputError(
                    f"cannot read slide {self.path}: level {level}, region at ({x}, {y}) of that level, "
                    f"{width}×{height} px: its pixels do not decode ({first_line(error)})"
                ) from error
        if "S" in self._axes:
            pixels = np.moveaxis(pixels, self._axes.index("S"), -1)
        return as_rgb8(self._convert(pixels), self.path)

    def close(self) -> None:
        self._tif.close()


def _pyramid(tif) -> list[tuple]:
    """(series, level index) of each level of a TIFF's image, largest first: its first series'
    levels, unless a larger image sits in a later series (a label or overview written first, a
    pyramid written smallest page first); then that series' levels, or, when it is one page, every
    single-page series of that image's layout and aspect ratio."""

    def area(series, index: int = 0) -> int:
        return int(np.prod(series.levels[index].shape))

    first = tif.series[0]
    largest = max(tif.series, key=area)
    if area(largest) <= area(first):
        largest = first
    if len(largest.levels) > 1 or largest is first:
        levels = [(largest, index) for index in range(len(largest.levels))]
    else:
        axes, dtype = largest.axes, largest.dtype
        height, width = (largest.shape[axes.index(axis)] for axis in "YX")

        def level_of_largest(other) -> bool:
            h, w = (other.shape[axes.index(axis)] for axis in "YX")
            return other.axes == axes and other.dtype == dtype and same_image((width, height), (w, h))

        levels = [(other, 0) for other in tif.series if len(other.levels) == 1 and level_of_largest(other)]
    return sorted(levels, key=lambda pair: -area(*pair))
