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

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnmap.errors import InputError
from attnmap.io_utils import TEMP_MARKER, atomic_path, remove_stale_temporaries, save_png, write_json_atomic
from attnmap.provenance import model_checksum, provenance
from attnmap.wsi.features import extract_features, features_complete, load_features, resolve_device, save_features
from attnmap.wsi.pipeline_config import PipelineConfig, SlideEntry
from attnmap.wsi.stage_files import (
    blockmap_complete,
    load_blockmap,
    load_coords,
    load_tissue,
    save_blockmap,
    save_coords,
    save_tissue,
)


STAGES = ("tissue", "patches", "features", "attention", "heatmap", "sampling")


@dataclass(frozen=True)
class SlideOutputs:
    """Every file `run_slide` writes for one slide."""

    root: Path
    slide_id: str

    @property
    def tissue(self) -> Path:
        return self.root / "tissue" / f"{self.slide_id}.json"

    @property
    def patches(self) -> Path:
        return self.root / "patches" / f"{self.slide_id}.h5"

    @property
    def features_h5(self) -> Path:
        return self.root / "features" / "h5_files" / f"{self.slide_id}.h5"

    @property
    def features_pt(self) -> Path:
        return self.root / "features" / "pt_files" / f"{self.slide_id}.pt"

    @property
    def heatmap_dir(self) -> Path:
        return self.root / "heatmaps" / self.slide_id

    def named(self, suffix: str) -> Path:
        return self.heatmap_dir / f"{self.slide_id}_{suffix}"

    @property
    def prediction(self) -> Path:
        return self.named("prediction.json")

    def remove_temporaries(self) -> None:
        """Delete what an interrupted run of this slide left half-written (only this slide's files)."""
        remove_stale_temporaries(self.heatmap_dir)
        for folder in (self.tissue.parent, self.patches.parent, self.features_h5.parent, self.features_pt.parent):
            if folder.is_dir():
                for leftover in folder.glob(f".{self.slide_id}{TEMP_MARKER}*"):
                    leftover.unlink(missing_ok=True)


def slide_complete(entry: SlideEntry, config: PipelineConfig, out_dir: str | Path | None = None) -> bool:
    """Whether every stage of ``entry`` is done (its prediction JSON, written last, exists)."""
    outputs = SlideOutputs(Path(out_dir if out_dir is not None else config.run.output_dir), entry.slide_id)
    return outputs.prediction.is_file() and outputs.named("heatmap.png").is_file()


# ----------------------------------------------------------------------------------- cached models
@functools.lru_cache(maxsize=4)
def _encoder(name: str, checkpoint: str | None, input_size: int | None, seed: int, device: str) -> Any:
    from attnmap.wsi.encoders import load_encoder

    encoder = load_encoder(name, checkpoint, device=device, seed=seed, input_size=input_size)
    return encoder, model_checksum(checkpoint) if checkpoint else model_checksum(encoder.model)


@functools.lru_cache(maxsize=4)
def _clam(checkpoint: str, device: str) -> Any:
    from attnmap.mil import load_clam

    return load_clam(checkpoint).to(device).eval(), model_checksum(checkpoint)


def _slide_provenance(config: PipelineConfig, entry: SlideEntry, method: str, sections: tuple[str, ...],
                      **extra: object) -> dict[str, str]:
    return provenance(method=method, parameters=config.stage_parameters(*sections), slide=Path(entry.path).name,
                      slide_id=entry.slide_id, **extra)


# ----------------------------------------------------------------------------------- stages
def _tissue_stage(slide: Any, entry: SlideEntry, config: PipelineConfig, outputs: SlideOutputs) -> tuple[Any, bool]:
    from attnmap.wsi.tissue import segment_tissue

    if outputs.tissue.is_file():
        try:
            return load_tissue(outputs.tissue), False
        except (InputError, ValueError, KeyError):
            pass  # unreadable: segment again
    seg = config.segmentation
    tissue = segment_tissue(slide, level=seg.level, sthresh=seg.sthresh, mthresh=seg.mthresh, close=seg.close,
                            use_otsu=seg.use_otsu, a_t=seg.a_t, a_h=seg.a_h, max_n_holes=seg.max_n_holes,
                            preset=seg.preset)
    save_tissue(outputs.tissue, tissue, _slide_provenance(config, entry, "segment_tissue", ("segmentation",)))
    return tissue, True


def _patch_stage(slide: Any, tissue: Any, entry: SlideEntry, config: PipelineConfig,
                 outputs: SlideOutputs) -> tuple[np.ndarray, bool]:
    from attnmap.wsi.patching import patch_grid

    coords = load_coords(outputs.patches)
    if coords is not None:
        return coords, False
    p = config.patching
    coords = patch_grid(slide, tissue, patch_size=p.patch_size, step=p.step or p.patch_size, level=p.level,
                        contour_check=p.contour_check, padding=p.padding)
    if len(coords) == 0:
        raise InputError(f"no tissue patches found on {entry.path}: check the segmentation parameters")
    save_coords(outputs.patches, coords, slide, p.patch_size, p.level, entry.slide_id,
                _slide_provenance(config, entry, "patch_grid", ("segmentation", "patching")))
    return coords, True


