"""The fine-map step of `attnmap wsi run` (heatmap section ``fine: {method, top_k, mil_method}``).

Runs after the heatmap: MIL directions for the predicted class from the slide's features, then the
encoder's conservative relevance inside the top-k patches (`attnmap.wsi.heatmap.fine`), written
batch by batch to ``fine_maps.h5`` (`attnmap.wsi.heatmap.fine_store`) as they are computed. From
that file: ``fine_gallery.png`` (the top patches above their fine maps) and, when ``heatmap.tiff``
is on, ``heatmap_fine.tif``: the MIL method's patch scores on coarse pages and the fine maps at full
resolution (`attnmap.wsi.heatmap.fine_render`), each window reading only the maps it shows. Only
the selected patches are read again, one batch at a time, so ``top_k: all`` keeps the memory of
``top_k: 64``. The map file has its own fingerprint (`StageFingerprints.fine`): a new colour map
redraws the pictures from the stored maps.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from attnmap.io_utils import atomic_path
from attnmap.wsi.features import read_patch_rgb
from attnmap.wsi.pipeline.config import PipelineConfig, SlideEntry
from attnmap.wsi.pipeline.fingerprint import StageFingerprints
from attnmap.wsi.pipeline.outputs import SlideOutputs, fine_maps_reason
from attnmap.wsi.pipeline.stages import (
    cached_clam,
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
    progress: bool = False,
) -> list[str]:
    """Write the fine maps, their gallery (and fine TIFF); returns the names written (empty: all reused).

    ``progress``: a bar over the patches explained and over the fine TIFF's windows (with ``top_k:
    all`` through a large encoder, hours on a CPU)."""
    from attnmap.wsi.heatmap.fine import FineConfig
    from attnmap.wsi.heatmap.fine_render import write_fine_gallery, write_fine_heatmap_tiff
    from attnmap.wsi.heatmap.fine_store import FineMapFile

    fine = FineConfig.from_mapping(config.heatmap.fine)
    if fine is None:
        return []
    prints = fingerprints(entry, config, prints)
    maps_path = outputs.named("fine_maps.h5")
    gallery, tiff = outputs.named("fine_gallery.png"), outputs.named("heatmap_fine.tif")
    p = config.patching
    coords = np.asarray(attention["coords"])

    def read(indices: np.ndarray) -> np.ndarray:
        return np.stack([read_patch_rgb(slide, x, y, p.level, p.patch_size) for x, y in coords[indices]])

    written: list[str] = []
    if fine_maps_reason(outputs, prints) is not None:
        _write_fine_maps(slide, read, features, attention, entry, config, outputs, device, prints, fine,
                         progress)
        written.append(maps_path.name)
    gallery_ok = not written and prints.fine_gallery.check(gallery) is None
    tiff_ok = not config.heatmap.tiff or (not written and prints.fine_tiff.check(tiff) is None)
    if gallery_ok and tiff_ok:
        return written
    record = slide_provenance(config, entry, "fine_heatmap", ("patching", "features", "model", "heatmap"))
    with FineMapFile(maps_path) as store:
        if not gallery_ok:
            shown = np.arange(min(GALLERY_MAX, len(store)))
            write_fine_gallery(
                gallery,
                read(store.fine_index[shown]),
                store.read(shown),
                store.scores[store.fine_index[shown]],
                {**record, **prints.fine_gallery.record()},
            )
            written.append(gallery.name)
        if not tiff_ok:
            with atomic_path(tiff) as temporary:
                write_fine_heatmap_tiff(
                    temporary,
                    slide,
                    store.coords,
                    store.scores,
                    store.fine_coords,
                    store,
                    store.patch_size,
                    config.heatmap.style,
                    tissue=tissue,
                    metadata={**record, **prints.fine_tiff.record()},
                    progress=progress,
                )
            written.append(tiff.name)
    return written


def _write_fine_maps(
    slide: Any,
    read: Any,
    features: np.ndarray,
    attention: dict[str, Any],
    entry: SlideEntry,
    config: PipelineConfig,
    outputs: SlideOutputs,
    device: str,
    prints: StageFingerprints,
    fine: Any,
    progress: bool = False,
) -> None:
    """Compute the fine maps of the selected patches and append them to the map file batch by batch."""
    from tqdm.auto import tqdm

    from attnmap.wsi.heatmap.fine import iter_selected_fine_maps, select_fine_patches, transform_bounds
    from attnmap.wsi.heatmap.fine_store import FineMapWriter

    f = config.features
    encoder, _ = f.load_encoder(device)
    model, _ = cached_clam(config.model.checkpoint, device)
    selection = select_fine_patches(
        model, torch.as_tensor(np.asarray(features)), fine, int(attention["prediction"])
    )

    def inputs(indices: np.ndarray) -> torch.Tensor:
        return torch.stack([encoder.transform(patch) for patch in read(indices)]).to(device)

    map_shape = tuple(inputs(selection.indices[:1]).shape[-2:])
    record = {
        **slide_provenance(config, entry, "fine_maps", ("patching", "features", "model")),
        **prints.fine.record(),
    }
    with FineMapWriter(
        outputs.named("fine_maps.h5"),
        attention["coords"],
        selection.scores,
        selection.indices,
        map_shape,
        patch_size=level0_patch_size(config.patching, slide),
        method=fine.method,
        mil_method=fine.mil_method,
        target=selection.target,
        top_k=fine.top_k,
        metadata=record,
    ) as writer, tqdm(total=len(selection.indices), desc="fine maps", unit="patch", disable=not progress,
                      leave=False) as bar:
        batches = iter_selected_fine_maps(
            encoder.model, inputs, selection, fine, bounds=transform_bounds(encoder.transform)
        )
        for maps, bias in batches:
            writer.append(maps, bias)
            bar.update(len(maps))
