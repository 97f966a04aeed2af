"""The stages of `attnmap wsi run` for one slide, each writing one file and skipped when it exists.

Each stage takes the open slide, the slide's `SlideEntry`, the `PipelineConfig` and its
`SlideOutputs`, returns its result and whether it ran. A stage reads its own output back when the
file is already there and readable (atomic writes make "there" mean "complete"), so a resumed run
redoes only what was missing. Models are loaded once per process (`functools.lru_cache`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from attnmap.errors import InputError
from attnmap.provenance import model_checksum, provenance
from attnmap.wsi.features import extract_features, features_complete, load_features, save_features
from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry
from attnmap.wsi.pipeline.outputs import SlideOutputs
from attnmap.wsi.pipeline.stage_files import (
    blockmap_complete,
    load_blockmap,
    load_coords,
    load_tissue,
    save_blockmap,
    save_coords,
    save_tissue,
)


# ----------------------------------------------------------------------------------- cached models
def _file_stamp(path: str | None) -> tuple[int, int] | None:
    """(mtime, size) of a model file, so that a file replaced on disk is not served from the cache."""
    if path is None or not Path(path).is_file():
        return None
    status = Path(path).stat()
    return status.st_mtime_ns, status.st_size


def cached_encoder(name: str, checkpoint: str | None, input_size: int | None, seed: int, device: str) -> Any:
    """(encoder, sha256 of its weights), loaded once per process and configuration."""
    return _cached_encoder(
        name, checkpoint, input_size, seed, device, _file_stamp(name), _file_stamp(checkpoint)
    )


@functools.lru_cache(maxsize=4)
def _cached_encoder(
    name: str, checkpoint: str | None, input_size: int | None, seed: int, device: str, *stamps: object
) -> Any:
    from attnmap.wsi.encoders import load_encoder

    encoder = load_encoder(name, checkpoint, device=device, seed=seed, input_size=input_size)
    return encoder, model_checksum(checkpoint) if checkpoint else model_checksum(encoder.model)


def cached_clam(checkpoint: str, device: str) -> Any:
    """(CLAM model in eval mode, sha256 of the checkpoint file), loaded once per process."""
    return _cached_clam(checkpoint, device, _file_stamp(checkpoint))


@functools.lru_cache(maxsize=4)
def _cached_clam(checkpoint: str, device: str, stamp: object) -> Any:
    from attnmap.mil import load_clam

    return load_clam(checkpoint).to(device).eval(), model_checksum(checkpoint)


def slide_provenance(
    config: PipelineConfig, entry: SlideEntry, method: str, sections: tuple[str, ...], **extra: object
) -> dict[str, str]:
    return provenance(
        method=method,
        parameters=config.stage_parameters(*sections),
        slide=Path(entry.path).name,
        slide_id=entry.slide_id,
        **extra,
    )


def level0_patch_size(patching: Any, slide: Any) -> int:
    """The patch size in level-0 pixels (what the renderer and CLAM's heatmap code expect)."""
    return int(round(patching.patch_size * slide.level_downsamples[patching.level]))


# ----------------------------------------------------------------------------------- stages
def tissue_stage(
    slide: Any, entry: SlideEntry, config: PipelineConfig, outputs: SlideOutputs
) -> tuple[Any, bool]:
    from attnmap.wsi.tissue import segment_tissue

    if outputs.tissue.is_file():
        try:
            return load_tissue(outputs.tissue), False
        except (InputError, ValueError, KeyError):
            pass  # unreadable: segment again
    seg = config.segmentation
    tissue = segment_tissue(
        slide,
        level=seg.level,
        sthresh=seg.sthresh,
        mthresh=seg.mthresh,
        close=seg.close,
        use_otsu=seg.use_otsu,
        a_t=seg.a_t,
        a_h=seg.a_h,
        max_n_holes=seg.max_n_holes,
        preset=seg.preset,
    )
    save_tissue(outputs.tissue, tissue, slide_provenance(config, entry, "segment_tissue", ("segmentation",)))
    return tissue, True


def patch_stage(
    slide: Any, tissue: Any, entry: SlideEntry, config: PipelineConfig, outputs: SlideOutputs
) -> tuple[np.ndarray, bool]:
    from attnmap.wsi.patching import patch_grid

    coords = load_coords(outputs.patches)
    if coords is not None:
        return coords, False
    p = config.patching
    coords = patch_grid(
        slide,
        tissue,
        patch_size=p.patch_size,
        step=p.step or p.patch_size,
        level=p.level,
        contour_check=p.contour_check,
        padding=p.padding,
    )
    if p.roi_annotations:
        from attnmap.wsi.annotations import roi_filter

        coords = roi_filter(coords, level0_patch_size(p, slide), p.roi_annotations, entry.slide_id)
    if len(coords) == 0:
        raise InputError(f"no tissue patches found on {entry.path}: check the segmentation parameters")
    save_coords(
        outputs.patches,
        coords,
        slide,
        p.patch_size,
        p.level,
        entry.slide_id,
        slide_provenance(config, entry, "patch_grid", ("segmentation", "patching")),
    )
    return coords, True


def _same_encoder(path: Path, features_config: Any) -> bool:
    """A features file made by another encoder is not reused (one without a record, e.g. CLAM's, is)."""
    import h5py

    with h5py.File(path, "r") as handle:
        made_by = handle.attrs.get("model")
    return made_by is None or str(made_by) == features_config.encoder


def features_stage(
    coords: np.ndarray,
    entry: SlideEntry,
    config: PipelineConfig,
    outputs: SlideOutputs,
    device: str,
    progress: bool = False,
) -> tuple[np.ndarray, bool]:
    f = config.features
    if features_complete(outputs.features_h5, n_patches=len(coords)) and _same_encoder(
        outputs.features_h5, f
    ):
        features, stored = load_features(outputs.features_h5)
        if np.array_equal(stored, coords):
            return features, False
    encoder, checksum = cached_encoder(f.encoder, f.checkpoint, f.input_size, f.seed, device)
    features = extract_features(
        entry.path,
        coords,
        encoder,
        patch_size=config.patching.patch_size,
        level=config.patching.level,
        batch_size=f.batch_size,
        num_workers=f.num_workers,
        device=device,
        progress=progress,
    )
    record = slide_provenance(
        config,
        entry,
        "extract_features",
        ("patching", "features"),
        model_sha256=checksum,
        model_name=f.encoder,
    )
    save_features(outputs.features_h5, features, coords, record, outputs.features_pt if f.save_pt else None)
    return features, True


def attention_stage(
    slide: Any,
    features: np.ndarray,
    coords: np.ndarray,
    entry: SlideEntry,
    config: PipelineConfig,
    outputs: SlideOutputs,
    device: str,
) -> tuple[dict[str, Any], bool]:
    """Prediction and raw attention of the predicted class's branch (CLAM's heatmap choice)."""
    path = outputs.named("blockmap.h5")
    if blockmap_complete(path, len(coords)):
        stored = load_blockmap(path)
        if np.array_equal(stored["coords"], coords):
            return stored, False
    from attnmap.mil import infer_bag

    model, checksum = cached_clam(config.model.checkpoint, device)
    bag = infer_bag(model, features)
    result = {
        "coords": coords,
        "scores": np.asarray(bag.scores("raw"), dtype=np.float64),
        "prediction": int(bag.prediction),
        "probs": np.asarray(bag.probs, dtype=np.float64).reshape(-1),
        "branch": bag.branch_for(None),
        "patch_size": level0_patch_size(config.patching, slide),
    }
    record = slide_provenance(
        config,
        entry,
        "clam_attention_raw",
        ("patching", "features", "model"),
        model_sha256=checksum,
        model_name=Path(config.model.checkpoint).name,
        branch=result["branch"],
    )
    save_blockmap(path, result, record)
    return result, True
