"""The bundled demo CLAM_SB on the patch ViT's features of hard synthetic slides.

Fine heatmaps and the slide evidence (`attnmap.evaluate.slide_evidence`) need a slide model whose decision
rests on the small tumour structures of `attnmap.data.hard_slides`, seen through the headless patch
ViT (`attnmap.data.patch_vit`). `build_hard_demo` renders a seeded cohort in memory (no TIFFs are
needed to train), encodes every tissue patch, writes CLAM's ``h5_files`` bags and trains with
`attnmap.mil.train.train_mil`; fold 0's model ships as ``weights/demo_clam_hard.pt`` with
``weights/demo_clam_hard.json`` (command, seed, sha256, cross-validation metrics).

Rebuild: ``python -m attnmap.data.hard_mil --out src/attnmap/data/weights``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from attnmap.data.bundled import require_bundled
from attnmap.data.hard_slides import HARD_PATCH_SIZE, HardImage, crop, render_hard_image, tissue_grid
from attnmap.data.patch_vit import WEIGHTS_DIR, load_patch_vit
from attnmap.errors import InputError
from attnmap.wsi.encoders import Encoder

MODEL_NAME = "demo_clam_hard.pt"
RECORD_NAME = "demo_clam_hard.json"
SLIDE_SIZE = (1024, 1024)
HELD_OUT_SERIES = 31_415
"""Seed series of held-out hard slides (training uses the ``seed`` argument's series)."""


def hard_seed(series: int, index: int) -> int:
    """Seed of slide ``index`` of a seed ``series`` (series never share slides)."""
    return int(np.random.SeedSequence([series, index]).generate_state(1)[0])


def encoder_inputs(patches: np.ndarray, encoder: Encoder) -> torch.Tensor:
    """uint8 patches (N, p, p, 3) → the encoder's normalised inputs (N, 3, H, W)."""
    if len(patches) == 0:
        return torch.zeros(0, 3, 1, 1)
    return torch.stack([encoder.transform(patch) for patch in patches])


def hard_bag(
    rendered: HardImage, encoder: Encoder, patch_size: int = HARD_PATCH_SIZE, batch_size: int = 256
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """(coords (N, 2), encoder inputs (N, 3, H, W), features (N, D)) of a rendered slide's tissue.

    The encoder runs where its weights are (each batch is moved there); inputs and features are
    returned on the CPU, whatever that device.
    """
    from attnmap.evaluate.perturbation import model_device

    coords = tissue_grid(rendered.tissue, patch_size)
    if len(coords) == 0:
        raise InputError("the slide has no tissue patches")
    images = encoder_inputs(crop(rendered.image, coords, patch_size), encoder)
    device = model_device(encoder.model)
    with torch.inference_mode():
        features = torch.cat(
            [encoder.model(images[i : i + batch_size].to(device)) for i in range(0, len(images), batch_size)]
        )
    return coords, images, features.clone().cpu()


def _write_cohort(folder: Path, n_slides: int, series: int, encoder: Encoder) -> Path:
    from attnmap.wsi.features import save_features

    rows = []
    labels = np.random.default_rng([series, 0]).permutation([1, 0] * (n_slides // 2) + [1] * (n_slides % 2))
    for index, label in enumerate(labels):
        slide_id = f"hard_{series}_{index:03d}"
        coords, _, features = hard_bag(
            render_hard_image(hard_seed(series, index), SLIDE_SIZE, bool(label)), encoder
        )
        save_features(folder / "h5_files" / f"{slide_id}.h5", features.numpy(), coords)
        rows.append({"slide_id": slide_id, "label": int(label), "case_id": slide_id})
    with open(folder / "cohort.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["slide_id", "label", "case_id"])
        writer.writeheader()
        writer.writerows(rows)
    return folder / "cohort.csv"


def build_hard_demo(
    out_dir: str | Path = WEIGHTS_DIR, seed: int = 11, n_train: int = 32, folds: int = 2, max_epochs: int = 40
) -> dict[str, object]:
    """Render, encode, train CLAM_SB (``train_mil``), ship fold 0 with its JSON record."""
    from attnmap.mil.train import train_mil

    if n_train < 4 * folds:
        raise InputError(f"need n_train >= 4*folds, got {n_train} slides for {folds} folds")
    started = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    encoder = load_patch_vit()
    options = {
        "model": "clam_sb",
        "folds": folds,
        "max_epochs": max_epochs,
        "stop_epoch": 15,
        "patience": 10,
        "lr": 2e-4,
        "weight_decay": 1e-5,
        "dropout": 0.25,
        "k_sample": 8,
        "bag_weight": 0.7,
        "seed": seed,
    }
    with tempfile.TemporaryDirectory(prefix="attnmap_hard_") as tmp:
        work = Path(tmp)
        labels_csv = _write_cohort(work, n_train, seed, encoder)
        rows = train_mil(
            work / "h5_files", labels_csv, work / "run", progress=False, verbose=False, **options
        )
        model_path = out_dir / MODEL_NAME
        shutil.copyfile(work / "run" / "fold_0" / "checkpoint.pt", model_path)
    record = {
        "model": "attnmap demo CLAM_SB on hard synthetic slides (fold 0)",
        "encoder": "attnmap:patch-vit (attnmap.data.patch_vit, 64-d)",
        "seed": seed,
        "command": f"python -m attnmap.data.hard_mil --out {out_dir} --seed {seed} --n-train {n_train} "
        f"--folds {folds} --max-epochs {max_epochs}",
        "weights_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
        "data": {
            "slides": f"render_hard_image(hard_seed({seed}, i), {list(SLIDE_SIZE)}), half with tumour",
            "n_train": n_train,
            "patch_size": HARD_PATCH_SIZE,
            "patches": "non-overlapping level-0 grid, patches at least half tissue (true tissue mask)",
        },
        "training": options,
        "cross_validation": rows,
        "build_seconds": round(time.time() - started, 1),
    }
    (out_dir / RECORD_NAME).write_text(json.dumps(record, indent=2, default=float) + "\n")
    return record


def load_hard_demo_clam(weights_dir: str | Path | None = None) -> torch.nn.Module:
    """The bundled hard-slide CLAM_SB (eval mode, 64-d patch-ViT features; classes normal / tumour)."""
    from attnmap.mil import load_clam

    path = Path(weights_dir or WEIGHTS_DIR) / MODEL_NAME
    return load_clam(require_bundled(path, "hard demo CLAM", "python -m attnmap.data.hard_mil"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Train the demo CLAM_SB on patch-ViT features of hard slides."
    )
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--n-train", type=int, default=32)
    parser.add_argument("--folds", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=40)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    record = build_hard_demo(args.out, args.seed, args.n_train, args.folds, args.max_epochs)
    test = [row for row in record["cross_validation"] if row["fold"] == "mean"]
    print(f"cross-validated test metrics: {test}; {record['build_seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
