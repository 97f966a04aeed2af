"""The drawing stages of `attnmap wsi run`: heatmap PNG / pyramidal TIFF / original, and patch samples.

Split from `attnmap.wsi.pipeline.stages` (which computes tissue, patches, features, attention)
because drawing has its own options (overlap grids with reference scores, TIFF) and its own skip
rules: each file is drawn again when it is missing, damaged or made with another fingerprint.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from attnmap.io_utils import atomic_path, save_png, write_json_atomic
from attnmap.wsi.heatmap.placement import placement_text
from attnmap.wsi.heatmap.style import HeatmapStyle
from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry
from attnmap.wsi.pipeline.fingerprint import StageFingerprints
from attnmap.wsi.pipeline.legend import display_scores, titled_heatmap
from attnmap.wsi.pipeline.outputs import (
    SlideOutputs,
    heatmap_reason,
    remove_samples,
    sampling_reason,
)
from attnmap.wsi.pipeline.stage_files import load_blockmap, save_blockmap
from attnmap.wsi.pipeline.stages import (
    cached_clam,
    features_geometry,
    fingerprints,
    level0_patch_size,
    slide_provenance,
)
from attnmap.wsi.shared_features import extract_features_reusing, stored_features


def _draw(
    slide: Any,
    tissue: Any,
    coords: np.ndarray,
    scores: np.ndarray,
    style: HeatmapStyle,
    config: PipelineConfig,
    reference: np.ndarray | None,
    progress: bool = False,
) -> np.ndarray:
    from attnmap.wsi.heatmap.renderer import render_heatmap

    return render_heatmap(
        slide,
        coords,
        scores,
        style,
        patch_size=level0_patch_size(config.patching, slide),
        tissue=tissue,
        reference_scores=reference,
        progress=progress,
    )


def _overlap_scores(
    slide: Any,
    tissue: Any,
    entry: SlideEntry,
    config: PipelineConfig,
    outputs: SlideOutputs,
    device: str,
    branch: int,
    prints: StageFingerprints | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Raw attention on CLAM's heatmap-time grid (overlapping, four_pt_hard, centre shift).

    ``branch``: the blockmap's (the slide prediction's) branch, so that a CLAM_MB heatmap shows the
    predicted class even if the overlapping patches alone would predict another.
    """
    from attnmap.mil import infer_bag
    from attnmap.wsi.patching import heatmap_center_shift, patch_grid

    path = outputs.named("overlap_blockmap.h5")
    p, h = config.patching, config.heatmap
    step = max(1, int(p.patch_size * (1.0 - h.overlap)))
    coords = patch_grid(
        slide,
        tissue,
        patch_size=p.patch_size,
        step=step,
        level=p.level,
        contour_check="four_pt_hard",
        padding=p.padding,
        center_shift=heatmap_center_shift(h.overlap),
    )
    fingerprint = fingerprints(entry, config, prints).overlap
    if fingerprint.check(path, datasets=("attention_scores", "coords"), rows=len(coords)) is None:
        stored = load_blockmap(path)
        if np.array_equal(stored["coords"], coords):
            return coords, stored["scores"]
    f = config.features
    encoder, encoder_checksum = f.load_encoder(device)
    features, _ = extract_features_reusing(  # block-grid patches are not encoded again
        entry.path,
        coords,
        encoder,
        stored_features(outputs.features_h5, f.encoder),
        patch_size=p.patch_size,
        level=p.level,
        batch_size=f.batch_size,
        num_workers=f.num_workers,
        device=device,
        progress=False,
        precision=f.precision,
        cpu_graph=f.cpu_graph,
    )
    model, checksum = cached_clam(config.model.checkpoint, device)
    bag = infer_bag(model, features)
    scores = np.asarray(bag.scores("raw", branch=branch), dtype=np.float64)
    record = slide_provenance(
        config,
        entry,
        "clam_attention_raw_overlap",
        ("patching", "features", "model"),
        model_sha256=checksum,
        encoder_sha256=encoder_checksum,
        overlap=h.overlap,
    )
    record.update(fingerprint.record())
    save_blockmap(
        path,
        {
            "coords": coords,
            "scores": scores,
            "prediction": int(bag.prediction),
            "probs": np.asarray(bag.probs, dtype=np.float64).reshape(-1),
            "branch": branch,
            "patch_size": level0_patch_size(p, slide),
            "geometry": features_geometry(p, outputs.patches),  # the same patches, cut closer together
        },
        record,
    )
    return coords, scores


