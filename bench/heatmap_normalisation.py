"""Which score normalisation makes the demo slide's heatmap readable (the `wsi run` default question).

On a held-out synthetic slide with a known tumour mask, the demo CLAM_SB's raw attention is mapped
to colour values in [0, 1] by each scale (`attnmap.render.scale`). Printed per scale: mean value
on tumour and on normal-tissue patches, their gap, and the share of normal patches drawn in the
upper half of the colour map (yellow to red in jet: "looks hot"). The baseline is CLAM's percentile
scale (today's `percentiles: true`), measured in the same run; ratios are against it.

    python bench/heatmap_normalisation.py [--slides 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch


def measure(index: int, folder: Path) -> dict[str, dict[str, float]]:
    from attnmap.data.mil_demo import PATCH_SIZE, held_out_slide, load_demo_clam, slide_bag
    from attnmap.evaluate.mil_localisation import patch_labels_from_mask
    from attnmap.mil import attention_scores
    from attnmap.render.scale import choose_scale

    synthetic = held_out_slide(folder / f"slide_{index}.tif", index=index)
    coords, features = slide_bag(synthetic.path)
    scores = attention_scores(load_demo_clam(), torch.from_numpy(features), kind="raw").astype(np.float64)
    tumour = patch_labels_from_mask(coords, PATCH_SIZE, synthetic.tumour_mask, synthetic.mask_downsample)
    rows = {}
    for kind in ("percentile", "minmax", "robust"):
        values = choose_scale(scores, kind=kind).unit(scores)
        rows[kind] = {
            "tumour": float(values[tumour].mean()),
            "normal": float(values[~tumour].mean()),
            "gap": float(values[tumour].mean() - values[~tumour].mean()),
            "normal_hot": float((values[~tumour] >= 0.5).mean()),
            "tumour_hot": float((values[tumour] >= 0.5).mean()),
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        results = [measure(index, Path(folder)) for index in range(args.slides)]
    print(f"{'scale':<11} {'tumour':>7} {'normal':>7} {'gap':>6} {'gap/base':>8} {'normal hot':>10} "
          f"{'tumour hot':>10}")
    base_gap = np.mean([r["percentile"]["gap"] for r in results])
    for kind in ("percentile", "minmax", "robust"):
        mean = {key: float(np.mean([r[kind][key] for r in results])) for key in results[0][kind]}
        print(f"{kind:<11} {mean['tumour']:7.3f} {mean['normal']:7.3f} {mean['gap']:6.3f} "
              f"{mean['gap'] / base_gap:8.2f} {mean['normal_hot']:10.1%} {mean['tumour_hot']:10.1%}")


if __name__ == "__main__":
    main()
