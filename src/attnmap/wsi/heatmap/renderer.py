"""CLAM-exact whole-slide heatmaps, rendered window by window so no canvas must fit in memory.

Why windows: every CLAM heatmap pixel depends only on the patches covering it (their averaged
value), the tissue mask there, and the slide pixel under it; blur reaches at most one kernel
radius per pass. So any window of the canvas, rendered with a halo of two blur radii, equals the
same window cut from CLAM's whole canvas. `render_heatmap` assembles a canvas from windows;
`heatmap_stream` writes full-resolution pyramidal TIFFs from the same windows.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from attnmap.errors import InputError
from attnmap.render.arrays import ArrayInput, as_array
from attnmap.wsi.heatmap.scores import ColorTable, draw_threshold, prepare_values, warn_if_none_drawn
from attnmap.wsi.heatmap.style import HeatmapStyle
from attnmap.wsi.slide import Slide
from attnmap.wsi.tissue import ScaledTissue, Tissue

INDEX_CELL = 256
SHRUNK_BLOCK = 512
"""Window side of a canvas drawn shrunk from a finer level: a 2048² window of a one-level slide
drawn at downsample 32 read 65k² slide pixels as one step (a minute without the bar moving)."""
MAX_CANVAS_PIXELS = 1 << 31
"""Largest canvas `render_heatmap` builds in memory (6 GB of RGB); beyond it, stream a TIFF."""


@dataclass
class HeatmapLayers:
    """The stages of one window: averaged (and blurred) values, coloured image, final blend, and
    where colour was drawn (``drawn``: patches at or above the threshold, on tissue)."""

    overlay: np.ndarray
    colored: np.ndarray
    blended: np.ndarray
    drawn: np.ndarray


def validate_inputs(slide: Slide, coords: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) int64 coords and (N,) float64 scores (arrays, tensors or lists), or an `InputError`
    naming what is wrong."""
    coords = as_array(coords)
    scores = as_array(scores).astype(np.float64)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InputError(f"coords must have shape (N, 2) of level-0 [x, y], got {coords.shape}")
    if scores.ndim == 2 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim != 1:
        raise InputError(f"scores must have shape (N,) or (N, 1), got {scores.shape}")
    if len(scores) != len(coords):
        raise InputError(f"scores and coords differ in length: {len(scores)} scores for {len(coords)} coords")
    coords = coords.astype(np.int64)
    width, height = slide.dimensions
    outside = (coords[:, 0] < 0) | (coords[:, 1] < 0) | (coords[:, 0] >= width) | (coords[:, 1] >= height)
    if outside.any():
        first = coords[np.flatnonzero(outside)[0]].tolist()
        raise InputError(
            f"{int(outside.sum())} patch coordinate(s) lie outside the slide {slide.path} "
            f"({width}×{height} at level 0), e.g. {first}"
        )
    return coords, scores


VIS_DOWNSAMPLE = 32
"""The downsample a heatmap is drawn at unless the caller names a level (CLAM's choice)."""
MAX_VIS_LEVEL_PIXELS = 1 << 27
"""The largest level a heatmap is drawn at when its level is left unset. A larger one (a slide
without a pyramid: its level 0) is drawn at about `VIS_DOWNSAMPLE` instead, the slide under it read
block by block and shrunk (`shrunk_vis_downsample`), as CLAM draws a pyramidal copy of the slide:
its level 0 drawn whole took 3 bytes a pixel for the canvas alone and 7 for the slide read."""


def resolve_vis_level(slide: Slide, vis_level: int) -> int:
    """The level a heatmap is drawn at: ``vis_level``, or if negative the best level for downsample 32."""
    if vis_level < 0:
        return slide.get_best_level_for_downsample(VIS_DOWNSAMPLE)
    return slide.check_level(vis_level)


