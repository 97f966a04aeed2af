"""A slide level read block by block and box-shrunk by a whole factor: an overview of a level too
large to hold.

Why: a slide exported without a pyramid (a single 100k² level, a common export) has no small level
to find tissue on, and reading its level 0 whole costs 7 bytes a pixel through OpenSlide (its RGBA
and the RGB copy): 70 GB. Read in blocks of a few megapixels, each shrunk as soon as it is read,
the cost is the overview plus one block.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from tqdm import tqdm

from attnmap.wsi.slide_base import Slide

BLOCK = 4096
"""Level pixels a side read at a time (before shrinking): 64 MB as OpenSlide's RGBA."""


def reduced_size(size: tuple[int, int], factor: int) -> tuple[int, int]:
    """(width, height) of a ``size`` level shrunk by ``factor`` (a partial last block counts)."""
    return max(1, math.ceil(size[0] / factor)), max(1, math.ceil(size[1] / factor))


def read_reduced(
    slide: Slide,
    level: int,
    factor: int,
    progress: bool = False,
    region: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """RGB uint8 of ``level`` (or of its ``region`` (x, y, width, height), in level pixels) shrunk
    by the whole ``factor``: each output pixel the mean of a ``factor``² box of the level (OpenCV's
    area interpolation, as `cv2.resize` of the whole), a partial box at the right and bottom edge
    the mean of the pixels it has; outside the level is black, as `Slide.read_region` gives it.
    ``progress``: a bar over the blocks when there are at least 16 of them."""
    factor = int(factor)
    left, top, width, height = (0, 0, *slide.level_dimensions[level]) if region is None else region
    out_width, out_height = reduced_size((width, height), factor)
    out = np.empty((out_height, out_width, 3), dtype=np.uint8)
    step = factor * max(1, BLOCK // factor)  # a whole number of boxes per block
    blocks = [(x, y) for y in range(0, height, step) for x in range(0, width, step)]
    bar = tqdm(blocks, desc="slide overview", unit="block", disable=not progress or len(blocks) < 16,
               leave=False)
    for x, y in bar:
        w, h = min(step, width - x), min(step, height - y)
        block = slide.read_region(slide.level0_location(level, left + x, top + y), level, (w, h))
        size = reduced_size((w, h), factor)
        if (w, h) != (size[0] * factor, size[1] * factor):  # the edge: shrink the whole boxes, then the rest
            block = _shrink_partial(block, factor, size)
        else:
            block = cv2.resize(block, size, interpolation=cv2.INTER_AREA)
        out[y // factor : y // factor + size[1], x // factor : x // factor + size[0]] = block
    return out


def _shrink_partial(block: np.ndarray, factor: int, size: tuple[int, int]) -> np.ndarray:
    """``block`` shrunk to ``size`` where its last column or row of boxes is cut short: each box
    the mean of the pixels it holds."""
    height, width = block.shape[:2]
    out = np.empty((size[1], size[0], 3), dtype=np.uint8)
    whole = (width // factor) * factor
    for row, top in enumerate(range(0, height, factor)):
        strip = block[top : top + factor]
        if whole:
            out[row, : width // factor] = cv2.resize(
                strip[:, :whole], (width // factor, 1), interpolation=cv2.INTER_AREA
            )[0]
        if whole < width:
            out[row, -1] = strip[:, whole:].reshape(-1, 3).mean(axis=0).round().astype(np.uint8)
    return out
