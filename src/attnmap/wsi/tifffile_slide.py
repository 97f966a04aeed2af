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
from attnmap.wsi.slide import Slide, as_rgb8
from attnmap.wsi.slide_files import first_line, quiet_tifffile, tiff_mpp

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
                series = self._tif.series[0]
                self._axes = series.axes
                if self._axes not in _READABLE_AXES:
                    raise InputError(f"cannot read slide {path}: a TIFF series with axes {self._axes}")
                sizes = [int(np.prod(level.shape)) for level in series.levels]
                levels = sorted(range(len(sizes)), key=lambda index: -sizes[index])
                self._arrays = [zarr.open(series.aszarr(level=index), mode="r") for index in levels]
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
        self.mpp = tiff_mpp(Path(path))
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
        return as_rgb8(pixels, self.path)

    def close(self) -> None:
        self._tif.close()
