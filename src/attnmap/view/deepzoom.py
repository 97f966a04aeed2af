"""Deep Zoom tiles of a slide and of the layers drawn over it, one tile at a time.

Why one geometry for all layers: the browser stacks the heatmap, tissue and annotation layers over
the slide, so each must cut the plane exactly as the slide's tiles do. `DeepZoomGrid` is OpenSlide's
Deep Zoom geometry (levels halve with ceil; interior tile edges overlap). Slide tiles come from
OpenSlide's `DeepZoomGenerator` where the slide is opened by OpenSlide; other `Slide`s (tiffslide's
SubIFD pyramids, plain images) go through `SlideTiles`, the same computation over
`Slide.read_region`. Nothing reads more than one tile's region of the best pyramid level, and where
that level is much finer than the tile (a slide without coarse levels), the tile is built from the
finer Deep Zoom level in chunks (`SlideTiles._pixels`), so memory never grows with the slide.
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from attnmap.errors import InputError
from attnmap.io_utils import PNG_COMPRESS_LEVEL
from attnmap.wsi.slide import OpenSlideSlide, Slide

TILE_SIZE = 254
OVERLAP = 1
MAX_READ_RATIO = 8
"""A tile is read from the slide in one piece while the best level is at most this much finer than
the tile. Beyond (a slide without the coarse levels: one-level TIFFs, big plain images), it is made
from the next Deep Zoom level's pixels, `CHUNK` pixels at a time, recursively, as a pyramid is built:
no read is larger than ``2 * CHUNK * MAX_READ_RATIO`` pixels a side, whatever the slide's size."""
CHUNK = 128
OVERVIEW_SIDE = 4096
"""A slide whose coarsest level is larger than this a side gets, on the first tile that needs it, an
overview shrunk by a power of two to at most this a side (48 MB), read block by block
(`attnmap.wsi.reduced`); the Deep Zoom levels as coarse as it are cut from it. Without it each of
those tiles was made from the whole slide: a one-level 30k² slide took minutes per overview tile."""


@dataclass(frozen=True)
class TileRegion:
    """Where a tile lies: level-0 origin, level-0 size, output pixel size and downsample."""

    origin: tuple[int, int]
    size0: tuple[int, int]
    pixels: tuple[int, int]
    downsample: float


class DeepZoomGrid:
    """OpenSlide's Deep Zoom geometry for a level-0 (width, height) (``limit_bounds=False``)."""

    def __init__(
        self, dimensions: tuple[int, int], tile_size: int = TILE_SIZE, overlap: int = OVERLAP
    ) -> None:
        self.dimensions = (int(dimensions[0]), int(dimensions[1]))
        self.tile_size, self.overlap = tile_size, overlap
        size = self.dimensions
        levels = [size]
        while size[0] > 1 or size[1] > 1:
            size = (max(1, math.ceil(size[0] / 2)), max(1, math.ceil(size[1] / 2)))
            levels.append(size)
        self.level_dimensions = tuple(reversed(levels))
        self.level_count = len(self.level_dimensions)
        self.level_tiles = tuple(
            (math.ceil(w / tile_size), math.ceil(h / tile_size)) for w, h in self.level_dimensions
        )

    def region(self, level: int, col: int, row: int) -> TileRegion:
        """The tile's region; `InputError` if the address does not exist."""
        if not 0 <= level < self.level_count:
            raise InputError(f"Deep Zoom level {level} does not exist (0..{self.level_count - 1})")
        cols, rows = self.level_tiles[level]
        if not (0 <= col < cols and 0 <= row < rows):
            raise InputError(f"tile ({col}, {row}) does not exist at Deep Zoom level {level}")
        downsample = 2 ** (self.level_count - level - 1)
        width, height = self.level_dimensions[level]
        x0 = col * self.tile_size - (self.overlap if col else 0)
        y0 = row * self.tile_size - (self.overlap if row else 0)
        x1 = min(width, (col + 1) * self.tile_size + (self.overlap if col < cols - 1 else 0))
        y1 = min(height, (row + 1) * self.tile_size + (self.overlap if row < rows - 1 else 0))
        origin = (x0 * downsample, y0 * downsample)
        end = (min(self.dimensions[0], x1 * downsample), min(self.dimensions[1], y1 * downsample))
        return TileRegion(
            origin, (end[0] - origin[0], end[1] - origin[1]), (x1 - x0, y1 - y0), float(downsample)
        )

    def tile_source(self, url: str, fmt: str) -> dict:
        """OpenSeadragon's inline Deep Zoom descriptor (what a .dzi file says), tiles under ``url``."""
        return {
            "Image": {
                "xmlns": "http://schemas.microsoft.com/deepzoom/2008",
                "Url": url,
                "Format": fmt,
                "Overlap": str(self.overlap),
                "TileSize": str(self.tile_size),
                "Size": {"Width": str(self.dimensions[0]), "Height": str(self.dimensions[1])},
            }
        }

    def dzi(self, fmt: str) -> str:
        """The .dzi XML for this geometry."""
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" '
            f'Format="{fmt}" Overlap="{self.overlap}" TileSize="{self.tile_size}">'
            f'<Size Width="{self.dimensions[0]}" Height="{self.dimensions[1]}"/></Image>\n'
        )