def heatmap_stage(
    slide: Any,
    tissue: Any,
    attention: dict[str, Any],
    entry: SlideEntry,
    config: PipelineConfig,
    outputs: SlideOutputs,
    device: str,
    prints: StageFingerprints | None = None,
    progress: bool = False,
) -> str | None:
    """The heatmap PNG (and the original and the pyramidal TIFF overlay if asked; ``progress``: a
    bar over the TIFF's windows, minutes of work on a big slide).

    Returns why they were drawn, or None when every one was reused. Files no longer asked for were
    removed before any stage ran (`attnmap.wsi.pipeline.outputs.remove_stale_outputs`).
    """
    prints = fingerprints(entry, config, prints)
    reason = heatmap_reason(outputs, prints, config)
    if reason is None:
        return None
    h = config.heatmap
    record = slide_provenance(config, entry, "clam_heatmap", ("patching", "features", "model", "heatmap"))
    png, tiff = outputs.named("heatmap.png"), outputs.named("heatmap.tif")
    png_ok = prints.heatmap.check(png) is None  # each picture has its own fingerprint
    tiff_ok = not h.tiff or prints.heatmap_tiff.check(tiff) is None
    if not png_ok or not tiff_ok:
        if h.overlap > 0:
            coords, scores = _overlap_scores(
                slide, tissue, entry, config, outputs, device, attention["branch"], prints
            )
            reference = attention["scores"]
        else:
            coords, scores, reference = attention["coords"], attention["scores"], None
        scores, reference, percentiles, scale = display_scores(
            scores, reference, h.scale, h.percentiles, h.cmap
        )
        style = replace(h.style, percentiles=percentiles)
        if not tiff_ok:
            from attnmap.wsi.heatmap.tiff import write_heatmap_tiff

            with atomic_path(tiff) as temporary:
                write_heatmap_tiff(
                    temporary,
                    slide,
                    coords,
                    scores,
                    replace(style, roi=None),
                    patch_size=level0_patch_size(config.patching, slide),
                    level=h.tiff_level,
                    tissue=tissue,
                    reference_scores=reference,
                    metadata={**record, **prints.heatmap_tiff.record()},
                    progress=progress,
                )
        if not png_ok:
            canvas = _draw(slide, tissue, coords, scores, style, config, reference, progress)
            size, offset = (canvas.shape[1], canvas.shape[0]), (0, 0)
            if h.legend:
                names = list(config.model.class_names)
                canvas, offset = titled_heatmap(canvas, scale, entry.slide_id, attention, names)
            placed = placement_text(slide, style, size, offset)
            save_png(png, canvas, {**record, **prints.heatmap.record(), **placed})
    if h.save_original and prints.original.check(outputs.named("original.png")) is not None:
        from attnmap.wsi.heatmap.renderer import resolve_vis_level, shrunk_vis_downsample
        from attnmap.wsi.reduced import read_reduced

        level = resolve_vis_level(slide, h.vis_level)
        shrunk = shrunk_vis_downsample(slide, h.vis_level)  # a level too large to read whole
        pixels = (slide.read_region((0, 0), level, slide.level_dimensions[level]) if shrunk is None
                  else read_reduced(slide, level, round(shrunk / slide.level_downsamples[level])))
        save_png(outputs.named("original.png"), pixels, {**record, **prints.original.record()})
    return reason


