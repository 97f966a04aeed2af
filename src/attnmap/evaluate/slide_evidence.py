"""Evidence on slides with a known answer at both scales: patch maps, patch flipping, fine maps.

On held-out hard synthetic slides (`attnmap.data.hard_slides`) with the bundled patch ViT and its
CLAM_SB (`attnmap.data.hard_mil`), per MIL explanation method:

- **patch AUC**: ROC AUC of the patch scores against the tumour regions (a patch is tumour when at
  least half of it is), mean over tumour slides; next to it the same AUC of the trivial scores
  (mean darkness, mean purple = B − G) that colour and darkness alone would give;
- **patch flipping**: remove the highest-scoring patches first, in steps, track the tumour
  probability; the area under that curve (lower = more faithful) for the method, and for a seeded
  random order as the floor (`attnmap.evaluate.patch_flipping`);
- **pixel AUC** of the fine maps (`attnmap.wsi.heatmap.fine`) inside tumour patches against the ring
  pixels, pooled over the patches of each slide, against the upsampled patch map (each pixel takes
  its patch's score) and against pixel darkness.

Run: ``python -m attnmap.evaluate.slide_evidence --slides 8`` (prints the table of docs/slide-evidence.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import cv2
import numpy as np
import torch

from attnmap.data.hard_slides import crop, naive_scores, patch_fraction, render_hard_image
from attnmap.errors import InputError
from attnmap.evaluate.patch_flipping import patch_flipping
from attnmap.mil.explain import explain
from attnmap.mil.metrics import roc_auc
from attnmap.wsi.heatmap.fine import FINE_METHODS, FineConfig, bag_fine_maps, transform_bounds

PATCH_METHODS = ("attention", "gradient_x_input", "integrated_gradients", "lrp", "occlusion")
FLIP_FRACTIONS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
TUMOUR = 1
SMOOTH_SIGMA = 2.0
"""Gaussian σ (pixels) of the smoothed fine map reported next to the raw one."""
STAINED_DARKNESS = 100.0
"""Pixels darker than this (255 − mean RGB) are stained: ring or nucleus ink, not cytoplasm."""


def mil_scores(model: torch.nn.Module, features: torch.Tensor, method: str, target: int) -> np.ndarray:
    """Patch scores (N,) of one MIL relevance method (`attnmap.mil.explain`), in float64."""
    return np.asarray(explain(model, features, method=method, target=target), dtype=np.float64)


def flipping_auc(
    model: torch.nn.Module, features: torch.Tensor, scores: np.ndarray, target: int, seed: int = 0
) -> tuple[float, float]:
    """(AUC of the most-relevant-first removal curve, AUC of a seeded random order) of p(target)."""
    result = patch_flipping(model, features, scores, target=target, fractions=FLIP_FRACTIONS, seed=seed)
    return result.auc_most_relevant_first, result.auc_random


def evaluate_slide(seed: int, encoder, model, fine_method: str = "lrp") -> dict[str, object]:
    """All numbers of one held-out tumour slide (see the module docstring)."""
    from attnmap.data.hard_mil import SLIDE_SIZE, hard_bag

    rendered = render_hard_image(seed, SLIDE_SIZE, tumour=True)
    coords, images, features = hard_bag(rendered, encoder)
    labels = patch_fraction(rendered.tumour, coords) >= 0.5
    patches = crop(rendered.image, coords)
    result: dict[str, object] = {"seed": seed, "n_patches": len(coords), "n_tumour": int(labels.sum())}
    with torch.no_grad():
        h = model.embed(features)
        weights = torch.softmax(model.attention_logits(h).transpose(0, 1), dim=1)
        result["prob_tumour"] = float(torch.softmax(model.classify(weights @ h), dim=1)[0, TUMOUR])
    naive = naive_scores(patches)
    result["_pooled"] = (labels, naive)  # for the AUC over all slides' patches together
    for name, values in naive.items():
        if name in ("darkness", "purple"):
            result[f"patch_auc/{name}"] = roc_auc(labels, values)
    for method in PATCH_METHODS:
        scores = mil_scores(model, features, method, TUMOUR)
        result[f"patch_auc/{method}"] = roc_auc(labels, scores)
        flip, random_flip = flipping_auc(model, features, scores, TUMOUR)
        result[f"flip_auc/{method}"], result["flip_auc/random"] = flip, random_flip

    tumour_patches = np.flatnonzero(labels)
    if len(tumour_patches):
        config = FineConfig(method=fine_method, top_k=None, mil_method="lrp")
        # directions come from the whole bag; fine maps only for its tumour patches (top_k = all)
        fine = bag_fine_maps(
            encoder.model,
            lambda idx: images[torch.as_tensor(idx)],
            model,
            features,
            config,
            TUMOUR,
            bounds=transform_bounds(encoder.transform),
        )
        chosen = np.isin(fine.indices, tumour_patches)
        maps, indices, patch_scores = fine.maps[chosen], fine.indices[chosen], fine.patch_scores[chosen]
        rings = crop(rendered.structures, coords[indices]).astype(bool)
        darkness = 255.0 - crop(rendered.image, coords[indices]).astype(np.float64).mean(axis=3)
        smooth = np.stack([cv2.GaussianBlur(m, (0, 0), SMOOTH_SIGMA) for m in maps])
        upsampled = np.broadcast_to(patch_scores[:, None, None], maps.shape)
        stained = darkness > STAINED_DARKNESS  # rings and nuclei: is it the rings, not just any ink?
        for name, values in (
            ("fine", maps),
            ("fine_smoothed", smooth),
            ("upsampled_patch_map", upsampled),
            ("darkness", darkness),
        ):
            result[f"pixel_auc/{name}"] = roc_auc(rings.reshape(-1), values.reshape(-1))
            result[f"stained_auc/{name}"] = roc_auc(rings[stained], values[stained])
        pairs = zip(rings, maps, strict=True)
        per_patch = [roc_auc(r.reshape(-1), m.reshape(-1)) for r, m in pairs if r.any()]
        result["pixel_auc/fine_per_patch_mean"] = float(np.nanmean(per_patch)) if per_patch else float("nan")
        result["fine/n_patches"] = int(len(indices))
    return result


def evaluate_hard_slides(
    n_slides: int = 8, fine_method: str = "lrp", progress: bool = False
) -> dict[str, object]:
    """Per-slide results and their means over ``n_slides`` held-out hard tumour slides (``progress``:
    a bar over the slides)."""
    from tqdm.auto import tqdm

    from attnmap.data.hard_mil import HELD_OUT_SERIES, hard_seed, load_hard_demo_clam
    from attnmap.data.patch_vit import load_patch_vit

    if n_slides < 1:
        raise InputError(f"need at least one slide, got {n_slides}")
    encoder, model = load_patch_vit(), load_hard_demo_clam().eval()
    per_slide = [
        evaluate_slide(hard_seed(HELD_OUT_SERIES, i), encoder, model, fine_method)
        for i in tqdm(range(n_slides), desc="slides", disable=not progress)
    ]
    pooled = [r.pop("_pooled") for r in per_slide]
    labels = np.concatenate([p[0] for p in pooled])
    keys = [key for key in per_slide[0] if "/" in key or key == "prob_tumour"]
    means = {key: float(np.nanmean([float(r.get(key, np.nan)) for r in per_slide])) for key in keys}
    for name in pooled[0][1]:  # trivial scores over all patches at once (more tumour patches per AUC)
        means[f"pooled_patch_auc/{name}"] = roc_auc(labels, np.concatenate([p[1][name] for p in pooled]))
    return {"n_slides": n_slides, "fine_method": fine_method, "means": means, "per_slide": per_slide}


def format_table(report: dict[str, object]) -> str:
    """Markdown tables: per method patch AUC and flipping AUC; pixel AUC of fine maps and baselines."""
    m = report["means"]
    lines = [
        "| patch scores | patch AUC vs tumour regions | patch-flipping AUC (lower = more faithful) |",
        "|---|---|---|",
    ]
    for method in PATCH_METHODS:
        lines.append(f"| {method} | {m[f'patch_auc/{method}']:.3f} | {m[f'flip_auc/{method}']:.3f} |")
    lines.append(f"| random order | – | {m['flip_auc/random']:.3f} |")
    lines.append(f"| mean darkness (baseline) | {m['patch_auc/darkness']:.3f} | – |")
    lines.append(f"| mean purple B−G (baseline) | {m['patch_auc/purple']:.3f} | – |")
    pooled = ", ".join(
        f"{k.split('/')[1]} {v:.3f}" for k, v in m.items() if k.startswith("pooled_patch_auc/")
    )
    lines += ["", f"Trivial patch scores over all slides' patches pooled (AUC): {pooled}."]
    lines += [
        "",
        "| pixel scores inside tumour patches | pixel AUC vs ring pixels "
        "| among stained pixels (ring vs nucleus ink) |",
        "|---|---|---|",
    ]
    names = {
        "fine": f"fine map (xMIL-LRP → encoder {_encoder_method(report.get('fine_method', 'lrp'))})",
        "fine_smoothed": f"fine map, Gaussian σ = {SMOOTH_SIGMA:g} px",
        "upsampled_patch_map": "upsampled patch map (baseline)",
        "darkness": "pixel darkness (baseline)",
    }
    for key, label in names.items():
        lines.append(f"| {label} | {m[f'pixel_auc/{key}']:.3f} | {m[f'stained_auc/{key}']:.3f} |")
    lines.append(f"| fine map, mean of per-patch AUCs | {m['pixel_auc/fine_per_patch_mean']:.3f} | – |")
    return "\n".join(lines)


def _encoder_method(fine_method: str) -> str:
    """The fine method as the table names it (LRP, as the README's table; others by their name)."""
    return "LRP" if fine_method == "lrp" else fine_method


def main(argv: list[str] | None = None) -> int:
    import shlex

    from attnmap.io_utils import check_writable, writable_file, write_bytes_atomic
    from attnmap.provenance import provenance

    parser = argparse.ArgumentParser(description="Evidence table on held-out hard synthetic slides.")
    parser.add_argument("--slides", type=_positive, default=8, help="held-out slides (at least 1)")
    parser.add_argument("--fine-method", default="lrp", choices=FINE_METHODS)
    parser.add_argument("--json", default=None, help="also write the full report here")
    args = parser.parse_args(argv)
    try:  # before the slides, not after them: a folder or a file above the path
        if args.json:
            check_writable(args.json)
        torch.set_num_threads(1)
        started = time.time()
        report = evaluate_hard_slides(args.slides, args.fine_method, progress=True)
        print(format_table(report))
        print(f"\n{args.slides} held-out slides, {time.time() - started:.0f} s")
        if args.json:  # whole or not at all, with the record of what made it
            command = shlex.join(["python", "-m", "attnmap.evaluate.slide_evidence", "--slides",
                                  str(args.slides), "--fine-method", args.fine_method, "--json", args.json])
            report["provenance"] = provenance(method=args.fine_method, parameters={"slides": args.slides},
                                              command=command)
            text = json.dumps(report, indent=2, default=float) + "\n"
            write_bytes_atomic(writable_file(args.json), text.encode())
    except InputError as exc:  # one line, as the attnmap command says it
        parser.error(str(exc))
    return 0


def _positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"needs a whole number of at least 1, got {text!r}")
    return value


if __name__ == "__main__":
    sys.exit(main())
