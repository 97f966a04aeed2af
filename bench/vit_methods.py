"""Cost of each attention method relative to the same model's plain forward and forward+backward.

    .venv/bin/python bench/vit_methods.py [--models vit_small_patch16_224,vit_base_patch16_224]
                                          [--batch-sizes 1,16] [--repeats 3] [--threads 2]
                                          [--clock wall|cpu] [--device cpu|cuda]

Everything is measured in one process, interleaved (one round = baseline forward, baseline
forward+backward, then every method), and each number is the fastest of ``--repeats`` rounds, so
a busy machine slows baselines and methods alike. Baselines use the model as timm builds it
(fused attention on): forward = ``model(x)`` under ``no_grad``; forward+backward = the target
logits summed and ``.backward()`` into the parameters. Random weights, float32.
Targets (issue 3): attention, rollout ≤ 1.15× forward; attn_gradcam, grad_rollout ≤ 1.15× f+b.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import timm
import torch

import attnmap

METHOD_BASELINE = {
    "attention": "forward",
    "rollout": "forward",
    "attn_gradcam": "fwd+bwd",
    "grad_rollout": "fwd+bwd",
}
TARGET_RATIO = 1.15


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def seconds(fn: Callable[[], object], device: torch.device, clock: str = "wall") -> float:
    now = CLOCKS[clock]
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = now()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return now() - start


def bench_model(
    name: str, batch: int, repeats: int, device: torch.device, clock: str = "wall"
) -> list[tuple[str, float, str, float]]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).to(device).eval()
    images = torch.randn(batch, 3, 224, 224, device=device)

    def forward() -> None:
        with torch.no_grad():
            model(images)

    def forward_backward() -> None:
        logits = model(images)
        logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
        model.zero_grad(set_to_none=True)

    jobs: dict[str, Callable[[], object]] = {"forward": forward, "fwd+bwd": forward_backward}
    for method in METHOD_BASELINE:
        jobs[method] = lambda method=method: attnmap.explain(model, images, method)
    for job in jobs.values():  # warm-up: allocator, thread pools, lazy imports
        job()
    best = {key: float("inf") for key in jobs}
    for _ in range(repeats):
        for key, job in jobs.items():
            best[key] = min(best[key], seconds(job, device, clock))
    rows = [(key, best[key], "", 1.0) for key in ("forward", "fwd+bwd")]
    for method, baseline in METHOD_BASELINE.items():
        rows.append((method, best[method], baseline, best[method] / best[baseline]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="vit_small_patch16_224,vit_base_patch16_224")
    parser.add_argument("--batch-sizes", default="1,16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall time, or this process's CPU time (steadier on a shared machine; use with --threads 1)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, timm {timm.__version__}, device {device}, threads {args.threads}, "
        f"clock {args.clock}, best of {args.repeats}"
    )
    print(f"{'model':24s} {'batch':>5s} {'what':14s} {'seconds':>9s} {'ratio':>7s}  vs       target")
    failures = 0
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            for what, secs, baseline, ratio in bench_model(name, batch, args.repeats, device, args.clock):
                verdict = ""
                if baseline:
                    ok = ratio <= TARGET_RATIO
                    failures += not ok
                    verdict = f"{baseline:8s} {'ok' if ok else 'MISSED'} (<= {TARGET_RATIO})"
                print(f"{name:24s} {batch:5d} {what:14s} {secs:9.4f} {ratio:7.3f}  {verdict}")
    print("all targets met" if failures == 0 else f"{failures} targets missed")


if __name__ == "__main__":
    main()
