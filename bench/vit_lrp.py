"""Benchmark of the LRP methods against the model's own forward+backward (issue 4, point 4).

vit_base_patch16_224 (or any timm architecture: ``--model``, e.g. vit_small_patch14_reg4_dinov2,
eva02_small_patch14_224, beit_base_patch16_224, vit_medium_patch16_gap_256), random weights, float32,
2 threads (``--threads``). Headless models (num_classes=0) are explained along a fixed direction,
and the baseline backpropagates the same score ⟨output, d⟩. Timing runs in this one
process, with the baseline and every method interleaved round by round (min over rounds), so load from other
processes hits all of them alike. Peak memory is measured in a fresh subprocess per measurement
(ru_maxrss above the RSS after building the model) so each peak is its own.

``--device cuda``: the model and images on the GPU, every timing waits for the GPU
(``torch.cuda.synchronize``) before it starts and before it stops, and peak memory is the GPU's
(``torch.cuda.max_memory_allocated`` above what the model and images take, in this process).

Prints per method: seconds at the timing batch (``--batch``, default 1), ratio to forward+backward
at that batch (targets: issue 4 at batch 1, transformer_attribution ≤ 2.0, lrp ≤ 2.2; issue 16 at
batch 4 on ViT-S/16 and ViT-B/16, ≤ 1.5 and ≤ 1.3), seconds per image at the big batch (must be
below batch 1), and peak memory ratio to forward+backward at the same batch size (target ≤ 2).
The rows "transformer_attribution products only" and "lrp products only" time the matrix
products those rules need, alone, at the model's shapes: the floor below which no dense
implementation of the rules goes (`_products_runner`).

    .venv/bin/python bench/vit_lrp.py [--model NAME] [--batch 1] [--rounds 3] [--big-batch 16]
        [--methods a,b] [--no-memory] [--headless] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

OPTIONS = {
    "transformer_attribution": {},
    "lrp": {},
    "lrp_rollout": {},
    "lrp_attention": {},
    "lrp_attention(grad)": {"grad": True},
}
BASELINE = "forward+backward"


MODEL = {"name": "vit_base_patch16_224", "headless": False, "device": "cpu"}


def _setup(batch: int, threads: int) -> tuple:
    import timm
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    options = {"num_classes": 0} if MODEL["headless"] else {}
    model = timm.create_model(MODEL["name"], pretrained=False, **options).eval()
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))[-2:]
    images = torch.randn(batch, 3, *size)
    if MODEL["device"] == "cpu":
        return model, images
    return model.to(MODEL["device"]), images.to(MODEL["device"])


def _synchronize() -> None:
    """Wait for the GPU's queued work (nothing on a CPU), so that a clock measures the work itself."""
    import torch

    if torch.device(MODEL["device"]).type == "cuda":
        torch.cuda.synchronize(MODEL["device"])


def _direction(model: object) -> object:
    import torch

    if not MODEL["headless"]:
        return None
    return torch.randn(model.num_features, generator=torch.Generator().manual_seed(1)).to(MODEL["device"])


def _runner(name: str, model: object, images: object) -> Callable[[], None]:
    import attnmap

    direction = _direction(model)
    if name == BASELINE:

        def run() -> None:
            model.zero_grad(set_to_none=True)
            output = model(images)
            if direction is None:
                output.gather(1, output.argmax(1, keepdim=True)).sum().backward()
            else:
                (output * direction).sum().backward()

        return run
    if name.endswith(FLOOR_SUFFIX):
        return _products_runner(name.removesuffix(FLOOR_SUFFIX), model, images)
    method = name.split("(")[0]
    return lambda: attnmap.explain(model, images, method, target=direction, **OPTIONS[name])


def _high_water_mark() -> int:
    """Peak RSS of this process in bytes (VmHWM: per address space, so not inherited from the parent)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: best effort


def _peak_worker(name: str, batch: int, threads: int) -> None:
    import psutil

    model, images = _setup(batch, threads)
    run = _runner(name, model, images)
    base = psutil.Process().memory_info().rss
    run()
    print(json.dumps({"peak_bytes": _high_water_mark() - base}))


def _gpu_peaks(names: list[str], batch: int, threads: int) -> dict[str, float]:
    """Peak GPU memory of one run of each method above the model's and images' own (one model for
    all; each after a warm-up run, with the weight gradients of the previous one freed)."""
    import torch

    model, images = _setup(batch, threads)
    peaks = {}
    for name in names:
        run = _runner(name, model, images)
        run()
        model.zero_grad(set_to_none=True)
        _synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(MODEL["device"])
        base = torch.cuda.memory_allocated(MODEL["device"])
        run()
        _synchronize()
        peaks[name] = torch.cuda.max_memory_allocated(MODEL["device"]) - base
        model.zero_grad(set_to_none=True)
    return peaks


def _peak(name: str, batch: int, threads: int) -> float:
    command = [
        sys.executable,
        __file__,
        "--model",
        MODEL["name"],
        *(["--headless"] if MODEL["headless"] else []),
        "--peak-worker",
        name,
        "--batch",
        str(batch),
        "--threads",
        str(threads),
    ]
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def torch_device_type() -> str:
    import torch

    return torch.device(MODEL["device"]).type


def _time(names: list[str], batch: int, rounds: int, threads: int) -> dict[str, float]:
    model, images = _setup(batch, threads)
    runs = {name: _runner(name, model, images) for name in names}
    for run in runs.values():
        run()  # warm-up (and the LRP twin's one-off check against the model)
    best = dict.fromkeys(names, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            _synchronize()
            start = time.perf_counter()
            run()
            _synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


FLOOR_SUFFIX = " products only"
"""Suffix of the rows that time only the matrix products a method's rules need (`_products_runner`)."""


