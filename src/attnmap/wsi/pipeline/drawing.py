"""The drawing stages of `attnmap wsi run`: heatmap PNG / pyramidal TIFF / original, and patch samples.

Split from `attnmap.wsi.pipeline.stages` (which computes tissue, patches, features, attention)
because drawing has its own options (overlap grids with reference scores, TIFF) and its own skip
rules: each file is drawn only when it is missing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from attnmap.io_utils import atomic_path, save_png, write_json_atomic
from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry
from attnmap.wsi.pipeline.outputs import SlideOutputs
from attnmap.wsi.pipeline.stage_files import blockmap_complete, load_blockmap, save_blockmap
from attnmap.wsi.pipeline.stages import cached_clam, cached_encoder, level0_patch_size, slide_provenance
from attnmap.wsi.shared_features import extract_features_reusing, stored_features


def _drawing_options(
    slide: Any, tissue: Any, config: PipelineConfig, reference: np.ndarray | None
) -> dict[str, Any]:
    """The config's heatmap options as keyword arguments shared by the PNG and the TIFF renderer."""
    h = config.heatmap
    return {
        "patch_size": level0_patch_size(config.patching, slide),
        "tissue": tissue if h.use_tissue_mask else None,
        "cmap": h.cmap,
        "alpha": h.alpha,
        "percentiles": h.percentiles,
        "reference_scores": reference,
        "overlap": h.overlap,
        "blur": h.blur,
        "binarize": h.binarize,
        "threshold": h.threshold,
        "blank_canvas": h.blank_canvas,
    }


def _draw(
    slide: Any,
    tissue: Any,
    coords: np.ndarray,
    scores: np.ndarray,
    config: PipelineConfig,
    reference: np.ndarray | None,
) -> np.ndarray:
    from attnmap.wsi.heatmap.renderer import render_heatmap

    return render_heatmap(
        slide,
        coords,
        scores,
        vis_level=config.heatmap.vis_level,
        downscale=config.heatmap.downscale,
        **_drawing_options(slide, tissue, config, reference),
    )


def _overlap_scores(
    slide: Any,
    tissue: Any,
    entry: SlideEntry,
    config: PipelineConfig,
    outputs: SlideOutputs,
    device: str,
    branch: int,
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
    if blockmap_complete(path, len(coords)):
        stored = load_blockmap(path)
        if np.array_equal(stored["coords"], coords):
            return coords, stored["scores"]
    f = config.features
    encoder, encoder_checksum = cached_encoder(f.encoder, f.checkpoint, f.input_size, f.seed, device)
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
    save_blockmap(
        path,
        {
            "coords": coords,
            "scores": scores,
            "prediction": int(bag.prediction),
            "probs": np.asarray(bag.probs, dtype=np.float64).reshape(-1),
            "branch": branch,
            "patch_size": level0_patch_size(p, slide),
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
) -> list[str]:
    """The heatmap PNG (and the original and the pyramidal TIFF overlay if asked); returns what it wrote."""
    written: list[str] = []
    h = config.heatmap
    record = slide_provenance(config, entry, "clam_heatmap", ("patching", "features", "model", "heatmap"))
    png, tiff = outputs.named("heatmap.png"), outputs.named("heatmap.tif")
    if not png.is_file() or (h.tiff and not tiff.is_file()):
        if h.overlap > 0:
            coords, scores = _overlap_scores(
                slide, tissue, entry, config, outputs, device, attention["branch"]
            )
            reference = attention["scores"]
        else:
            coords, scores, reference = attention["coords"], attention["scores"], None
        if h.tiff and not tiff.is_file():
            from attnmap.wsi.heatmap.tiff import write_heatmap_tiff

            with atomic_path(tiff) as temporary:
                write_heatmap_tiff(
                    temporary,
                    slide,
                    coords,
                    scores,
                    level=h.tiff_level,
                    metadata=record,
                    progress=False,
                    **_drawing_options(slide, tissue, config, reference),
                )
            written.append(tiff.name)
        if not png.is_file():
            save_png(png, _draw(slide, tissue, coords, scores, config, reference), record)
            written.append(png.name)
    if h.save_original and not outputs.named("original.png").is_file():
        from attnmap.wsi.heatmap.renderer import resolve_vis_level

        level = resolve_vis_level(slide, h.vis_level)
        save_png(
            outputs.named("original.png"),
            slide.read_region((0, 0), level, slide.level_dimensions[level]),
            record,
        )
        written.append(outputs.named("original.png").name)
    return written


def sampling_stage(
    slide: Any, attention: dict[str, Any], entry: SlideEntry, config: PipelineConfig, outputs: SlideOutputs
) -> bool:
    s = config.sampling
    marker = outputs.named("samples.json")
    if (s.top_k == 0 and s.bottom_k == 0) or marker.is_file():
        return False
    from attnmap.wsi.scores_io import save_patch_samples

    record = slide_provenance(config, entry, "clam_attention_samples", ("patching", "model", "sampling"))
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
        marker,
        {
            "provenance": record,
            "files": sorted(str(Path(p).relative_to(outputs.heatmap_dir)) for p in written),
        },
    )
    return True


def write_heatmap_files(
    slide_path: str | Path,
    coords: np.ndarray,
    scores: np.ndarray,
    patch_size: int,
    out_png: str | Path,
    *,
    tissue: Any = None,
    tiff: str | Path | None = None,
    tiff_level: int = 0,
    metadata: dict[str, str] | None = None,
    **draw: Any,
) -> list[Path]:
    """A heatmap PNG (and a pyramidal TIFF overlay if ``tiff``) of per-patch scores, with provenance.

    ``patch_size`` in level-0 pixels; ``draw``: `render_heatmap` options (vis_level, cmap, alpha,
    percentiles, blur, blank_canvas, ...), the TIFF sharing those it supports. Returns the paths.
    """
    from attnmap.wsi.heatmap.renderer import render_heatmap
    from attnmap.wsi.heatmap.tiff import write_heatmap_tiff
    from attnmap.wsi.slide import open_slide

    written = [Path(out_png)]
    with open_slide(slide_path) as slide:
        image = render_heatmap(
            slide, coords, np.asarray(scores), patch_size=patch_size, tissue=tissue, **draw
        )
        save_png(out_png, image, metadata)
        if tiff is not None:
            shared = (
                "cmap",
                "alpha",
                "percentiles",
                "reference_scores",
                "overlap",
                "blur",
                "binarize",
                "threshold",
                "blank_canvas",
            )
            options = {key: value for key, value in draw.items() if key in shared}
            with atomic_path(tiff) as temporary:
                write_heatmap_tiff(
                    temporary,
                    slide,
                    coords,
                    scores,
                    patch_size=patch_size,
                    level=tiff_level,
                    tissue=tissue,
                    metadata=metadata,
                    progress=False,
                    **options,
                )
            written.append(Path(tiff))
    return written
