"""Training attention-MIL models (CLAM_SB, CLAM_MB, ABMIL) with k-fold cross-validation.

``train_mil(features_dir, labels_csv, out_dir, ...)`` (also ``attnmap mil train``) follows CLAM's
recipe: one bag per step; Adam (lr 2e-4, weight decay 1e-5) or SGD (momentum 0.9); loss
bag_weight · CE(bag) + (1 − bag_weight) · instance clustering loss for CLAM (bag_weight 0.7,
k_sample 8); early stopping on the validation bag loss (patience 20, not before epoch 50, the best
epoch's weights kept); optional weighted sampling (N bags drawn with replacement, class weights
N / n_c). Folds: `attnmap.mil.splits` (stratified, grouped by case).

Output in ``out_dir``: ``splits.csv``, ``config.json``, ``metrics.csv`` (one row per fold and split
plus the test mean: AUC, accuracy, per-class accuracy and AUC) and per fold ``fold_<i>/``:
``checkpoint.pt`` (a CLAM-layout state_dict: `load_mil` / `load_clam` read it), ``model.json`` (the
architecture and ``class_names``: the label of class index c, e.g. of ``p_c`` in predictions.csv),
``metrics.json``, ``log.csv`` (per epoch losses and validation AUC).

Resuming: after every epoch the fold's complete state (weights, optimizer, epoch, early-stopping
counters, best weights, RNG state) goes to ``fold_<i>/resume.pt`` (written atomically). Running the
same command again continues from there, and a finished fold is skipped. The bag order of an
epoch is drawn from (seed, fold, epoch), so a resumed run equals an uninterrupted one.

A fold counts as finished only when its ``metrics.json`` parses and records the fold's fingerprint
(options, the fold's slides with their labels and cases, each bag file's identity) and its
``checkpoint.pt`` loads: a rerun with another labels CSV or changed features retrains the folds
concerned, a truncated file is redone. One run at a time holds ``out_dir`` (`attnmap.lock`).
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

from tqdm.auto import tqdm

from attnmap.errors import InputError
from attnmap.io_utils import write_json_atomic
from attnmap.lock import folder_lock
from attnmap.mil.bags import common_feature_size
from attnmap.mil.fold_files import check_same_options, fold_fingerprint, remove_stale_folds
from attnmap.mil.fold_training import BagStore, EpochCallback, train_fold
from attnmap.mil.metrics import format_metrics, nan_mean, write_metrics_csv
from attnmap.mil.splits import Cohort, make_folds, read_labels, write_splits
from attnmap.mil.train_config import CLAM_ONLY, MODELS, TrainConfig, build_model

__all__ = ["CLAM_ONLY", "MODELS", "BagStore", "TrainConfig", "build_model", "train_fold", "train_mil"]


def train_mil(
    features_dir: str | Path,
    labels_csv: str | Path,
    out_dir: str | Path,
    progress: bool = True,
    verbose: bool = True,
    on_epoch: EpochCallback | None = None,
    **options: object,
) -> list[dict[str, object]]:
    """Cross-validated training (see the module docstring); returns the rows of ``metrics.csv``.

    ``options`` are the fields of `TrainConfig` (model, folds, max_epochs, lr, weight_decay,
    optimizer, bag_weight, k_sample, subtyping, size, gate, dropout, early_stopping, patience,
    stop_epoch, weighted_sample, val_fraction, seed, device, cache_gb). ``on_epoch(fold, epoch,
    log_row)`` is called after each epoch's state is saved.
    """
    unknown = sorted(set(options) - set(TrainConfig.__dataclass_fields__))
    if unknown:
        raise InputError(f"unknown training options {unknown}")
    config = TrainConfig(**options)  # type: ignore[arg-type]
    config.check()
    cohort = read_labels(labels_csv)
    out_dir = Path(out_dir)
    created = _missing_folders(out_dir)
    try:
        with folder_lock(out_dir, "attnmap mil train"):
            return _train_locked(Path(features_dir), cohort, out_dir, config, progress, verbose, on_epoch)
    except BaseException:
        # most refusals (too many folds, a missing or empty bag) come once the lock made out_dir:
        # a refused command leaves no empty folder behind, and never removes one it did not make
        _remove_empty(created)
        raise


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for path in (folder, *folder.absolute().parents):
        if path.exists():
            break
        missing.append(path)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty: what a run wrote stays."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _train_locked(
    features_dir: Path,
    cohort: Cohort,
    out_dir: Path,
    config: TrainConfig,
    progress: bool,
    verbose: bool,
    on_epoch: EpochCallback | None,
) -> list[dict[str, object]]:
    check_same_options(out_dir / "config.json", asdict(config))
    store = BagStore(Path(features_dir), cohort.slide_ids, config.cache_gb * 1e9)
    embed_dim = common_feature_size(list(store.paths.values()))
    splits = make_folds(cohort, config.folds, seed=config.seed, val_fraction=config.val_fraction)
    # a NaN bag first trained in the last fold would waste the others; minutes for a large cohort
    for slide in tqdm(cohort.slide_ids, desc="reading bags", unit="bag", disable=not progress):
        store.features(slide)  # read, checked and (within the budget) cached for the folds
    # written once the inputs passed (see check_same_options)
    options = asdict(config)
    write_json_atomic(out_dir / "config.json", options)
    write_splits(out_dir / "splits.csv", cohort, splits)
    fingerprints = {split.fold: fold_fingerprint(options, cohort, split, store.paths) for split in splits}
    if remove_stale_folds(out_dir, fingerprints, print if verbose else None):
        (out_dir / "metrics.csv").unlink(missing_ok=True)  # rewritten once every fold is done
    rows: list[dict[str, object]] = []
    for split in splits:
        results = train_fold(
            split,
            cohort,
            store,
            out_dir / f"fold_{split.fold}",
            config,
            embed_dim,
            progress=progress,
            on_epoch=on_epoch,
            fingerprint=fingerprints[split.fold],
            verbose=verbose,
        )
        for name in ("val", "test"):
            if results[name].get("n"):
                rows.append({"fold": split.fold, "split": name, **results[name]})
    tests = [row for row in rows if row["split"] == "test"]
    if tests:
        keys = [key for key in tests[0] if key not in ("fold", "split")]
        rows.append(
            {
                "fold": "mean",
                "split": "test",
                **{key: nan_mean([float(r.get(key, math.nan)) for r in tests]) for key in keys},
            }
        )
    write_metrics_csv(out_dir / "metrics.csv", rows)
    if verbose:
        print(format_metrics(rows, cohort.class_names))
    return rows

