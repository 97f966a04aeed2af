"""Slide-level classification metrics: AUC, accuracy and per-class figures.

Written out here (rather than taken from scikit-learn, which is not a dependency) and kept small:
the ROC AUC is the Mann-Whitney statistic with average ranks for ties, which equals the area under
the trapezoidal ROC curve. Multi-class AUC is the macro mean of one-vs-rest AUCs over the classes
present (CLAM reports the same). A class missing from the labels gives NaN for its AUC rather than
a misleading number.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from attnmap.errors import InputError


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Binary ROC AUC of ``scores`` for ``labels`` in {0, 1}; NaN when one class is absent."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise InputError(f"labels {labels.shape} and scores {scores.shape} must be matching vectors")
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores, method="average")
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """AUC, accuracy, per-class accuracy (recall) and per-class one-vs-rest AUC of bag predictions.

    ``labels`` (n,) class indices, ``probs`` (n, C) class probabilities. Keys: ``n``, ``auc``,
    ``accuracy``, ``balanced_accuracy``, ``acc_class<c>``, ``auc_class<c>``, ``n_class<c>``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise InputError(f"probs {probs.shape} must be (n, C) with n = {labels.shape[0]} labels")
    n_classes = probs.shape[1]
    predictions = probs.argmax(axis=1)
    metrics: dict[str, float] = {"n": int(labels.size)}
    metrics["accuracy"] = float((predictions == labels).mean()) if labels.size else math.nan
    per_class_auc, per_class_acc = [], []
    for c in range(n_classes):
        members = labels == c
        metrics[f"n_class{c}"] = int(members.sum())
        accuracy = float((predictions[members] == c).mean()) if members.any() else math.nan
        metrics[f"acc_class{c}"] = accuracy
        metrics[f"auc_class{c}"] = roc_auc(members, probs[:, c]) if labels.size else math.nan
        per_class_acc.append(accuracy)
        per_class_auc.append(metrics[f"auc_class{c}"])
    if n_classes == 2:
        metrics["auc"] = metrics["auc_class1"]
    else:
        present = [value for value in per_class_auc if not math.isnan(value)]
        metrics["auc"] = float(np.mean(present)) if present else math.nan
    present_acc = [value for value in per_class_acc if not math.isnan(value)]
    metrics["balanced_accuracy"] = float(np.mean(present_acc)) if present_acc else math.nan
    return metrics


def nan_mean(values: list[float]) -> float:
    """Mean of the values that are not NaN (NaN when none is)."""
    present = [value for value in values if not math.isnan(value)]
    return float(np.mean(present)) if present else math.nan


_LEADING_COLUMNS = ("fold", "split", "loss", "n", "accuracy")
_PER_CLASS_COLUMN = re.compile(r"(n|acc|auc)_class(\d+)")
_TRAILING_COLUMNS = ("auc", "balanced_accuracy")


def _column_order(name: str) -> tuple:
    """Where column ``name`` stands: fold, split, loss, n, accuracy; per class (in class order) its n,
    accuracy and AUC; auc, balanced_accuracy; any other key by name."""
    if name in _LEADING_COLUMNS:
        return (0, _LEADING_COLUMNS.index(name), 0, "")
    per_class = _PER_CLASS_COLUMN.fullmatch(name)
    if per_class is not None:
        return (1, int(per_class[2]), ("n", "acc", "auc").index(per_class[1]), "")
    if name in _TRAILING_COLUMNS:
        return (2, _TRAILING_COLUMNS.index(name), 0, "")
    return (3, 0, 0, name)


def write_metrics_csv(path: Path, rows: list[dict[str, object]]) -> None:
    """Rows (dicts) as a CSV of every key, in one fixed column order (`_column_order`).

    Why fixed: a fold finished by an earlier run comes back from its ``metrics.json`` with its keys
    sorted, a fold trained now in the order they were computed; the first row's order made a resumed
    run's CSV differ from a fresh run's (columns read by position were shuffled)."""
    fields = sorted({key for row in rows for key in row}, key=_column_order)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def format_metrics(rows: list[dict[str, object]], class_names: list[str]) -> str:
    """A small text table of per-fold AUC / accuracy / per-class accuracy."""
    header = ["fold", "split", "n", "auc", "accuracy"] + [f"acc[{name}]" for name in class_names]
    lines = ["  ".join(f"{h:>10}" for h in header)]
    for row in rows:
        cells = [str(row["fold"]), str(row["split"])]
        cells += [f"{float(row.get(k, math.nan)):.3f}" for k in ["n", "auc", "accuracy"]]
        cells += [f"{float(row.get(f'acc_class{c}', math.nan)):.3f}" for c in range(len(class_names))]
        lines.append("  ".join(f"{cell:>10}" for cell in cells))
    return "\n".join(lines)
