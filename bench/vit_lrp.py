"""Benchmark of the LRP methods against the model's own forward+backward (issue 4, point 4).

vit_base_patch16_224, random weights, float32, 2 threads. Every measurement runs in a fresh
subprocess so its peak memory (ru_maxrss above the RSS after building the model) is its own.
Prints, per method: seconds at batch 1, ratio to forward+backward at batch 1, seconds per image at
batch 16 (vs batch 1), and peak memory ratio to forward+backward at the same batch size.

    .venv/bin/python bench/vit_lrp.py [--repeats 3] [--big-batch 16] [--methods a,b]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

METHODS = {
    "transformer_attribution": {},
    "lrp": {},
    "lrp_rollout": {},
    "lrp_attention": {},
    "lrp_attention(grad)": {"grad": True},
}


def _worker(name: str, batch: int, repeats: int) -> dict:
    import psutil
    import timm
    import torch

    import attnmap

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    images = torch.randn(batch, 3, 224, 224)
    base_rss = psutil.Process().memory_info().rss

    if name == "forward+backward":

        def run() -> None:
            model.zero_grad(set_to_none=True)
            logits = model(images)
            logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    else:
        method = name.split("(")[0]

        def run() -> None:
            attnmap.explain(model, images, method, **METHODS[name])

    run()  # first call: peak memory, twin check
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_rss
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return {"seconds": min(times), "peak_bytes": peak}


def _measure(name: str, batch: int, repeats: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", name, "--batch", str(batch), "--repeats", str(repeats)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--big-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.batch, args.repeats)))
        return
    base1 = _measure("forward+backward", 1, args.repeats)
    base_big = _measure("forward+backward", args.big_batch, max(1, args.repeats - 1))
    print(f"forward+backward: batch 1 {base1['seconds']:.3f} s, peak +{base1['peak_bytes'] / 2**20:.0f} MiB; "
          f"batch {args.big_batch} {base_big['seconds'] / args.big_batch:.3f} s/image, "
          f"peak +{base_big['peak_bytes'] / 2**20:.0f} MiB")
    print(f"{'method':26s} {'b1 s':>7s} {'ratio':>6s} {'b' + str(args.big_batch) + ' s/img':>10s} "
          f"{'mem b1':>7s} {'mem b' + str(args.big_batch):>8s}")
    for name in args.methods.split(","):
        one = _measure(name, 1, args.repeats)
        big = _measure(name, args.big_batch, max(1, args.repeats - 1))
        print(f"{name:26s} {one['seconds']:7.3f} {one['seconds'] / base1['seconds']:6.2f} "
              f"{big['seconds'] / args.big_batch:10.3f} {one['peak_bytes'] / base1['peak_bytes']:7.2f} "
              f"{big['peak_bytes'] / base_big['peak_bytes']:8.2f}", flush=True)


if __name__ == "__main__":
    main()
