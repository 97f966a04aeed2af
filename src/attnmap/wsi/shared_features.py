"""Features for a second patch grid that reuse the patches a first grid already encoded.

Why: a heatmap with overlap draws from a denser grid (step = patch × (1 − overlap)) than the one
the slide was classified on, and both grids start at the same corner of each tissue region, so
with overlap 0.5 every block-grid patch is also an overlap-grid patch. The same patch at the same
level-0 corner is the same pixels and so the same feature: encoding it again is pure waste (CLAM's
scripts encode both grids in full). Rows are matched by exact coordinates, so grids that do not
align simply share nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from attnmap.errors import InputError
from attnmap.wsi.encoders import Encoder
from attnmap.wsi.features import extract_features, features_complete, load_features


def matching_rows(coords: np.ndarray, known_coords: np.ndarray) -> np.ndarray:
    """For each row of ``coords``, the index of the same [x, y] in ``known_coords``, or -1."""
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    known_coords = np.asarray(known_coords, dtype=np.int64).reshape(-1, 2)
    where = {(int(x), int(y)): row for row, (x, y) in enumerate(known_coords)}
    return np.fromiter(
        (where.get((int(x), int(y)), -1) for x, y in coords), dtype=np.int64, count=len(coords)
    )


def stored_features(
    path_h5: str | Path, encoder_name: str | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """(coords, features) of a complete features file made by ``encoder_name`` (or unrecorded), else None."""
    import h5py

    path = Path(path_h5)
    if not features_complete(path):
        return None
    if encoder_name is not None:
        with h5py.File(path, "r") as handle:
            made_by = handle.attrs.get("model")
        if made_by is not None and str(made_by) != encoder_name:
            return None
    features, coords = load_features(path)
    return coords, features


def extract_features_reusing(
    slide: Any,
    coords: np.ndarray,
    encoder: Encoder,
    known: tuple[np.ndarray, np.ndarray] | None,
    **options: Any,
) -> tuple[np.ndarray, int]:
    """(features of the patches at ``coords``, how many were encoded): rows found in ``known`` =
    (coords, features) are copied, only the others go through `extract_features` (``options``)."""
    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InputError(f"coords must be N×2 [x, y], got shape {coords.shape}")
    if known is None or len(known[0]) == 0:
        return extract_features(slide, coords, encoder, **options), len(coords)
    known_coords, known_features = known
    if known_features.shape[1] != encoder.feature_dim:
        return extract_features(slide, coords, encoder, **options), len(coords)
    rows = matching_rows(coords, known_coords)
    missing = np.flatnonzero(rows < 0)
    output = np.empty((len(coords), encoder.feature_dim), dtype=np.float32)
    found = rows >= 0
    output[found] = known_features[rows[found]]
    if len(missing):
        output[missing] = extract_features(slide, coords[missing], encoder, **options)
    return output, int(len(missing))
