"""`attnmap demo`: the whole product on bundled models and freshly generated held-out data.

Everything it needs ships with the package (no network): the shapes ViT and the demo CLAM_SB with
its tiny patch encoder, both trained by project commands on synthetic data with known answers. It
writes, under one folder:

1. ``shapes_methods.png`` — every ViT method on held-out shape images (target outlined);
2. ``evaluation.csv`` / ``evaluation.png`` / ``evaluation.md`` — the faithfulness and localisation
   table of every method against a random baseline;
3. ``slide_heatmap.png`` (tumour outline drawn), ``slide_heatmap.tif`` (pyramidal, opens in QuPath /
   OpenSlide), ``slide_blockmap.h5`` (per-patch scores) for a held-out synthetic slide;
4. ``hard_methods.png``, ``hard_fine_gallery.png``, ``hard_slide_fine.tif``: a hard synthetic slide's
   heatmap per MIL method and fine maps of its top patches (`attnmap.demo_slides`);
5. ``index.html`` showing them all, and ``demo_run.json`` (wall time, device, CPU count, load average).

Every model runs on one device (``device``: auto, cpu, cuda or cuda:N; auto is CUDA when available);
data are made, and pictures drawn, on the CPU. The recorded figures (README, the bundled models'
JSON records) were made on the CPU, which is what auto means on a machine without CUDA.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import numpy as np
import torch

from attnmap.io_utils import write_json_atomic
from attnmap.threads import compute_threads, idle_cores

HELD_OUT_SHAPES_SEED = 1
"""Seed of the demo's shape images: the bundled model trained on the seed-0 stream, so never seen.
The evaluation therefore equals ``attnmap evaluate --data shapes --n N --seed 1`` (the README's)."""


def run_demo(
    out_dir: str | Path = "attnmap-demo",
    n_eval: int = 200,
    progress: bool = True,
    device: str | torch.device = "auto",
) -> Path:
    """Run the demo on ``device`` and return the path of its ``index.html``.

    An unknown device, or CUDA asked for where there is none, is an `InputError` before any work.
    """
    from attnmap.devices import resolve_device

    target = resolve_device(device)
    started = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    # small models and tensors: no more threads than idle cores (a busy machine stalls OpenMP teams)
    with compute_threads(idle_cores()):
        sections = [
            _shapes_section(out, target),
            _evaluation_section(out, n_eval, progress, target),
            _slide_section(out, progress, target),
            _hard_slide_section(out, progress, target),
        ]
    seconds = time.time() - started
    index = out / "index.html"
    index.write_text(_page(sections, seconds, target))
    write_json_atomic(out / "demo_run.json", _run_record(seconds, n_eval, target))
    return index


def _run_record(seconds: float, n_eval: int, device: torch.device) -> dict[str, object]:
    """How long this run took and on what: the README's demo time is read from such a record."""
    import os
    import platform

    from attnmap.provenance import provenance

    return {
        **provenance(method="demo", parameters={"n_eval": n_eval, "device": str(device)}),
        "wall_seconds": round(seconds, 1),
        "device": str(device),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
    }


def _shapes_section(out: Path, device: torch.device) -> str:
    import cv2

    import attnmap
    from attnmap.data.shapes import SHAPE_CLASSES, ShapesDataset
    from attnmap.data.shapes_model import load_shapes_vit
    from attnmap.provenance import provenance
    from attnmap.render import overlay, save_grid

    model = load_shapes_vit().to(device)
    data = ShapesDataset(4, seed=HELD_OUT_SHAPES_SEED)
    images = data.images.to(device)
    with torch.no_grad():
        predicted = model(images).argmax(-1).cpu()
    names = list(attnmap.methods())
    tiles, titles = [], []
    for row in range(len(data)):
        image = cv2.resize(data.images_uint8[row], (192, 192), interpolation=cv2.INTER_NEAREST)
        outlined = image.copy()
        mask = data.masks[row].numpy().astype(np.uint8)
        mask = cv2.resize(mask, (192, 192), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(outlined, contours, -1, (255, 255, 255), 2)
        label, guess = SHAPE_CLASSES[int(data.labels[row])], SHAPE_CLASSES[int(predicted[row])]
        tiles.append(outlined)
        titles.append(f"{label} (predicted {guess})")
        for name in names:
            maps = attnmap.explain(model, images[row : row + 1], name)
            tiles.append(overlay(image, maps[0].cpu(), cmap="jet", alpha=0.5))
            titles.append(name)
    save_grid(tiles, titles, out / "shapes_methods.png", ncols=len(names) + 1,
              metadata=provenance(method="all", model=model, model_name="attnmap:shapes-vit"))
    return (
        "<h2>ViT methods on held-out shape images</h2>"
        "<p>The bundled shapes ViT (<code>attnmap:shapes-vit</code>) classifies the target shape; each "
        "column is one method's map for the predicted class. The true target is outlined in white in the "
        "first column.</p><img src='shapes_methods.png' style='max-width:100%'>"
    )


def _evaluation_section(out: Path, n_eval: int, progress: bool, device: torch.device) -> str:
    import attnmap
    from attnmap.data.shapes import ShapesDataset
    from attnmap.data.shapes_model import load_shapes_vit
    from attnmap.evaluate.report import format_table, plot_curves, write_csv
    from attnmap.evaluate.runner import evaluate_methods
    from attnmap.provenance import provenance

    model = load_shapes_vit().to(device)  # each batch goes to the model; maps and metrics on the CPU
    data = ShapesDataset(n_eval, seed=HELD_OUT_SHAPES_SEED)
    result = evaluate_methods(model, data, list(attnmap.methods()), batch_size=50, seed=HELD_OUT_SHAPES_SEED,
                              progress=progress)
    record = provenance(method="evaluate", parameters={"n": n_eval, "seed": HELD_OUT_SHAPES_SEED},
                        model=model, model_name="attnmap:shapes-vit")
    write_csv(result, out / "evaluation.csv", record)
    plot_curves(result, out / "evaluation.png", record)
    table = format_table(result, markdown=True)
    (out / "evaluation.md").write_text(table + "\n")
    print(format_table(result))
    return (
        f"<h2>Faithfulness and localisation ({n_eval} held-out shape images)</h2>"
        "<p>Perturbation AUCs (negative: higher is better; positive: lower is better), segmentation "
        "(pixel accuracy, mIoU, mAP) and the pointing game against the true target masks, with a random "
        "baseline.</p>"
        f"<pre>{html.escape(format_table(result))}</pre>"
        "<img src='evaluation.png' style='max-width:100%'>"
        "<p><a href='evaluation.csv'>evaluation.csv</a></p>"
    )


def _slide_section(out: Path, progress: bool, device: torch.device) -> str:
    import cv2

    from attnmap.data.mil_demo import (
        PATCH_SIZE,
        TISSUE_PRESET,
        held_out_slide,
        load_demo_clam,
        slide_bag,
        slide_localisation,
    )
    from attnmap.data.synthetic_slides import tumour_outline
    from attnmap.data.tiny_encoder import load_tiny_encoder
    from attnmap.io_utils import save_png
    from attnmap.mil import attention_scores
    from attnmap.provenance import provenance
    from attnmap.render.legend import add_legend
    from attnmap.render.scale import choose_scale
    from attnmap.wsi import (
        HeatmapStyle,
        open_slide,
        render_heatmap,
        save_scores_h5,
        segment_tissue,
        write_heatmap_tiff,
    )

    synthetic = held_out_slide(out / "slide.tif", index=0)
    coords, features = slide_bag(synthetic.path, load_tiny_encoder(device), progress=progress, device=device)
    model = load_demo_clam().to(device)  # features stay on the CPU: each chunk goes to the model
    scores = attention_scores(model, torch.from_numpy(features), kind="raw")
    here = slide_localisation(model, synthetic.path, coords, features)
    prob = here["prob_tumour"]
    record = provenance(method="clam_attention", parameters={"patch_size": PATCH_SIZE, "kind": "raw"},
                        model=model, model_name="attnmap demo CLAM_SB")
    save_scores_h5(out / "slide_blockmap.h5", coords, scores, metadata=record)
    # CLAM's percentile colouring spreads the arbitrary ranking of normal tissue over the whole colour
    # scale; a linear scale between the 1st and 99th percentile (the renderer reads raw values as
    # percent) keeps normal tissue cold (bench/heatmap_normalisation.py): `wsi run`'s default.
    scale = choose_scale(scores, kind="robust")
    display = 100.0 * scale.unit(scores)
    with open_slide(synthetic.path) as slide:
        tissue = segment_tissue(slide, preset=TISSUE_PRESET)
        vis_level = slide.get_best_level_for_downsample(4)
        style = HeatmapStyle(vis_level=vis_level, percentiles=False, alpha=0.5)
        canvas = render_heatmap(slide, coords, display, style, patch_size=PATCH_SIZE, tissue=tissue)
        downsample = float(slide.level_downsamples[vis_level])
        write_heatmap_tiff(out / "slide_heatmap.tif", slide, coords, display, style, patch_size=PATCH_SIZE,
                           level=0, tissue=tissue, metadata=record, progress=progress)
    outline = [np.round(c / downsample).astype(np.int32)
               for c in tumour_outline(synthetic.tumour_mask, synthetic.mask_downsample)]
    canvas = np.ascontiguousarray(canvas)
    cv2.drawContours(canvas, outline, -1, (255, 255, 255), 3)
    cv2.drawContours(canvas, outline, -1, (0, 0, 0), 1)
    title = f"held-out synthetic slide · CLAM_SB attention · predicted tumour probability {prob:.3f}"
    save_png(out / "slide_heatmap.png", add_legend(canvas, scale, title, label="attention"), metadata=record)
    return (
        "<h2>Attention-MIL heatmap of a held-out synthetic slide</h2>"
        "<p>CLAM_SB attention (raw, linear between its 1st and 99th percentile, jet) of the demo model "
        f"over {len(coords)} patches of "
        f"{PATCH_SIZE} px; predicted tumour probability {prob:.3f}. The true tumour boundary is drawn in "
        "white. <a href='slide_heatmap.tif'>slide_heatmap.tif</a> is the full-resolution overlay as a "
        "pyramidal TIFF (open it in QuPath or with OpenSlide); <a href='slide_blockmap.h5'>"
        "slide_blockmap.h5</a> holds the per-patch scores in CLAM's layout.</p>"
        "<img src='slide_heatmap.png' style='max-width:100%'>"
        + _localisation_paragraph(here)
    )


def _hard_slide_section(out: Path, progress: bool, device: torch.device) -> str:
    from attnmap.demo_slides import hard_slide_section

    return hard_slide_section(out, progress, device)


def _localisation_paragraph(here: dict[str, float]) -> str:
    """Attention AUC against the true tumour patches, always beside the naive darkness baseline: on
    this slide (computed now) and on the held-out slides recorded with the model."""
    from attnmap.data.mil_demo import demo_record

    held_out = demo_record()["held_out"]
    parts = []
    if "auc" in here:
        parts.append(
            f"On this slide, attention ranks tumour patches above the others with AUC {here['auc']:.3f}; "
            f"the darkness baseline (each patch's mean darkness) reaches {here['darkness_baseline_auc']:.3f}."
        )
    parts.append(
        f"On the {held_out['n_tumour_slides_scored']} held-out tumour slides recorded with the model "
        f"(<code>demo_clam_sb.json</code>): attention AUC {held_out['attention_auc_mean']:.3f} "
        f"(min {held_out['attention_auc_min']:.3f}) against the darkness baseline's "
        f"{held_out['darkness_baseline_auc_mean']:.3f}; tumour against its dark look-alike (lymphoid "
        f"aggregates) {held_out['tumour_vs_lymphoid_auc_mean']:.3f}."
    )
    return "<p>" + " ".join(parts) + "</p>"


def _page(sections: list[str], seconds: float, device: torch.device) -> str:
    from attnmap import __version__

    body = "\n".join(sections)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>attnmap demo</title>"
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "pre{background:#f4f4f4;padding:1em;overflow-x:auto}</style></head><body>"
        f"<h1>attnmap {html.escape(__version__)} demo</h1>"
        f"<p>Made in {seconds:.0f} s on this machine (device {html.escape(str(device))}), with no network, "
        "from models bundled in the package.</p>"
        f"{body}</body></html>\n"
    )