def _features_stage(coords: np.ndarray, entry: SlideEntry, config: PipelineConfig, outputs: SlideOutputs,
                    device: str, progress: bool = False) -> tuple[np.ndarray, bool]:
    f = config.features
    if features_complete(outputs.features_h5, n_patches=len(coords)):
        features, stored = load_features(outputs.features_h5)
        if np.array_equal(stored, coords):
            return features, False
    encoder, checksum = _encoder(f.encoder, f.checkpoint, f.input_size, f.seed, device)
    features = extract_features(entry.path, coords, encoder, patch_size=config.patching.patch_size,
                                level=config.patching.level, batch_size=f.batch_size, num_workers=f.num_workers,
                                device=device, progress=progress)
    record = _slide_provenance(config, entry, "extract_features", ("patching", "features"),
                               model_sha256=checksum, model_name=f.encoder)
    save_features(outputs.features_h5, features, coords, record, outputs.features_pt if f.save_pt else None)
    return features, True


def _attention_stage(features: np.ndarray, coords: np.ndarray, entry: SlideEntry, config: PipelineConfig,
                     outputs: SlideOutputs, device: str) -> tuple[dict[str, Any], bool]:
    """Prediction and raw attention of the predicted class's branch (CLAM's heatmap choice)."""
    path = outputs.named("blockmap.h5")
    if blockmap_complete(path, len(coords)):
        stored = load_blockmap(path)
        if np.array_equal(stored["coords"], coords):
            return stored, False
    from attnmap.mil import infer_bag

    model, checksum = _clam(config.model.checkpoint, device)
    bag = infer_bag(model, features)
    result = {
        "coords": coords,
        "scores": np.asarray(bag.scores("raw"), dtype=np.float64),
        "prediction": int(bag.prediction),
        "probs": np.asarray(bag.probs, dtype=np.float64).reshape(-1),
        "branch": bag.branch_for(None),
    }
    record = _slide_provenance(config, entry, "clam_attention_raw", ("model",), model_sha256=checksum,
                               model_name=Path(config.model.checkpoint).name, branch=result["branch"])
    save_blockmap(path, result, record)
    return result, True


def _draw(slide: Any, tissue: Any, coords: np.ndarray, scores: np.ndarray, config: PipelineConfig,
          reference: np.ndarray | None) -> np.ndarray:
    from attnmap.wsi.heatmap import render_heatmap

    h = config.heatmap
    level0_patch = int(round(config.patching.patch_size * slide.level_downsamples[config.patching.level]))
    return render_heatmap(slide, coords, scores, patch_size=level0_patch, vis_level=h.vis_level,
                          tissue=tissue if h.use_tissue_mask else None, cmap=h.cmap, alpha=h.alpha,
                          percentiles=h.percentiles, reference_scores=reference, overlap=h.overlap, blur=h.blur,
                          binarize=h.binarize, threshold=h.threshold, blank_canvas=h.blank_canvas,
                          downscale=h.downscale)


def _overlap_scores(slide: Any, tissue: Any, entry: SlideEntry, config: PipelineConfig, outputs: SlideOutputs,
                    device: str) -> tuple[np.ndarray, np.ndarray]:
    """Raw attention on CLAM's heatmap-time grid (overlapping, four_pt_hard, centre shift)."""
    from attnmap.mil import infer_bag
    from attnmap.wsi.patching import heatmap_center_shift, patch_grid

    path = outputs.named("overlap_blockmap.h5")
    p, h = config.patching, config.heatmap
    step = max(1, int(p.patch_size * (1.0 - h.overlap)))
    coords = patch_grid(slide, tissue, patch_size=p.patch_size, step=step, level=p.level,
                        contour_check="four_pt_hard", padding=p.padding, center_shift=heatmap_center_shift(h.overlap))
    if blockmap_complete(path, len(coords)):
        stored = load_blockmap(path)
        if np.array_equal(stored["coords"], coords):
            return coords, stored["scores"]
    f = config.features
    encoder, encoder_checksum = _encoder(f.encoder, f.checkpoint, f.input_size, f.seed, device)
    features = extract_features(entry.path, coords, encoder, patch_size=p.patch_size, level=p.level,
                                batch_size=f.batch_size, num_workers=f.num_workers, device=device, progress=False)
    model, checksum = _clam(config.model.checkpoint, device)
    bag = infer_bag(model, features)
    scores = np.asarray(bag.scores("raw", branch=None), dtype=np.float64)
    record = _slide_provenance(config, entry, "clam_attention_raw_overlap", ("patching", "features", "model"),
                               model_sha256=checksum, encoder_sha256=encoder_checksum, overlap=h.overlap)
    save_blockmap(path, {"coords": coords, "scores": scores, "prediction": int(bag.prediction),
                         "probs": np.asarray(bag.probs, dtype=np.float64).reshape(-1),
                         "branch": bag.branch_for(None)}, record)
    return coords, scores


