"""Heatmap tiles in row-major order, for writing full-resolution overlays without a canvas.

Why: a level-0 heatmap of a 100,000² slide is 30 GB of RGB; CLAM builds it whole (plus an int64
temporary) and runs out of memory. Here a page is rendered one strip of tiles at a time by
`HeatmapRenderer` windows (exact CLAM pixels, see `heatmap`), so memory stays at a few strips.
Reduced pages are re-rendered directly at their own scale (each costs a quarter of the page above).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from attnmap.errors import InputError
from attnmap.wsi.heatmap import HeatmapRenderer
from attnmap.wsi.slide import Slide

WINDOW_WIDTH = 4096


@dataclass
class PyramidPage:
    """One page of the output pyramid: its downsample from level 0 and its (width, height)."""

    downsample: float
    size: tuple[int, int]


def plan_pyramid(slide: Slide, level: int, tile: int, max_pages: int | None = None) -> list[PyramidPage]:
    """Pages at the slide ``level``'s scale, then halving until a page fits in one tile."""
    level = slide.check_level(level)
    base_downsample = float(slide.level_downsamples[level])
    pages = [PyramidPage(base_downsample, slide.level_dimensions[level])]
    width0, height0 = slide.dimensions
    while max(pages[-1].size) > tile and (max_pages is None or len(pages) < max_pages):
        downsample = pages[-1].downsample * 2
        size = (int(width0 / downsample), int(height0 / downsample))
        if min(size) < 1:
            break
        pages.append(PyramidPage(downsample, size))
    return pages


def iter_tiles(renderer: HeatmapRenderer, tile: int = 256, progress: bool = False,
               description: str = "heatmap tiles") -> Iterator[np.ndarray]:
    """Yield the renderer's canvas as ``tile``×``tile`` RGB tiles, row-major (edge tiles cropped).

    Each strip of tiles is rendered in windows up to `WINDOW_WIDTH` wide, so memory is bounded
    by one window plus its blur halo, whatever the canvas size.
    """
    if tile < 16 or tile % 16:
        raise InputError(f"TIFF tile size must be a positive multiple of 16, got {tile}")
    width, height = renderer.size
    window = max(tile, WINDOW_WIDTH // tile * tile)
    n_rows = -(-height // tile)
    for y0 in tqdm(range(0, height, tile), total=n_rows, desc=description, unit="row", disable=not progress):
        strip_height = min(tile, height - y0)
        for wx0 in range(0, width, window):
            pixels = renderer.render_window(wx0, y0, min(window, width - wx0), strip_height)
            for x0 in range(0, pixels.shape[1], tile):
                yield np.ascontiguousarray(pixels[:, x0 : x0 + tile])

