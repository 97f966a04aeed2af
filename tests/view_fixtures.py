"""A tiny `wsi run` output folder (slide, blockmap with two score sets, fine maps, prediction, tissue)."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from synthetic_slide_files import write_test_slide

PATCH = 128
FINE_TOP = 4
"""Patches with fine maps: the first (the top patch) is +1 on its left half and −1 on its right."""


def write_run_folder(
    root: Path,
    slide_id: str = "slide_a",
    seed: int = 0,
    hot: tuple[int, int] = (512, 256),
    fine: bool = True,
    mpp: float | None = 0.5,
) -> Path:
    """A run folder whose attention peaks at patch ``hot`` (level-0 top-left), falling off with distance.

    ``mpp``: the slide's µm per pixel (None: it records none).
    ``fine``: also a fine-map file whose patch scores are the attention and whose `FINE_TOP` best
    patches have 16 × 16 maps of ±1 (left/right halves for the top patch, top/bottom for the rest).
    """
    slide = write_test_slide(root / "slides" / f"{slide_id}.tif", seed=seed, mpp=mpp)
    xs, ys = np.meshgrid(np.arange(0, 1024, PATCH), np.arange(0, 768, PATCH))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    distance = np.hypot(coords[:, 0] - hot[0], coords[:, 1] - hot[1]) / PATCH
    attention = (-distance + np.random.default_rng(seed).normal(0, 0.05, len(coords))).astype(np.float32)
    signed = np.cos(coords[:, 0] / 200.0).astype(np.float32)
    folder = root / "run" / "heatmaps" / slide_id
    folder.mkdir(parents=True)
    with h5py.File(folder / f"{slide_id}_blockmap.h5", "w") as handle:
        handle.create_dataset("attention_scores", data=attention.reshape(-1, 1))
        handle.create_dataset("coords", data=coords)
        handle.create_dataset("scores_lrp", data=signed.reshape(-1, 1))
        handle.attrs["patch_size"] = PATCH
        handle.attrs["prediction"] = 1
        handle.attrs["probabilities"] = np.array([0.2, 0.8])
    if fine:
        from attnmap.wsi.heatmap.fine_store import FineMapWriter

        maps = np.ones((FINE_TOP, 16, 16), dtype=np.float32)
        maps[0, :, 8:] = -1.0
        maps[1:, 8:, :] = -1.0
        with FineMapWriter(
            folder / f"{slide_id}_fine_maps.h5",
            coords,
            attention,
            np.argsort(-attention, kind="stable")[:FINE_TOP],
            (16, 16),
            patch_size=PATCH,
            method="lrp",
            mil_method="lrp",
            target=1,
            top_k=FINE_TOP,
        ) as writer:
            writer.append(maps, np.zeros(FINE_TOP))
    (folder / f"{slide_id}_prediction.json").write_text(
        json.dumps(
            {
                "slide_id": slide_id,
                "slide_path": str(slide),
                "label": "tumor",
                "n_patches": len(coords),
                "prediction": 1,
                "prediction_name": "tumor",
                "probabilities": [0.2, 0.8],
                "attention_branch": 1,
            }
        )
    )
    (root / "run" / "tissue").mkdir(exist_ok=True)
    (root / "run" / "tissue" / f"{slide_id}.json").write_text(
        json.dumps({"contours": [{"outer": [[100, 100], [900, 100], [900, 650], [100, 650]], "holes": []}]})
    )
    return root / "run"


def write_overlap_run(
    root: Path, overlap: float = 0.5, scale: str = "clam", percentiles: bool = True
) -> Path:
    """A real `wsi run` of one synthetic slide with ``heatmap.overlap`` (an ``overlap_blockmap.h5``
    beside the blockmap) drawn on ``heatmap.scale`` and ``percentiles`` (the viewer colours its
    attention the same way);
    returns its output folder. About a second."""
    import os

    from synthetic_slide_files import write_pipeline_setup

    from attnmap.cli.main import main

    config = write_pipeline_setup(
        root / "project",
        n_slides=1,
        overrides={
            "heatmap": {"overlap": overlap, "scale": scale, "percentiles": percentiles},
            "segmentation": {"level": 0},
        },
    )
    here = Path.cwd()
    os.chdir(config.parent)  # the configuration's paths are relative to it, as a user runs it
    try:
        main(["wsi", "run", config.name, "--quiet"])
    finally:
        os.chdir(here)
    return config.parent / "out"


def overlap_cells(path: Path, unit) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The cells (grid-step squares) of an ``overlap_blockmap.h5`` with overlap 0.5, each with the
    mean of ``unit(score)`` over the patches covering it, computed here patch by patch: (level-0
    top-left corners, means, how many patches cover each, step)."""
    with h5py.File(path, "r") as handle:
        coords = handle["coords"][:].astype(np.int64)
        values = np.asarray(unit(handle["attention_scores"][:, 0].astype(np.float64)))
        size = int(handle.attrs["patch_size"])
    step = size // 2
    corners = np.array(
        sorted({(x + dx, y + dy) for x, y in coords.tolist() for dx in (0, step) for dy in (0, step)})
    )
    means, counts = [], []
    for x, y in corners:
        covering = (
            (coords[:, 0] <= x) & (x < coords[:, 0] + size) & (coords[:, 1] <= y) & (y < coords[:, 1] + size)
        )
        means.append(values[covering].mean())
        counts.append(int(covering.sum()))
    return corners, np.array(means), np.array(counts), step
