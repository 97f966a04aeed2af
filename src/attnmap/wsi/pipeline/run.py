"""`attnmap wsi run`: slide → tissue → patches → features → CLAM attention → heatmaps, one slide at a time.

Each stage writes one file (atomically, with provenance) and is skipped when that file is already
there and readable, so an interrupted cohort resumes at the stage it stopped in, and rerunning a
finished cohort is free. The per-slide prediction JSON is written last: its presence means the
whole slide is done (`slide_complete`). Models are loaded once per process and reused.

Output layout under ``run.output_dir`` (CLAM's folder names where CLAM has them, so `attnmap mil
train OUT/features labels.csv` reads the features as they are)::

    tissue/<id>.json                 tissue contours (level 0) + segmentation parameters
    patches/<id>.h5                  `coords` with CLAM's attributes
    features/h5_files/<id>.h5        `features` + `coords`;  features/pt_files/<id>.pt
    heatmaps/<id>/<id>_blockmap.h5   `attention_scores` (N×1 raw) + `coords`
    heatmaps/<id>/<id>_heatmap.png   (+ _heatmap.tif, _original.png, topk/, bottomk/ if asked)
    heatmaps/<id>/<id>_prediction.json
    predictions.csv (+ .json provenance), run_report.json
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from attnmap.io_utils import write_json_atomic
from attnmap.wsi.features import resolve_device
from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry
from attnmap.wsi.pipeline.drawing import heatmap_stage, sampling_stage
from attnmap.wsi.pipeline.outputs import STAGES, SlideOutputs, slide_complete
from attnmap.wsi.pipeline.stages import (
    attention_stage,
    features_stage,
    patch_stage,
    slide_provenance,
    tissue_stage,
)

__all__ = ["STAGES", "SlideOutputs", "run_slide", "run_slide_item", "slide_complete"]


def run_slide(
    entry: SlideEntry | str | Path,
    config: PipelineConfig,
    out_dir: str | Path | None = None,
    progress: bool = False,
    on_stage: Callable[[str], None] | None = None,
) -> dict:
    """Run every stage for one slide and return its prediction row (as written to the prediction JSON).

    ``entry``: a `SlideEntry` or a slide path (its id is then the file stem). ``out_dir`` overrides
    ``config.run.output_dir``. Stages whose output exists are skipped; the result's ``stages`` says
    which ran. ``progress``: a bar over the stages (and one over feature batches); ``on_stage``
    is called with each stage's name as it finishes (finished or skipped). Raises for a
    slide that cannot be processed (the cohort runner records it).
    """
    from attnmap.wsi.slide import open_slide

    if not isinstance(entry, SlideEntry):
        entry = SlideEntry(str(entry), Path(entry).stem)
    root = Path(out_dir if out_dir is not None else config.run.output_dir)
    outputs = SlideOutputs(root, entry.slide_id)
    if slide_complete(entry, config, root):
        row = json.loads(outputs.prediction.read_text())
        row.pop("provenance", None)
        return {**row, "stages": dict.fromkeys(STAGES, False)}
    outputs.remove_temporaries()
    from tqdm.auto import tqdm

    device = str(resolve_device(config.run.device))
    stages: dict[str, bool] = {}
    with (
        open_slide(entry.path) as slide,
        tqdm(total=len(STAGES), desc=entry.slide_id, unit="stage", disable=not progress, leave=False) as bar,
    ):

        def done(stage: str, ran: bool) -> None:
            stages[stage] = bool(ran)
            bar.set_postfix_str(stage)
            bar.update(1)
            if on_stage is not None:
                on_stage(stage)

        tissue, ran = tissue_stage(slide, entry, config, outputs)
        done("tissue", ran)
        coords, ran = patch_stage(slide, tissue, entry, config, outputs)
        done("patches", ran)
        features, ran = features_stage(coords, entry, config, outputs, device, progress)
        done("features", ran)
        attention, ran = attention_stage(slide, features, coords, entry, config, outputs, device)
        done("attention", ran)
        drawn = bool(heatmap_stage(slide, tissue, attention, entry, config, outputs, device))
        if config.heatmap.fine is not None:
            from attnmap.wsi.pipeline.fine_stage import fine_stage

            drawn |= bool(fine_stage(slide, tissue, features, attention, entry, config, outputs, device))
        done("heatmap", drawn)
        done("sampling", sampling_stage(slide, attention, entry, config, outputs))
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
    write_json_atomic(
        outputs.prediction,
        {
            **row,
            "provenance": slide_provenance(
                config, entry, "clam_prediction", ("model",), model_name=Path(config.model.checkpoint).name
            ),
        },
    )
    return {**row, "stages": stages}


def run_slide_item(entry: SlideEntry, config: PipelineConfig) -> dict:
    """`run_slide` as a `run_tasks` task: output folder from the config, stages announced to the client."""
    from attnmap.parallel import report_stage

    return run_slide(entry, config, on_stage=report_stage)
