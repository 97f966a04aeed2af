"""Pointing game of an average-pooled shapes ViT against the bundled CLS shapes ViT, method by method.

Issue 12 asks that average-pooled models (no CLS token, ``global_pool='avg'``) get maps whose signal
is not drowned by the residual identity (docs/average_pooling.md): their pointing game should lie
within 10 points of the CLS model's for the same method. Both models share the shapes recipe; the
GAP model is trained by this script (seeded, `attnmap.data.train_shapes`, a few CPU minutes) unless
``--gap-weights`` names one already trained. Prints one row per method: CLS %, GAP %, difference,
and a 95 % paired-bootstrap interval of the difference (both models see the same images; resampling
the images shows how far the difference of a test set of this size can move).

    python bench/vit_gap_pointing.py --gap-weights /tmp/shapes_gap.safetensors --n 200
    python bench/vit_gap_pointing.py --gap-weights /tmp/shapes_gap16.safetensors --epochs 16 --n 1000
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import torch

import attnmap
from attnmap.data.shapes import ShapesDataset
from attnmap.data.shapes_model import build_shapes_vit, load_shapes_vit
from attnmap.evaluate.maps import maps_to_pixels
from attnmap.evaluate.pointing import pointing_hits

GAP_OPTIONS = {"global_pool": "avg", "class_token": False, "fc_norm": True}


def gap_model(weights: Path | None, epochs: int | None = None) -> torch.nn.Module:
    """The GAP shapes ViT at ``weights``; trained there first (seed 0, 1 thread) if missing, for
    ``epochs`` (default: the bundled model's recipe)."""
    from safetensors.torch import load_file

    if weights is None or not weights.exists():
        from attnmap.data.train_shapes import RECIPE, train_shapes_vit

        weights = weights or Path("shapes_gap.safetensors")
        train_shapes_vit(
            weights, seed=0, epochs=epochs or RECIPE["epochs"], threads=1, model_options=GAP_OPTIONS,
            progress=True,
        )
    model = build_shapes_vit(**GAP_OPTIONS)
    model.load_state_dict(load_file(str(weights)))
    return model.eval()


def pointing(model: torch.nn.Module, data: ShapesDataset, method: str, batch: int = 50) -> np.ndarray:
    """Per image: does the map's peak hit the target (within 4 px)?"""
    hits = []
    for start in range(0, len(data.images), batch):
        images = data.images[start : start + batch]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            maps = attnmap.explain(model, images, method, target=data.labels[start : start + batch])
        pixels = maps_to_pixels(maps, tuple(images.shape[-2:]))
        hits.extend(pointing_hits(pixels, data.masks[start : start + batch]).tolist())
    return np.asarray(hits, dtype=bool)


def paired_interval(cls_hits: np.ndarray, gap_hits: np.ndarray, resamples: int = 2000) -> tuple[float, float]:
    """95 % percentile interval (points) of GAP − CLS pointing over images resampled with replacement."""
    rng = np.random.default_rng(0)
    index = rng.integers(0, len(cls_hits), size=(resamples, len(cls_hits)))
    differences = 100.0 * (gap_hits[index].mean(axis=1) - cls_hits[index].mean(axis=1))
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gap-weights", type=Path, default=None,
                        help="trained GAP weights (.safetensors); trained and written there if missing")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs of a GAP model trained here (default: the CLS model's recipe)")
    parser.add_argument("--n", type=int, default=200, help="held-out images (seed-1 stream)")
    parser.add_argument("--methods", default=",".join(sorted(attnmap.methods())), help="comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data = ShapesDataset(args.n, seed=1)
    cls_model, avg_model = load_shapes_vit(), gap_model(args.gap_weights, args.epochs)
    print(f"n = {args.n} images of the seed-1 stream")
    print("| method | CLS model % | GAP model % | GAP − CLS | 95 % interval |\n|---|---|---|---|---|")
    for method in args.methods.split(","):
        ours, theirs = pointing(cls_model, data, method), pointing(avg_model, data, method)
        difference = 100.0 * (theirs.mean() - ours.mean())
        low, high = paired_interval(ours, theirs)
        print(f"| {method} | {100 * ours.mean():.1f} | {100 * theirs.mean():.1f} | {difference:+.1f} "
              f"| {low:+.1f} … {high:+.1f} |", flush=True)


if __name__ == "__main__":
    main()
