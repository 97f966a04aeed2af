"""The bundled demo CLAM_SB: trained on synthetic slides, checked against their true tumour masks.

Attention heatmaps are only worth showing if the attention finds what made the slide positive. On
real slides that cannot be checked without annotations; on `attnmap.data.synthetic_slides` it can.
`build_demo` runs the whole chain a user would run (tissue segmentation → patch grid → tiny-encoder
features → `attnmap.mil.train_mil`) on a synthetic cohort, then scores the trained model's
attention on *separately generated* held-out slides against their tumour masks
(`attnmap.evaluate.mil_localisation`), and ships fold 0's weights as
``weights/demo_clam_sb.pt`` (a CLAM-layout state_dict) with ``weights/demo_clam_sb.json`` (seed,
command, cross-validation and held-out metrics).

Rebuild (about 5–10 min on 2 CPU cores)::

    python -m attnmap.data.mil_demo --out src/attnmap/data/weights
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from attnmap.data.bundled import require_bundled
from attnmap.data.synthetic_slides import SyntheticSlide, load_mask, load_masks, make_cohort, make_slide
from attnmap.data.tiny_encoder import WEIGHTS_DIR, load_tiny_encoder
from attnmap.errors import InputError
from attnmap.evaluate.mil_localisation import attention_localisation, patch_labels_from_mask, patch_means
from attnmap.wsi.encoders import Encoder

DEMO_MODEL_NAME = "demo_clam_sb.pt"
DEMO_RECORD_NAME = "demo_clam_sb.json"
PATCH_SIZE = 128
"""Level-0 patch side used for the demo (the tiny encoder resizes patches to 64 px)."""
SLIDE_SIZE = (4096, 4096)
TISSUE_PRESET = "bwh_biopsy"
HELD_OUT_SEED = 90_210
"""Seed of held-out slides: disjoint from the training cohort's per-slide seeds by construction."""


def held_out_slide(
    path: str | Path, index: int = 0, size: tuple[int, int] = SLIDE_SIZE, tumour: bool = True
) -> SyntheticSlide:
    """A synthetic slide the demo model never saw (slide ``index`` of the held-out series)."""
    if index < 0:
        raise InputError(f"index must be non-negative, got {index}")
    seed = int(np.random.SeedSequence([HELD_OUT_SEED, index]).generate_state(1)[0])
    return make_slide(path, seed=seed, size=size, tumour=tumour)


