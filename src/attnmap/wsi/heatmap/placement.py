"""Where a heatmap PNG's map sits in the picture and which level-0 pixels it covers, recorded with it.

Why: a heatmap PNG is drawn at a slide level, maybe cut to a ROI, shrunk (``downscale``) and framed
by a title band and a colour bar; nothing in the picture itself says how its pixels map to the
slide. Two text chunks, written beside the provenance, say it, so any PNG pixel maps back:
level-0 x = x0 + (px − box x + ½) × (x1 − x0) / box width (and so for y).
"""

from __future__ import annotations

from attnmap.wsi.heatmap.renderer import shrunk_vis_downsample, vis_canvas
from attnmap.wsi.heatmap.style import HeatmapStyle
from attnmap.wsi.slide import Slide

MAP_BOX_KEY = "heatmap_box"
"""PNG text chunk: "x y width height", the map's pixels in the picture (the rest is title and legend)."""
LEVEL0_BOX_KEY = "heatmap_level0_box"
"""PNG text chunk: "x0 y0 x1 y1", the level-0 region the map's pixels cover."""


def level0_extent(slide: Slide, style: HeatmapStyle) -> tuple[float, float, float, float]:
    """The level-0 (x0, y0, x1, y1) that `render_heatmap` with ``style`` draws: the slide, or its ROI
    or the slide drawn shrunk as the heatmap's whole pixels cover it (the canvas is cut at those
    pixels)."""
    if style.roi is None and shrunk_vis_downsample(slide, style.vis_level) is None:
        width, height = slide.dimensions
        return 0.0, 0.0, float(width), float(height)
    (scale_x, scale_y), (width, height) = vis_canvas(slide, style.vis_level, style.roi)
    left, top = (0, 0) if style.roi is None else style.roi[0]
    return float(left), float(top), left + width * scale_x, top + height * scale_y


def placement_text(
    slide: Slide, style: HeatmapStyle, map_size: tuple[int, int], offset: tuple[int, int] = (0, 0)
) -> dict[str, str]:
    """The two text chunks for a map of ``map_size`` (width, height) pasted at ``offset`` in the PNG."""
    x0, y0, x1, y1 = level0_extent(slide, style)
    return {
        MAP_BOX_KEY: f"{int(offset[0])} {int(offset[1])} {int(map_size[0])} {int(map_size[1])}",
        LEVEL0_BOX_KEY: " ".join(f"{value:.6f}".rstrip("0").rstrip(".") for value in (x0, y0, x1, y1)),
    }
