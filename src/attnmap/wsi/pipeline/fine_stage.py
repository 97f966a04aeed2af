"""The fine-map step of `attnmap wsi run` (heatmap section ``fine: {method, top_k, mil_method}``).

Runs after the heatmap: MIL directions for the predicted class from the slide's features, the
encoder's conservative relevance inside the top-k patches (`attnmap.wsi.heatmap.fine`), then
``fine_gallery.png`` (the top patches above their fine maps) and, when ``heatmap.tiff`` is on,
``heatmap_fine.tif``: the MIL method's patch scores on coarse pages and the fine maps at full
resolution (`attnmap.wsi.heatmap.fine_render`). Only the selected patches are read again.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from attnmap.io_utils import atomic_path
from attnmap.wsi.features import read_patch_rgb
from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry
from attnmap.wsi.pipeline.fingerprint import StageFingerprints
from attnmap.wsi.pipeline.outputs import SlideOutputs
from attnmap.wsi.pipeline.stages import (
    cached_clam,
    cached_encoder,
    fingerprints,
    level0_patch_size,
    slide_provenance,
)

GALLERY_MAX = 64
"""At most this many patches in the gallery PNG (the TIFF holds all selected ones)."""


def fine_stage(
    slide: Any,
    tissue: Any,
    features: np.ndarray,
    attention: dict[str, Any],
    entry: SlideEntry,
    config: PipelineConfig,
    outputs: SlideOutputs,
    device: str,
    prints: StageFingerprints | None = None,
) -> list[str]:
    """Write the fine-map gallery (and fine TIFF); returns the names written (empty when all exist)."""
    from attnmap.wsi.heatmap.fine import FineConfig, bag_fine_maps, transform_bounds
    from attnmap.wsi.heatmap.fine_render import write_fine_gallery, write_fine_heatmap_tiff

    fine = FineConfig.from_mapping(config.heatmap.fine)
    gallery, tiff = outputs.named("fine_gallery.png"), outputs.named("heatmap_fine.tif")
    want_tiff = bool(config.heatmap.tiff)
    prints = fingerprints(entry, config, prints)
    gallery_ok = prints.heatmap.check(gallery) is None
    tiff_ok = not want_tiff or prints.heatmap.check(tiff) is None
    if fine is None or (gallery_ok and tiff_ok):
        return []
    f, p = config.features, config.patching
    encoder, _ = cached_encoder(f.encoder, f.checkpoint, f.input_size, f.seed, device)
    model, _ = cached_clam(config.model.checkpoint, device)
    coords = np.asarray(attention["coords"])

    def read(indices: np.ndarray) -> np.ndarray:
        return np.stack([read_patch_rgb(slide, x, y, p.level, p.patch_size) for x, y in coords[indices]])

    def inputs(indices: np.ndarray) -> torch.Tensor:
        return torch.stack([encoder.transform(patch) for patch in read(indices)]).to(device)

    maps = bag_fine_maps(
        encoder.model,
        inputs,
        model,
        torch.as_tensor(np.asarray(features)),
        fine,
        int(attention["prediction"]),
        bounds=transform_bounds(encoder.transform),
    )
    record = {
        **slide_provenance(config, entry, "fine_heatmap", ("patching", "features", "model", "heatmap")),
        **prints.heatmap.record(),
    }
    written: list[str] = []
    if not gallery_ok:
        shown = slice(0, GALLERY_MAX)
        write_fine_gallery(
            gallery, read(maps.indices[shown]), maps.maps[shown], maps.patch_scores[shown], record
        )
        written.append(gallery.name)
    if not tiff_ok:
        h = config.heatmap
        with atomic_path(tiff) as temporary:
            write_fine_heatmap_tiff(
                temporary,
                slide,
                coords,
                maps.all_scores,
                coords[maps.indices],
                maps.maps,
                level0_patch_size(p, slide),
                h.style,
                tissue=tissue,
                metadata=record,
            )
        written.append(tiff.name)
    return written