def read_cohort(cohort_dir: str | Path) -> list[dict[str, str]]:
    """Rows (slide_id, label, case_id) of a synthetic cohort's ``cohort.csv``."""
    with open(Path(cohort_dir) / "cohort.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def slide_bag(
    slide_path: str | Path,
    encoder: Encoder | None = None,
    patch_size: int = PATCH_SIZE,
    progress: bool = False,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(coords N×2 level-0 [x, y], features N×D) of a slide: segmentation, grid, tiny-encoder features.

    The same chain as ``attnmap wsi``: CLAM's "bwh_biopsy" segmentation preset, a non-overlapping
    level-0 grid of ``patch_size`` patches (``four_pt`` check), features from ``encoder`` (default:
    the bundled tiny encoder). The encoder runs on ``device`` (auto, cpu, cuda, ...); None keeps it
    where it is (the default encoder: on the CPU). Features come back on the CPU either way.
    """
    from attnmap.devices import resolve_device
    from attnmap.evaluate.perturbation import model_device
    from attnmap.wsi import open_slide, patch_grid, segment_tissue
    from attnmap.wsi.features import extract_features

    target = resolve_device(device) if device is not None else None  # "auto" allowed, CUDA checked
    encoder = encoder or load_tiny_encoder(target or "cpu")
    target = target or model_device(encoder.model)
    with open_slide(slide_path) as slide:
        tissue = segment_tissue(slide, preset=TISSUE_PRESET)
        coords = patch_grid(slide, tissue, patch_size=patch_size, step=patch_size, level=0)
    if len(coords) == 0:
        raise InputError(f"no tissue patches found on {slide_path}")
    features = extract_features(
        slide_path, coords, encoder, patch_size=patch_size, level=0, batch_size=128, device=target,
        progress=progress,
    )
    return coords, features


def darkness_scores(slide_path: str | Path, coords: np.ndarray, patch_size: int = PATCH_SIZE) -> np.ndarray:
    """A naive per-patch score for comparison: mean darkness (255 − mean RGB), read at downsample ~4.

    Tumour is dark, but so are the lymphoid aggregates every synthetic slide carries; a model whose
    attention beats this baseline has learnt more than "dark is interesting".
    """
    from attnmap.wsi import open_slide

    with open_slide(slide_path) as slide:
        level = slide.get_best_level_for_downsample(4)
        image = np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]))
        downsample = float(slide.level_downsamples[level])
    darkness = 255.0 - image[..., :3].astype(np.float64).mean(axis=2)
    return patch_means(coords, patch_size, darkness, downsample)


def slide_localisation(
    model: torch.nn.Module,
    slide_path: str | Path,
    coords: np.ndarray,
    features: np.ndarray,
    patch_size: int = PATCH_SIZE,
) -> dict[str, float]:
    """Prediction of ``model`` for one slide and, if it has tumour, its attention localisation.

    A patch is positive when at least half of its footprint is tumour (stored mask at 1/16).
    """
    from attnmap.mil import infer_bag

    bag = infer_bag(model, torch.from_numpy(np.asarray(features, dtype=np.float32)))
    result: dict[str, float] = {
        "prob_tumour": float(bag.probs.reshape(-1)[1]),
        "prediction": float(bag.prediction),
    }
    _, tumour, downsample = load_masks(slide_path)
    labels = patch_labels_from_mask(coords, patch_size, tumour, downsample)
    if labels.any() and not labels.all():
        result.update(attention_localisation(bag.scores("raw"), labels))
        baseline = attention_localisation(darkness_scores(slide_path, coords, patch_size), labels)
        result["darkness_baseline_auc"] = baseline["auc"]
        lymphoid = patch_labels_from_mask(coords, patch_size, load_mask(slide_path, "lymphoid"), downsample)
        if lymphoid.any():  # tumour against its look-alike only: is attention more than "dark"?
            pair = labels | lymphoid
            result["tumour_vs_lymphoid_auc"] = attention_localisation(bag.scores("raw")[pair], labels[pair])[
                "auc"
            ]
    return result


def _mean_of(per_slide: dict[str, dict[str, float]], key: str) -> float:
    values = [result[key] for result in per_slide.values() if key in result]
    return float(np.mean(values)) if values else float("nan")


def evaluate_on_cohort(
    model: torch.nn.Module, cohort_dir: Path, bags_dir: Path, patch_size: int = PATCH_SIZE
) -> dict[str, object]:
    """Per-slide predictions and localisation on a cohort with saved bags; summary means and minima."""
    from attnmap.mil.bags import find_bag, read_bag
    from attnmap.mil.metrics import classification_metrics

    rows = read_cohort(cohort_dir)
    per_slide, probs, labels = {}, [], []
    for row in rows:
        bag = read_bag(find_bag(bags_dir, row["slide_id"]))
        result = slide_localisation(
            model, cohort_dir / f"{row['slide_id']}.tif", bag.coords, bag.features.numpy(), patch_size
        )
        per_slide[row["slide_id"]] = {"label": int(row["label"]), **result}
        probs.append([1 - result["prob_tumour"], result["prob_tumour"]])
        labels.append(int(row["label"]))
    aucs = [r["auc"] for r in per_slide.values() if "auc" in r]
    summary: dict[str, object] = {
        "n_slides": len(rows),
        "n_tumour_slides_scored": len(aucs),
        "slide_metrics": classification_metrics(np.array(labels), np.array(probs)),
        "attention_auc_mean": _mean_of(per_slide, "auc"),
        "attention_auc_min": float(np.min(aucs)) if aucs else float("nan"),
        "average_precision_mean": _mean_of(per_slide, "average_precision"),
        "top_k_precision_mean": _mean_of(per_slide, "top_k_precision"),
        "darkness_baseline_auc_mean": _mean_of(per_slide, "darkness_baseline_auc"),
        "tumour_vs_lymphoid_auc_mean": _mean_of(per_slide, "tumour_vs_lymphoid_auc"),
        "per_slide": per_slide,
    }
    return summary


def _write_bags(cohort_dir: Path, bags_dir: Path, encoder: Encoder, patch_size: int) -> None:
    """Features of every slide of a cohort as CLAM's ``h5_files/<slide_id>.h5``."""
    from tqdm.auto import tqdm

    from attnmap.provenance import provenance
    from attnmap.wsi.features import save_features

    rows = read_cohort(cohort_dir)
    record = provenance(
        method="features",
        parameters={"patch_size": patch_size, "tissue_preset": TISSUE_PRESET},
        model=encoder.model,
        model_name="attnmap:tiny",
    )
    for row in tqdm(rows, desc=f"features {cohort_dir.name}", unit="slide"):
        coords, features = slide_bag(cohort_dir / f"{row['slide_id']}.tif", encoder, patch_size)
        save_features(bags_dir / "h5_files" / f"{row['slide_id']}.h5", features, coords, provenance=record)


def build_demo(
    out_dir: str | Path,
    work_dir: str | Path | None = None,
    seed: int = 7,
    n_train: int = 24,
    n_test: int = 8,
    folds: int = 3,
    max_epochs: int = 60,
    slide_size: tuple[int, int] = SLIDE_SIZE,
    patch_size: int = PATCH_SIZE,
) -> dict[str, object]:
    """Generate, featurise, train (``train_mil``, CLAM_SB), evaluate held-out; write model + JSON.

    ``work_dir`` keeps the slides, bags and training run (a temporary folder by default). Returns
    the record written to ``demo_clam_sb.json``.
    """
    from attnmap.mil import load_clam
    from attnmap.mil.train import train_mil
    from attnmap.provenance import provenance

    if n_train < 2 * folds or n_test < 2:
        raise InputError(f"need n_train >= 2*folds and n_test >= 2, got {n_train}, {folds}, {n_test}")
    started = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    temporary = None if work_dir is not None else tempfile.TemporaryDirectory(prefix="attnmap_demo_")
    work = Path(work_dir) if work_dir is not None else Path(temporary.name)
    try:
        encoder = load_tiny_encoder()
        cohorts = {"train": (work / "train", n_train, seed), "test": (work / "test", n_test, seed + 10_000)}
        for name, (folder, count, cohort_seed) in cohorts.items():
            if not (folder / "cohort.csv").is_file():
                make_cohort(folder, count, cohort_seed, size=slide_size)
            if not (work / f"bags_{name}" / "done").is_file():
                _write_bags(folder, work / f"bags_{name}", encoder, patch_size)
                (work / f"bags_{name}" / "done").write_text("ok\n")
        train_options = {
            "model": "clam_sb",
            "folds": folds,
            "max_epochs": max_epochs,
            "stop_epoch": 20,
            "patience": 10,
            "lr": 2e-4,
            "weight_decay": 1e-5,
            "dropout": 0.25,
            "k_sample": 8,
            "bag_weight": 0.7,
            "seed": seed,
        }
        rows = train_mil(
            work / "bags_train",
            work / "train" / "cohort.csv",
            work / "run",
            progress=False,
            verbose=False,
            **train_options,
        )
        checkpoint = work / "run" / "fold_0" / "checkpoint.pt"
        model = load_clam(checkpoint)
        held_out = evaluate_on_cohort(model, work / "test", work / "bags_test", patch_size)
        model_path = out_dir / DEMO_MODEL_NAME
        shutil.copyfile(checkpoint, model_path)
    finally:
        if temporary is not None:
            temporary.cleanup()
    record = {
        **provenance(method="mil_demo", model=model_path, model_name="attnmap demo CLAM_SB (fold 0)"),
        "seed": seed,
        "command": f"python -m attnmap.data.mil_demo --out {out_dir} --seed {seed} --n-train {n_train} "
        f"--n-test {n_test} --folds {folds} --max-epochs {max_epochs}",
        "encoder": "attnmap:tiny (attnmap.data.tiny_encoder, 64-d)",
        "model_config": model.config(),
        "data": {
            "train_cohort_seed": seed,
            "held_out_cohort_seed": seed + 10_000,
            "n_train": n_train,
            "n_held_out": n_test,
            "slide_size": list(slide_size),
            "mpp": 0.5,
            "patch_size": patch_size,
            "patch_level": 0,
            "tissue_preset": TISSUE_PRESET,
            "patch_positive_if_tumour_fraction": 0.5,
        },
        "training": train_options,
        "cross_validation": rows,
        "held_out": held_out,
        "attention_auc": held_out["attention_auc_mean"],
        "darkness_baseline_auc": held_out["darkness_baseline_auc_mean"],  # the figure's baseline
        "accuracy": held_out["slide_metrics"].get("accuracy"),
        "build_seconds": round(time.time() - started, 1),
    }
    (out_dir / DEMO_RECORD_NAME).write_text(json.dumps(record, indent=2, default=float) + "\n")
    return record


def demo_record(weights_dir: str | Path | None = None) -> dict:
    """The JSON record written with the bundled demo model (recipe, cross-validation, held-out)."""
    return json.loads((Path(weights_dir or WEIGHTS_DIR) / DEMO_RECORD_NAME).read_text())


def load_demo_clam(weights_dir: str | Path | None = None) -> torch.nn.Module:
    """The bundled demo CLAM_SB (eval mode, 64-d tiny-encoder features, 2 classes: normal / tumour)."""
    from attnmap.mil import load_clam

    path = Path(weights_dir or WEIGHTS_DIR) / DEMO_MODEL_NAME
    return load_clam(require_bundled(path, "demo CLAM model", "python -m attnmap.data.mil_demo"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the demo CLAM_SB on synthetic slides.")
    parser.add_argument("--out", type=Path, required=True, help="folder for demo_clam_sb.pt/.json")
    parser.add_argument("--work", type=Path, default=None, help="keep slides, bags and the run here")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--n-train", type=int, default=24)
    parser.add_argument("--n-test", type=int, default=8)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=60)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # small bags: threads only add overhead (and contention on a busy machine)
    record = build_demo(
        args.out,
        args.work,
        seed=args.seed,
        n_train=args.n_train,
        n_test=args.n_test,
        folds=args.folds,
        max_epochs=args.max_epochs,
    )
    held_out = record["held_out"]
    print(
        f"held-out attention AUC mean {record['attention_auc']:.3f} "
        f"(min {held_out['attention_auc_min']:.3f}) vs darkness baseline "
        f"{held_out['darkness_baseline_auc_mean']:.3f}, slide accuracy {record['accuracy']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
