"""Heatmap tiles in row-major order, for writing full-resolution overlays without a canvas.

Why: a level-0 heatmap of a 100,000² slide is 30 GB of RGB; CLAM builds it whole (plus an int64
temporary) and runs out of memory. Here a page is rendered one strip of tiles at a time by
`HeatmapRenderer` windows (exact CLAM pixels, see `heatmap`), so memory stays at a few strips.
Reduced pages are re-rendered directly at their own scale (each costs a quarter of the page above).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from attnmap.errors import InputError
from attnmap.threads import available_cores
from attnmap.wsi.heatmap.renderer import HeatmapRenderer
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


def strip_windows(size: tuple[int, int], tile: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, width, height) windows covering the canvas strip by strip (one tile high), row-major."""
    width, height = size
    window = max(tile, WINDOW_WIDTH // tile * tile)
    return [(x0, y0, min(window, width - x0), min(tile, height - y0))
            for y0 in range(0, height, tile) for x0 in range(0, width, window)]


def iter_tiles(renderer: HeatmapRenderer, tile: int = 256, progress: bool = False,
               description: str = "heatmap tiles", workers: int | None = None) -> Iterator[np.ndarray]:
    """Yield the renderer's canvas as ``tile``×``tile`` RGB tiles, row-major (edge tiles cropped).

    Strips are rendered in windows up to `WINDOW_WIDTH` wide by ``workers`` threads (NumPy and
    OpenCV release the GIL), at most ``workers + 1`` windows ahead, so memory stays bounded by a
    few windows plus their blur halos, whatever the canvas size.
    """
    if tile < 16 or tile % 16:
        raise InputError(f"TIFF tile size must be a positive multiple of 16, got {tile}")
    workers = workers or min(4, available_cores())
    windows = strip_windows(renderer.size, tile)
    bar = tqdm(total=len(windows), desc=description, unit="window", disable=not progress, leave=False)
    pending: deque[Future] = deque()
    with _opencv_single_threaded(workers > 1), ThreadPoolExecutor(max_workers=workers) as pool:
        upcoming = iter(windows)
        for window in upcoming:
            pending.append(pool.submit(renderer.render_window, *window))
            if len(pending) > workers:
                break
        while pending:
            pixels = pending.popleft().result()
            next_window = next(upcoming, None)
            if next_window is not None:
                pending.append(pool.submit(renderer.render_window, *next_window))
            bar.update(1)
            for x0 in range(0, pixels.shape[1], tile):
                yield np.ascontiguousarray(pixels[:, x0 : x0 + tile])
    bar.close()



@contextlib.contextmanager
def _opencv_single_threaded(active: bool) -> Iterator[None]:
    """OpenCV's own thread pool off while our threads render windows: no pool nested in a pool."""
    import cv2

    previous = cv2.getNumThreads()
    if active:
        cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)
