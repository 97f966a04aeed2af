"""`attnmap wsi run CONFIG`: every listed slide through `run_slide` in parallel, then a predictions CSV.

The slides go through `attnmap.parallel.run_tasks` (dask.distributed, 1 or N workers, or an existing
cluster); a slide that fails is recorded in ``run_report.json`` and the others go on. The
predictions CSV is rebuilt from the per-slide prediction JSONs after every run, in slide-list
order, so it is the same whatever the worker count or the order slides finished in.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from attnmap.io_utils import remove_stale_temporaries, write_csv_atomic
from attnmap.parallel import RunReport, run_tasks
from attnmap.provenance import model_checksum, provenance
from attnmap.wsi.features import resolve_device
from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry, read_slide_list
from attnmap.wsi.pipeline.run import STAGES, SlideOutputs, run_slide_item, slide_complete

PREDICTION_COLUMNS = ["slide_id", "label", "prediction", "prediction_name", "n_patches", "attention_branch"]


def run_cohort(
    config: PipelineConfig,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    threads: int | None = None,
) -> RunReport:
    """Run the pipeline on every slide of ``config.slides.csv``; returns the run report.

    ``workers`` / ``scheduler`` override ``config.run``; ``threads``: torch threads per slide task
    (default: a machine's cores ÷ the slides it runs at once). Finished slides are skipped; half-written
    files of an interrupted earlier run are removed first.
    """
    entries = read_slide_list(config)
    scheduler = scheduler if scheduler is not None else config.run.scheduler
    if scheduler is None:  # local workers see this machine's devices: check before starting them
        resolve_device(config.run.device)
    out_dir = Path(config.run.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)  # no task runs yet, so every temporary file is a leftover
    record = provenance(
        method="attnmap wsi run",
        parameters=config.to_dict(),
        model=config.model.checkpoint,
        model_name=Path(config.model.checkpoint).name,
    )
    report = run_tasks(
        functools.partial(run_slide_item, config=config),
        entries,
        workers=workers if workers is not None else config.run.workers,
        scheduler=scheduler,
        report=out_dir / "run_report.json",
        desc="slides",
        is_complete=functools.partial(slide_complete, config=config),
        progress=progress,
        provenance=record,
        stages=STAGES,
        threads=threads,
    )
    write_predictions(config, entries)
    return report


def write_predictions(config: PipelineConfig, entries: list[SlideEntry]) -> Path:
    """``predictions.csv`` (one row per finished slide, slide-list order) + ``predictions.csv.json``."""
    out_dir = Path(config.run.output_dir)
    n_classes = 0
    rows_json = []
    for entry in entries:
        path = SlideOutputs(out_dir, entry.slide_id).prediction
        if path.is_file():
            row = json.loads(path.read_text())
            rows_json.append(row)
            n_classes = max(n_classes, len(row["probabilities"]))
    header = PREDICTION_COLUMNS + [f"p_{index}" for index in range(n_classes)]
    rows = [[row[column] for column in PREDICTION_COLUMNS] + list(row["probabilities"]) for row in rows_json]
    record = provenance(
        method="clam_prediction",
        parameters=config.stage_parameters("model", "features"),
        model_name=Path(config.model.checkpoint).name,
        model_sha256=model_checksum(config.model.checkpoint),
        n_slides=len(rows),
    )
    return write_csv_atomic(out_dir / "predictions.csv", header, rows, provenance=record)
