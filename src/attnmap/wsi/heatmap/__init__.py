"""Heatmaps of patch scores over a slide: the drawing options (`style`), colour table and score
normalisation (`scores`), the canvas renderer (`renderer`), tile streaming (`stream`) and the
pyramidal TIFF writer (`tiff`)."""

from attnmap.wsi.heatmap.renderer import HeatmapRenderer, render_heatmap, resolve_vis_level
from attnmap.wsi.heatmap.scores import percentiles_against, to_percentiles
from attnmap.wsi.heatmap.style import HeatmapStyle
from attnmap.wsi.heatmap.tiff import write_heatmap_tiff, write_pyramid_tiff

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
