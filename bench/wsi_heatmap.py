"""Whole-slide heatmap benchmark: time and peak memory for the 1/32 canvas and the full-resolution TIFF.

A virtual 100,000 × 100,000 slide (procedural tiles behind the `Slide` interface, levels at
downsample 1, 2, …, 32) carries 150,000 patches of 256 px. Each measurement runs in a fresh
subprocess and reports its peak RSS (``resource.getrusage``). Baselines measured in the same run:
the process with the slide and scores loaded but nothing rendered, and CLAM's way (the whole
canvas at once, one window) at 1/32; for the full-resolution page the whole-canvas memory CLAM
would need is computed (float64 overlay + uint16 counter + RGB canvas + RGB copy).

    .venv/bin/python bench/wsi_heatmap.py                 # full size (the TIFF takes minutes)
    .venv/bin/python bench/wsi_heatmap.py --size 20000 --patches 6000   # quick
Targets: ≤ 10 s for the 1/32 canvas, ≤ 1.5 GB peak for the full-resolution TIFF.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from attnmap.wsi.slide import Slide

MASK_CELL = 256


class ProceduralSlide(Slide):
    """A huge slide made up on the fly: pink textured tissue on an elliptical region, white glass."""

    def __init__(self, size: int, levels: int = 6, mpp: float = 0.25) -> None:
        self.path = f"<procedural {size}x{size}>"
        self.level_dimensions = tuple((size // 2**i, size // 2**i) for i in range(levels))
        self.level_downsamples = tuple(float(2**i) for i in range(levels))
        self.mpp = mpp
        cells = -(-size // MASK_CELL)
        ys, xs = (np.mgrid[0:cells, 0:cells] + 0.5) / cells - 0.5
        self.cell_mask = (xs / 0.49) ** 2 + (ys / 0.47) ** 2 < 1.0
        rng = np.random.default_rng(0)
        self.texture = np.stack([200 + rng.integers(0, 40, (256, 256)), 110 + rng.integers(0, 40, (256, 256)),
                                 170 + rng.integers(0, 40, (256, 256))], axis=2).astype(np.uint8)

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        step = 2**level
        if step <= 16 and x % 256 == 0 and y % 256 == 0:
            return self._read_cells(step, x, y, width, height)
        cols, rows = np.arange(x, x + width), np.arange(y, y + height)
        tissue = self.cell_mask[np.ix_(rows * step // MASK_CELL, cols * step // MASK_CELL)]
        pixels = self.texture[np.ix_(rows % 256, cols % 256)]
        pixels[~tissue] = 243
        return pixels


    def _read_cells(self, step: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """Fast path for tile-aligned reads: copy the texture cell by cell (cells are 256/step px)."""
        cell = MASK_CELL // step
        out = np.full((height, width, 3), 243, np.uint8)
        for top in range(0, height, 256):
            for left in range(0, width, 256):
                h, w = min(256, height - top), min(256, width - left)
                out[top : top + h, left : left + w] = self.texture[:h, :w]
        rows = np.arange(y, y + height) // cell
        cols = np.arange(x, x + width) // cell
        glass = ~self.cell_mask[np.ix_(rows[::cell], cols[::cell])]
        for r, c in np.argwhere(glass):
            out[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = 243
        return out


def make_inputs(size: int, n_patches: int, patch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Patch corners on the tissue cells (row-major), the first ``n_patches`` of them, and scores."""
    slide = ProceduralSlide(size)
    cells = np.argwhere(slide.cell_mask[: size // patch, : size // patch])
    if len(cells) < n_patches:
        grid = np.argwhere(np.ones((size // patch, size // patch), bool))
        cells = grid
    coords = cells[:n_patches, ::-1].astype(np.int64) * patch
    rng = np.random.default_rng(1)
    smooth = np.sin(coords[:, 0] / size * 7) + np.cos(coords[:, 1] / size * 5)
    return coords, smooth + 0.3 * rng.normal(size=len(coords))


def _task(task: str, size: int, n_patches: int, out: str) -> dict:
    from attnmap.wsi import HeatmapStyle, render_heatmap, segment_tissue, write_heatmap_tiff

    slide = ProceduralSlide(size)
    coords, scores = make_inputs(size, n_patches)
    tissue = segment_tissue(slide, level=slide.level_count - 1, sthresh=15, mthresh=11, close=2, a_t=1, a_h=1)
    style = HeatmapStyle(vis_level=-1)
    start = time.perf_counter()
    result: dict = {}
    if task == "canvas":
        image = render_heatmap(slide, coords, scores, style, patch_size=256, tissue=tissue)
        result["canvas"] = list(image.shape)
    elif task == "canvas_whole":
        image = render_heatmap(slide, coords, scores, style, patch_size=256, tissue=tissue,
                               block=1 << 30)
        result["canvas"] = list(image.shape)
    elif task == "tiff":
        path = write_heatmap_tiff(Path(out) / "heatmap.tif", slide, coords, scores, patch_size=256, level=0,
                                  tissue=tissue, progress=True)
        result["tiff_bytes"] = path.stat().st_size
        import openslide

        with openslide.OpenSlide(str(path)) as viewer:
            result["tiff_levels"] = viewer.level_count
            result["tiff_mpp"] = float(viewer.properties["openslide.mpp-x"])
    result["seconds"] = time.perf_counter() - start
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def measure(task: str, size: int, n_patches: int, out: str) -> dict:
    """Run one task in a fresh interpreter so its peak RSS is its own."""
    command = [sys.executable, __file__, "--task", task, "--size", str(size), "--patches", str(n_patches),
               "--out", out]
    finished = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--patches", type=int, default=150_000)
    parser.add_argument("--skip-tiff", action="store_true")
    parser.add_argument("--task", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.task:
        print(json.dumps(_task(args.task, args.size, args.patches, args.out)))
        return
    with tempfile.TemporaryDirectory() as out:
        print(f"virtual slide {args.size}×{args.size}, {args.patches} patches of 256 px")
        loaded = measure("load", args.size, args.patches, out)
        print(f"baseline (inputs loaded, nothing rendered): peak {loaded['peak_rss_mb']:.0f} MB")
        whole = measure("canvas_whole", args.size, args.patches, out)
        canvas = measure("canvas", args.size, args.patches, out)
        print(f"1/32 canvas {canvas['canvas']}: {canvas['seconds']:.2f} s, "
              f"peak {canvas['peak_rss_mb']:.0f} MB (target ≤ 10 s)")
        print(f"  whole canvas at once (CLAM's way): {whole['seconds']:.2f} s, "
              f"peak {whole['peak_rss_mb']:.0f} MB; "
              f"time ratio windowed/whole {canvas['seconds'] / whole['seconds']:.2f}")
        if not args.skip_tiff:
            tiff = measure("tiff", args.size, args.patches, out)
            clam_bytes = args.size**2 * (8 + 2 + 3 + 3)
            print(f"full-resolution TIFF, level 0 ({args.size}²) + pyramid: {tiff['seconds']:.1f} s, "
                  f"peak {tiff['peak_rss_mb']:.0f} MB (target ≤ 1536 MB), "
                  f"{tiff['tiff_bytes'] / 1e6:.0f} MB file")
            ratio = clam_bytes / 2**20 / tiff["peak_rss_mb"]
            print(f"  OpenSlide sees {tiff['tiff_levels']} levels, mpp {tiff['tiff_mpp']:.3f}; a whole "
                  f"level-0 canvas needs ≥ {clam_bytes / 2**30:.1f} GB ({ratio:.0f}× this peak)")

if __name__ == "__main__":
    main()