def _products_runner(method: str, model: object, images: object) -> Callable[[], None]:
    """The matrix products alone that ``method``'s reference rules need, at the model's own shapes.

    Every Linear layer (and the patch embedding, a Linear on flattened patches) is a product of its
    input rows (B·tokens, in) with Wᵀ, whose shapes forward hooks capture. The twin's forward needs
    each product once; the z⁺ rule of a Linear three more of the same size (|x|·|W|ᵀ, S·W, S·|W|),
    and the gradient pass of transformer attribution one more (the input gradient). Below block 0's
    attention, transformer attribution needs neither (block 0's qkv and the patch embedding); above
    the last block's attention, no method needs more than the read-out rows (class-token read-out). No
    implementation of these rules with dense products is faster; the elementwise work, softmax
    and attention products come on top. Timed in the same rounds as the methods, so it is the floor
    under the same load.
    """
    import torch
    from torch import nn

    from attnmap.vit.lrp.readers import build_twin

    layers: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def record(name: str, module: nn.Module, inputs: tuple) -> None:
        weight = module.weight.detach()
        if isinstance(module, nn.Linear):
            rows = inputs[0].reshape(-1, inputs[0].shape[-1])
        else:  # the patchify convolution: (B·P, C·kh·kw) patches times the flattened kernels
            grid = (inputs[0].shape[-2] // weight.shape[-2]) * (inputs[0].shape[-1] // weight.shape[-1])
            weight = weight.flatten(1)
            rows = torch.randn(inputs[0].shape[0] * grid, weight.shape[1], device=weight.device)
        layers.append((name, rows.clone(), weight))

    handles = [
        module.register_forward_hook(lambda m, i, _o, name=name: record(name, m, i))
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) or name == "patch_embed.proj"
    ]
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    below = ("patch_embed.proj", "blocks.0.attn.qkv")
    last = f"blocks.{len(model.blocks) - 1}."
    # With a class-token read-out, the last block above its attention runs on the read-out rows
    # only, forward and rules (`ViTTwin.readout_rows`): a few rows, left out of the floor.
    read_out_only = build_twin(model).readout_rows is not None

    def passes(name: str) -> int:
        if read_out_only and name.startswith(last) and not name.endswith("attn.qkv"):
            return 0
        if method == "lrp":
            return 4
        return 1 if name in below else 5

    plan = [(rows, weight, passes(name)) for name, rows, weight in layers]

    def run() -> None:
        for rows, weight, count in plan:
            for _ in range(count):
                torch.mm(rows, weight.T)

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peak-worker")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--big-batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--methods", default=",".join(OPTIONS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--model", default=MODEL["name"])
    parser.add_argument("--headless", action="store_true", help="build with num_classes=0")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    args = parser.parse_args()
    MODEL.update(name=args.model, headless=args.headless, device=args.device)
    if args.peak_worker:
        _peak_worker(args.peak_worker, args.batch, args.threads)
        return
    names = [BASELINE, *args.methods.split(",")]
    names += [name + FLOOR_SUFFIX for name in ("transformer_attribution", "lrp") if name in names]
    peaks = {}
    if not args.no_memory:
        batches = (1, args.big_batch)
        measured_names = [name for name in names if not name.endswith(FLOOR_SUFFIX)]
        if torch_device_type() == "cuda":
            for batch in batches:
                measured = _gpu_peaks(measured_names, batch, args.threads)
                peaks.update({(name, batch): peak for name, peak in measured.items()})
        else:
            peaks = {
                (name, batch): _peak(name, batch, args.threads)
                for name in measured_names
                for batch in batches
            }
    small = _time(names, args.batch, args.rounds, args.threads)
    big = _time(names, args.big_batch, max(1, args.rounds - 1), args.threads)
    head = "headless, direction target" if MODEL["headless"] else "classifier"
    where = f"{args.threads} thread(s)"
    if torch_device_type() == "cuda":
        import torch

        where = f"{args.device} ({torch.cuda.get_device_name(args.device)}), peak memory on the GPU"
    print(f"{MODEL['name']} ({head}), float32, {where}, timing batch {args.batch}")
    b = args.big_batch
    s1 = f"b{args.batch} s"
    print(f"{'':37s} {s1:>7s} {'ratio':>6s} {f'b{b} s/img':>10s} {'mem b1':>7s} {f'mem b{b}':>8s}")
    for name in names:
        memory = ""
        if (name, 1) in peaks:
            one = peaks[(name, 1)] / peaks[(BASELINE, 1)]
            many = peaks[(name, b)] / peaks[(BASELINE, b)]
            memory = f" {one:7.2f} {many:8.2f}"
        ratio = small[name] / small[BASELINE]
        print(f"{name:37s} {small[name]:7.3f} {ratio:6.2f} {big[name] / b:10.3f}{memory}")
    if peaks:
        print(
            f"forward+backward peak memory: batch 1 +{peaks[(BASELINE, 1)] / 2**20:.0f} MiB, "
            f"batch {b} +{peaks[(BASELINE, b)] / 2**20:.0f} MiB"
        )


if __name__ == "__main__":
    main()
