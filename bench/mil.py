"""Attention-MIL inference speed and memory (issue 5, point 5).

1. Throughput: `attention_scores` of CLAM_SB (gated, small) on a 100,000 x 1024 bag against the bare
   matmuls of the same shapes (N x 1024 @ 1024 x 512, N x 512 @ 512 x 256 twice, N x 256 @ 256 x 1),
   measured in this process, interleaved, best of several repeats. Target ratio >= 0.70.
2. Memory: a 1,000,000 x 1024 float32 bag (4 GB of features) in a fresh subprocess; prints wall time
   and peak RSS (``resource.getrusage``), and the RSS above the features themselves.
3. Streaming: `export_attention` (what ``attnmap mil attention`` runs, with its default method) on
   an h5 bag of ``--stream`` x 1024 float32 rows (default 200,000: 0.76 GiB; ``--stream-big`` for
   1,000,000: 3.8 GiB), read chunk by chunk (`open_bag`) against the same bag read whole
   (`read_bag`, the baseline), each in a fresh subprocess, one after the other; prints both peaks
   and the streamed peak as a ratio of the whole-bag one, in total and above the RSS both have
   before the bag is touched (imports, model).

Run: ``.venv/bin/python bench/mil.py [--patches 100000] [--big 1000000] [--repeats 5]
[--stream 200000 | --stream-big] [--stream-only]``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import best_time

from attnmap.mil import CLAM_SB, attention_scores


def bare_matmuls(features: torch.Tensor, weights: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The baseline: only the matmuls the model needs, no bias, activation or pooling."""
    h = features @ weights[0]
    a = h @ weights[1]
    b = h @ weights[2]
    return a @ weights[3], b


def throughput(n_patches: int, repeats: int) -> None:
    torch.manual_seed(0)
    model = CLAM_SB(embed_dim=1024).eval()
    features = torch.randn(n_patches, 1024)
    weights = [
        torch.randn(1024, 512) / 32,
        torch.randn(512, 256) / 23,
        torch.randn(512, 256) / 23,
        torch.randn(256, 1) / 16,
    ]
    ours_times, base_times = [], []
    with torch.inference_mode():
        bare_matmuls(features, weights)  # warm-up
        attention_scores(model, features)
        for _ in range(repeats):  # interleaved, so load from other processes hits both alike
            base_times.append(best_time(lambda: bare_matmuls(features, weights), 1))
            ours_times.append(best_time(lambda: attention_scores(model, features), 1))
    base, ours = min(base_times), min(ours_times)
    print(f"threads: {torch.get_num_threads()}  bag: {n_patches} x 1024 float32")
    print(f"bare matmuls      : {base:.3f} s  ({n_patches / base:,.0f} patches/s)")
    print(f"attention_scores  : {ours:.3f} s  ({n_patches / ours:,.0f} patches/s)")
    print(f"throughput ratio  : {base / ours:.2f}  (target >= 0.70)")


def big_bag_child(n_patches: int) -> None:
    """Run in a subprocess: build the bag, score it, report time and peak RSS."""
    torch.manual_seed(0)
    model = CLAM_SB(embed_dim=1024).eval()
    features = torch.empty(n_patches, 1024)
    for start in range(0, n_patches, 100_000):  # fill in blocks: no temporary copy of the whole bag
        features[start : start + 100_000].normal_()
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start = time.perf_counter()
    scores = attention_scores(model, features, kind="percentile")
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"big bag: {n_patches:,} x 1024 float32 ({features.numel() * 4 / 2**30:.2f} GiB of features)")
    print(f"  attention_scores: {elapsed:.1f} s, {scores.shape[0]:,} scores")
    print(
        f"  peak RSS: {peak:.2f} GiB (before scoring: {baseline_rss:.2f} GiB; added by scoring: "
        f"{peak - baseline_rss:.2f} GiB)"
    )