class SlideTiles:
    """JPEG tiles of a slide: OpenSlide's DeepZoomGenerator when it can, else `Slide.read_region`."""

    def __init__(self, slide: Slide, quality: int = 85) -> None:
        self.slide = slide
        self.grid = DeepZoomGrid(slide.dimensions)
        self.quality = quality
        self._generator = None
        self._overview: np.ndarray | None = None
        self._overview_lock = threading.Lock()
        last = slide.level_count - 1
        side = max(slide.level_dimensions[last])
        self._overview_factor = 2 ** math.ceil(math.log2(side / OVERVIEW_SIDE)) if side > OVERVIEW_SIDE else 0
        self._overview_downsample = float(slide.level_downsamples[last]) * self._overview_factor
        if type(slide) is OpenSlideSlide:  # tiffslide's regions are RGB, which the generator cannot composite
            self._generator = slide.deep_zoom_generator(TILE_SIZE, OVERLAP)
            if self._generator.level_dimensions != self.grid.level_dimensions:
                self._generator = None

    def image(self, level: int, col: int, row: int) -> Image.Image:
        region = self.grid.region(level, col, row)
        read_level = self.slide.get_best_level_for_downsample(region.downsample)
        read_ds = float(self.slide.level_downsamples[read_level])
        if region.downsample / read_ds > MAX_READ_RATIO:  # OpenSlide's generator would read it whole
            x0, y0 = (int(v // region.downsample) for v in region.origin)
            return Image.fromarray(self._pixels(level, x0, y0, x0 + region.pixels[0], y0 + region.pixels[1]))
        if self._generator is not None:
            tile = self._generator.get_tile(level, (col, row)).convert("RGB")
            if tile.size != region.pixels:  # OpenSlide shrinks it keeping the aspect ratio: one pixel short
                tile = tile.resize(region.pixels, Image.BICUBIC)  # when a level's size is rounded
            return tile
        return Image.fromarray(self._read(region.origin, region.size0, region.pixels, read_level, read_ds))

    def _read(self, origin, size0, pixels, read_level: int, read_ds: float) -> np.ndarray:
        """Level-0 rectangle (``origin``, ``size0``) read at ``read_level``, shrunk to ``pixels``."""
        size = (max(1, math.ceil(size0[0] / read_ds)), max(1, math.ceil(size0[1] / read_ds)))
        image = self.slide.read_region(tuple(int(v) for v in origin), read_level, size)
        return (
            image if size == tuple(pixels) else cv2.resize(image, tuple(pixels), interpolation=cv2.INTER_AREA)
        )

    def _pixels(self, level: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Pixels [x0, x1) × [y0, y1) of Deep Zoom ``level``, from the slide's best level when it is
        at most `MAX_READ_RATIO` finer, else halved from the next Deep Zoom level chunk by chunk.

        Why: a coarse tile of a slide with no coarse level covers the whole slide at its finest
        level; read at once, a 40,000-pixel-wide one-level slide would need gigabytes for one tile.
        """
        downsample = 2 ** (self.grid.level_count - 1 - level)
        if self._overview_factor and downsample >= self._overview_downsample:
            return self._from_overview(downsample, x0, y0, x1, y1)
        read_level = self.slide.get_best_level_for_downsample(downsample)
        read_ds = float(self.slide.level_downsamples[read_level])
        if downsample / read_ds <= MAX_READ_RATIO:
            width0, height0 = self.grid.dimensions
            origin = (x0 * downsample, y0 * downsample)
            end = (min(width0, x1 * downsample), min(height0, y1 * downsample))
            size0 = (end[0] - origin[0], end[1] - origin[1])
            return self._read(origin, size0, (x1 - x0, y1 - y0), read_level, read_ds)
        finer_width, finer_height = self.grid.level_dimensions[level + 1]
        out = np.empty((y1 - y0, x1 - x0, 3), dtype=np.uint8)
        for top in range(y0, y1, CHUNK):
            for left in range(x0, x1, CHUNK):
                right, bottom = min(x1, left + CHUNK), min(y1, top + CHUNK)
                finer = self._pixels(
                    level + 1, 2 * left, 2 * top, min(finer_width, 2 * right), min(finer_height, 2 * bottom)
                )
                size = (right - left, bottom - top)
                if finer.shape[1::-1] != size:
                    finer = cv2.resize(finer, size, interpolation=cv2.INTER_AREA)
                out[top - y0 : bottom - y0, left - x0 : right - x0] = finer
        return out

    def _from_overview(self, downsample: float, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Pixels [x0, x1) × [y0, y1) of the Deep Zoom level of ``downsample``, from the overview."""
        from attnmap.wsi.reduced import read_reduced

        with self._overview_lock:
            if self._overview is None:
                last = self.slide.level_count - 1
                # once, minutes for a big one-level slide: a bar in the viewer's terminal
                self._overview = read_reduced(self.slide, last, self._overview_factor, progress=True)
        ratio = downsample / self._overview_downsample
        height, width = self._overview.shape[:2]
        left, top = min(int(x0 * ratio), width - 1), min(int(y0 * ratio), height - 1)
        right = max(left + 1, min(math.ceil(x1 * ratio), width))
        bottom = max(top + 1, min(math.ceil(y1 * ratio), height))
        crop = self._overview[top:bottom, left:right]
        size = (x1 - x0, y1 - y0)
        if crop.shape[1::-1] == size:
            return crop.copy()
        return cv2.resize(crop, size, interpolation=cv2.INTER_AREA)

    def tile(self, level: int, col: int, row: int) -> bytes:
        buffer = io.BytesIO()
        self.image(level, col, row).save(buffer, "JPEG", quality=self.quality)
        return buffer.getvalue()


def encode_png(rgba: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, "PNG", optimize=False, compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()
