"""`attnmap wsi run CONFIG`: every listed slide through `run_slide` in parallel, then a predictions CSV.

The slides go through `attnmap.parallel.run_tasks` (dask.distributed, 1 or N workers, or an existing
cluster); a slide that fails is recorded in ``run_report.json`` and the others go on. The
predictions CSV is rebuilt from the per-slide prediction JSONs after every run, in slide-list
order, so it is the same whatever the worker count or the order slides finished in; it lists only
predictions made with this configuration's fingerprint, and its provenance names the model
checksums those files record. One run at a time holds the output folder (`attnmap.lock`).
"""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Mapping
from pathlib import Path

from attnmap.devices import resolve_device
from attnmap.errors import InputError
from attnmap.fingerprint import FINGERPRINT_KEY
from attnmap.io_utils import remove_stale_temporaries, write_csv_atomic
from attnmap.lock import folder_lock
from attnmap.parallel import ItemResult, RunReport, run_tasks
from attnmap.provenance import provenance
from attnmap.stored import DamagedOutputError, stored_record
from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry, read_slide_list
from attnmap.wsi.pipeline.fingerprint import StageFingerprints
from attnmap.wsi.pipeline.run import (
    PREDICTION_FINGERPRINT,
    STAGES,
    SlideOutputs,
    run_slide_item,
    slide_complete,
)

PREDICTION_COLUMNS = ["slide_id", "label", "prediction", "prediction_name", "n_patches", "attention_branch"]


def run_cohort(
    config: PipelineConfig,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
    force: bool = False,
    threads: int | None = None,
) -> RunReport:
    """Run the pipeline on every slide of ``config.slides.csv``; returns the run report.

    ``workers`` / ``scheduler`` override ``config.run``; ``threads``: torch threads per slide task
    (default: a machine's cores ÷ the slides it runs at once). Slides whose outputs all have this
    configuration's fingerprints are skipped (``force``: none is); half-written files of an
    interrupted earlier run are removed first. Raises `InputError` when another run holds the
    output folder. Each item's result has a one-line ``summary`` (see `slide_summaries`).
    """
    with warnings.catch_warnings(record=True) as said:  # e.g. slides at mixed resolutions
        warnings.simplefilter("always")
        entries = read_slide_list(config)
    for warning in said:  # shown as before, and kept in the run report
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    check_distinct_outputs(entries)
    scheduler = scheduler if scheduler is not None else config.run.scheduler
    if scheduler is None:  # local workers see this machine's devices: check before starting them
        resolve_device(config.run.device)
    out_dir = Path(config.run.output_dir)
    with folder_lock(out_dir, "attnmap wsi run"):
        remove_stale_temporaries(out_dir)  # only those whose writer is gone
        try:
            return _run_locked(
                config, entries, workers, scheduler, progress, force, threads, [str(w.message) for w in said]
            )
        finally:  # a stopped run's Dask workers were killed mid-write: their files go with the lock
            remove_stale_temporaries(out_dir)


def _run_locked(
    config: PipelineConfig,
    entries: list[SlideEntry],
    workers: int | None,
    scheduler: str | None,
    progress: bool,
    force: bool,
    threads: int | None,
    said: list[str],
) -> RunReport:
    out_dir = Path(config.run.output_dir)
    record = provenance(
        method="attnmap wsi run",
        parameters=config.to_dict(),
        model=config.model.checkpoint,
        model_name=Path(config.model.checkpoint).name,
    )
    workers = workers if workers is not None else config.run.workers
    in_process = scheduler is None and workers == 1  # bars of slides run elsewhere would interleave
    report = run_tasks(
        functools.partial(run_slide_item, config=config, force=force, progress=progress and in_process),
        entries,
        workers=workers,
        scheduler=scheduler,
        report=out_dir / "run_report.json",
        desc="slides",
        is_complete=None if force else functools.partial(slide_complete, config=config),
        progress=progress,
        provenance=record,
        stages=STAGES,
        threads=threads,
        warnings=said,
    )
    made = {
        entry.slide_id: item.result[PREDICTION_FINGERPRINT]
        for entry, item in zip(entries, report.items, strict=True)
        if item.status == "done" and isinstance(item.result, dict) and PREDICTION_FINGERPRINT in item.result
    }
    write_predictions(config, entries, made)
    return report


