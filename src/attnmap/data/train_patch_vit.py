"""Training of the bundled patch ViT: ``python -m attnmap.data.train_patch_vit``.

Patches come from hard synthetic slides (`attnmap.data.hard_slides`) rendered in memory from seeds,
so nothing is stored and the run is reproducible. A patch is *tumour* when it holds at least
``min_ring_pixels`` ring pixels (what is visible, not the region outline) and *normal* when it
touches no tumour region; patches in between are left out. Normal patches next to decoys are kept
in full, so the encoder has to learn shape rather than darkness. Held-out accuracy is measured on
slides from a separate seed series and written into the JSON beside the weights, with the command,
the seed and the sha256 of the weights file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attnmap.data.hard_slides import HARD_PATCH_SIZE, crop, patch_fraction, render_hard_image, tissue_grid
from attnmap.data.patch_vit import (
    PATCH_VIT_CONFIG,
    PATCH_VIT_MEAN,
    PATCH_VIT_STD,
    RECORD_NAME,
    WEIGHTS_DIR,
    WEIGHTS_NAME,
    build_patch_vit,
)
from attnmap.errors import InputError


def labelled_patches(
    seeds: list[int], size: tuple[int, int] = (1024, 1024), min_ring_pixels: int = 40
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 patches (N, 64, 64, 3) and labels (1 tumour, 0 normal) from tumour slides of ``seeds``."""
    patches, labels = [], []
    for seed in seeds:
        slide = render_hard_image(seed, size, tumour=True)
        coords = tissue_grid(slide.tissue)
        if len(coords) == 0:
            continue
        rings = patch_fraction(slide.structures, coords) * HARD_PATCH_SIZE**2
        region = patch_fraction(slide.tumour, coords)
        positive, negative = rings >= min_ring_pixels, region == 0
        keep = positive | negative
        patches.append(crop(slide.image, coords[keep]))
        labels.append(positive[keep].astype(np.int64))
    return np.concatenate(patches), np.concatenate(labels)


def to_tensor(patches: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) → normalised float (N, 3, H, W), the encoder's input."""
    images = torch.from_numpy(patches).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(PATCH_VIT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PATCH_VIT_STD).view(1, 3, 1, 1)
    return ((images - mean) / std).contiguous()


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per-batch quarter turn and flip: tissue has no orientation."""
    images = torch.rot90(images, int(torch.randint(4, (1,), generator=generator)), dims=(2, 3))
    return (images.flip(3) if bool(torch.randint(2, (1,), generator=generator)) else images).contiguous()


def train_patch_vit(
    out_dir: str | Path = WEIGHTS_DIR,
    seed: int = 0,
    n_slides: int = 48,
    n_held_out_slides: int = 20,
    steps: int = 1200,
    batch_size: int = 64,
    lr: float = 1e-3,
    threads: int = 1,
    command: str | None = None,
) -> dict[str, Any]:
    """Train, measure held-out accuracy, save headless weights (safetensors) and the JSON record."""
    from safetensors.torch import save_file

    from attnmap.mil.metrics import roc_auc

    if n_slides < 1 or n_held_out_slides < 1 or steps < 1:
        raise InputError("need at least one training slide, one held-out slide and one step")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    started, cpu_started = time.perf_counter(), time.process_time()
    train_seeds = [int(s) for s in np.random.SeedSequence([seed, 1]).generate_state(n_slides)]
    held_seeds = [int(s) for s in np.random.SeedSequence([seed, 2]).generate_state(n_held_out_slides)]
    patches, labels = labelled_patches(train_seeds)
    images, targets = to_tensor(patches), torch.from_numpy(labels)
    positives, negatives = torch.nonzero(targets == 1)[:, 0], torch.nonzero(targets == 0)[:, 0]
    if len(positives) == 0 or len(negatives) == 0:
        raise InputError("the training slides gave no tumour or no normal patches; use more slides")

    model = build_patch_vit(num_classes=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / warmup
            if s < warmup
            else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup)))
        ),
    )
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):  # balanced batches: half tumour, half normal, drawn with replacement
        half = batch_size // 2
        batch = torch.cat(
            [
                positives[torch.randint(len(positives), (half,), generator=generator)],
                negatives[torch.randint(len(negatives), (batch_size - half,), generator=generator)],
            ]
        )
        loss = F.cross_entropy(model(_augment(images[batch], generator)), targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    train_seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started

    model.eval()
    held_patches, held_labels = labelled_patches(held_seeds)
    with torch.no_grad():
        probs = torch.cat(
            [
                model(to_tensor(held_patches[i : i + 256])).softmax(-1)[:, 1]
                for i in range(0, len(held_labels), 256)
            ]
        ).numpy()
    predictions = probs >= 0.5
    accuracy = float((predictions == held_labels).mean())
    balanced = float(np.mean([(predictions[held_labels == c] == c).mean() for c in (0, 1)]))

    model.reset_classifier(0)  # ship headless: the encoder's output is the final-norm class token
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path = out_dir / WEIGHTS_NAME
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(weights_path), metadata={"model": "attnmap:patch-vit", "seed": str(seed)})
    record: dict[str, Any] = {
        "model": "attnmap:patch-vit",
        "config": PATCH_VIT_CONFIG,
        "input": "RGB 64x64 level-0 patch, (x/255 - 0.5) / 0.25",
        "seed": seed,
        "command": command
        or "python -m attnmap.data.train_patch_vit " + " ".join(map(shlex.quote, sys.argv[1:])),
        "weights_sha256": hashlib.sha256(weights_path.read_bytes()).hexdigest(),
        "data": {
            "train": f"render_hard_image(seed, (1024, 1024), tumour=True) for {n_slides} seeds of "
            f"SeedSequence([{seed}, 1]); patches: tumour = >= 40 ring pixels, normal = no tumour region",
            "n_train_patches": int(len(labels)),
            "n_train_tumour": int(labels.sum()),
        },
        "training": {
            "steps": steps,
            "batch_size": batch_size,
            "batches": "half tumour, half normal, drawn with replacement",
            "optimizer": f"AdamW(lr={lr}, weight_decay=0.05)",
            "schedule": f"linear warmup {warmup} steps, cosine to 0",
            "augmentation": "per batch: a random quarter turn and a random horizontal flip",
            "threads": threads,
            "head": "Linear(64, 2) during training, removed before saving (num_classes=0)",
        },
        "held_out": {
            "slides": f"{n_held_out_slides} seeds of SeedSequence([{seed}, 2]), same patch rule",
            "n_patches": int(len(held_labels)),
            "n_tumour": int(held_labels.sum()),
            "accuracy": accuracy,
            "balanced_accuracy": balanced,
            "auc": roc_auc(np.asarray(held_labels), np.asarray(probs)),
        },
        "train_wall_seconds": round(train_seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "machine": f"{platform.machine()} torch {torch.__version__}",
    }
    (out_dir / RECORD_NAME).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train the bundled headless patch ViT on hard synthetic slides."
    )
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slides", type=int, default=48)
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    record = train_patch_vit(
        args.out, seed=args.seed, n_slides=args.slides, steps=args.steps, threads=args.threads
    )
    held = record["held_out"]
    print(
        f"held-out accuracy {held['accuracy']:.4f} (balanced {held['balanced_accuracy']:.4f}, "
        f"AUC {held['auc']:.4f}) "
        f"on {held['n_patches']} patches; wall {record['train_wall_seconds']} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
