"""Whole-slide images: reading, tissue segmentation, patch grids, features, heatmaps.

The chain (see docs): `open_slide` → `segment_tissue` → `patch_grid` → features / MIL scores →
`render_heatmap` (a canvas) or `write_heatmap_tiff` (a full-resolution pyramid, streamed).
Sub-packages: `attnmap.wsi.heatmap` (renderer, scores, streaming, TIFF) and
`attnmap.wsi.pipeline` (`wsi run`: config, stages, cohort runs).

Every name is imported from its module on first use (`attnmap.lazy_exports`): importing one light
module of the package (the configuration's, for ``attnmap wsi run --help``) does not import OpenCV,
torch and timm with all the others, and the pipeline (and through it Dask) stays unloaded until used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attnmap.lazy_exports import lazy_exports

_EXPORTS: dict[str, str] = {
    "ArraySlide": "attnmap.wsi.array_slide",
    "Encoder": "attnmap.wsi.encoders",
    "load_encoder": "attnmap.wsi.encoders",
    "register_encoder": "attnmap.wsi.encoders",
    "extract_features": "attnmap.wsi.features",
    "load_features": "attnmap.wsi.features",
    "save_features": "attnmap.wsi.features",
    "HeatmapRenderer": "attnmap.wsi.heatmap",
    "HeatmapStyle": "attnmap.wsi.heatmap",
    "percentiles_against": "attnmap.wsi.heatmap",
    "render_heatmap": "attnmap.wsi.heatmap",
    "resolve_vis_level": "attnmap.wsi.heatmap",
    "to_percentiles": "attnmap.wsi.heatmap",
    "write_heatmap_tiff": "attnmap.wsi.heatmap",
    "write_pyramid_tiff": "attnmap.wsi.heatmap",
    "heatmap_center_shift": "attnmap.wsi.patching",
    "patch_grid": "attnmap.wsi.patching",
    "load_scores_h5": "attnmap.wsi.scores_io",
    "sample_patches": "attnmap.wsi.scores_io",
    "save_patch_samples": "attnmap.wsi.scores_io",
    "save_scores_h5": "attnmap.wsi.scores_io",
    "Slide": "attnmap.wsi.slide",
    "open_slide": "attnmap.wsi.slide",
    "PRESETS": "attnmap.wsi.tissue",
    "Tissue": "attnmap.wsi.tissue",
    "TissuePolygon": "attnmap.wsi.tissue",
    "segment_tissue": "attnmap.wsi.tissue",
    "PipelineConfig": "attnmap.wsi.pipeline",
    "load_config": "attnmap.wsi.pipeline",
    "run_cohort": "attnmap.wsi.pipeline",
    "run_slide": "attnmap.wsi.pipeline",
}

if TYPE_CHECKING:
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
    from attnmap.wsi.pipeline import PipelineConfig, load_config, run_cohort, run_slide
    from attnmap.wsi.scores_io import load_scores_h5, sample_patches, save_patch_samples, save_scores_h5
    from attnmap.wsi.slide import Slide, open_slide
    from attnmap.wsi.tissue import PRESETS, Tissue, TissuePolygon, segment_tissue

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

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
