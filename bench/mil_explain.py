"""Cost of the MIL relevance methods against one forward of the same bag (issue 14, point 2).

Model: CLAM_SB (gated, small, 1024-d features), float32, on a 100,000 x 1024 bag. Baselines,
measured in this process and interleaved with the methods (best of ``--repeats``):

- forward: ``model(features)`` under ``torch.inference_mode()`` (the bag logits);
- forward+backward: autograd of the predicted logit with respect to the (N, D) features.

Targets: occlusion, lrp and gradient_x_input (per patch) each <= 3x forward; the per-feature
variants are printed too. integrated_gradients (32 steps) <= 32 x forward+backward.

Run: ``nice .venv/bin/python bench/mil_explain.py [--patches 100000] [--repeats 2] [--steps 32]``.
"""

from __future__ import annotations

import argparse

import torch
from common import best_time

from attnmap.mil import CLAM_SB, explain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patches", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    torch.manual_seed(0)
    model = CLAM_SB(embed_dim=1024).eval().to(device)
    features = torch.randn(args.patches, 1024, device=device)

    def forward():
        with torch.inference_mode():
            model(features).logits.cpu()
        sync()

    def forward_backward():
        leaf = features.clone().requires_grad_(True)
        logits = model(leaf).logits
        torch.autograd.grad(logits[0, int(logits.argmax())], leaf)
        sync()

    def method(name: str, **options):
        def run():
            explain(model, features, name, **options)
            sync()

        return run

    cases = {
        "occlusion": method("occlusion"),
        "lrp": method("lrp"),
        "gradient_x_input": method("gradient_x_input"),
        "lrp per_feature": method("lrp", per_feature=True),
        "gradient_x_input per_feature": method("gradient_x_input", per_feature=True),
        "attention": method("attention"),
    }
    forward(), forward_backward()  # warm-up
    base_f, base_fb, measured = [], [], {name: [] for name in cases}
    for _ in range(args.repeats):  # interleaved, so load from other processes hits all alike
        base_f.append(best_time(forward, 1))
        base_fb.append(best_time(forward_backward, 1))
        for name, fn in cases.items():
            measured[name].append(best_time(fn, 1))
    ig = best_time(method("integrated_gradients", steps=args.steps), 1)
    f, fb = min(base_f), min(base_fb)
    print(f"device: {device}  threads: {torch.get_num_threads()}  bag: {args.patches:,} x 1024 float32, "
          "CLAM_SB gated small")
    print(f"forward              : {f:.3f} s")
    print(f"forward+backward     : {fb:.3f} s  ({fb / f:.2f}x forward)")
    for name, times in measured.items():
        target = "  (target <= 3)" if name in ("occlusion", "lrp", "gradient_x_input") else ""
        print(f"{name:29s}: {min(times):.3f} s  {min(times) / f:.2f}x forward{target}")
    print(f"integrated_gradients ({args.steps} steps): {ig:.3f} s  {ig / f:.2f}x forward, "
          f"{ig / (args.steps * fb):.3f}x of steps x forward+backward (target <= 1)")


if __name__ == "__main__":
    main()
