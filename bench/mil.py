"""Attention-MIL inference speed and memory (issue 5, point 5).

1. Throughput: `attention_scores` of CLAM_SB (gated, small) on a 100,000 x 1024 bag against the bare
   matmuls of the same shapes (N x 1024 @ 1024 x 512, N x 512 @ 512 x 256 twice, N x 256 @ 256 x 1),
   measured in this process, interleaved, best of several repeats. Target ratio >= 0.70.
2. Memory: a 1,000,000 x 1024 float32 bag (4 GB of features) in a fresh subprocess; prints wall time
   and peak RSS (``resource.getrusage``), and the RSS above the features themselves.

Run: ``.venv/bin/python bench/mil.py [--patches 100000] [--big 1000000] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--patches", type=int, default=100_000)
    parser.add_argument("--big", type=int, default=1_000_000, help="0 skips the big-bag run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--big-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.big_child:
        big_bag_child(args.big_child)
        return
    throughput(args.patches, args.repeats)
    if args.big:
        subprocess.run([sys.executable, __file__, "--big-child", str(args.big)], check=True)


if __name__ == "__main__":
    main()
