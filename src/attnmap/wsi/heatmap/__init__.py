"""Heatmaps of patch scores over a slide: the drawing options (`style`), colour table and score
normalisation (`scores`), the canvas renderer (`renderer`), tile streaming (`stream`) and the
pyramidal TIFF writer (`tiff`).

Names are imported from their modules on first use (`attnmap.lazy_exports`): `style` alone, which
the command line's options are made from, imports no OpenCV or NumPy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attnmap.lazy_exports import lazy_exports

_EXPORTS: dict[str, str] = {
    "HeatmapRenderer": "attnmap.wsi.heatmap.renderer",
    "render_heatmap": "attnmap.wsi.heatmap.renderer",
    "resolve_vis_level": "attnmap.wsi.heatmap.renderer",
    "percentiles_against": "attnmap.wsi.heatmap.scores",
    "to_percentiles": "attnmap.wsi.heatmap.scores",
    "HeatmapStyle": "attnmap.wsi.heatmap.style",
    "write_heatmap_tiff": "attnmap.wsi.heatmap.tiff",
    "write_pyramid_tiff": "attnmap.wsi.heatmap.tiff",
}

if TYPE_CHECKING:
    from attnmap.wsi.heatmap.renderer import HeatmapRenderer, render_heatmap, resolve_vis_level
    from attnmap.wsi.heatmap.scores import percentiles_against, to_percentiles
    from attnmap.wsi.heatmap.style import HeatmapStyle
    from attnmap.wsi.heatmap.tiff import write_heatmap_tiff, write_pyramid_tiff

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "HeatmapRenderer",
    "HeatmapStyle",
    "percentiles_against",
    "render_heatmap",
    "resolve_vis_level",
    "to_percentiles",
    "write_heatmap_tiff",
    "write_pyramid_tiff",
]
