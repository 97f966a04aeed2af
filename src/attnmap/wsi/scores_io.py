"""Per-patch scores on disk (CLAM's ``_blockmap.h5``) and the top / bottom patches as PNG crops.

Why CLAM's layout: users already have ``_blockmap.h5`` files and tools that read them; a file we
write opens in theirs and theirs in ours. Sampled crops use CLAM's file names
(``{rank}_{slide}_x_{x}_y_{y}_a_{percentile:.3f}.png``) and its percentile ranking.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from attnmap.errors import InputError
from attnmap.io_utils import save_png, writable_file, writable_folder
from attnmap.render.arrays import ArrayInput, as_array
from attnmap.wsi.heatmap.scores import to_percentiles
from attnmap.wsi.patch_geometry import PatchGeometry, write_geometry
from attnmap.wsi.slide import Slide
from attnmap.wsi.slide_files import slide_name


def _checked(coords: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    coords = as_array(coords)
    scores = as_array(scores)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InputError(f"coords must have shape (N, 2), got {coords.shape}")
    if scores.size == 0 or len(coords) == 0:
        raise InputError("the scores are empty: no patches to show")
    scores = scores.reshape(len(scores), -1) if scores.ndim else scores.reshape(1, 1)
    if scores.shape[1] != 1:
        raise InputError(f"scores must have shape (N,) or (N, 1), got {np.asarray(scores).shape}")
    if len(scores) != len(coords):
        raise InputError(f"scores and coords differ in length: {len(scores)} scores for {len(coords)} coords")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    return coords.astype(np.int64), scores


def save_scores_h5(
    path: str | Path,
    coords: np.ndarray,
    scores: np.ndarray,
    metadata: Mapping[str, str] | None = None,
    attrs: Mapping[str, object] | None = None,
    geometry: PatchGeometry | None = None,
) -> Path:
    """Write ``attention_scores`` (N×1, the scores' own float dtype) and ``coords`` (N×2 int64).

    ``metadata`` (a provenance dict) and ``attrs`` become file attributes; ``geometry`` (the
    patches'), attributes of ``coords`` as on the features h5 (`attnmap.wsi.patch_geometry`).
    """
    import h5py

    coords, scores = _checked(coords, scores)
    path = writable_file(path)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("attention_scores", data=scores)
        write_geometry(handle.create_dataset("coords", data=coords), geometry)
        for key, value in {**dict(metadata or {}), **dict(attrs or {})}.items():
            handle.attrs[key] = value if isinstance(value, (int, float, np.ndarray)) else str(value)
    return path


def load_scores_h5(path: str | Path, method: str = "attention") -> tuple[np.ndarray, np.ndarray]:
    """(coords (N, 2) int64, scores (N,) float64) from a ``_blockmap.h5``-style file.

    ``method``: the score set to read, named as the viewer names it (`score_set_name`): "attention"
    (``attention_scores``) or a relevance method (``scores_<method>``, e.g. "lrp")."""
    import h5py

    from attnmap.view.score_files import score_set_name  # the viewer's naming rule, not a second one

    path = Path(path)
    if not path.is_file():
        raise InputError(f"scores file not found: {path}")
    try:
        with h5py.File(path, "r") as handle:
            datasets = {score_set_name(name): name for name, item in handle.items()
                        if isinstance(item, h5py.Dataset) and score_set_name(name)}
            if "coords" not in handle or not datasets:
                missing = ["coords"] if "coords" not in handle else []
                missing += [] if datasets else ["attention_scores"]
                raise InputError(f"{path} lacks dataset(s) {missing}; expected CLAM's _blockmap.h5 layout")
            if method not in datasets:
                raise InputError(f"{path} has no '{method}' scores; it has {', '.join(sorted(datasets))} "
                                 "(datasets attention_scores and scores_<method>)")
            coords = np.asarray(handle["coords"], dtype=np.int64)
            scores = np.asarray(handle[datasets[method]], dtype=np.float64).reshape(-1)
    except OSError as exc:
        raise InputError(f"cannot read scores file {path}: {exc}") from None
    if len(scores) == 0:
        raise InputError(f"{path} holds no patches (empty {datasets[method]})")
    _checked(coords, scores)
    return coords, scores


def top_k_indices(scores: np.ndarray, k: int, lowest: bool = False) -> np.ndarray:
    """Indices of the ``k`` highest (or lowest) scores, ties broken as CLAM's argsort does."""
    order = np.asarray(scores).argsort()
    return order[:k] if lowest else order[::-1][:k]


def range_sample_indices(scores: np.ndarray, start: float, end: float, k: int, seed: int = 1) -> np.ndarray:
    """Up to ``k`` random indices whose scores lie in [start, end] (CLAM's "range_sample")."""
    window = np.flatnonzero((scores >= start) & (scores <= end))
    if len(window) == 0:
        return window
    return np.random.RandomState(seed).choice(window, min(k, len(window)), replace=False)


def sample_patches(
    coords: ArrayInput, scores: ArrayInput, k: int, mode: str = "topk"
) -> tuple[np.ndarray, np.ndarray]:
    """(coords, percentiles) of ``k`` patches picked on percentile-ranked scores.

    mode "topk" (highest first) or "bottomk" (lowest first); ``k`` a whole number >= 0 (more than
    N gives all N). NaN scores raise `InputError` (they have no rank).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise InputError(f"the number of patches to sample must be a whole number >= 0, got {k!r}")
    coords, scores2d = _checked(coords, scores)
    percentiles = to_percentiles(scores2d.reshape(-1))
    if mode not in ("topk", "bottomk"):
        raise InputError(f"unknown sampling mode {mode!r}; use 'topk' or 'bottomk'")
    picked = top_k_indices(percentiles, k, lowest=mode == "bottomk")
    return coords[picked], percentiles[picked]


def save_patch_samples(
    slide: Slide,
    coords: np.ndarray,
    scores: np.ndarray,
    out_dir: str | Path,
    patch_size: int = 256,
    level: int = 0,
    top_k: int = 15,
    bottom_k: int = 15,
    metadata: Mapping[str, str] | None = None,
) -> list[Path]:
    """Save the top-k and bottom-k patches as PNG crops under ``out_dir``; return the paths.

    Files go to ``topk_high_attention/`` and ``bottomk_low_attention/``, named
    ``{rank}_{slide}_x_{x}_y_{y}_a_{percentile:.3f}.png`` with level-0 coordinates; each PNG carries
    ``metadata`` as text chunks.
    """
    level = slide.check_level(level)
    if top_k < 0 or bottom_k < 0:
        raise InputError(f"top_k and bottom_k must be >= 0, got {top_k} and {bottom_k}")
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
        raise InputError(f"patch_size must be a whole number of pixels >= 1, got {patch_size!r}")
    writable_folder(out_dir)
    name = slide_name(Path(slide.path))
    written: list[Path] = []
    groups = (("topk", top_k, "topk_high_attention"), ("bottomk", bottom_k, "bottomk_low_attention"))
    for mode, k, folder in groups:
        if k == 0:
            continue
        picked_coords, picked_scores = sample_patches(coords, scores, k, mode)
        target = Path(out_dir) / folder
        target.mkdir(parents=True, exist_ok=True)
        picked = zip(picked_coords.tolist(), picked_scores.tolist(), strict=True)
        for rank, ((x, y), score) in enumerate(picked):
            texts = {**dict(metadata or {}), "patch_level": str(level), "percentile": f"{score:.6f}"}
            crop = slide.read_region((x, y), level, (patch_size, patch_size))
            path = target / f"{rank}_{name}_x_{x}_y_{y}_a_{score:.3f}.png"
            written.append(save_png(path, crop, texts))
    return written
