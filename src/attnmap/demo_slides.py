"""`attnmap demo`'s hard-slide section: the slide heatmap per MIL method and fine maps of the top patches.

On a held-out hard synthetic slide (tumour told from normal tissue only by small rings inside the
patches, `attnmap.data.hard_slides`) with the bundled patch ViT and its CLAM_SB: one heatmap per
MIL explanation method with the true tumour outlined, a gallery of the top patches with their fine
maps (`attnmap.wsi.heatmap.fine`), and a pyramidal TIFF with patch scores on coarse pages and fine
maps at full resolution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

HELD_OUT_INDEX = 0
FINE_TOP_K = 16


def hard_slide_section(out: Path, progress: bool = False, device: str | torch.device = "cpu") -> str:
    """Write ``hard_methods.png``, ``hard_fine_gallery.png``, ``hard_slide_fine.tif``; return HTML.

    The patch ViT and the CLAM run on ``device``; patches are cut and drawn on the CPU.
    """
    import cv2

    from attnmap.data.hard_mil import HELD_OUT_SERIES, hard_bag, hard_seed, load_hard_demo_clam
    from attnmap.data.hard_slides import HARD_PATCH_SIZE, crop, make_hard_slide, render_hard_image
    from attnmap.data.patch_vit import load_patch_vit
    from attnmap.data.synthetic_slides import tumour_outline
    from attnmap.evaluate.slide_evidence import PATCH_METHODS, TUMOUR, mil_scores
    from attnmap.provenance import provenance
    from attnmap.render import normalize, save_grid
    from attnmap.wsi import HeatmapStyle, open_slide, render_heatmap
    from attnmap.wsi.heatmap.fine import FineConfig, bag_fine_maps, transform_bounds
    from attnmap.wsi.heatmap.fine_render import write_fine_gallery, write_fine_heatmap_tiff

    seed = hard_seed(HELD_OUT_SERIES, HELD_OUT_INDEX)
    made = make_hard_slide(out / "hard_slide.tif", seed=seed)
    rendered = render_hard_image(seed)  # the same pixels as the (lossless) TIFF
    encoder, model = load_patch_vit(device), load_hard_demo_clam().to(device).eval()
    coords, images, features = hard_bag(rendered, encoder)
    with torch.no_grad():
        prob = float(model(features).probs.reshape(-1)[TUMOUR])
    tiles, titles = [], []
    outline = tumour_outline(made.tumour_mask, made.mask_downsample)
    with open_slide(made.path) as slide:
        level = slide.get_best_level_for_downsample(2)
        style = HeatmapStyle(vis_level=level, percentiles=False, alpha=0.5)
        downsample = float(slide.level_downsamples[level])
        scaled = [np.round(c / downsample).astype(np.int32) for c in outline]
        for method in PATCH_METHODS:
            scores = mil_scores(model, features, method, TUMOUR)
            canvas = np.ascontiguousarray(
                render_heatmap(
                    slide, coords, 100.0 * normalize(scores, "minmax"), style, patch_size=HARD_PATCH_SIZE
                )
            )
            cv2.drawContours(canvas, scaled, -1, (0, 0, 0), 2)
            tiles.append(canvas)
            titles.append(method)
        bounds = transform_bounds(encoder.transform)
        fine = bag_fine_maps(
            encoder.model, images, model, features, FineConfig(top_k=FINE_TOP_K), TUMOUR, bounds
        )
        record = provenance(method="fine_heatmap", parameters={"top_k": FINE_TOP_K, "mil_method": "lrp"})
        display = 100.0 * normalize(fine.all_scores, "minmax")
        write_fine_heatmap_tiff(
            out / "hard_slide_fine.tif",
            slide,
            coords,
            display,
            coords[fine.indices],
            fine.maps,
            HARD_PATCH_SIZE,
            style,
            metadata=record,
        )
    save_grid(tiles, titles, out / "hard_methods.png", ncols=len(tiles), metadata=record)
    patches = crop(rendered.image, coords[fine.indices])
    write_fine_gallery(out / "hard_fine_gallery.png", patches, fine.maps, fine.patch_scores)
    rings = crop(rendered.structures, coords[fine.indices]).reshape(len(fine.indices), -1).any(axis=1)
    return (
        "<h2>Slide decision to pixels: a held-out hard synthetic slide</h2>"
        "<p>Tumour differs from normal tissue only by small rings inside the patches; lymphoid-like "
        "aggregates and folds are darker decoys of the same colour. Bundled headless patch ViT "
        f"(<code>attnmap:patch-vit</code>) and its CLAM_SB; predicted tumour probability {prob:.3f}. "
        "One heatmap per MIL method (min–max scaled, true tumour outlined in black):</p>"
        "<img src='hard_methods.png' style='max-width:100%'>"
        f"<p>Fine maps of the {len(fine.indices)} patches with the highest xMIL-LRP scores "
        f"({int(rings.sum())} of them hold tumour rings): each patch above its map of pixel relevance "
        "(red for, blue against tumour), which sums to the patch's score. "
        "<a href='hard_slide_fine.tif'>hard_slide_fine.tif</a> shows the patch map on coarse levels "
        "and these maps at full resolution.</p><img src='hard_fine_gallery.png' style='max-width:100%'>"
    )
