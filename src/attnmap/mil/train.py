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

import csv
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from attnmap.errors import InputError
from attnmap.fingerprint import Fingerprint
from attnmap.io_utils import write_json_atomic
from attnmap.lock import folder_lock
from attnmap.mil.abmil import ABMIL
from attnmap.mil.bags import common_feature_size, find_bags, read_bag
from attnmap.mil.base import AttentionMILBase
from attnmap.mil.clam import CLAM_MB, CLAM_SB
from attnmap.mil.fold_files import (
    MODEL_RECORD,
    check_same_options,
    finished_fold,
    fold_fingerprint,
    load_resume,
    remove_stale_folds,
    save_atomic,
)
from attnmap.mil.metrics import classification_metrics, format_metrics, nan_mean, write_metrics_csv
from attnmap.mil.splits import Cohort, Split, make_folds, read_labels, write_splits

MODELS = ("clam_sb", "clam_mb", "abmil")
CLAM_ONLY = ("size", "k_sample", "subtyping", "bag_weight")  # options ABMIL has no use for


@dataclass
class TrainConfig:
    """Options of `train_mil`; defaults are CLAM's (README learning rate)."""

    model: str = "clam_sb"
    folds: int = 5
    max_epochs: int = 200
    lr: float = 2e-4
    weight_decay: float = 1e-5
    optimizer: str = "adam"
    bag_weight: float = 0.7
    k_sample: int = 8
    subtyping: bool = False
    size: str = "small"
    gate: bool = True
    dropout: float = 0.25
    early_stopping: bool = True
    patience: int = 20
    stop_epoch: int = 50
    weighted_sample: bool = False
    val_fraction: float = 0.1
    seed: int = 1
    device: str = "cpu"
    cache_gb: float = 4.0

    def check(self) -> None:
        if self.model not in MODELS:
            raise InputError(f"unknown model {self.model!r}; choose one of {list(MODELS)}")
        if self.optimizer not in ("adam", "sgd"):
            raise InputError(f"unknown optimizer {self.optimizer!r}; choose 'adam' or 'sgd'")
        if not 0.0 <= self.bag_weight <= 1.0:
            raise InputError(f"bag_weight must be in [0, 1], got {self.bag_weight}")
        if self.max_epochs < 1:
            raise InputError(f"max_epochs must be at least 1, got {self.max_epochs}")
        try:
            device = torch.device(self.device)
        except RuntimeError as error:
            raise InputError(f"unknown torch device {self.device!r}") from error
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {self.device!r} asked for, but CUDA is not available here")


class BagStore:
    """Bags read on demand and kept in memory up to a byte budget (most cohorts fit entirely)."""

    def __init__(self, features_dir: Path, slide_ids: list[str], budget_bytes: float):
        self.paths = find_bags(features_dir, slide_ids)
        self.budget, self.used, self.cache = budget_bytes, 0, {}
        self.embed_dim: int | None = None

    def features(self, slide_id: str) -> torch.Tensor:
        if slide_id in self.cache:
            return self.cache[slide_id]
        features = read_bag(self.paths[slide_id]).features
        self.embed_dim = self.embed_dim or int(features.shape[1])
        if features.shape[1] != self.embed_dim:
            raise InputError(
                f"{self.paths[slide_id]}: {features.shape[1]} features per patch; other bags have "
                f"{self.embed_dim}"
            )
        size = features.numel() * features.element_size()
        if self.used + size <= self.budget:
            self.cache[slide_id], self.used = features, self.used + size
        return features


def build_model(config: TrainConfig, embed_dim: int, n_classes: int) -> AttentionMILBase:
    """A fresh model of the configured kind (seed the RNG first for reproducible weights)."""
    if config.model == "abmil":
        return ABMIL(embed_dim=embed_dim, n_classes=n_classes, gate=config.gate, dropout=config.dropout)
    cls = CLAM_MB if config.model == "clam_mb" else CLAM_SB
    return cls(
        gate=config.gate,
        size=config.size,
        dropout=config.dropout,
        k_sample=config.k_sample,
        n_classes=n_classes,
        subtyping=config.subtyping,
        embed_dim=embed_dim,
    )


def _epoch_order(
    labels: list[int], n_classes: int, weighted: bool, seed: int, fold: int, epoch: int
) -> np.ndarray:
    rng = np.random.default_rng([seed, fold, epoch])
    if not weighted:
        return rng.permutation(len(labels))
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    weights = np.array([len(labels) / counts[label] for label in labels])
    return rng.choice(len(labels), size=len(labels), replace=True, p=weights / weights.sum())