def _heatmap_stage(slide: Any, tissue: Any, attention: dict[str, Any], entry: SlideEntry, config: PipelineConfig,
                   outputs: SlideOutputs, device: str) -> list[str]:
    """The heatmap PNG (and the original and the pyramidal TIFF overlay if asked); returns what it wrote."""
    written: list[str] = []
    h = config.heatmap
    record = _slide_provenance(config, entry, "clam_heatmap", ("patching", "features", "model", "heatmap"))
    png, tiff = outputs.named("heatmap.png"), outputs.named("heatmap.tif")
    if not png.is_file() or (h.tiff and not tiff.is_file()):
        if h.overlap > 0:
            coords, scores = _overlap_scores(slide, tissue, entry, config, outputs, device)
            reference = attention["scores"]
        else:
            coords, scores, reference = attention["coords"], attention["scores"], None
        if h.tiff and not tiff.is_file():
            from attnmap.wsi.tiff_writer import write_heatmap_tiff

            level0_patch = int(round(config.patching.patch_size * slide.level_downsamples[config.patching.level]))
            with atomic_path(tiff) as temporary:
                write_heatmap_tiff(temporary, slide, coords, scores, patch_size=level0_patch, level=h.tiff_level,
                                   tissue=tissue if h.use_tissue_mask else None, cmap=h.cmap, alpha=h.alpha,
                                   percentiles=h.percentiles, reference_scores=reference, overlap=h.overlap,
                                   blur=h.blur, binarize=h.binarize, threshold=h.threshold,
                                   blank_canvas=h.blank_canvas, metadata=record, progress=False)
            written.append(tiff.name)
        if not png.is_file():
            save_png(png, _draw(slide, tissue, coords, scores, config, reference), record)
            written.append(png.name)
    if h.save_original and not outputs.named("original.png").is_file():
        from attnmap.wsi.heatmap import resolve_vis_level

        level = resolve_vis_level(slide, h.vis_level)
        save_png(outputs.named("original.png"), slide.read_region((0, 0), level, slide.level_dimensions[level]),
                 record)
        written.append(outputs.named("original.png").name)
    return written


def _sampling_stage(slide: Any, attention: dict[str, Any], entry: SlideEntry, config: PipelineConfig,
                    outputs: SlideOutputs) -> bool:
    s = config.sampling
    marker = outputs.named("samples.json")
    if (s.top_k == 0 and s.bottom_k == 0) or marker.is_file():
        return False
    from attnmap.wsi.scores_io import save_patch_samples

    record = _slide_provenance(config, entry, "clam_attention_samples", ("patching", "model", "sampling"))
    written = save_patch_samples(slide, attention["coords"], attention["scores"], outputs.heatmap_dir,
                                 patch_size=config.patching.patch_size, level=config.patching.level,
                                 top_k=s.top_k, bottom_k=s.bottom_k, metadata=record)
    write_json_atomic(marker, {"provenance": record, "files": sorted(str(Path(p).relative_to(outputs.heatmap_dir))
                                                                     for p in written)})
    return True


def run_slide(entry: SlideEntry | str | Path, config: PipelineConfig, out_dir: str | Path | None = None,
              progress: bool = False) -> dict:
    """Run every stage for one slide and return its prediction row (as written to the prediction JSON).

    ``entry``: a `SlideEntry` or a slide path (its id is then the file stem). ``out_dir`` overrides
    ``config.run.output_dir``. Stages whose output exists are skipped; the result's ``stages`` says
    which ran. ``progress``: a bar over the stages (and one over feature batches). Raises for a
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
    with open_slide(entry.path) as slide, tqdm(total=len(STAGES), desc=entry.slide_id, unit="stage",
                                               disable=not progress, leave=False) as bar:

        def done(stage: str, ran: bool) -> None:
            stages[stage] = bool(ran)
            bar.set_postfix_str(stage)
            bar.update(1)

        tissue, ran = _tissue_stage(slide, entry, config, outputs)
        done("tissue", ran)
        coords, ran = _patch_stage(slide, tissue, entry, config, outputs)
        done("patches", ran)
        features, ran = _features_stage(coords, entry, config, outputs, device, progress)
        done("features", ran)
        attention, ran = _attention_stage(features, coords, entry, config, outputs, device)
        done("attention", ran)
        done("heatmap", bool(_heatmap_stage(slide, tissue, attention, entry, config, outputs, device)))
        done("sampling", _sampling_stage(slide, attention, entry, config, outputs))
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
    write_json_atomic(outputs.prediction, {**row, "provenance": _slide_provenance(
        config, entry, "clam_prediction", ("model",), model_name=Path(config.model.checkpoint).name)})
    return {**row, "stages": stages}


def run_slide_item(entry: SlideEntry, config: PipelineConfig) -> dict:
    """`run_slide` with the output folder from the configuration: the picklable task for `run_tasks`."""
    return run_slide(entry, config)
