"""`attnmap wsi run` end to end (heatmap overlap 0.5) against CLAM's three scripts, in one process.

Usage: ``python bench/wsi_run.py [--size 4096] [--encoder resnet50_trunc] [--batch-size 64] [--repeats 1]
[--device cpu|cuda] [--precision float32|bfloat16|float16] [--eager]``

Writes one synthetic slide (`attnmap.data.synthetic_slides`) and a CLAM_SB with seeded random
weights, then times, with the same torch threads (every available core), the same encoder network
and the same CLAM network (both loaded before timing starts), alternating when ``--repeats`` > 1:

- ``attnmap``: `run_cohort` with one worker (in-process): tissue → patches → features → attention →
  heatmap PNG on the overlapping grid (step = patch / 2), the overlap grid reusing the block grid's
  features;
- ``CLAM's scripts``: `clam_scripts.run_clam_scripts`, a step-by-step re-creation of what
  create_patches_fp.py, extract_features_fp.py and create_heatmaps.py do on the same device for
  the same outputs (see that module and bench/README.md for which CLAM fact each step reproduces;
  on CUDA their loaders get 8 processes each, as CLAM's code gives them).

``--device cuda`` puts both encoders and both CLAM networks on the GPU; ``--precision`` is
attnmap's ``features.precision`` (and the bare encoder's): CLAM's scripts have no such option and
always run float32, which the output then says. On the CPU in float32 attnmap runs a convolutional
encoder as a checked oneDNN graph (``features.cpu_graph``, `attnmap.wsi.encoder_graph`), and so does
its bare encoder; ``--eager`` turns that off, to show how much of the speed-up it makes. CLAM's
scripts run the eager model, as their code does.

Printed: CLAM's seconds per step and patches encoded per step; the speed-up of `wsi run` over all
three scripts, and over them with create_heatmaps' own block-grid feature pass left out (as if its
features file were already there, the case most favourable to CLAM); patches encoded ÷ patches
needed (the union of the block and overlap grids); patch throughput of the feature stage inside
`wsi run` ÷ the bare encoder's (the network alone on patches already in memory, same batch size and
threads); the largest difference between the two overlap grids' raw attention at shared
coordinates. Timings on a shared machine are noisy: compare the ratios, which come from one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from clam_scripts import run_clam_scripts
from common import write_run_config


class Counter:
    """Patches encoded (the coordinates given to `extract_features`, whichever network runs them)
    and seconds inside the feature extraction calls."""

    def __init__(self) -> None:
        self.rows = 0
        self.seconds = 0.0

    def timed(self, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.rows += len(args[1] if len(args) > 1 else kwargs["coords"])
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return wrapper


def bare_encoder_rate(
    encoder: Any, slide_path: str, batch_size: int, device: torch.device, precision: str, cpu_graph: bool
) -> float:
    """Patches/s of the model alone on two batches of transformed patches already on ``device``, in
    ``precision`` (the GPU waited for before the clock stops), run as `wsi run` runs it."""
    from attnmap.wsi.encoder_graph import cpu_inference_graph
    from attnmap.wsi.features import encoder_precision, read_patch_rgb
    from attnmap.wsi.slide import open_slide

    with open_slide(slide_path) as slide:
        width, height = slide.dimensions
        corners = [(x, y) for y in range(0, height - 256, 256) for x in range(0, width - 256, 256)]
        patches = [
            encoder.transform(read_patch_rgb(slide, x, y, 0, 256)) for x, y in corners[: 2 * batch_size]
        ]
    batch = torch.stack(patches).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode(), encoder_precision(precision, device):
        network = encoder.model
        if cpu_graph and device.type == "cpu" and precision == "float32":
            network = cpu_inference_graph(network, batch[:batch_size])
        network(batch[:batch_size])  # warm-up
        sync()
        start = time.perf_counter()
        for first in range(0, len(batch), batch_size):
            network(batch[first : first + batch_size])
        sync()
    return len(batch) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096, help="slide width = height, level 0")
    parser.add_argument("--encoder", default="resnet50_trunc")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each; the fastest counts")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (both pipelines)")
    parser.add_argument(
        "--precision",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="attnmap's features.precision (CLAM's scripts run float32)",
    )
    parser.add_argument(
        "--eager", action="store_true", help="attnmap without features.cpu_graph (the eager encoder)"
    )
    args = parser.parse_args()
    device = torch.device(args.device)

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
            root,
            args.encoder,
            n_slides=1,
            size=args.size,
            batch_size=args.batch_size,
            tumour_fraction=1.0,
            sections={
                "heatmap": {"overlap": 0.5},
                "sampling": {"top_k": 0, "bottom_k": 0},
                "features": {
                    "encoder": args.encoder,
                    "batch_size": args.batch_size,
                    "precision": args.precision,
                    "cpu_graph": not args.eager,
                },
            },
        )
        config = load_config(config_path)
        slide_path = read_slide_list(config)[0].path
        f = config.features
        encoder, _ = stages_module.cached_encoder(f.encoder, f.checkpoint, f.input_size, f.seed, str(device))
        model, _ = stages_module.cached_clam(config.model.checkpoint, str(device))
        counter = Counter()
        stages_module.extract_features = counter.timed(stages_module.extract_features)
        shared_module.extract_features = counter.timed(shared_module.extract_features)

        set_compute_threads(cores)
        ours_times, clam_times, bare_rates, inside_rates = [], [], [], []
        clam_runs = []
        graph = not args.eager
        for repeat in range(args.repeats):  # alternating, so that a change in load hits both alike
            bare_rates.append(
                bare_encoder_rate(encoder, slide_path, args.batch_size, device, args.precision, graph)
            )
            counter.rows, counter.seconds = 0, 0.0
            run_config = load_config(config_path, output_dir=str(root / f"out_{repeat}"), device=str(device))
            start = time.perf_counter()
            report = run_cohort(run_config, workers=1, progress=False)
            ours_times.append(time.perf_counter() - start)
            if report.failed:
                raise SystemExit(f"wsi run failed: {report.failed[0].message}")
            ours_encoded = counter.rows
            inside_rates.append(counter.rows / counter.seconds)
            set_compute_threads(cores)
            start = time.perf_counter()
            clam = run_clam_scripts(config, slide_path, encoder, model, root / f"clam_{repeat}", device)
            clam_times.append(time.perf_counter() - start)
            clam_runs.append(clam)
        entry = read_slide_list(config)[0]
        outputs = SlideOutputs(Path(run_config.run.output_dir), entry.slide_id)
        ours_block = load_blockmap(outputs.named("blockmap.h5"))["coords"]
        stored = load_blockmap(outputs.named("overlap_blockmap.h5"))

    needed = len({tuple(c) for c in ours_block} | {tuple(c) for c in stored["coords"]})
    best = int(np.argmin(clam_times))
    clam, baseline, ours = clam_runs[best], clam_times[best], min(ours_times)
    block_pass = "create_heatmaps: block-grid features"
    favourable = baseline - clam.seconds[block_pass]
    print(
        f"slide {args.size}², encoder {args.encoder}, batch {args.batch_size}, "
        f"{cores} core(s) = torch threads for both"
    )
    if device.type == "cuda" or args.precision != "float32":
        name = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
        print(
            f"device {device}{name} for both; attnmap features in {args.precision}, "
            "CLAM's scripts in float32 (they have no precision option)"
        )
    print(
        f"patches: block grid {len(ours_block)} (create_heatmaps' own, four_pt_hard: {len(clam.block)}), "
        f"overlap grid {len(stored['coords'])}, needed (union of attnmap's two grids) {needed}"
    )
    print("CLAM's scripts, fastest run, step by step:")
    for step, seconds in clam.seconds.items():
        rows = clam.encoded.get(step)
        print(f"  {step:40s} {seconds:7.1f} s" + (f", {rows} patches encoded" if rows is not None else ""))
    clam_encoded = sum(clam.encoded.values())
    print(
        f"CLAM's scripts : {baseline:7.1f} s, encoded {clam_encoded} = {clam_encoded / needed:.2f} x needed"
    )
    print(f"attnmap wsi run: {ours:7.1f} s, encoded {ours_encoded} = {ours_encoded / needed:.2f} x needed")
    print(f"speed-up vs CLAM's scripts: {baseline / ours:.2f}x")
    print(
        f"speed-up vs CLAM's scripts without create_heatmaps' block-grid pass (its features already "
        f"there): {favourable / ours:.2f}x"
    )
    inside, bare = max(inside_rates), max(bare_rates)
    print(
        f"feature throughput inside wsi run {inside:.1f} patches/s ÷ bare encoder {bare:.1f} "
        f"= {inside / bare:.2f}"
    )
    if np.array_equal(clam.overlap, stored["coords"]) and clam.overlap_raw is not None:
        difference = np.abs(stored["scores"] - clam.overlap_raw).max()
        print(f"overlap-grid raw attention, max |attnmap - CLAM's scripts| = {difference:.2e}")
    else:
        print("overlap grids differ between attnmap and CLAM's scripts: attention not compared")


if __name__ == "__main__":
    main()
