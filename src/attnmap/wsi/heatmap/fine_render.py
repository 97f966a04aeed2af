"""Drawing fine maps: inside-patch relevance in the pyramidal TIFF's full-resolution pages, and a gallery.

The coarse pages of a fine heatmap TIFF are today's patch-level heatmap (one colour per patch); the
pages on which a patch spans at least ``min_fine_pixels`` pixels show, inside each patch that has a
fine map, the slide blended with that map instead. Fine maps stay at the encoder's input size in
memory (k × H × W floats) and are resized per window, so the TIFF still streams strip by strip.

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


def signed_unit(maps: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
    """Maps in [0, 1] with 0.5 at zero relevance, by a shared ``scale`` (99th percentile of |R|)."""
    maps = np.asarray(maps, dtype=np.float64)
    if scale is None:
        scale = float(np.percentile(np.abs(maps), 99)) if maps.size else 1.0
    scale = scale if scale > 0 else 1.0
    return np.clip(0.5 + 0.5 * maps / scale, 0.0, 1.0), scale


class FineRenderer:
    """A `HeatmapRenderer`'s canvas with fine maps drawn inside their patches (same size, same windows)."""

    def __init__(
        self,
        base: HeatmapRenderer,
        coords: np.ndarray,
        patch_size: int,
        maps: np.ndarray,
        alpha: float = 0.5,
        cmap: str = FINE_CMAP,
        scale: float | None = None,
    ) -> None:
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        if len(coords) != len(maps):
            raise InputError(f"{len(coords)} fine-map coordinates for {len(maps)} maps")
        self.base, self.size = base, base.size
        canvas_scale = 1.0 / np.asarray(base.scale_xy, dtype=np.float64)
        origin = np.asarray(getattr(base, "origin0", (0, 0)), dtype=np.float64)
        self.corners = np.ceil((coords - origin) * canvas_scale).astype(np.int64)
        self.extent = np.maximum(1, np.ceil(patch_size * canvas_scale).astype(np.int64))
        self.values, self.scale = signed_unit(maps, scale)
        self.values = self.values.astype(np.float32)
        self.colors = ColorTable(cmap)
        self.alpha = float(alpha)

    def render_window(self, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        pixels = self.base.render_window(x0, y0, width, height).copy()
        (pw, ph), corners = self.extent, self.corners
        hit = np.flatnonzero(
            (corners[:, 0] < x0 + width)
            & (corners[:, 0] + pw > x0)
            & (corners[:, 1] < y0 + height)
            & (corners[:, 1] + ph > y0)
        )
        if not len(hit):
            return pixels
        slide = self.base.read_canvas(x0, y0, width, height)
        for index in hit:
            cx, cy = int(corners[index, 0]), int(corners[index, 1])
            values = cv2.resize(self.values[index], (int(pw), int(ph)), interpolation=cv2.INTER_NEAREST)
            ax0, ay0 = max(cx, x0), max(cy, y0)
            ax1, ay1 = min(cx + pw, x0 + width), min(cy + ph, y0 + height)
            part = values[ay0 - cy : ay1 - cy, ax0 - cx : ax1 - cx]
            under = slide[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]
            colour = self.colors(part.astype(np.float64))
            pixels[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0] = cv2.addWeighted(
                colour, self.alpha, under, 1 - self.alpha, 0
            )
        return pixels


def write_fine_heatmap_tiff(
    path: str | Path,
    slide: Slide,
    coords: np.ndarray,
    scores: np.ndarray,
    fine_coords: np.ndarray,
    fine_maps: np.ndarray,
    patch_size: int,
    style: HeatmapStyle | None = None,
    *,
    tissue: Tissue | None = None,
    min_fine_pixels: int = 32,
    tile: int = 256,
    quality: int = 90,
    metadata: Mapping[str, str] | None = None,
    progress: bool = False,
) -> Path:
    """Pyramidal TIFF: the patch heatmap on coarse pages, fine maps where a patch spans ≥ min_fine_pixels.

    ``coords``/``scores`` are the patch-level heatmap drawn with ``style`` (as `write_heatmap_tiff`),
    ``fine_coords`` (k, 2) and ``fine_maps`` (k, H, W) the patches with fine maps. Streams like
    `write_heatmap_tiff`.
    """
    style = replace(HeatmapStyle() if style is None else style, vis_level=0, roi=None)

    def renderer(downsample: float | None = None) -> HeatmapRenderer:
        return HeatmapRenderer(
            slide, coords, scores, style, patch_size=patch_size, tissue=tissue, downsample=downsample
        )

    base = renderer()
    plan = plan_pyramid(slide, base.vis_level, tile)
    _, scale = signed_unit(fine_maps)

    def factory(index: int) -> Callable[[], Iterator[np.ndarray]]:
        def make_tiles() -> Iterator[np.ndarray]:
            layer = base if index == 0 else renderer(plan[index].downsample)
            if patch_size / plan[index].downsample >= min_fine_pixels and len(fine_maps):
                layer = FineRenderer(layer, fine_coords, patch_size, fine_maps, scale=scale)
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
                "n_fine": int(len(fine_maps)),
                "min_fine_pixels": min_fine_pixels,
            },
            slide=slide.path,
        )
    )
    return write_pyramid_tiff(
        path,
        pages,
        mpp=slide.mpp,
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
