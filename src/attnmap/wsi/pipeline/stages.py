"""The stages of `attnmap wsi run` for one slide, each writing one file and reusing it when it fits.

Each stage takes the open slide, the slide's `SlideEntry`, the `PipelineConfig` and its
`SlideOutputs`, returns its result and why it ran (None: its output was reused). An output is
reused when it is intact and records the fingerprint this configuration gives it
(`attnmap.wsi.pipeline.outputs`), so a resumed run redoes only what was missing, and a run with
changed inputs redoes exactly what they affect. Models are loaded once per process
(`attnmap.checkpoint.cached_model`,
keyed on the model files' path, size and mtime).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from attnmap.checkpoint import cached_clam
from attnmap.errors import InputError
from attnmap.provenance import provenance
from attnmap.stored import stored_record
from attnmap.wsi.features import extract_features, load_features, save_features
from attnmap.wsi.patch_geometry import PatchGeometry, check_geometry, file_geometry
from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry
from attnmap.wsi.pipeline.fingerprint import StageFingerprints
from attnmap.wsi.pipeline.outputs import (
    SlideOutputs,
    attention_reason,
    features_h5_reason,
    features_pt_reason,
    made_by_attnmap,
)
from attnmap.wsi.pipeline.stage_files import (
    check_brought_patches,
    load_blockmap,
    load_coords,
    load_tissue,
    save_blockmap,
    save_coords,
    save_features_pt,
    save_tissue,
)


def slide_provenance(
    config: PipelineConfig, entry: SlideEntry, method: str, sections: tuple[str, ...], **extra: object
) -> dict[str, str]:
    from attnmap.file_hash import content_sha256

    return provenance(
        method=method,
        parameters=config.stage_parameters(*sections),
        slide=Path(entry.path).name,
        slide_id=entry.slide_id,
        slide_sha256=content_sha256(entry.path),  # which slide, renamed or not (`check_made_from`)
        **extra,
    )


def fingerprints(
    entry: SlideEntry, config: PipelineConfig, prints: StageFingerprints | None
) -> StageFingerprints:
    """``prints`` if given (one per slide run), else this slide's fingerprints under ``config``."""
    return prints if prints is not None else StageFingerprints(entry, config)


def level0_patch_size(patching: Any, slide: Any) -> int:
    """The patch size in level-0 pixels (what the renderer and CLAM's heatmap code expect)."""
    return int(round(patching.patch_size * slide.level_downsamples[patching.level]))


# ----------------------------------------------------------------------------------- stages
def segment_slide(slide: Any, seg: Any, progress: bool = False) -> Any:
    """The slide's tissue with the options of a config's ``segmentation`` section (``progress``: a
    bar while a slide without a pyramid is read shrunk)."""
    from attnmap.wsi.tissue import segment_tissue

    return segment_tissue(
        slide,
        level=seg.level,
        channel=seg.channel,
        sthresh=seg.sthresh,
        mthresh=seg.mthresh,
        close=seg.close,
        use_otsu=seg.use_otsu,
        a_t=seg.a_t,
        a_h=seg.a_h,
        max_n_holes=seg.max_n_holes,
        preset=seg.preset,
        progress=progress,
    )


def tissue_stage(
    slide: Any,
    entry: SlideEntry,
    config: PipelineConfig,
    outputs: SlideOutputs,
    prints: StageFingerprints | None = None,
    progress: bool = False,
) -> tuple[Any, str | None]:
    fingerprint = fingerprints(entry, config, prints).tissue
    reason = fingerprint.check(outputs.tissue)
    if reason is None:
        try:
            tissue = load_tissue(outputs.tissue)
        except InputError:
            reason = "damaged: not a tissue file"
        else:
            if tissue.contours or "channel" in tissue.parameters:
                return tissue, None
            # found empty before the channel rule: a grey slide's is found by darkness now
            reason = "empty, made before colourless slides were segmented by darkness"
    tissue = segment_slide(slide, config.segmentation, progress)
    record = {
        **slide_provenance(config, entry, "segment_tissue", ("segmentation",),
                           slide_reader=getattr(slide, "reader", type(slide).__name__),
                           slide_mpp=getattr(slide, "mpp", None) or "not recorded"),
        **fingerprint.record(),
    }
    save_tissue(outputs.tissue, tissue, record)
    mask = outputs.tissue_mask
    # only `wsi segment` draws the mask; one of other parameters must not stay beside these contours
    if mask.exists() and fingerprint.check(mask) is not None and made_by_attnmap(mask):
        mask.unlink()
    return tissue, reason