def check_distinct_outputs(entries: list[SlideEntry]) -> None:
    """Refuse, before any work, slide ids that would share output files (e.g. ``A`` and ``a`` on a
    case-insensitive disk, where the slide list's own duplicate check does not see them)."""
    seen: dict[str, str] = {}
    for entry in entries:
        key = entry.slide_id.casefold()
        if key in seen:
            raise InputError(
                f"slides {seen[key]!r} and {entry.slide_id!r} would write the same output files; "
                "give them distinct slide_id values"
            )
        seen[key] = entry.slide_id


def slide_summaries(report: RunReport, entries: list[SlideEntry]) -> list[str]:
    """One line per slide: what was reused and what recomputed (and why), or why it failed."""
    lines = [slide_line(entry.slide_id, item) for entry, item in zip(entries, report.items, strict=True)]
    return [line for line in lines if line]


def slide_line(slide_id: str, item: ItemResult) -> str:
    """One slide's line (`slide_summaries`): its result's ``summary``, or why it failed. Shared with
    the single-stage commands (`attnmap.cli.wsi_stages`), so a failure reads alike in both."""
    if item.status == "skipped":
        return f"{slide_id}: reused all stages"
    if item.status == "done":
        return str((item.result or {}).get("summary", f"{slide_id}: done"))
    if item.status == "failed":
        return f"{slide_id}: failed: {item.error_type}: {item.message}"
    return ""


def failure_lines(report: RunReport) -> list[str]:
    """What a command says last (on stderr) when some of its slides failed: how many of how many,
    then each failure with its slide file."""
    failed = report.failed
    lines = [f"{len(failed)} of {len(report.items)} slides failed: "
             + ", ".join(entry.item_id or entry.item for entry in failed)]
    return lines + [f"  failed: {entry.item}: {entry.error_type}: {entry.message}" for entry in failed]


def write_predictions(
    config: PipelineConfig, entries: list[SlideEntry], made: Mapping[str, str] | None = None
) -> Path:
    """``predictions.csv`` (one row per finished slide, slide-list order) + ``predictions.csv.json``.

    ``made``: {slide id: prediction fingerprint} of the slides this run's tasks finished under this
    configuration (`run_slide`'s `PREDICTION_FINGERPRINT`). Their files are taken when they carry that
    fingerprint, without recomputing it: here, after the last task, that would open every slide
    and read its patch and feature files again while the workers sit idle.
    """
    made = made or {}
    out_dir = Path(config.run.output_dir)
    n_classes = 0
    rows_json = []
    models: dict[str, list[str]] = {}
    for entry in entries:
        if entry.slide_id not in made and not Path(entry.path).is_file():
            continue  # a slide gone: it failed this run, and its earlier prediction is not listed
        path = SlideOutputs(out_dir, entry.slide_id).prediction
        try:
            stored = stored_record(path)
        except DamagedOutputError:
            continue
        if stored is None:
            continue
        if entry.slide_id in made:
            if stored.get(FINGERPRINT_KEY) != made[entry.slide_id]:
                continue  # rewritten since its task finished (not by this run)
        elif StageFingerprints(entry, config).prediction.changes(stored) is not None:
            continue  # not made by this configuration (e.g. the slide failed this time): not listed
        row = json.loads(path.read_text())
        rows_json.append(row)
        n_classes = max(n_classes, len(row["probabilities"]))
        models.setdefault(str(row["provenance"].get("model_sha256", "")), []).append(entry.slide_id)
    header = PREDICTION_COLUMNS + [f"p_{index}" for index in range(n_classes)]
    rows = [[row[column] for column in PREDICTION_COLUMNS] + list(row["probabilities"]) for row in rows_json]
    record = provenance(
        method="clam_prediction",
        parameters=config.stage_parameters("model", "features"),
        model_name=Path(config.model.checkpoint).name,
        model_sha256=",".join(sorted(models)),  # what the listed files record: one checksum normally
        n_slides=len(rows),
    )
    return write_csv_atomic(out_dir / "predictions.csv", header, rows, provenance=record)
