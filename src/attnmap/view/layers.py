"""Transparent RGBA tiles drawn over the slide: a method's heatmap, fine maps, tissue contours, annotations.

Why rasterise per tile with summed-area tables: a tile at low zoom can cover every patch of the slide;
adding each patch's rectangle to a difference image (four corner updates, `np.add.at`) and
integrating twice costs O(patches in tile + tile pixels) with no Python loop, and overlapping
patches are averaged, as CLAM's heatmaps average them. Only the tile's own pixels are allocated.
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from attnmap.render.scale import colour_table
from attnmap.view.deepzoom import TileRegion
from attnmap.view.sources import ScoreSet


class HeatmapLayer:
    """A score set coloured with its scale; transparent where no patch lies."""

    def __init__(self, score_set: ScoreSet) -> None:
        self.coords = score_set.coords.astype(np.float64)
        self.patch = float(score_set.patch_size)
        self.values = score_set.scale.unit(score_set.scores)
        self.table = colour_table(score_set.scale.cmap)

    def rgba(self, region: TileRegion) -> np.ndarray | None:
        """The tile's RGBA pixels, or None when no patch touches it."""
        (ox, oy), (sw, sh), (width, height) = region.origin, region.size0, region.pixels
        x, y = self.coords[:, 0], self.coords[:, 1]
        inside = (x < ox + sw) & (x + self.patch > ox) & (y < oy + sh) & (y + self.patch > oy)
        if not inside.any():
            return None
        scale_x, scale_y = width / sw, height / sh
        px0 = np.floor((x[inside] - ox) * scale_x).astype(np.int64)
        py0 = np.floor((y[inside] - oy) * scale_y).astype(np.int64)
        px1 = np.maximum(px0 + 1, np.ceil((x[inside] + self.patch - ox) * scale_x).astype(np.int64))
        py1 = np.maximum(py0 + 1, np.ceil((y[inside] + self.patch - oy) * scale_y).astype(np.int64))
        px0, px1 = np.clip(px0, 0, width), np.clip(px1, 0, width)
        py0, py1 = np.clip(py0, 0, height), np.clip(py1, 0, height)
        total = _box_sum(py0, py1, px0, px1, self.values[inside], (height, width))
        count = _box_sum(py0, py1, px0, px1, np.ones(len(px0)), (height, width))
        covered = count > 0.5
        mean = np.divide(total, count, out=np.zeros_like(total), where=covered)
        return _coloured(mean, covered, self.table)


def _coloured(values: np.ndarray, covered: np.ndarray, table: np.ndarray) -> np.ndarray:
    """RGBA of unit ``values`` through a colour ``table``, opaque where ``covered``, clear elsewhere."""
    index = np.clip(np.rint(values * (len(table) - 1)), 0, len(table) - 1).astype(np.intp)
    out = np.zeros((*values.shape, 4), dtype=np.uint8)
    out[..., :3] = table[index]
    out[..., 3] = np.where(covered, 255, 0)
    return out


