"""`attnmap wsi run` end to end (heatmap overlap 0.5) against a CLAM-scripts-like loop, in one process.

Usage: ``python bench/wsi_run.py [--size 4096] [--encoder resnet50_trunc] [--batch-size 64] [--repeats 1]``

Writes one synthetic slide (`attnmap.data.synthetic_slides`) and a CLAM_SB with seeded random
weights, then times, with the same torch threads (every available core), the same encoder object
and the same CLAM model (both loaded before timing starts):

- ``attnmap``: `run_cohort` with one worker (in-process): tissue → patches → features → attention →
  heatmap PNG on the overlapping grid (step = patch / 2), the overlap grid reusing the block grid's
  features;
- ``CLAM-like``: a re-implementation of the *shape* of CLAM's per-stage scripts, built from attnmap's
  own functions (same segmentation, grids, encoder, CLAM model and renderer, so only the loop shape
  differs): a feature pass over the block grid (extract_features_fp: a DataLoader without worker
  processes, as CLAM's loaders on a CPU, so patches are read between batches in the main thread),
  attention on those features, then create_heatmaps' separate feature pass over the whole overlap
  grid. It is not CLAM's code: CLAM's own rendering and file handling are not what is measured.

Printed: seconds of each and their ratio; patches encoded ÷ patches needed (the union of the two
grids); patch throughput of the feature stage inside `wsi run` ÷ the bare encoder's (the model
alone on patches already in memory, same batch size and threads). Timings on a shared machine are
noisy: compare the ratios, which come from one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import write_run_config


class Counter:
    """Rows through the encoder (a forward pre-hook) and seconds inside the feature extraction calls."""

    def __init__(self) -> None:
        self.rows = 0
        self.seconds = 0.0

    def hook(self, module: Any, inputs: tuple) -> None:
        self.rows += int(inputs[0].shape[0])

    def timed(self, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return wrapper


def bare_encoder_rate(encoder: Any, slide_path: str, batch_size: int) -> float:
    """Patches/s of the model alone on two batches of transformed patches already in memory."""
    from attnmap.wsi.features import read_patch_rgb
    from attnmap.wsi.slide import open_slide

    with open_slide(slide_path) as slide:
        width, height = slide.dimensions
        corners = [(x, y) for y in range(0, height - 256, 256) for x in range(0, width - 256, 256)]
        patches = [
            encoder.transform(read_patch_rgb(slide, x, y, 0, 256)) for x, y in corners[: 2 * batch_size]
        ]
    batch = torch.stack(patches)
    with torch.inference_mode():
        encoder.model(batch[:batch_size])  # warm-up
        start = time.perf_counter()
        for first in range(0, len(batch), batch_size):
            encoder.model(batch[first : first + batch_size])
    return len(batch) / (time.perf_counter() - start)


def clam_like(config: Any, slide_path: str, encoder: Any, model: Any, out_png: Path) -> dict[str, Any]:
    """CLAM's per-stage loop shape: block-grid features, attention, then a full overlap-grid feature pass."""
    from attnmap.io_utils import save_png
    from attnmap.mil import infer_bag
    from attnmap.wsi.features import PatchDataset, save_features
    from attnmap.wsi.heatmap.renderer import render_heatmap
    from attnmap.wsi.patching import heatmap_center_shift, patch_grid
    from attnmap.wsi.slide import open_slide
    from attnmap.wsi.tissue import segment_tissue

    p, seg, h = config.patching, config.segmentation, config.heatmap

    def feature_pass(coords: np.ndarray) -> np.ndarray:
        dataset = PatchDataset(slide_path, coords, p.patch_size, p.level, encoder.transform)
        loader = torch.utils.data.DataLoader(dataset, batch_size=config.features.batch_size, num_workers=0)
        with torch.inference_mode():
            return torch.cat([encoder.model(batch) for batch in loader]).numpy()

    with open_slide(slide_path) as slide:
        tissue = segment_tissue(
            slide, level=seg.level, sthresh=seg.sthresh, mthresh=seg.mthresh, close=seg.close,
            use_otsu=seg.use_otsu, a_t=seg.a_t, a_h=seg.a_h, max_n_holes=seg.max_n_holes, preset=seg.preset,
        )  # fmt: skip
        block = patch_grid(slide, tissue, patch_size=p.patch_size, step=p.patch_size, level=p.level)
        features = feature_pass(block)
        save_features(out_png.with_suffix(".h5"), features, block)
        bag = infer_bag(model, features)
        branch = bag.branch_for(None)
        overlap = patch_grid(
            slide, tissue, patch_size=p.patch_size, step=int(p.patch_size * (1 - h.overlap)), level=p.level,
            contour_check="four_pt_hard", center_shift=heatmap_center_shift(h.overlap),
        )  # fmt: skip
        scores = np.asarray(infer_bag(model, feature_pass(overlap)).scores("raw", branch=branch), np.float64)
        image = render_heatmap(
            slide, overlap, scores, h.style, patch_size=p.patch_size, tissue=tissue,
            reference_scores=np.asarray(bag.scores("raw"), np.float64),
        )  # fmt: skip
        save_png(out_png, image)
    return {"block": block, "overlap": overlap, "encoded": len(block) + len(overlap), "scores": scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="slide width = height, level 0")
    parser.add_argument("--encoder", default="resnet50_trunc")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each; the fastest counts")
    args = parser.parse_args()

    import attnmap.wsi.pipeline.stages as stages_module
    import attnmap.wsi.shared_features as shared_module
    from attnmap.threads import available_cores, set_compute_threads
    from attnmap.wsi.pipeline.cohort import run_cohort
    from attnmap.wsi.pipeline.config import load_config, read_slide_list
    from attnmap.wsi.pipeline.outputs import SlideOutputs
    from attnmap.wsi.pipeline.stage_files import load_blockmap

    cores = available_cores()
    with tempfile.TemporaryDirectory(prefix="attnmap_bench_wsi_run_") as folder:
        root = Path(folder)
        config_path = write_run_config(
            root, args.encoder, n_slides=1, size=args.size, batch_size=args.batch_size, tumour_fraction=1.0,
            sections={"heatmap": {"overlap": 0.5}, "sampling": {"top_k": 0, "bottom_k": 0}},
        )
        config = load_config(config_path)
        slide_path = read_slide_list(config)[0].path
        f = config.features
        encoder, _ = stages_module.cached_encoder(f.encoder, f.checkpoint, f.input_size, f.seed, "cpu")
        model, _ = stages_module.cached_clam(config.model.checkpoint, "cpu")
        counter = Counter()
        encoder.model.register_forward_pre_hook(counter.hook)
        stages_module.extract_features = counter.timed(stages_module.extract_features)
        shared_module.extract_features = counter.timed(shared_module.extract_features)

        set_compute_threads(cores)
        ours_times, clam_times, bare_rates, inside_rates = [], [], [], []
        for repeat in range(args.repeats):  # alternating, so that a change in load hits both alike
            bare_rates.append(bare_encoder_rate(encoder, slide_path, args.batch_size))
            counter.rows, counter.seconds = 0, 0.0
            run_config = load_config(config_path, output_dir=str(root / f"out_{repeat}"))
            start = time.perf_counter()
            report = run_cohort(run_config, workers=1, progress=False)
            ours_times.append(time.perf_counter() - start)
            if report.failed:
                raise SystemExit(f"wsi run failed: {report.failed[0].message}")
            ours_encoded = counter.rows
            inside_rates.append(counter.rows / counter.seconds)
            set_compute_threads(cores)
            start = time.perf_counter()
            clam = clam_like(config, slide_path, encoder, model, root / f"clam_{repeat}.png")
            clam_times.append(time.perf_counter() - start)
        entry = read_slide_list(config)[0]
        outputs = SlideOutputs(Path(run_config.run.output_dir), entry.slide_id)
        stored = load_blockmap(outputs.named("overlap_blockmap.h5"))
        needed = len({tuple(c) for c in clam["block"]} | {tuple(c) for c in clam["overlap"]})

    ours, baseline = min(ours_times), min(clam_times)
    print(
        f"slide {args.size}², encoder {args.encoder}, batch {args.batch_size}, "
        f"{cores} core(s) = torch threads for both"
    )
    print(
        f"patches: block grid {len(clam['block'])}, overlap grid {len(clam['overlap'])}, "
        f"needed (their union) {needed}"
    )
    print(
        f"CLAM-like loop : {baseline:7.1f} s, encoded {clam['encoded']} "
        f"= {clam['encoded'] / needed:.2f} x needed"
    )
    print(f"attnmap wsi run: {ours:7.1f} s, encoded {ours_encoded} = {ours_encoded / needed:.2f} x needed")
    print(f"speed-up vs CLAM-like loop: {baseline / ours:.2f}x")
    inside, bare = max(inside_rates), max(bare_rates)
    print(
        f"feature throughput inside wsi run {inside:.1f} patches/s ÷ bare encoder {bare:.1f} "
        f"= {inside / bare:.2f}"
    )
    difference = np.abs(stored["scores"] - clam["scores"]).max()
    print(f"overlap-grid attention, max |attnmap - CLAM-like| = {difference:.2e}")


if __name__ == "__main__":
    main()