def write_stream_bag(root: Path, n_patches: int) -> tuple[Path, Path]:
    """A seeded CLAM_SB checkpoint and an h5 bag of ``n_patches`` x 1024, written in blocks."""
    import h5py
    import numpy as np

    torch.manual_seed(0)
    model_path = root / "clam_sb.pt"
    torch.save(CLAM_SB(embed_dim=1024).state_dict(), model_path)
    bag_path = root / "bag.h5"
    rng = np.random.default_rng(0)
    with h5py.File(bag_path, "w") as handle:
        features = handle.create_dataset("features", shape=(n_patches, 1024), dtype=np.float32)
        for start in range(0, n_patches, 65_536):
            stop = min(start + 65_536, n_patches)
            features[start:stop] = rng.standard_normal((stop - start, 1024), dtype=np.float32)
        handle["coords"] = np.stack([np.arange(n_patches) % 1000, np.arange(n_patches) // 1000], 1) * 256
    return model_path, bag_path


def stream_child(mode: str, model_path: Path, bag_path: Path) -> None:
    """Run in a subprocess: `export_attention` of the bag read whole or streamed; peak RSS in KiB."""
    from contextlib import nullcontext

    from attnmap.mil import export_attention, load_mil, read_bag
    from attnmap.mil.bag_stream import open_bag

    model = load_mil(model_path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with open_bag(bag_path) if mode == "streamed" else nullcontext(read_bag(bag_path)) as bag:
        # the scores `attnmap mil attention` writes by default (--method attention)
        export_attention(model, bag, bag_path.parent / mode, slide_id="bag", methods=("attention",))
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{mode} {before} {peak} {elapsed:.2f}")


def stream_memory(n_patches: int) -> None:
    """Peak RSS of the streamed export against the whole-bag export, each in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="attnmap-mil-bench-") as tmp:
        model_path, bag_path = write_stream_bag(Path(tmp), n_patches)
        figures = {}
        for mode in ("whole", "streamed"):
            done = subprocess.run(
                [sys.executable, __file__, "--stream-child", mode, str(model_path), str(bag_path)],
                check=True, capture_output=True, text=True,
            )
            _, before, peak, elapsed = done.stdout.split()[-4:]
            figures[mode] = (int(before) / 2**20, int(peak) / 2**20, float(elapsed))
    print(f"export_attention of an h5 bag: {n_patches:,} x 1024 float32 "
          f"({n_patches * 1024 * 4 / 2**30:.2f} GiB of features), default chunk size, threads "
          f"{torch.get_num_threads()}")
    for mode, (before, peak, elapsed) in figures.items():
        print(f"  {mode:9s}: peak RSS {peak:.2f} GiB ({peak - before:.2f} GiB above the {before:.2f} GiB "
              f"before the bag), {elapsed:.1f} s")
    (whole_before, whole_peak, _), (stream_before, stream_peak, _) = figures["whole"], figures["streamed"]
    print(f"  streamed / whole peak RSS: {stream_peak / whole_peak:.2f}  "
          f"(above the pre-bag RSS: {(stream_peak - stream_before) / (whole_peak - whole_before):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patches", type=int, default=100_000)
    parser.add_argument("--big", type=int, default=1_000_000, help="0 skips the big-bag run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stream", type=int, default=200_000, help="rows of the streamed bag; 0 skips it")
    parser.add_argument("--stream-big", action="store_true", help="stream a 1,000,000-row bag (3.8 GiB)")
    parser.add_argument("--stream-only", action="store_true", help="only the streaming figure")
    parser.add_argument("--big-child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--stream-child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.big_child:
        big_bag_child(args.big_child)
        return
    if args.stream_child:
        mode, model_path, bag_path = args.stream_child
        stream_child(mode, Path(model_path), Path(bag_path))
        return
    if not args.stream_only:
        throughput(args.patches, args.repeats)
        if args.big:
            subprocess.run([sys.executable, __file__, "--big-child", str(args.big)], check=True)
    stream = 1_000_000 if args.stream_big else args.stream
    if stream:
        stream_memory(stream)


if __name__ == "__main__":
    main()
