"""Pyramidal tiled JPEG TIFFs written tile by tile, which OpenSlide and QuPath open as slides.

Why this layout: OpenSlide's generic-TIFF reader sees a pyramid when every level is its own
tiled page and reduced levels carry NewSubfileType 1; resolution tags in pixels per centimetre
give viewers the mpp. Tiles come from an iterator, so a page is never held whole in memory.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from attnmap.errors import InputError
from attnmap.io_utils import writable_file
from attnmap.provenance import provenance
from attnmap.render.arrays import ArrayInput
from attnmap.threads import available_cores
from attnmap.wsi.heatmap.renderer import HeatmapRenderer
from attnmap.wsi.heatmap.stream import iter_tiles, plan_pyramid
from attnmap.wsi.heatmap.style import HeatmapStyle
from attnmap.wsi.slide import Slide
from attnmap.wsi.slide_base import checked_mpp
from attnmap.wsi.tissue import Tissue

ENCODE_BUFFER_BYTES = 32 << 20
"""Raw tiles tifffile may hold while encoding them in threads (its default is 512 MB)."""


def check_tiff_options(tile: object, quality: object, mpp: object) -> None:
    """`InputError` unless ``tile`` is a multiple of 16 (TIFF's rule for tiles), ``quality`` a JPEG
    quality 1..100 and ``mpp`` None, a positive number or an (x, y) pair of them: said before any
    tile is rendered."""
    def whole(value: object) -> bool:
        return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

    if not whole(tile) or tile < 16 or tile % 16:
        raise InputError(f"tile must be a multiple of 16 pixels (16, 256, 512, ...), got {tile!r}")
    if not whole(quality) or not 1 <= quality <= 100:
        raise InputError(f"JPEG quality must be a whole number in 1..100, got {quality!r}")
    for value in mpp if isinstance(mpp, tuple) and len(mpp) == 2 else (mpp,):
        checked_mpp(value)


def write_pyramid_tiff(
    path: str | Path,
    pages: list[tuple[tuple[int, int], Callable[[], Iterator[np.ndarray]]]],
    mpp: float | tuple[float, float] | None = None,
    page_downsamples: list[float] | None = None,
    metadata: Mapping[str, str] | None = None,
    tile: int = 256,
    quality: int = 90,
) -> Path:
    """Write pages ((width, height), tile-iterator factory) as a pyramidal tiled JPEG TIFF.

    Page i's tiles are requested only when page i is written; ``mpp`` is level 0's (µm per pixel;
    an (x, y) pair for non-square pixels, each written as its axis's resolution tag) and
    ``page_downsamples`` scale it for each page. The folder of ``path`` is made if missing;
    ``tile`` must be a multiple of 16 and ``quality`` in 1..100 (`check_tiff_options`).
    ``metadata`` (a provenance dict) is stored as JSON in page 0's ImageDescription.
    """
    import tifffile

    if not pages:
        raise InputError("a pyramid TIFF needs at least one page")
    for (width, height), _ in pages:
        if int(width) < 1 or int(height) < 1:
            raise InputError(f"a pyramid TIFF page must be at least 1×1 px, got {width}×{height}")
    check_tiff_options(tile, quality, mpp)
    downsamples = page_downsamples or [float(2**i) for i in range(len(pages))]
    path = writable_file(path)
    description = json.dumps(dict(metadata or {}), sort_keys=True)
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for index, ((width, height), make_tiles) in enumerate(pages):
            options: dict = {}
            if mpp is not None:
                x, y = mpp if isinstance(mpp, tuple) else (mpp, mpp)
                per_cm = (1e4 / (x * downsamples[index]), 1e4 / (y * downsamples[index]))
                options = {"resolution": per_cm, "resolutionunit": "CENTIMETER"}
            tif.write(
                make_tiles(),
                shape=(int(height), int(width), 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": int(quality)},
                subfiletype=0 if index == 0 else 1,
                description=description if index == 0 else None,
                software="attnmap",
                maxworkers=min(4, available_cores()),
                buffersize=ENCODE_BUFFER_BYTES,
                metadata=None,
                **options,
            )
    return path


def write_heatmap_tiff(
    path: str | Path,
    slide: Slide,
    coords: ArrayInput,
    scores: ArrayInput,
    style: HeatmapStyle | None = None,
    *,
    patch_size: int = 256,
    level: int = 0,
    tissue: Tissue | None = None,
    reference_scores: ArrayInput | None = None,
    tile: int = 256,
    quality: int = 90,
    max_pages: int | None = None,
    metadata: Mapping[str, str] | None = None,
    progress: bool = True,
) -> Path:
    """Full-resolution heatmap overlay at slide ``level`` as a pyramidal TIFF, streamed tile by tile.

    Page 0 is exactly `render_heatmap` with ``style`` at vis level ``level`` (before JPEG); reduced
    pages are the same heatmap rendered at 2×, 4×, ... the downsample. ``style.vis_level`` and
    ``style.downscale`` do not apply (the pyramid is the downscaled copies); a ``style.roi`` is
    refused. The slide's µm per pixel is kept, x's and y's (`Slide.mpp_xy`: a slide with
    non-square pixels gets each axis's resolution tag). Peak memory is a few tile strips,
    independent of slide size.
    """
    style = HeatmapStyle() if style is None else style
    if style.roi is not None:
        raise InputError("a heatmap TIFF covers the whole slide: drop the roi (or render a PNG of the roi)")
    check_tiff_options(tile, quality, slide.mpp)
    # a negative level is the renderer's "choose one", which on a slide without a pyramid draws
    # shrunk from level 0: page 0 then had the level's size and fewer tiles than it (StopIteration)
    level = slide.check_level(level)
    path = writable_file(path)
    style = replace(style, vis_level=level, downscale=1.0)
    options = dict(patch_size=patch_size, tissue=tissue, reference_scores=reference_scores)
    base = HeatmapRenderer(slide, coords, scores, style, **options)
    plan = plan_pyramid(slide, base.vis_level, tile, max_pages)

    def factory(index: int) -> Callable[[], Iterator[np.ndarray]]:
        def make_tiles() -> Iterator[np.ndarray]:
            renderer = base if index == 0 else HeatmapRenderer(
                slide, coords, scores, style, downsample=plan[index].downsample, **options
            )
            return iter_tiles(renderer, tile, progress=progress, description=f"heatmap TIFF page {index}")

        return make_tiles

    pages = [(page.size, factory(i)) for i, page in enumerate(plan)]
    record = dict(metadata) if metadata is not None else provenance(
        method="clam_heatmap",
        parameters={"patch_size": patch_size, "level": level, **asdict(style)},
        slide=slide.path,
    )
    return write_pyramid_tiff(path, pages, mpp=slide.mpp_xy,
                              page_downsamples=[p.downsample for p in plan], metadata=record, tile=tile,
                              quality=quality)
