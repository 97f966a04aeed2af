"""Training of the bundled shapes ViT: the routine behind ``attnmap train-shapes``.

Seeded end to end (data, init, shuffling, augmentation) and on few CPU threads (2 by default), so the
shipped weights can be remade on a laptop in minutes. Shapes keep their class under flips and
quarter turns, so those are the augmentation; fresh data would cost more time to draw than it helps.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from attnmap.data.shapes import SHAPE_CLASSES, ShapesDataset
from attnmap.data.shapes_model import SHAPES_VIT_CONFIG, WEIGHTS_PATH, build_shapes_vit
from attnmap.errors import InputError

# The recipe of the bundled weights (`attnmap train-shapes` defaults).
RECIPE: dict[str, Any] = {
    "epochs": 8,
    "n_train": 8000,
    "n_val": 1000,
    "batch_size": 64,
    "lr": 1e-3,
    "weight_decay": 0.05,
    "warmup_steps": 60,
}


def train_shapes_vit(
    out_path: str | Path = WEIGHTS_PATH,
    seed: int = 0,
    epochs: int = RECIPE["epochs"],
    n_train: int = RECIPE["n_train"],
    n_val: int = RECIPE["n_val"],
    batch_size: int = RECIPE["batch_size"],
    lr: float = RECIPE["lr"],
    weight_decay: float = RECIPE["weight_decay"],
    warmup_steps: int = RECIPE["warmup_steps"],
    threads: int = 2,
    command: str | None = None,
    progress: bool = True,
    model_options: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train the shapes ViT and save ``out_path`` (safetensors) plus a ``.json`` record beside it.

    ``device``: where the model trains (the data are made on the CPU, batches move to it). The
    bundled weights were made on the CPU; other devices train the same recipe with other kernels.

    Training images are samples 0..n_train-1 of ``make_shapes(seed=seed)``; held-out images are
    the next ``n_val`` samples of the same stream, so the two never overlap. Returns the record:
    config, seed, command, held-out accuracy, wall time, and the machine it ran on.
    """
    if epochs < 1 or n_train < batch_size or n_val < 1:
        raise InputError(
            f"need epochs >= 1, n_train >= batch_size, n_val >= 1; got {epochs}, {n_train}, {n_val}"
        )
    out_path = Path(out_path)
    if out_path.suffix != ".safetensors":
        raise InputError(f"the output must be a .safetensors file, got {out_path}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    started = time.perf_counter()
    cpu_started = time.process_time()

    train = ShapesDataset(n_train, seed=seed)
    held_out = ShapesDataset(n_val, seed=seed, start=n_train)
    model = build_shapes_vit(**(model_options or {})).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = n_train // batch_size
    total_steps = epochs * steps_per_epoch
    warmup_steps = max(1, warmup_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _warmup_cosine(step, warmup_steps, total_steps)
    )
    generator = torch.Generator().manual_seed(seed)

    bar = tqdm(total=total_steps, desc="train shapes ViT", disable=not progress, unit="step")
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(n_train, generator=generator)
        for step in range(steps_per_epoch):
            batch = order[step * batch_size : (step + 1) * batch_size]
            images = _augment(train.images[batch], generator).to(device)
            loss = F.cross_entropy(model(images), train.labels[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
    bar.close()
    train_seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started

    accuracy = held_out_accuracy(model, held_out)
    record: dict[str, Any] = {
        "config": {**SHAPES_VIT_CONFIG, **(model_options or {})},
        "stem": describe_stem(model),
        "classes": list(SHAPE_CLASSES),
        "seed": seed,
        "command": command or " ".join(shlex.quote(arg) for arg in sys.argv),
        "training": {
            "epochs": epochs,
            "n_train": n_train,
            "batch_size": batch_size,
            "optimizer": f"AdamW(lr={lr}, weight_decay={weight_decay})",
            "schedule": f"linear warmup {warmup_steps} steps, cosine to 0",
            "augmentation": "per batch: a random quarter turn and a random horizontal flip",
            "threads": threads,
            "device": str(device),
        },
        "held_out": {"samples": f"make_shapes(seed={seed}) indices {n_train}..{n_train + n_val - 1}",
                     "accuracy": accuracy},
        "train_wall_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "cpu_load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "machine": f"{platform.machine()} {platform.processor() or ''} torch {torch.__version__}".strip(),
    }
    _save(model, out_path, record)
    print(f"held-out accuracy {accuracy:.4f} on {n_val} images; training wall time {train_seconds:.0f} s")
    return record


def held_out_accuracy(model: torch.nn.Module, dataset: ShapesDataset, batch_size: int = 250) -> float:
    """Top-1 accuracy of ``model`` (put in eval mode) on every image of ``dataset``."""
    model.eval()
    correct = 0
    device = next(model.parameters()).device
    with torch.no_grad():
        for first in range(0, len(dataset), batch_size):
            logits = model(dataset.images[first : first + batch_size].to(device)).cpu()
            correct += int((logits.argmax(-1) == dataset.labels[first : first + batch_size]).sum())
    return correct / len(dataset)


def describe_stem(model: torch.nn.Module) -> str:
    """The conv stem's layers in one line, e.g. 'Conv2d(3→24, 3x3, stride 2) → BatchNorm2d → ReLU → …'."""
    parts = []
    for layer in model.patch_embed.proj:
        if isinstance(layer, torch.nn.Conv2d):
            kernel = "x".join(map(str, layer.kernel_size))
            channels = f"{layer.in_channels}→{layer.out_channels}"
            parts.append(f"Conv2d({channels}, {kernel}, stride {layer.stride[0]})")
        else:
            parts.append(type(layer).__name__)
    return "ConvPatchEmbed: " + " → ".join(parts)


def _warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-batch random flips and quarter turns: the class of a shape survives all of them."""
    turns = int(torch.randint(4, (1,), generator=generator))
    images = torch.rot90(images, turns, dims=(2, 3))
    if bool(torch.randint(2, (1,), generator=generator)):
        images = images.flip(3)
    return images.contiguous()


def _save(model: torch.nn.Module, out_path: Path, record: dict[str, Any]) -> None:
    """Weights with the record in their metadata, and the same record beside them as JSON.

    The record carries ``state_sha256`` (the tensors' checksum, `attnmap.provenance.model_checksum`);
    the JSON adds ``weights_sha256``, the checksum of the written file, which the file itself
    cannot hold. Everything else is the same in both places (tests/test_bundled_weights.py).
    """
    from safetensors.torch import save_file

    from attnmap.provenance import model_checksum

    out_path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    record = {**record, "state_sha256": model_checksum(state)}
    save_file(state, str(out_path), metadata={"attnmap_record": json.dumps(record, sort_keys=True)})
    sidecar = {**record, "weights_sha256": model_checksum(out_path)}
    out_path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
