"""One fold of `attnmap mil train`: the bags it reads, its epochs (CLAM's loss, bag order and early
stopping), the per-epoch resume state, and its finished files (see `attnmap.mil.train`'s docstring)."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from attnmap.errors import InputError
from attnmap.fingerprint import Fingerprint
from attnmap.io_utils import write_json_atomic
from attnmap.mil.abmil import ABMIL
from attnmap.mil.bags import find_bags, read_bag
from attnmap.mil.base import AttentionMILBase
from attnmap.mil.fold_files import MODEL_RECORD, finished_fold, fold_fingerprint, load_resume, save_atomic
from attnmap.mil.metrics import classification_metrics
from attnmap.mil.splits import Cohort, Split
from attnmap.mil.train_config import TrainConfig, build_model


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