def patch_stage(
    slide: Any,
    tissue: Any,
    entry: SlideEntry,
    config: PipelineConfig,
    outputs: SlideOutputs,
    prints: StageFingerprints | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, str | None]:
    from attnmap.wsi.patching import patch_grid

    fingerprint = fingerprints(entry, config, prints).patches
    reason = fingerprint.check(outputs.patches, accept_foreign=True, datasets=("coords",))
    p = config.patching
    if reason is None:
        coords = load_coords(outputs.patches)
        if coords is not None:
            check_brought_patches(outputs.patches, slide, p.patch_size, p.level, entry.slide_id)
            return coords, None
        reason = "damaged: no N×2 coords"
    coords = patch_grid(
        slide,
        tissue,
        patch_size=p.patch_size,
        step=p.step or p.patch_size,
        level=p.level,
        contour_check=p.contour_check,
        padding=p.padding,
        progress=progress,
    )
    if len(coords) == 0:
        raise InputError(f"no tissue patches found on {entry.path}: {_why_no_patches(slide, tissue, p)}")
    if p.roi_annotations:
        from attnmap.wsi.annotations import roi_filter

        coords = roi_filter(coords, level0_patch_size(p, slide), p.roi_annotations, entry.slide_id)
        if len(coords) == 0:
            raise InputError(
                f"no tissue patches found on {entry.path}: none lies inside the ROI annotations of "
                f"{entry.slide_id} in {p.roi_annotations}"
            )
    save_coords(
        outputs.patches,
        coords,
        slide,
        p.patch_size,
        p.level,
        entry.slide_id,
        {
            **slide_provenance(config, entry, "patch_grid", ("segmentation", "patching")),
            **fingerprint.record(),
        },
    )
    return coords, reason


def _too_thin(slide: Any, params: dict) -> str:
    """Why a slide 1 px thin at its segmentation level has no tissue ('' when it is not): a region's
    outline there encloses no area, so no a_t, threshold or kernel can keep it (a kernel larger than
    the image is not the cause: the blur and closing pad its borders)."""
    if "seg_level" not in params:  # contours read back from a file made elsewhere: level unknown
        return ""
    level, factor = int(params["seg_level"]), int(params.get("seg_factor", 1))
    level_width, level_height = slide.level_dimensions[level]
    seg_width, seg_height = math.ceil(level_width / factor), math.ceil(level_height / factor)
    if min(seg_width, seg_height) >= 2:
        return ""
    width, height = slide.dimensions
    shrunk = f", read shrunk {factor}×" if factor > 1 else ""
    where = f" ({width}×{height} px at level 0)" if (seg_width, seg_height) != (width, height) else ""
    return (f"the slide is {seg_width}×{seg_height} px at segmentation level {level}{shrunk}{where}: too "
            "thin to segment, a tissue outline needs at least 2 px each way to enclose any area")


def _why_no_patches(slide: Any, tissue: Any, patching: Any) -> str:
    """The cause, in the user's terms (settings named as they give them: `setting`): no tissue
    region at all, or regions no patch fits."""
    from attnmap.wsi.setting_names import setting

    if not tissue.contours:
        params = tissue.parameters
        width, height = slide.dimensions
        thin = _too_thin(slide, params)
        if thin:
            return thin
        minimum = params["a_t"] * 512 * 512
        if minimum > width * height:  # CLAM's default a_t = 100 is 26 Mpx: more than a plain image
            return (
                f"{setting('segmentation.a_t', float(params['a_t']))} asks for tissue regions of at least "
                f"{minimum:.0f} level-0 px (a_t × 512²), more than the whole {width}×{height} slide: lower "
                f"{setting('segmentation.a_t')}"
            )
        # under use_otsu, sthresh is not used: naming it would point at the wrong knob
        otsu = bool(params.get("use_otsu"))
        threshold = "Otsu's threshold (use_otsu)" if otsu else f"sthresh={params['sthresh']}"
        knob = setting("segmentation.use_otsu", False) if otsu else setting("segmentation.sthresh")
        return (
            f"segmentation kept no tissue region ({params.get('channel', 'saturation')} above "
            f"{threshold}, regions of "
            f"at least a_t={params['a_t']:g} × 512² = {minimum:.0f} level-0 px; the slide has "
            f"{width}×{height} px): a blank slide has none, a grey one none by saturation (set "
            f"{setting('segmentation.channel', 'darkness')}), else lower {setting('segmentation.a_t')} "
            f"or {knob}"
        )
    width, height = slide.level_dimensions[patching.level]
    patch_size = setting("patching.patch_size")
    if not patching.padding and min(width, height) < patching.patch_size:
        return (
            f"the slide is {width}×{height} px at level {patching.level}, smaller than one "
            f"{patching.patch_size}-px patch, with {setting('patching.padding', False)}: use a smaller "
            f"{patch_size} or {setting('patching.padding', True)} (patches reaching past the edge are padded)"
        )
    return (
        f"no {patching.patch_size}-px patch at level {patching.level} fits its {len(tissue.contours)} "
        f"tissue region(s) (contour_check {patching.contour_check}): use a smaller {patch_size} or "
        f"{setting('patching.contour_check', 'center')}"
    )


