"""Evaluation results for people and files: a text table, a CSV with a provenance sidecar, a plot."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from attnmap.evaluate.runner import METRICS, EvaluationResult
from attnmap.io_utils import atomic_path, write_json_atomic

HEADERS: dict[str, str] = {
    "neg_pred_auc": "neg AUC pred ↑",
    "pos_pred_auc": "pos AUC pred ↓",
    "neg_target_auc": "neg AUC target ↑",
    "pos_target_auc": "pos AUC target ↓",
    "pixel_acc": "pixel acc ↑",
    "miou": "mIoU ↑",
    "map": "mAP ↑",
    "pointing": "pointing ↑",
}
CURVE_TITLES: dict[str, str] = {
    "pos_pred": "positive, predicted class",
    "neg_pred": "negative, predicted class",
    "pos_target": "positive, target class",
    "neg_target": "negative, target class",
}


def format_table(result: EvaluationResult, markdown: bool = False) -> str:
    """All rows as an aligned text table (or a Markdown table); metrics are percentages."""
    header = ["method", *HEADERS.values()]
    body = [[str(row["method"]), *(_cell(row[name]) for name in METRICS)] for row in result.rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
    else:
        widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                           enumerate(zip(line, widths, strict=True))) for line in [header, *body]]
        lines.insert(1, "-" * len(lines[0]))
    notes = [f"{row['method']}: {row['note']}" for row in result.rows if row.get("note")]
    return "\n".join(lines + [f"note: {note}" for note in notes])


def write_csv(result: EvaluationResult, path: str | Path, provenance: Mapping[str, str]) -> Path:
    """Write the rows to ``path`` and a ``.json`` sidecar (provenance, settings, curves); returns path."""
    path = Path(path)
    columns = ["method", *METRICS, "seconds", "note"]
    sidecar = {
        "provenance": dict(provenance),
        "settings": result.settings,
        "x": result.x.tolist(),
        "curves": {name: {key: values.tolist() for key, values in curves.items()}
                   for name, curves in result.curves.items()},
    }
    write_json_atomic(path.with_suffix(".json"), sidecar)  # the record before the file (`provenance`)
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in result.rows:
            writer.writerow({key: _csv_value(row.get(key, "")) for key in columns})
    return path


def plot_curves(result: EvaluationResult, path: str | Path, provenance: Mapping[str, str]) -> Path:
    """Four panels of perturbation curves (positive/negative × predicted/target class) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    figure, axes = plt.subplots(2, 2, figsize=(11, 8), sharex=True, sharey=True)
    for axis, (key, title) in zip(axes.ravel(), CURVE_TITLES.items(), strict=True):
        for name, curves in result.curves.items():
            style = {"color": "black", "linestyle": "--"} if name == "random" else {}
            auc = result.row(name)[f"{key}_auc"]
            axis.plot(result.x * 100, curves[key] * 100, marker="o", markersize=3,
                      label=f"{name} ({auc:.1f})", **style)
        axis.set_title(f"{title} (AUC)")
        axis.set_ylim(0, 102)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    for axis in axes[1]:
        axis.set_xlabel("pixels removed (%)")
    for axis in axes[:, 0]:
        axis.set_ylabel("top-1 accuracy (%)")
    figure.tight_layout()
    with atomic_path(path) as temporary:  # PNG text chunks, as render.grid writes
        figure.savefig(temporary, dpi=100, metadata=dict(provenance))
    plt.close(figure)
    return path


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def _csv_value(value: object) -> object:
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else f"{float(value):.4f}"
    return value