class OverlapLayer:
    """Patches on an overlapping grid (a run's ``overlap_blockmap.h5``), drawn by the heatmap PNG's code.

    Why `HeatmapRenderer` and not `HeatmapLayer`'s box sums: where patches overlap, a pixel's colour
    is the mean of the patches covering it, rounded to canvas pixels as the PNG and the TIFF round
    them; drawing the tiles with the renderer's own window code (at the tile's downsample, as the
    TIFF draws its reduced pages, on a blank canvas without blur or tissue mask) keeps that rule
    spelled once. The values it averages are the score set's scale (`ScoreScale.unit`), so the
    colours follow the viewer's colour bar.
    """

    KEPT = 4
    """Renderers kept (one per Deep Zoom level in use): each holds the patches' corners at its scale."""

    def __init__(self, score_set: ScoreSet, slide) -> None:
        self.slide = slide
        self.coords = score_set.coords
        self.patch = score_set.patch_size
        # the renderer draws raw scores / 100 (percentiles off): scores × 100 make it draw the unit values
        self.scores = 100.0 * score_set.scale.unit(score_set.scores)
        self.table = colour_table(score_set.scale.cmap)
        self._renderers: dict[float, object] = {}
        self._lock = threading.Lock()

    def renderer(self, downsample: float):
        """The `HeatmapRenderer` whose canvas pixel is ``downsample`` level-0 pixels."""
        from attnmap.wsi.heatmap.renderer import HeatmapRenderer
        from attnmap.wsi.heatmap.style import HeatmapStyle

        with self._lock:
            if downsample not in self._renderers:
                if len(self._renderers) >= self.KEPT:
                    del self._renderers[next(iter(self._renderers))]
                style = HeatmapStyle(
                    alpha=1.0, percentiles=False, blur=False, blank_canvas=True, use_tissue_mask=False
                )
                self._renderers[downsample] = HeatmapRenderer(
                    self.slide, self.coords, self.scores, style, patch_size=self.patch, downsample=downsample
                )
            return self._renderers[downsample]

    def rgba(self, region: TileRegion) -> np.ndarray | None:
        downsample = region.downsample
        x0, y0 = (int(v // downsample) for v in region.origin)
        width, height = region.pixels
        renderer = self.renderer(downsample)
        # the renderer's canvas is the level's size rounded down; Deep Zoom's is rounded up
        inside_w, inside_h = min(width, renderer.size[0] - x0), min(height, renderer.size[1] - y0)
        if inside_w <= 0 or inside_h <= 0:
            return None
        layers = renderer.layers(x0, y0, inside_w, inside_h)
        if not layers.drawn.any():
            return None
        out = np.zeros((height, width, 4), dtype=np.uint8)
        out[:inside_h, :inside_w] = _coloured(layers.overlay, layers.drawn, self.table)
        return out


class FineLayer:
    """A fine-map file: its patch scores where patches are small on screen, the maps inside them above.

    As in the fine TIFF (and drawn by the same `FinePainter`): tiles on which a patch spans at least
    `MIN_FINE_PIXELS` pixels show each fine-mapped patch's map (``RdBu_r``, one scale for all maps);
    coarser tiles, and patches without a map, show the patch-level colours of `HeatmapLayer`. A
    tile reads only the maps of the patches it touches.
    """

    def __init__(self, score_set: ScoreSet) -> None:
        from attnmap.wsi.heatmap.fine_store import FineMapFile

        if score_set.fine is None:
            raise ValueError(f"score set {score_set.method!r} has no fine maps")
        self.coarse = HeatmapLayer(score_set)
        self.patch = score_set.patch_size
        self.store = FineMapFile(score_set.fine.path)
        self._painters: dict[float, object] = {}
        self._lock = threading.Lock()

    def painter(self, downsample: float):
        """The `FinePainter` of one Deep Zoom level (canvas pixel = ``downsample`` level-0 pixels)."""
        from attnmap.wsi.heatmap.fine_render import FinePainter

        with self._lock:
            if downsample not in self._painters:
                scale = (1.0 / downsample, 1.0 / downsample)
                coords = self.store.fine_coords
                self._painters[downsample] = FinePainter(coords, self.patch, self.store, scale)
            return self._painters[downsample]

    def rgba(self, region: TileRegion) -> np.ndarray | None:
        from attnmap.wsi.heatmap.fine_render import MIN_FINE_PIXELS

        out = self.coarse.rgba(region)
        if out is None or self.patch / region.downsample < MIN_FINE_PIXELS or not len(self.store):
            return out
        downsample = region.downsample
        x0, y0 = (int(round(v / downsample)) for v in region.origin)
        for window, colour in self.painter(downsample).paint(x0, y0, *region.pixels):
            out[window + (slice(0, 3),)] = colour
            out[window + (3,)] = 255
        return out

    def blend_patch(self, rgb: np.ndarray, origin: tuple[int, int]) -> np.ndarray:
        """A gallery picture: ``rgb`` (the slide over one patch at level-0 ``origin``, any size) with
        the fine maps there blended over it, as the fine TIFF blends them."""
        from attnmap.wsi.heatmap.fine_render import FinePainter

        height, width = rgb.shape[:2]
        scale = (width / self.patch, height / self.patch)
        painter = FinePainter(self.store.fine_coords, self.patch, self.store, scale, origin)
        return painter.blend(rgb.copy(), lambda: rgb, 0, 0)

    def close(self) -> None:
        self.store.close()


def _box_sum(y0, y1, x0, x1, weights, shape) -> np.ndarray:
    """Sum of ``weights`` over rectangles [y0, y1) × [x0, x1) per pixel, via a 2-D difference image."""
    diff = np.zeros((shape[0] + 1, shape[1] + 1), dtype=np.float64)
    np.add.at(diff, (y0, x0), weights)
    np.add.at(diff, (y0, x1), -weights)
    np.add.at(diff, (y1, x0), -weights)
    np.add.at(diff, (y1, x1), weights)
    return diff.cumsum(axis=0).cumsum(axis=1)[: shape[0], : shape[1]]


class OutlineLayer:
    """Polygon outlines (level-0 rings) in one colour, a few pixels wide at every zoom."""

    def __init__(self, rings: list[np.ndarray], colour: tuple[int, int, int], thickness: int = 2) -> None:
        self.rings = [np.asarray(ring, dtype=np.float64).reshape(-1, 2) for ring in rings if len(ring) >= 2]
        self.boxes = (
            np.array([[r[:, 0].min(), r[:, 1].min(), r[:, 0].max(), r[:, 1].max()] for r in self.rings])
            if self.rings
            else np.zeros((0, 4))
        )
        self.colour = (*colour, 255)
        self.thickness = thickness

    def rgba(self, region: TileRegion) -> np.ndarray | None:
        (ox, oy), (sw, sh), (width, height) = region.origin, region.size0, region.pixels
        if not len(self.boxes):
            return None
        margin = self.thickness * region.downsample
        near = (
            (self.boxes[:, 0] <= ox + sw + margin)
            & (self.boxes[:, 2] >= ox - margin)
            & (self.boxes[:, 1] <= oy + sh + margin)
            & (self.boxes[:, 3] >= oy - margin)
        )
        if not near.any():
            return None
        out = np.zeros((height, width, 4), dtype=np.uint8)
        scale = np.array([width / sw, height / sh])
        shift = 4  # sub-pixel precision for cv2
        for index in np.flatnonzero(near):
            points = np.rint((self.rings[index] - [ox, oy]) * scale * (1 << shift)).astype(np.int64)
            points = np.clip(points, -(1 << 28), 1 << 28).astype(np.int32)
            cv2.polylines(out, [points], True, self.colour, self.thickness, cv2.LINE_AA, shift)
        return out if out[..., 3].any() else None