def sampling_stage(
    slide: Any,
    attention: dict[str, Any],
    entry: SlideEntry,
    config: PipelineConfig,
    outputs: SlideOutputs,
    prints: StageFingerprints | None = None,
) -> str | None:
    """Top-k / bottom-k crops and their list (``samples.json``); returns why they were made, or None."""
    prints = fingerprints(entry, config, prints)
    reason = sampling_reason(outputs, prints, config)
    if reason is None:
        return None
    remove_samples(outputs)
    s = config.sampling
    if s.top_k == 0 and s.bottom_k == 0:
        return reason
    from attnmap.wsi.scores_io import save_patch_samples

    record = {
        **slide_provenance(config, entry, "clam_attention_samples",
                            ("patching", "model.checkpoint", "sampling")),
        **prints.sampling.record(),
    }
    written = save_patch_samples(
        slide,
        attention["coords"],
        attention["scores"],
        outputs.heatmap_dir,
        patch_size=config.patching.patch_size,
        level=config.patching.level,
        top_k=s.top_k,
        bottom_k=s.bottom_k,
        metadata=record,
    )
    write_json_atomic(
        outputs.named("samples.json"),
        {
            "provenance": record,
            "files": sorted(str(Path(p).relative_to(outputs.heatmap_dir)) for p in written),
        },
    )
    return reason


def write_heatmap_files(
    slide_path: str | Path,
    coords: np.ndarray,
    scores: np.ndarray,
    patch_size: int,
    out_png: str | Path,
    style: HeatmapStyle | None = None,
    *,
    tissue: Any = None,
    tiff: str | Path | None = None,
    tiff_level: int = 0,
    metadata: dict[str, str] | None = None,
    scale: str = "clam",
    title: str | None = None,
    label: str = "score",
    progress: bool = False,
) -> list[Path]:
    """A heatmap PNG drawn with ``style`` (and a pyramidal TIFF overlay if ``tiff``), with provenance.

    ``patch_size`` in level-0 pixels. ``scale``: how scores become colours (`display_scores`:
    robust | minmax | clam | diverging). ``title``: put a title band and a colour bar of the scale (``label``)
    around the PNG. The TIFF covers the whole slide at ``tiff_level`` (the style's roi, vis_level
    and downscale are for the PNG). ``progress``: bars over the PNG's and the TIFF's windows.
    Returns the paths written.
    """
    from attnmap.render.legend import add_legend, legend_offset
    from attnmap.wsi.heatmap.renderer import render_heatmap
    from attnmap.wsi.heatmap.tiff import write_heatmap_tiff
    from attnmap.wsi.setting_names import setting
    from attnmap.wsi.slide import open_slide

    style = HeatmapStyle() if style is None else style
    values, _, percentiles, drawn_scale = display_scores(scores, None, scale, style.percentiles, style.cmap)
    style = replace(style, percentiles=percentiles)
    written = [Path(out_png)]
    with open_slide(slide_path) as slide:
        # each level named by the setting that asked for it: "level 5 does not exist" alone left
        # the user to guess whether the PNG's or the TIFF's level was wrong
        if style.vis_level >= 0:
            slide.check_level(style.vis_level, setting("heatmap.vis_level"))
        if tiff is not None:
            # before the PNG: a call that fails must not leave its new PNG beside an earlier call's
            # TIFF, where the pair would pass for one heatmap (the TIFF is rewritten here anyway)
            slide.check_level(tiff_level, setting("heatmap.tiff_level"))
            Path(tiff).unlink(missing_ok=True)
        image = render_heatmap(slide, coords, values, style, patch_size=patch_size, tissue=tissue,
                               progress=progress)
        size, offset = (image.shape[1], image.shape[0]), (0, 0)
        if title is not None:
            offset = legend_offset(image.shape[1], drawn_scale, title, label=label)
            image = add_legend(image, drawn_scale, title, label=label)
        save_png(out_png, image, {**dict(metadata or {}), **placement_text(slide, style, size, offset)})
        if tiff is not None:
            with atomic_path(tiff) as temporary:
                write_heatmap_tiff(
                    temporary,
                    slide,
                    coords,
                    values,
                    replace(style, roi=None),
                    patch_size=patch_size,
                    level=tiff_level,
                    tissue=tissue,
                    metadata=metadata,
                    progress=progress,
                )
            written.append(Path(tiff))
    return written
