"""The `Slide` interface: level geometry and `read_region`, whatever reads the pixels."""

from __future__ import annotations

import math

import numpy as np

from attnmap.errors import InputError


class Slide:
    """A multi-resolution image: level geometry plus `read_region` returning RGB uint8 arrays.

    Subclasses implement `_read(level, x, y, width, height)` for in-bounds requests at a level
    (``x``, ``y`` in that level's pixels) and set `level_dimensions`, `level_downsamples` and `mpp`
    (and `mpp_y` when the file records another pixel height).
    """

    path: str
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    """µm per level-0 pixel, x's: the one number the scale bar and the cohort's checks use."""
    mpp_y: float | None = None
    """y's µm per level-0 pixel where the file records one (None: as x's). Kept for the outputs that
    record both axes (a heatmap TIFF), so one overlaid on a slide with non-square pixels fits it."""
    reader: str = "in memory"
    """Which library decodes the pixels (OpenSlide, tiffslide, or an image held in memory): recorded
    with the tissue, since the same TIFF can open through more than one."""

    def pixel_reading(self) -> str | None:
        """How this slide's stored samples become RGB, when that is anything but OpenSlide reading
        plain colour: the reader (tiffslide and tifffile read samples by their meaning, an image in
        memory composites alpha over white). Part of the stage fingerprints (`slide_identity`), so
        outputs made before a change in how such files are read are made again; None keeps the
        fingerprints of the slides OpenSlide reads as stored, which no such change has touched."""
        return self.reader

    @property
    def mpp_xy(self) -> tuple[float, float] | None:
        """(x, y) µm per level-0 pixel, None without a pixel size."""
        if self.mpp is None:
            return None
        return float(self.mpp), float(self.mpp if self.mpp_y is None else self.mpp_y)

    # ----------------------------------------------------------------------------------- geometry
    @property
    def dimensions(self) -> tuple[int, int]:
        """Level-0 (width, height)."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def check_level(self, level: int, setting: str | None = None) -> int:
        """Return ``level`` if it exists, else raise `InputError` naming the file and the levels,
        and first the ``setting`` that asked for it (`attnmap.wsi.setting_names.setting`) when given:
        a run's segmentation, patch and drawing levels all end here, and "level 5" alone does not
        say which of them to change."""
        if not isinstance(level, (int, np.integer)) or not 0 <= int(level) < self.level_count:
            asked = f"{setting}: " if setting else ""
            raise InputError(
                f"{asked}level {level!r} does not exist in {self.path}: it has {self.level_count} level(s) "
                f"(0..{self.level_count - 1}) with dimensions {list(self.level_dimensions)}"
            )
        return int(level)

    def level_scale_xy(self, level: int) -> tuple[float, float]:
        """Per-axis downsample of ``level`` (level-0 size / level size), as CLAM estimates it.

        Equals (d, d) with d = `level_downsamples[level]` unless width and height ratios differ.
        """
        level = self.check_level(level)
        width0, height0 = self.level_dimensions[0]
        width, height = self.level_dimensions[level]
        estimated = (width0 / float(width), height0 / float(height))
        reported = float(self.level_downsamples[level])
        return (reported, reported) if estimated == (reported, reported) else estimated

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """OpenSlide's rule: the deepest level whose downsample is still below ``downsample``."""
        if downsample < self.level_downsamples[0]:
            return 0
        for level in range(1, self.level_count):
            if downsample < self.level_downsamples[level]:
                return level - 1
        return self.level_count - 1

    # ----------------------------------------------------------------------------------- reading
    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 (height, width, 3) of ``size`` at ``level``; ``location`` is level-0 (x, y).

        Pixels outside the slide are black, as OpenSlide's transparent pixels become after
        dropping alpha (what CLAM does), so renders stay identical to CLAM's at the borders.
        """
        level = self.check_level(level)
        width, height = int(size[0]), int(size[1])
        if width < 0 or height < 0:
            raise InputError(f"read_region size must be non-negative, got {size}")
        out = np.zeros((height, width, 3), dtype=np.uint8)
        if width == 0 or height == 0:
            return out
        scale_x, scale_y = self._read_scale(level)
        x = int(math.floor(location[0] / scale_x))
        y = int(math.floor(location[1] / scale_y))
        level_width, level_height = self.level_dimensions[level]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, level_width), min(y + height, level_height)
        if x1 > x0 and y1 > y0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._read(level, x0, y0, x1 - x0, y1 - y0)
        return out

    def level0_location(
        self, level: int, x: int, y: int, origin: tuple[int, int] = (0, 0)
    ) -> tuple[int, int]:
        """The level-0 location `read_region` reads as ``level``'s pixel (x, y) counted from the
        pixel it reads at level-0 ``origin``: the inverse of its mapping (location / downsample,
        floored), not the level's per-axis size ratio (`level_scale_xy`), which differs where a
        side was rounded and shifted each block read that way, more the further it lay."""
        scale_x, scale_y = self._read_scale(self.check_level(level))

        def back(pixel: int, start: int, scale: float) -> int:
            pixel += math.floor(start / scale)
            location = math.ceil(pixel * scale)  # floor(location / scale) == pixel, as scale >= 1
            return location + 1 if math.floor(location / scale) < pixel else location

        return back(int(x), int(origin[0]), scale_x), back(int(y), int(origin[1]), scale_y)

    def _read_scale(self, level: int) -> tuple[float, float]:
        """How level-0 locations map to ``level`` pixels (OpenSlide divides by the downsample)."""
        downsample = float(self.level_downsamples[level])
        return downsample, downsample

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Release file handles (no-op for in-memory slides)."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, levels={list(self.level_dimensions)}, mpp={self.mpp})"


def checked_mpp(mpp: object, what: str = "mpp") -> float | None:
    """``mpp`` as a float, or None; `InputError` unless it is None or a positive finite number of
    µm per pixel (it sizes every physical measure and the TIFF's resolution)."""
    if mpp is None:
        return None
    number = isinstance(mpp, (int, float, np.integer, np.floating)) and not isinstance(mpp, bool)
    if not number or not math.isfinite(float(mpp)) or float(mpp) <= 0:
        raise InputError(f"{what} must be a positive number (µm per pixel) or None, got {mpp!r}")
    return float(mpp)