def _train_epoch(model, optimizer, store, slides, labels, order, config, progress) -> tuple[float, float]:
    model.train()
    is_clam = not isinstance(model, ABMIL)
    bag_total, instance_total = 0.0, 0.0
    for index in tqdm(order, desc="bags", leave=False, disable=not progress):
        label = torch.tensor([labels[index]], device=config.device)
        output = model(store.features(slides[index]), label=label, instance_eval=is_clam)
        bag_loss = F.cross_entropy(output.logits, label)
        loss = bag_loss
        if is_clam:
            loss = config.bag_weight * bag_loss + (1 - config.bag_weight) * output.instance_loss
            instance_total += float(output.instance_loss.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bag_total += float(bag_loss.detach())
    return bag_total / len(order), instance_total / len(order)


def evaluate(
    model: AttentionMILBase, store: BagStore, slides: list[str], labels: list[int]
) -> tuple[float, dict]:
    """Mean bag cross-entropy and `classification_metrics` on a set of slides."""
    if not slides:
        return math.nan, {}
    model.eval()
    probs, losses = [], []
    with torch.no_grad():  # not inference_mode: cached bags must stay usable for training
        for slide, label in zip(slides, labels, strict=True):
            output = model(store.features(slide))
            target = torch.tensor([label], device=output.logits.device)
            losses.append(float(F.cross_entropy(output.logits, target)))
            probs.append(output.probs[0].double().cpu().numpy())
    return float(np.mean(losses)), classification_metrics(np.array(labels), np.stack(probs))


def _write_log(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


EpochCallback = Callable[[int, int, dict], None]


def train_fold(
    split: Split,
    cohort: Cohort,
    store: BagStore,
    fold_dir: Path,
    config: TrainConfig,
    embed_dim: int,
    progress: bool = True,
    on_epoch: EpochCallback | None = None,
    fingerprint: Fingerprint | None = None,
    verbose: bool = False,
) -> dict[str, dict]:
    """Train one fold (resuming from ``resume.pt`` if present); returns val / test metrics.

    A fold already finished with ``fingerprint`` (default: `fold_fingerprint`) is not retrained.
    """
    fingerprint = fingerprint or fold_fingerprint(asdict(config), cohort, split, store.paths)
    metrics, reason = finished_fold(fold_dir, fingerprint)
    if metrics is not None:
        return metrics
    if verbose and reason != "missing":
        print(f"fold {split.fold}: training again ({reason})")
    fold_dir.mkdir(parents=True, exist_ok=True)
    label_of = dict(zip(cohort.slide_ids, cohort.labels, strict=True))
    train_labels = [label_of[s] for s in split.train]
    torch.manual_seed(config.seed * 1000 + split.fold)
    model = build_model(config, embed_dim, cohort.n_classes).to(config.device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(parameters, lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.SGD(parameters, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    state = {
        "epoch": 0,
        "best_loss": math.inf,
        "best_epoch": -1,
        "bad_epochs": 0,
        "best_weights": None,
        "log": [],
        "stopped": False,
    }
    resume = fold_dir / "resume.pt"
    saved = load_resume(resume, fingerprint)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["state"]
    epochs = tqdm(
        range(state["epoch"], state["epoch"] if state["stopped"] else config.max_epochs),
        desc=f"fold {split.fold}",
        initial=state["epoch"],
        total=config.max_epochs,
        disable=not progress,
    )
    for epoch in epochs:
        order = _epoch_order(
            train_labels, cohort.n_classes, config.weighted_sample, config.seed, split.fold, epoch
        )
        bag_loss, instance_loss = _train_epoch(
            model, optimizer, store, split.train, train_labels, order, config, progress
        )
        if not math.isfinite(bag_loss):  # else NaN weights were saved as a finished fold, exit 0
            raise InputError(f"fold {split.fold}, epoch {epoch}: bag loss {bag_loss}, diverged; lower --lr")
        val_loss, val_metrics = evaluate(model, store, split.val, [label_of[s] for s in split.val])
        monitored = val_loss if split.val else bag_loss
        stop = _update_early_stopping(state, model, monitored, epoch, config)
        row = {
            "epoch": epoch,
            "train_bag_loss": bag_loss,
            "train_instance_loss": instance_loss,
            "val_loss": val_loss,
            "val_auc": val_metrics.get("auc", math.nan),
            "val_accuracy": val_metrics.get("accuracy", math.nan),
        }
        state["log"].append(row)
        state["epoch"], state["stopped"] = epoch + 1, stop
        save_atomic(
            {  # the keys of fold_files.RESUME_KEYS
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "state": state,
                "fingerprint": fingerprint.value,
            },
            resume,
        )
        _write_log(fold_dir / "log.csv", state["log"])
        epochs.set_postfix(train=f"{bag_loss:.3f}", val=f"{val_loss:.3f}")
        if on_epoch is not None:
            on_epoch(split.fold, epoch, row)
        if stop:
            break
    if config.early_stopping and state["best_weights"] is not None:
        model.load_state_dict(state["best_weights"])
    return _finish_fold(model, store, split, label_of, fold_dir, state, fingerprint, cohort.class_names)


def _update_early_stopping(state: dict, model, loss: float, epoch: int, config: TrainConfig) -> bool:
    """CLAM's rule: keep the lowest-loss weights; stop after `patience` worse epochs past stop_epoch."""
    if loss <= state["best_loss"]:  # CLAM counts a tie as an improvement
        state.update(best_loss=loss, best_epoch=epoch, bad_epochs=0)
        state["best_weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return False
    state["bad_epochs"] += 1
    return config.early_stopping and state["bad_epochs"] >= config.patience and epoch > config.stop_epoch


def _finish_fold(
    model, store, split, label_of, fold_dir: Path, state: dict, fingerprint: Fingerprint,
    class_names: list[str],
) -> dict:
    results: dict[str, dict] = {}
    for name in ("val", "test"):
        slides = getattr(split, name)
        loss, metrics = evaluate(model, store, slides, [label_of[s] for s in slides])
        results[name] = {"loss": loss, **metrics}
    results["best_epoch"] = {"epoch": state["best_epoch"], "epochs_run": state["epoch"]}
    save_atomic({k: v.detach().cpu() for k, v in model.state_dict().items()}, fold_dir / "checkpoint.pt")
    write_json_atomic(fold_dir / MODEL_RECORD, {**model.config(), "class_names": class_names})  # class c: [c]
    write_json_atomic(fold_dir / "metrics.json", {**results, "provenance": fingerprint.record()})  # last
    (fold_dir / "resume.pt").unlink(missing_ok=True)
    return results


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
    with folder_lock(out_dir, "attnmap mil train"):
        return _train_locked(Path(features_dir), cohort, out_dir, config, progress, verbose, on_epoch)


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