def features_stage(
    coords: np.ndarray,
    entry: SlideEntry,
    config: PipelineConfig,
    outputs: SlideOutputs,
    device: str,
    progress: bool = False,
    prints: StageFingerprints | None = None,
) -> tuple[np.ndarray, str | None]:
    f = config.features
    prints = fingerprints(entry, config, prints)
    fingerprint = prints.features
    reason = features_h5_reason(outputs, prints, len(coords))
    if reason is None:
        features, stored = load_features(outputs.features_h5)
        # features brought by the user (CLAM's) for patches of another size or level: never used
        check_geometry(outputs.features_h5, file_geometry(outputs.features_h5),
                       config.patching.patch_size, config.patching.level)
        if np.array_equal(stored, coords):
            if f.save_pt and features_pt_reason(outputs, prints) is not None:  # the h5 holds them
                record = {key: value for key, value in (stored_record(outputs.features_h5) or {}).items()
                          if key != "feature_dim"}
                save_features_pt(outputs.features_pt, features, record)
            return features, None
        reason = "damaged: other coordinates"
    if outputs.features_h5.exists() and not made_by_attnmap(outputs.features_h5):
        # the user's input (e.g. CLAM's features of CLAM's patches, perhaps hours of a foundation
        # model): never overwritten with this run's encoder, as its docs promise
        what = "other patch coordinates" if reason.endswith("other coordinates") else reason
        raise InputError(
            f"{outputs.features_h5} was not made by attnmap (features brought from elsewhere) and does "
            f"not fit this run's patches {outputs.patches} ({what}): put the patch file they were cut "
            "from there, or move the features away; they are never overwritten"
        )
    encoder, checksum = f.load_encoder(device)
    model = cached_clam(config.model.checkpoint, device)[0] if config.model.checkpoint else None
    if model is not None and encoder.feature_dim != model.embed_dim:  # now, not after extracting
        raise InputError(
            f"features.encoder {f.encoder} gives {encoder.feature_dim}-d features but model.checkpoint "
            f"{config.model.checkpoint} expects {model.embed_dim}-d features"
        )
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
        precision=f.precision,
        cpu_graph=f.cpu_graph,
    )
    record = slide_provenance(
        config,
        entry,
        "extract_features",
        ("patching", "features"),
        model_sha256=checksum,
        model_name=f.encoder,
    )
    save_features(
        outputs.features_h5,
        features,
        coords,
        {**record, **fingerprint.record()},
        outputs.features_pt if f.save_pt else None,
        features_geometry(config.patching, outputs.patches),
    )
    return features, reason


def features_geometry(patching: Any, patches_h5: Path) -> PatchGeometry:
    """The geometry of the patches features are cut from, with the level's downsample that the
    patch file records (`save_coords`) when it is for the same size and level."""
    geometry = PatchGeometry(patching.patch_size, patching.level)
    recorded = file_geometry(patches_h5)
    if recorded is not None and (recorded.size, recorded.level) == (geometry.size, geometry.level):
        return recorded
    return geometry


def attention_stage(
    slide: Any,
    features: np.ndarray,
    coords: np.ndarray,
    entry: SlideEntry,
    config: PipelineConfig,
    outputs: SlideOutputs,
    device: str,
    prints: StageFingerprints | None = None,
) -> tuple[dict[str, Any], str | None]:
    """Prediction and raw attention of the predicted class's branch (CLAM's heatmap choice).

    The result's ``model_sha256`` is the checksum recorded with the scores: the model that made them.
    """
    import h5py

    path = outputs.named("blockmap.h5")
    fingerprint = fingerprints(entry, config, prints).attention
    reason = attention_reason(outputs, fingerprints(entry, config, prints), len(coords))
    if reason is None:
        stored = load_blockmap(path)
        if np.array_equal(stored["coords"], coords):
            with h5py.File(path, "r") as handle:
                stored["model_sha256"] = str(handle.attrs.get("model_sha256", ""))
            return stored, None
        reason = "damaged: other coordinates"
    from attnmap.mil import infer_bag

    model, checksum = cached_clam(config.model.checkpoint, device)
    try:
        bag = infer_bag(model, features)
    except InputError as error:  # e.g. 512-d features for a 1024-d model: say which bag
        raise InputError(f"{outputs.features_h5}: {error}") from error
    result = {
        "coords": coords,
        "scores": np.asarray(bag.scores("raw"), dtype=np.float64),
        "prediction": int(bag.prediction),
        "probs": np.asarray(bag.probs, dtype=np.float64).reshape(-1),
        "branch": bag.branch_for(None),
        "n_branches": int(bag.raw.shape[0]),  # 1: class-agnostic attention (CLAM-SB, ABMIL)
        "patch_size": level0_patch_size(config.patching, slide),
        "geometry": features_geometry(config.patching, outputs.patches),  # as on the features h5
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
    save_blockmap(path, result, {**record, **fingerprint.record()})
    return {**result, "model_sha256": checksum}, reason
