"""`attnmap wsi run`: slide → tissue → patches → features → CLAM attention → heatmaps, one slide at a time.

Each stage writes one file (atomically, with provenance and a fingerprint of what made it) and is
skipped when that file is intact and has this configuration's fingerprint, so an interrupted
cohort resumes at the stage it stopped in, a changed input or parameter recomputes exactly the
stages it affects, and rerunning a finished cohort is free. The per-slide prediction JSON is
written last. Models are loaded once per process and reused.

Output layout under ``run.output_dir`` (CLAM's folder names where CLAM has them, so `attnmap mil
train OUT/features labels.csv` reads the features as they are)::

    tissue/<id>.json                 tissue contours (level 0) + segmentation parameters
    patches/<id>.h5                  `coords` with CLAM's attributes
    features/h5_files/<id>.h5        `features` + `coords`;  features/pt_files/<id>.pt
    heatmaps/<id>/<id>_blockmap.h5   `attention_scores` (N×1 raw) + `coords`
    heatmaps/<id>/<id>_heatmap.png   (+ _heatmap.tif, _original.png, topk/, bottomk/ if asked); its text
                                     chunks heatmap_box / heatmap_level0_box map its pixels to level 0
    heatmaps/<id>/<id>_prediction.json
    heatmaps/<id>/<id>_scores.geojson  QuPath detections per patch, if ``export: geojson: true``
    heatmaps/<id>/<id>_fine_maps.h5   the fine maps, if ``heatmap.fine`` is set (+ _fine_gallery.png,
                                       _heatmap_fine.tif with ``heatmap.tiff``)
    predictions.csv (+ .json provenance), run_report.json
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

from attnmap.devices import resolve_device
from attnmap.errors import InputError
from attnmap.io_utils import write_json_atomic
from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry
from attnmap.wsi.pipeline.drawing import heatmap_stage, sampling_stage
from attnmap.wsi.pipeline.fingerprint import StageFingerprints
from attnmap.wsi.pipeline.outputs import (
    STAGES,
    SlideOutputs,
    describe_reasons,
    export_reason,
    remove_stale_outputs,
    slide_complete,
    stage_reasons,
)
from attnmap.wsi.pipeline.slide_list import check_slide
from attnmap.wsi.pipeline.stages import (
    attention_stage,
    features_stage,
    patch_stage,
    slide_provenance,
    tissue_stage,
)

__all__ = ["STAGES", "SlideOutputs", "run_slide", "run_slide_item", "slide_complete"]

PREDICTION_FINGERPRINT = "prediction_fingerprint"
"""Key of `run_slide`'s result holding the fingerprint its prediction JSON was written (or checked)
with: the cohort's predictions CSV takes that file without recomputing the slide's fingerprints."""


def run_slide(
    entry: SlideEntry | str | Path,
    config: PipelineConfig,
    out_dir: str | Path | None = None,
    progress: bool = False,
    on_stage: Callable[[str], None] | None = None,
    force: bool = False,
) -> dict:
    """Run every stage for one slide and return its prediction row (as written to the prediction JSON).

    ``entry``: a `SlideEntry` or a slide path (its id is then the file stem). ``out_dir`` overrides
    ``config.run.output_dir``. Stages whose output is intact and has this configuration's
    fingerprint are reused; the result's ``stages`` says which ran, ``reasons`` why, ``summary``
    both in one line, `PREDICTION_FINGERPRINT` the prediction's fingerprint. ``force``: recompute
    every stage. ``progress``: a bar over the stages (and one over feature batches); ``on_stage``
    is called with each stage's name as it finishes (finished or skipped). Raises for a slide that
    cannot be processed (the cohort runner records it).
    """
    from attnmap.wsi.slide import open_slide
    from attnmap.wsi.slide_files import slide_name

    if not isinstance(entry, SlideEntry):
        entry = SlideEntry(str(entry), slide_name(Path(entry)))
    root = Path(out_dir if out_dir is not None else config.run.output_dir)
    if not Path(entry.path).exists():  # gone since the slide list was read, or since the last run:
        raise InputError(f"slide file not found: {entry.path}")  # its earlier outputs are kept
    outputs = SlideOutputs(root, entry.slide_id)
    prints = StageFingerprints(entry, config, root)
    before = stage_reasons(entry, config, root, prints)  # why, said before stale files are removed
    if not force and all(reason is None for reason in before.values()):
        row = json.loads(outputs.prediction.read_text())
        row.pop("provenance", None)
        reasons = dict.fromkeys(STAGES)
        return {
            **row,
            "stages": dict.fromkeys(STAGES, False),
            "reasons": reasons,
            "summary": describe_reasons(entry.slide_id, reasons),
            PREDICTION_FINGERPRINT: prints.prediction.value,
        }
    outputs.remove_temporaries()
    if force:
        _remove_outputs(outputs)
    else:  # nothing of an earlier configuration may outlive a failure or an interruption below
        remove_stale_outputs(outputs, prints, config)
    from tqdm.auto import tqdm

    device = str(resolve_device(config.run.device))
    stages: dict[str, bool] = {}
    reasons: dict[str, str | None] = {}
    with (
        open_slide(entry.path) as slide,
        tqdm(total=len(STAGES), desc=entry.slide_id, unit="stage", disable=not progress, leave=False) as bar,
    ):
        # what the list's check left to this slide (a level only it lacks): its own one-line failure
        check_slide(config, entry, slide)

        def done(stage: str, reason: str | None) -> None:
            stages[stage] = reason is not None
            if reason is not None:
                reason = "forced" if force else (before.get(stage) or reason)
            reasons[stage] = reason
            bar.set_postfix_str(stage)
            bar.update(1)
            if on_stage is not None:
                on_stage(stage)

        tissue, reason = tissue_stage(slide, entry, config, outputs, prints, progress=progress)
        done("tissue", reason)
        coords, reason = patch_stage(slide, tissue, entry, config, outputs, prints, progress)
        done("patches", reason)
        features, reason = features_stage(coords, entry, config, outputs, device, progress, prints)
        done("features", reason)
        attention, reason = attention_stage(slide, features, coords, entry, config, outputs, device, prints)
        done("attention", reason)
        drawn = heatmap_stage(slide, tissue, attention, entry, config, outputs, device, prints, progress)
        if config.heatmap.fine is not None:
            from attnmap.wsi.pipeline.fine_stage import fine_stage

            fine = fine_stage(slide, tissue, features, attention, entry, config, outputs, device, prints,
                              progress)
            drawn = drawn or (f"fine maps: {', '.join(fine)}" if fine else None)
        done("heatmap", drawn)
        done("sampling", sampling_stage(slide, attention, entry, config, outputs, prints))
    reasons["prediction"] = "forced" if force else before["prediction"]
    reasons["removed"] = before["removed"]
    names = config.model.class_names
    prediction = attention["prediction"]
    row = {
        "slide_id": entry.slide_id,
        "slide_path": entry.path,
        "label": entry.label,
        "n_patches": int(len(coords)),
        "prediction": prediction,
        "prediction_name": names[prediction] if prediction < len(names) else str(prediction),
        "probabilities": [float(p) for p in attention["probs"]],
        "attention_branch": int(attention["branch"]),
    }
    reasons["export"] = "forced" if force and config.export.geojson else before["export"]
    if config.export.geojson and export_reason(outputs, prints, config) is not None:
        from attnmap.wsi.qupath import export_blockmap_geojson

        tissue_file = outputs.tissue if config.export.geojson_tissue else False
        export_blockmap_geojson(outputs.named("blockmap.h5"), outputs.named("scores.geojson"),
                                tissue_file, class_name=row["prediction_name"], progress=progress)
        record = slide_provenance(config, entry, "qupath_geojson", ("model", "export"),
                                  model_name=Path(config.model.checkpoint).name,
                                  model_sha256=attention["model_sha256"])
        record.update(prints.export.record())
        from attnmap.file_hash import content_sha256

        record["geojson_sha256"] = content_sha256(outputs.named("scores.geojson"))  # the file checked
        write_json_atomic(outputs.named("scores.geojson.json"), {"provenance": record})
    write_json_atomic(
        outputs.prediction,
        {
            **row,
            "provenance": {
                **slide_provenance(
                    config,
                    entry,
                    "clam_prediction",
                    ("model",),
                    model_name=Path(config.model.checkpoint).name,
                    model_sha256=attention["model_sha256"],
                ),
                **prints.prediction.record(),
            },
        },
    )
    return {
        **row,
        "stages": stages,
        "reasons": reasons,
        "summary": describe_reasons(entry.slide_id, reasons),
        PREDICTION_FINGERPRINT: prints.prediction.value,
    }


def _remove_outputs(outputs: SlideOutputs) -> None:
    """``--force``: delete the slide's finished outputs, so that every stage is made again.

    Patch and feature files attnmap did not write (CLAM's, brought by the user) are inputs: kept.
    """
    import shutil

    from attnmap.provenance import sidecar_path
    from attnmap.stored import DamagedOutputError, stored_record

    for path in (outputs.tissue, outputs.patches, outputs.features_h5, outputs.features_pt):
        if not path.is_file():
            continue
        try:
            record = stored_record(path) if path.suffix == ".h5" else {"attnmap_version": ""}
        except DamagedOutputError:
            record = {"attnmap_version": ""}
        if record is not None and "attnmap_version" in record:
            path.unlink()
    sidecar_path(outputs.features_pt).unlink(missing_ok=True)  # the .pt's record goes with it
    if outputs.heatmap_dir.is_dir():
        shutil.rmtree(outputs.heatmap_dir)


def slide_plan(entry: SlideEntry, config: PipelineConfig, out_dir: str | Path | None = None) -> str:
    """The one-line summary of what `run_slide` would reuse and recompute for ``entry``."""
    return describe_reasons(entry.slide_id, stage_reasons(entry, config, out_dir))


def run_slide_item(
    entry: SlideEntry, config: PipelineConfig, force: bool = False, progress: bool = False
) -> dict:
    """`run_slide` as a `run_tasks` task: output folder from the config, stages announced to the
    client; ``progress``: the slide's own bars (a big slide's stages take minutes each)."""
    from attnmap.parallel import report_stage
    from attnmap.wsi.annotations import AnnotationFileWarning

    with warnings.catch_warnings():  # the cohort's slide list check has shown each ROI file's warnings
        warnings.simplefilter("ignore", AnnotationFileWarning)
        return run_slide(entry, config, on_stage=report_stage, force=force, progress=progress)
