"""`attnmap wsi run`: the per-slide pipeline (config, stages, drawing, stage files, cohort run).

Imported on demand only: `from attnmap.wsi import open_slide` never loads it (nor Dask).
"""

from attnmap.wsi.pipeline.cohort import run_cohort
from attnmap.wsi.pipeline.config import PipelineConfig, load_config
from attnmap.wsi.pipeline.run import STAGES, SlideOutputs, run_slide, run_slide_item, slide_complete

__all__ = [
    "STAGES",
    "PipelineConfig",
    "SlideOutputs",
    "load_config",
    "run_cohort",
    "run_slide",
    "run_slide_item",
    "slide_complete",
]