def shrunk_vis_downsample(slide: Slide, vis_level: int) -> float | None:
    """The downsample a heatmap whose ``vis_level`` is unset (negative) is drawn at when the level
    chosen has more than `MAX_VIS_LEVEL_PIXELS`: that level's downsample times the whole factor that
    brings it to about `VIS_DOWNSAMPLE`; None (drawn at the level) otherwise."""
    if vis_level >= 0:
        return None
    level = resolve_vis_level(slide, vis_level)
    width, height = slide.level_dimensions[level]
    downsample = float(slide.level_downsamples[level])
    factor = int(VIS_DOWNSAMPLE // downsample)
    if width * height <= MAX_VIS_LEVEL_PIXELS or factor < 2:
        return None
    return downsample * factor


def vis_canvas(
    slide: Slide, vis_level: int, roi: object = None, downsample: float | None = None
) -> tuple[tuple[float, float], tuple[int, int]]:
    """(level-0 pixels per heatmap pixel (x, y), canvas (width, height)) of a heatmap at ``vis_level``
    (negative: the level chosen, drawn shrunk when too large: `shrunk_vis_downsample`), or at
    ``downsample`` when given (a TIFF's reduced page), over ``roi`` ((left, top), (right, bottom) in
    level-0 pixels, or None: the slide). The one arithmetic of the renderer, the run's pre-flight
    check and the placement record: the canvas is cut at whole heatmap pixels."""
    if downsample is None:
        downsample = shrunk_vis_downsample(slide, vis_level)
    if downsample is None:
        level = resolve_vis_level(slide, vis_level)
        scale_xy, size = slide.level_scale_xy(level), tuple(slide.level_dimensions[level])
    else:
        scale_xy = (float(downsample), float(downsample))
    scale = np.array([1.0 / scale_xy[0], 1.0 / scale_xy[1]])
    if roi is not None:
        top_left, bottom_right = (np.asarray(corner, dtype=np.int64) for corner in roi)
        size = tuple(int(v) for v in (bottom_right * scale).astype(int) - (top_left * scale).astype(int))
    elif downsample is not None:
        size = tuple(int(v) for v in (np.array(slide.dimensions) * scale).astype(int))
    return scale_xy, size


class HeatmapRenderer:
    """Everything a heatmap window needs, prepared once: scaled patches, values, mask, colours.

    ``downsample`` overrides the vis level's scale (used for reduced TIFF pages, where patches may
    shrink below a pixel and are then drawn one pixel wide); the slide is then read at the best level
    and resized.
    """

    def __init__(
        self,
        slide: Slide,
        coords: ArrayInput,
        scores: ArrayInput,
        style: HeatmapStyle | None = None,
        *,
        patch_size: int = 256,
        tissue: Tissue | None = None,
        reference_scores: ArrayInput | None = None,
        downsample: float | None = None,
    ) -> None:
        style = HeatmapStyle() if style is None else style
        coords, scores = validate_inputs(slide, coords, scores)
        self.style = style
        self.slide = slide
        self.vis_level = resolve_vis_level(slide, style.vis_level)
        page = downsample is not None  # a reduced page of a TIFF, drawn for the page above it
        if downsample is None:
            downsample = shrunk_vis_downsample(slide, style.vis_level)
        if downsample is None:
            self.read_level, self.resize = self.vis_level, False
        else:
            self.read_level = slide.get_best_level_for_downsample(downsample)
            self.resize = abs(slide.level_downsamples[self.read_level] - downsample) > 1e-9
        self.scale_xy, self.size = vis_canvas(slide, style.vis_level, style.roi, downsample)
        scale = np.array([1.0 / self.scale_xy[0], 1.0 / self.scale_xy[1]])
        if patch_size < max(self.scale_xy) and not page:
            raise InputError(
                f"patch_size {patch_size} (level 0) is smaller than one pixel at vis level {self.vis_level} "
                f"(downsample {max(self.scale_xy):g}); choose a finer vis level or larger patches"
            )
        self.threshold = draw_threshold(len(scores), style.binarize, style.threshold)
        if style.roi is not None:
            top_left = np.asarray(style.roi[0], dtype=np.int64)
            bottom_right = np.asarray(style.roi[1], dtype=np.int64)
            if np.any(top_left >= np.asarray(slide.dimensions)) or np.any(bottom_right <= 0):
                raise InputError(
                    f"roi {[list(corner) for corner in style.roi]} lies outside the slide "
                    f"({slide.dimensions[0]}×{slide.dimensions[1]} at level 0)"
                )
            inside = np.all(coords >= top_left, axis=1) & np.all(coords <= bottom_right, axis=1)
            coords, scores = coords[inside] - top_left, scores[inside]
        else:
            top_left = np.zeros(2, dtype=np.int64)
        self.origin0 = top_left
        self.mask_origin = tuple(int(v) for v in (top_left * scale).astype(np.int32))
        self.values = prepare_values(scores, style.percentiles, reference_scores)
        self.drawn = self.values >= self.threshold
        if style.binarize and not page:  # (reduced TIFF pages: said once, for the page above)
            warn_if_none_drawn(self.values, self.threshold, slide.path)
        self.binarize = style.binarize
        self.patch = np.ceil(np.array([patch_size, patch_size]) * scale).astype(np.int64)
        self.corners = np.ceil(coords * scale).astype(np.int64)
        self.tissue = tissue if style.use_tissue_mask else None
        if self.tissue is not None:
            self.tissue_canvas = ScaledTissue(tissue.contours, (float(scale[0]), float(scale[1])))
        self.colors = ColorTable(style.cmap)
        self.alpha = float(style.alpha)
        kernel = (self.patch * (1 - style.overlap)).astype(int) * 2 + 1
        self.blur_kernel = tuple(int(k) for k in kernel) if style.blur else None
        self._build_index()

    # ----------------------------------------------------------------------------- patch index
    def _build_index(self) -> None:
        """Bucket patches by INDEX_CELL cells so a window finds its patches without a full scan."""
        first = self.corners // INDEX_CELL
        last = (self.corners + self.patch - 1) // INDEX_CELL
        span = int((last - first).max()) + 1 if len(first) else 1
        self.cells_per_row = int(self.size[0] // INDEX_CELL + 2)
        keys, owners = [], []
        for dy in range(span):
            for dx in range(span):
                cell = first + [dx, dy]
                ok = np.all(cell <= last, axis=1)
                keys.append(cell[ok, 1] * self.cells_per_row + cell[ok, 0])
                owners.append(np.flatnonzero(ok))
        keys_all, owners_all = np.concatenate(keys), np.concatenate(owners)
        order = np.lexsort((owners_all, keys_all))
        self._keys, self._owners = keys_all[order], owners_all[order]

    def patches_in(self, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
        """Indices (ascending, i.e. CLAM's drawing order) of patches touching canvas [x0, x1) × [y0, y1)."""
        cx = np.arange(max(x0, 0) // INDEX_CELL, (max(x1, 1) - 1) // INDEX_CELL + 1)
        cy = np.arange(max(y0, 0) // INDEX_CELL, (max(y1, 1) - 1) // INDEX_CELL + 1)
        wanted = (cy[:, None] * self.cells_per_row + cx[None, :]).ravel()
        lo = np.searchsorted(self._keys, wanted, side="left")
        hi = np.searchsorted(self._keys, wanted, side="right")
        if not len(lo) or (hi - lo).sum() == 0:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate([self._owners[a:b] for a, b in zip(lo, hi, strict=True)]))

    # ----------------------------------------------------------------------------- rendering
    def read_canvas(self, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """The slide (or the blank canvas colour) under canvas window [x0, x0+width) × [y0, y0+height)."""
        if self.style.blank_canvas:
            return np.full((height, width, 3), self.style.canvas_color, dtype=np.uint8)
        if not self.resize:  # the window at (x0, y0) of the level read from origin0, where it lies
            origin = (int(self.origin0[0]), int(self.origin0[1]))
            location = self.slide.level0_location(self.read_level, x0, y0, origin)
            return self.slide.read_region(location, self.read_level, (width, height))
        sx, sy = self.scale_xy
        location = (int(round(self.origin0[0] + x0 * sx)), int(round(self.origin0[1] + y0 * sy)))
        read_ds = self.slide.level_downsamples[self.read_level]
        factor = round(sx / read_ds)
        if factor >= 2 and sx == sy and abs(sx / read_ds - factor) < 1e-9:  # block by block: no huge read
            from attnmap.wsi.reduced import read_reduced

            corner = (round(location[0] / read_ds), round(location[1] / read_ds))
            return read_reduced(self.slide, self.read_level, factor,
                                region=(*corner, width * factor, height * factor))
        read_w = max(1, int(np.ceil(width * sx / read_ds)))
        read_h = max(1, int(np.ceil(height * sy / read_ds)))
        region = self.slide.read_region(location, self.read_level, (read_w, read_h))
        return cv2.resize(region, (width, height), interpolation=cv2.INTER_AREA)

    def layers(self, x0: int, y0: int, width: int, height: int) -> HeatmapLayers:
        """Render canvas window [x0, x0+width) × [y0, y0+height) with all CLAM stages."""
        halo = [0, 0] if self.blur_kernel is None else [2 * (k // 2) for k in self.blur_kernel]
        wx0, wy0 = max(0, x0 - halo[0]), max(0, y0 - halo[1])
        wx1, wy1 = min(self.size[0], x0 + width + halo[0]), min(self.size[1], y0 + height + halo[1])
        ww, wh = wx1 - wx0, wy1 - wy0
        overlay = np.zeros((wh, ww), dtype=np.float64)
        counter = np.zeros((wh, ww), dtype=np.int32)
        drawn = np.zeros((wh, ww), dtype=bool)
        pw, ph = int(self.patch[0]), int(self.patch[1])
        for index in self.patches_in(wx0, wy0, wx1, wy1):
            cx, cy = int(self.corners[index, 0]) - wx0, int(self.corners[index, 1]) - wy0
            rows, cols = slice(max(cy, 0), max(cy + ph, 0)), slice(max(cx, 0), max(cx + pw, 0))
            if self.drawn[index]:
                overlay[rows, cols] += 1.0 if self.binarize else self.values[index]
                drawn[rows, cols] = True
            counter[rows, cols] += 1  # a patch below the threshold adds 0 to the overlay but counts
        np.divide(overlay, counter, out=overlay, where=counter > 0)
        if self.binarize:
            np.around(overlay, out=overlay)
        if self.blur_kernel is not None:
            overlay = cv2.GaussianBlur(overlay, self.blur_kernel, 0)
        if self.tissue is not None:
            origin = (self.mask_origin[0] + wx0, self.mask_origin[1] + wy0)
            left, top = self.mask_origin
            bounds = (left, top, left + self.size[0], top + self.size[1])
            drawn &= self.tissue_canvas.window(origin, (ww, wh), bounds=bounds)
        canvas = self.read_canvas(wx0, wy0, ww, wh)
        colored = canvas.copy()
        if drawn.any():
            np.copyto(colored, self.colors(overlay), where=drawn[:, :, None])
        if self.blur_kernel is not None:
            colored = cv2.GaussianBlur(colored, self.blur_kernel, 0)
        blended = colored
        if self.alpha < 1.0:
            blended = cv2.addWeighted(colored, self.alpha, canvas, 1 - self.alpha, 0)
        crop = (slice(y0 - wy0, y0 - wy0 + height), slice(x0 - wx0, x0 - wx0 + width))
        return HeatmapLayers(overlay[crop], colored[crop], blended[crop], drawn[crop])

    def render_window(self, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """Final RGB uint8 pixels of one canvas window."""
        return self.layers(x0, y0, width, height).blended

    def iter_windows(self, block: int):
        """Yield (x0, y0, width, height) windows of at most ``block`` pixels, row-major."""
        for y0 in range(0, self.size[1], block):
            for x0 in range(0, self.size[0], block):
                yield x0, y0, min(block, self.size[0] - x0), min(block, self.size[1] - y0)


def downscaled_size(size: tuple[int, int], downscale: float) -> tuple[int, int]:
    """(width, height) of a ``size`` heatmap shrunk by ``downscale``; `InputError` below one pixel.

    Why: PIL refused the zero-sized image only after the slide's features and attention were made.
    """
    target = (int(size[0] / downscale), int(size[1] / downscale))
    if min(target) < 1:
        raise InputError(
            f"downscale {downscale:g} shrinks the {size[0]}×{size[1]} px heatmap below one pixel: "
            f"use at most {min(size):g}"
        )
    return target


def render_heatmap(
    slide: Slide,
    coords: ArrayInput,
    scores: ArrayInput,
    style: HeatmapStyle | None = None,
    *,
    patch_size: int = 256,
    tissue: Tissue | None = None,
    reference_scores: ArrayInput | None = None,
    block: int = 2048,
    max_pixels: int = MAX_CANVAS_PIXELS,
    progress: bool = False,
) -> np.ndarray:
    """CLAM's heatmap (visHeatmap) of per-patch ``scores`` at ``coords`` as an RGB uint8 array.

    ``style`` says how (`HeatmapStyle`: level, colour map, alpha, blur, binarize, roi, downscale,
    ...); ``patch_size`` is in level-0 pixels; ``tissue`` limits colour to tissue pixels.
    Values are percentiles / 100 (or percentiles against ``reference_scores``, or raw / 100).
    The canvas is assembled from ``block``-sized windows to bound temporaries; canvases over
    ``max_pixels`` are refused (write those with `write_heatmap_tiff`, which streams).
    ``progress``: a bar over the windows (a million patches take a minute).
    """
    style = HeatmapStyle() if style is None else style
    renderer = HeatmapRenderer(
        slide, coords, scores, style, patch_size=patch_size, tissue=tissue, reference_scores=reference_scores
    )
    width, height = renderer.size
    if width * height > max_pixels:
        raise InputError(
            f"a {width}×{height} heatmap canvas at vis level {renderer.vis_level} exceeds "
            f"max_pixels={max_pixels}; pick a coarser vis_level, a roi, or stream it to a pyramidal TIFF "
            "with write_heatmap_tiff"
        )
    target = downscaled_size((width, height), style.downscale) if style.downscale > 1 else None
    image = np.empty((height, width, 3), dtype=np.uint8)
    from tqdm import tqdm

    if renderer.resize:  # each canvas pixel reads downsample² slide pixels: short steps for the bar
        block = min(block, SHRUNK_BLOCK)
    windows = list(renderer.iter_windows(block))
    for x0, y0, w, h in tqdm(windows, desc="heatmap PNG", unit="window", disable=not progress, leave=False):
        image[y0 : y0 + h, x0 : x0 + w] = renderer.render_window(x0, y0, w, h)
    if target is not None:  # (a downscale too large was refused before any drawing)
        from PIL import Image

        shrunk = Image.fromarray(image).resize(target, Image.BICUBIC)
        image = np.asarray(shrunk)
    return image
