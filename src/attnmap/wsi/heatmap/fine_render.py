"""Drawing fine maps: inside-patch relevance in the pyramidal TIFF's full-resolution pages, and a gallery.

The coarse pages of a fine heatmap TIFF are today's patch-level heatmap (one colour per patch); the
pages on which a patch spans at least ``min_fine_pixels`` pixels show, inside each patch that has a
fine map, the slide blended with that map instead. Each window reads only the fine maps of the
patches it touches (from the fine-map file, `attnmap.wsi.heatmap.fine_store`), at the encoder's
input size, and resizes them, so the TIFF streams strip by strip whatever the number of maps.

Colours: fine maps are signed (relevance for and against the class); they are drawn with a
diverging map centred on zero, scaled by one robust maximum (99th percentile of |R|) shared by all
patches, so patches can be compared with each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from attnmap.errors import InputError
from attnmap.provenance import provenance
from attnmap.wsi.heatmap.renderer import HeatmapRenderer
from attnmap.wsi.heatmap.scores import ColorTable
from attnmap.wsi.heatmap.stream import iter_tiles, plan_pyramid
from attnmap.wsi.heatmap.style import HeatmapStyle
from attnmap.wsi.heatmap.tiff import write_pyramid_tiff
from attnmap.wsi.slide import Slide
from attnmap.wsi.tissue import Tissue

FINE_CMAP = "RdBu_r"
MIN_FINE_PIXELS = 32
"""Fine maps are drawn where a patch spans at least this many pixels (coarser: the patch-level map)."""
MAP_BATCH = 256
"""Fine maps read at once by a window (4 MB of 64 × 64 float32 maps)."""


def robust_scale(maps: np.ndarray) -> float:
    """The shared colour scale of fine maps: the 99th percentile of |R| (1 when that is 0 or empty).

    `attnmap.wsi.heatmap.fine_store.abs_percentile` gives the same number without the maps in memory.
    """
    maps = np.asarray(maps, dtype=np.float64)
    scale = float(np.percentile(np.abs(maps), 99)) if maps.size else 1.0
    return scale if scale > 0 else 1.0


def signed_unit(maps: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
    """Maps in [0, 1] with 0.5 at zero relevance, by a shared ``scale`` (99th percentile of |R|)."""
    maps = np.asarray(maps, dtype=np.float64)
    scale = robust_scale(maps) if scale is None else scale
    scale = scale if scale > 0 else 1.0
    return np.clip(0.5 + 0.5 * maps / scale, 0.0, 1.0), scale


class ArrayMaps:
    """Fine maps held in memory, read like a `FineMapFile` (``read(rows)``, ``scale``)."""

    def __init__(self, maps: np.ndarray, scale: float | None = None) -> None:
        self.maps = np.asarray(maps)
        self.scale = robust_scale(self.maps) if scale is None else (scale if scale > 0 else 1.0)

    def __len__(self) -> int:
        return len(self.maps)

    def read(self, rows: np.ndarray) -> np.ndarray:
        return self.maps[np.asarray(rows, dtype=np.int64)]


class FinePainter:
    """Fine maps drawn on one canvas scale: which patches a window touches, and their colours there.

    The one drawing of fine maps: the fine TIFF blends it over the slide (`FineRenderer`), the viewer
    draws it as an overlay tile (`attnmap.view.layers.FineLayer`). ``maps`` is a `FineMapFile` or
    `ArrayMaps`; only the maps of the patches a window touches are read, `MAP_BATCH` at a time, so
    memory does not grow with the number of maps. ``canvas_scale`` is canvas pixels per level-0
    pixel (x, y), ``origin`` the canvas's level-0 origin. Patches are painted in their stored order
    (where patches overlap, the later one is on top).
    """

    def __init__(
        self,
        coords: np.ndarray,
        patch_size: int,
        maps: Any,
        canvas_scale: tuple[float, float],
        origin: tuple[float, float] = (0.0, 0.0),
        cmap: str = FINE_CMAP,
    ) -> None:
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        if len(coords) != len(maps):
            raise InputError(f"{len(coords)} fine-map coordinates for {len(maps)} maps")
        scale_xy = np.asarray(canvas_scale, dtype=np.float64)
        self.corners = np.ceil((coords - np.asarray(origin, dtype=np.float64)) * scale_xy).astype(np.int64)
        self.extent = np.maximum(1, np.ceil(patch_size * scale_xy).astype(np.int64))
        self.maps, self.scale = maps, float(maps.scale)
        self.colors = ColorTable(cmap)

    def touching(self, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """Positions (ascending) of the patches that overlap the window."""
        (pw, ph), corners = self.extent, self.corners
        return np.flatnonzero(
            (corners[:, 0] < x0 + width)
            & (corners[:, 0] + pw > x0)
            & (corners[:, 1] < y0 + height)
            & (corners[:, 1] + ph > y0)
        )

    def paint(
        self, x0: int, y0: int, width: int, height: int
    ) -> Iterator[tuple[tuple[slice, slice], np.ndarray]]:
        """For each patch touching the window: (rows, columns) of the window it covers, its RGB there."""
        (pw, ph), hit = self.extent, self.touching(x0, y0, width, height)
        for start in range(0, len(hit), MAP_BATCH):
            group = hit[start : start + MAP_BATCH]
            for index, fine in zip(group, self.maps.read(group), strict=True):
                cx, cy = int(self.corners[index, 0]), int(self.corners[index, 1])
                values = signed_unit(fine, self.scale)[0].astype(np.float32)
                values = cv2.resize(values, (int(pw), int(ph)), interpolation=cv2.INTER_NEAREST)
                ax0, ay0 = max(cx, x0), max(cy, y0)
                ax1, ay1 = min(cx + pw, x0 + width), min(cy + ph, y0 + height)
                part = values[ay0 - cy : ay1 - cy, ax0 - cx : ax1 - cx]
                window = (slice(ay0 - y0, ay1 - y0), slice(ax0 - x0, ax1 - x0))
                yield window, self.colors(part.astype(np.float64))

    def blend(
        self,
        pixels: np.ndarray,
        under: Callable[[], np.ndarray],
        x0: int,
        y0: int,
        alpha: float = 0.5,
    ) -> np.ndarray:
        """``pixels`` (the window at x0, y0) with each touching map blended over the slide ``under()``.

        ``under`` is called once, and only when a fine-mapped patch touches the window.
        """
        slide = None
        for window, colour in self.paint(x0, y0, pixels.shape[1], pixels.shape[0]):
            slide = under() if slide is None else slide
            pixels[window] = cv2.addWeighted(colour, alpha, slide[window], 1 - alpha, 0)
        return pixels


class FineRenderer:
    """A `HeatmapRenderer`'s canvas with fine maps drawn inside their patches (same size, same windows)."""

    def __init__(
        self,
        base: HeatmapRenderer,
        coords: np.ndarray,
        patch_size: int,
        maps: Any,
        alpha: float = 0.5,
        cmap: str = FINE_CMAP,
    ) -> None:
        self.base, self.size = base, base.size
        canvas_scale = 1.0 / np.asarray(base.scale_xy, dtype=np.float64)
        origin = getattr(base, "origin0", (0, 0))
        self.painter = FinePainter(coords, patch_size, maps, tuple(canvas_scale), origin, cmap)
        self.alpha = float(alpha)

    def render_window(self, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        pixels = self.base.render_window(x0, y0, width, height).copy()

        def under() -> np.ndarray:
            return self.base.read_canvas(x0, y0, width, height)

        return self.painter.blend(pixels, under, x0, y0, self.alpha)


def write_fine_heatmap_tiff(
    path: str | Path,
    slide: Slide,
    coords: np.ndarray,
    scores: np.ndarray,
    fine_coords: np.ndarray,
    fine_maps: Any,
    patch_size: int,
    style: HeatmapStyle | None = None,
    *,
    tissue: Tissue | None = None,
    min_fine_pixels: int = MIN_FINE_PIXELS,
    tile: int = 256,
    quality: int = 90,
    metadata: Mapping[str, str] | None = None,
    progress: bool = False,
) -> Path:
    """Pyramidal TIFF: the patch heatmap on coarse pages, fine maps where a patch spans ≥ min_fine_pixels.

    ``coords``/``scores`` are the patch-level heatmap drawn with ``style`` (as `write_heatmap_tiff`),
    ``fine_coords`` (k, 2) and ``fine_maps`` the patches with fine maps: an array (k, H, W) or a
    `attnmap.wsi.heatmap.fine_store.FineMapFile`, from which each window reads only the maps of
    the patches it touches. Streams like `write_heatmap_tiff`; memory does not grow with k.
    """
    style = replace(HeatmapStyle() if style is None else style, vis_level=0, roi=None)

    def renderer(downsample: float | None = None) -> HeatmapRenderer:
        return HeatmapRenderer(
            slide, coords, scores, style, patch_size=patch_size, tissue=tissue, downsample=downsample
        )

    base = renderer()
    plan = plan_pyramid(slide, base.vis_level, tile)
    maps = fine_maps if hasattr(fine_maps, "read") else ArrayMaps(fine_maps)

    def factory(index: int) -> Callable[[], Iterator[np.ndarray]]:
        def make_tiles() -> Iterator[np.ndarray]:
            layer = base if index == 0 else renderer(plan[index].downsample)
            if patch_size / plan[index].downsample >= min_fine_pixels and len(maps):
                layer = FineRenderer(layer, fine_coords, patch_size, maps)
            return iter_tiles(layer, tile, progress=progress, description=f"fine TIFF page {index}")

        return make_tiles

    pages = [(page.size, factory(i)) for i, page in enumerate(plan)]
    record = (
        dict(metadata)
        if metadata is not None
        else provenance(
            method="fine_heatmap",
            parameters={
                "patch_size": patch_size,
                "n_fine": int(len(maps)),
                "min_fine_pixels": min_fine_pixels,
            },
            slide=slide.path,
        )
    )
    return write_pyramid_tiff(
        path,
        pages,
        mpp=slide.mpp_xy,  # each axis's, as the heatmap TIFF's
        page_downsamples=[p.downsample for p in plan],
        metadata=record,
        tile=tile,
        quality=quality,
    )


def fine_gallery(
    patches: np.ndarray,
    maps: np.ndarray,
    scores: np.ndarray,
    columns: int = 8,
    cell: int = 128,
    alpha: float = 0.6,
    cmap: str = FINE_CMAP,
    shared_scale: bool = False,
) -> np.ndarray:
    """RGB image: for each patch (best first) the patch above its fine map overlay, with its score.

    Each map is scaled by its own robust maximum unless ``shared_scale`` (then one scale for all, as
    in the TIFF): the gallery asks *where inside each patch*, the score under it says how much.
    """
    if len(patches) != len(maps) or len(maps) != len(scores):
        raise InputError(
            f"gallery needs as many patches, maps and scores: {len(patches)}, {len(maps)}, {len(scores)}"
        )
    if len(patches) == 0:
        raise InputError("no patches to draw in the fine-map gallery")
    maps = np.asarray(maps, dtype=np.float64)
    values = signed_unit(maps)[0] if shared_scale else np.stack([signed_unit(m)[0] for m in maps])
    colors = ColorTable(cmap)
    columns = max(1, min(columns, len(patches)))
    rows = -(-len(patches) // columns)
    label = 16
    sheet = np.full((rows * (2 * cell + label), columns * cell, 3), 255, np.uint8)
    for i, (patch, value, score) in enumerate(zip(patches, values, scores, strict=True)):
        top, left = (i // columns) * (2 * cell + label), (i % columns) * cell
        rgb = cv2.resize(np.ascontiguousarray(patch[..., :3]), (cell, cell), interpolation=cv2.INTER_AREA)
        colour = colors(cv2.resize(value, (cell, cell), interpolation=cv2.INTER_NEAREST))
        sheet[top : top + cell, left : left + cell] = rgb
        sheet[top + cell : top + 2 * cell, left : left + cell] = cv2.addWeighted(
            colour, alpha, rgb, 1 - alpha, 0
        )
        cv2.putText(
            sheet,
            f"#{i + 1} {score:+.3g}",
            (left + 3, top + 2 * cell + 12),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.38,
            (0, 0, 0),
            1,
        )
    return sheet


def write_fine_gallery(
    path: str | Path,
    patches: np.ndarray,
    maps: np.ndarray,
    scores: np.ndarray,
    metadata: Mapping[str, str] | None = None,
    **options: Any,
) -> Path:
    """`fine_gallery` written as a PNG (atomically, with ``metadata`` as text chunks)."""
    from attnmap.io_utils import save_png

    return save_png(path, fine_gallery(patches, maps, scores, **options), metadata)
