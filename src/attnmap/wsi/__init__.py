"""Whole-slide images: reading, tissue segmentation, patch grids, heatmaps, pyramidal TIFFs.

The chain (see docs): `open_slide` → `segment_tissue` → `patch_grid` → features / MIL scores →
`render_heatmap` (a canvas) or `write_heatmap_tiff` (a full-resolution pyramid, streamed).
"""

from attnmap.wsi.cohort_run import run_cohort
from attnmap.wsi.encoders import Encoder, load_encoder, register_encoder
from attnmap.wsi.features import extract_features, load_features, save_features
from attnmap.wsi.heatmap import HeatmapRenderer, render_heatmap, resolve_vis_level
from attnmap.wsi.heatmap_scores import percentiles_against, to_percentiles
from attnmap.wsi.patching import heatmap_center_shift, patch_grid
from attnmap.wsi.pipeline import run_slide
from attnmap.wsi.pipeline_config import PipelineConfig, load_config
from attnmap.wsi.scores_io import load_scores_h5, sample_patches, save_patch_samples, save_scores_h5
from attnmap.wsi.slide import ArraySlide, Slide, open_slide
from attnmap.wsi.tiff_writer import write_heatmap_tiff, write_pyramid_tiff
from attnmap.wsi.tissue import PRESETS, Tissue, TissuePolygon, segment_tissue

__all__ = [
    "PRESETS",
    "ArraySlide",
    "HeatmapRenderer",
    "Slide",
    "Tissue",
    "TissuePolygon",
    "heatmap_center_shift",
    "load_scores_h5",
    "open_slide",
    "patch_grid",
    "percentiles_against",
    "render_heatmap",
    "resolve_vis_level",
    "sample_patches",
    "save_patch_samples",
    "save_scores_h5",
    "segment_tissue",
    "to_percentiles",
    "write_heatmap_tiff",
    "write_pyramid_tiff",
    "Encoder",
    "PipelineConfig",
    "extract_features",
    "load_config",
    "load_encoder",
    "load_features",
    "register_encoder",
    "run_cohort",
    "run_slide",
    "save_features",
]
