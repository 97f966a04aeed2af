"""Whole-slide images: reading, tissue segmentation, patch grids, features, heatmaps.

The chain (see docs): `open_slide` → `segment_tissue` → `patch_grid` → features / MIL scores →
`render_heatmap` (a canvas) or `write_heatmap_tiff` (a full-resolution pyramid, streamed).
Sub-packages: `attnmap.wsi.heatmap` (renderer, scores, streaming, TIFF) and
`attnmap.wsi.pipeline` (`wsi run`: config, stages, cohort runs), the latter loaded only when used.
"""

from typing import Any

from attnmap.wsi.array_slide import ArraySlide
from attnmap.wsi.encoders import Encoder, load_encoder, register_encoder
from attnmap.wsi.features import extract_features, load_features, save_features
from attnmap.wsi.heatmap import (
    HeatmapRenderer,
    HeatmapStyle,
    percentiles_against,
    render_heatmap,
    resolve_vis_level,
    to_percentiles,
    write_heatmap_tiff,
    write_pyramid_tiff,
)
from attnmap.wsi.patching import heatmap_center_shift, patch_grid
from attnmap.wsi.scores_io import load_scores_h5, sample_patches, save_patch_samples, save_scores_h5
from attnmap.wsi.slide import Slide, open_slide
from attnmap.wsi.tissue import PRESETS, Tissue, TissuePolygon, segment_tissue

# The pipeline (and through it Dask) is imported only when one of its names is asked for.
_PIPELINE_NAMES = ("PipelineConfig", "load_config", "run_cohort", "run_slide")


def __getattr__(name: str) -> Any:
    if name in _PIPELINE_NAMES:
        from attnmap.wsi import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'attnmap.wsi' has no attribute {name!r}")


__all__ = [
    "PRESETS",
    "ArraySlide",
    "Encoder",
    "HeatmapRenderer",
    "HeatmapStyle",
    "PipelineConfig",
    "Slide",
    "Tissue",
    "TissuePolygon",
    "extract_features",
    "heatmap_center_shift",
    "load_config",
    "load_encoder",
    "load_features",
    "open_slide",
    "patch_grid",
    "percentiles_against",
    "register_encoder",
    "render_heatmap",
    "resolve_vis_level",
    "run_cohort",
    "run_slide",
    "sample_patches",
    "save_features",
    "save_patch_samples",
    "save_scores_h5",
    "segment_tissue",
    "load_scores_h5",
    "to_percentiles",
    "write_heatmap_tiff",
    "write_pyramid_tiff",
]
