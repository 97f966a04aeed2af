"""`attnmap wsi run`: the per-slide pipeline (config, stages, drawing, stage files, cohort run).

Imported on demand only: `from attnmap.wsi import open_slide` never loads it (nor Dask). Its names
are imported from their modules on first use (`attnmap.lazy_exports`), so that the configuration's
module, which ``attnmap wsi run --help`` reads its options from, comes without the stages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attnmap.lazy_exports import lazy_exports

_EXPORTS: dict[str, str] = {
    "run_cohort": "attnmap.wsi.pipeline.cohort",
    "PipelineConfig": "attnmap.wsi.pipeline.config",
    "load_config": "attnmap.wsi.pipeline.config",
    "STAGES": "attnmap.wsi.pipeline.run",
    "SlideOutputs": "attnmap.wsi.pipeline.run",
    "run_slide": "attnmap.wsi.pipeline.run",
    "run_slide_item": "attnmap.wsi.pipeline.run",
    "slide_complete": "attnmap.wsi.pipeline.run",
}

if TYPE_CHECKING:
    from attnmap.wsi.pipeline.cohort import run_cohort
    from attnmap.wsi.pipeline.config import PipelineConfig, load_config
    from attnmap.wsi.pipeline.run import STAGES, SlideOutputs, run_slide, run_slide_item, slide_complete

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

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
