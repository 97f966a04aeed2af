"""The score sets of a blockmap-style h5 file or a fine-map file, read and checked.

Why apart from `sources` (which finds the slides): what a scores file must hold (``coords`` of
shape (N, 2), a positive whole ``patch_size``, finite scores) is checked here once, for run folders
and ``--scores`` files alike, and a damaged file is an `InputError` naming it, never an exception
from deep inside the reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnmap.errors import InputError
from attnmap.render.scale import ScoreScale, choose_scale


@dataclass(frozen=True)
class FineMapInfo:
    """A fine-map file behind a score set: its encoder method and the shared scale of its maps."""

    path: Path
    method: str
    scale: ScoreScale
    count: int


@dataclass
class ScoreSet:
    """One method's per-patch scores on one slide, with the scale used to colour them.

    ``fine``: the set is a fine-map file's patch scores; its maps are drawn inside the patches.
    ``overlapping``: the patches overlap (a run's ``overlap_blockmap.h5``): drawn by the heatmap
    PNG's own window code, which averages overlapping patches per pixel (`attnmap.view.layers`).
    ``note``: said under the colour bar, after the scale's caption.
    """

    method: str
    coords: np.ndarray
    scores: np.ndarray
    patch_size: int
    scale: ScoreScale
    fine: FineMapInfo | None = None
    overlapping: bool = False
    note: str = ""

    @property
    def ranks(self) -> np.ndarray:
        """1 for the highest score, N for the lowest (ties by position)."""
        order = np.argsort(-self.scores, kind="stable")
        ranks = np.empty(len(order), dtype=np.int64)
        ranks[order] = np.arange(1, len(order) + 1)
        return ranks


ATTENTION_DATASET = "attention_scores"
METHOD_PREFIX = "scores_"


def score_set_name(dataset: str) -> str | None:
    """The score set a blockmap dataset holds: "attention" for ``attention_scores``, ``<method>`` for
    ``scores_<method>``, None for any other (``coords``). The one rule of the viewer, `wsi geojson`,
    `wsi evaluate` and `wsi heatmap --method`, so a set has the same name everywhere."""
    if dataset == ATTENTION_DATASET:
        return "attention"
    return (dataset[len(METHOD_PREFIX) :] or None) if dataset.startswith(METHOD_PREFIX) else None


def read_score_sets(path: Path, patch_size: int | None = None) -> dict[str, ScoreSet]:
    """Every score set in a blockmap-style h5 file (``attention_scores``, ``scores_<method>``)."""
    import h5py

    from attnmap.wsi.patch_geometry import scores_patch_size  # attnmap.wsi's package imports are heavy

    if not Path(path).is_file():
        raise InputError(f"scores file not found: {path}")
    if Path(path).stat().st_size == 0:
        raise InputError(f"cannot read scores file {path}: it is empty (a run writing it, or cut short?)")
    if not h5py.is_hdf5(path):  # say what the file is not, rather than h5py's "file signature not found"
        npy = Path(path).suffix == ".npy"
        hint = "; an `attnmap explain` .npy map is drawn by explain itself" if npy else ""
        raise InputError(f"{path} is not an HDF5 scores file (CLAM's _blockmap.h5 layout{hint})")
    try:
        with h5py.File(path, "r") as handle:
            if "coords" not in handle:
                raise InputError(f"{path} has no 'coords' dataset; expected CLAM's _blockmap.h5 layout")
            coords = _coords(path, handle["coords"])
            try:  # no slide here: a size at a level whose downsample is not recorded is not known
                recorded = scores_patch_size(dict(handle.attrs), dict(handle["coords"].attrs), path)
            except InputError:  # a malformed record: the size given replaces it, none given is refused
                if patch_size is None:
                    raise
                recorded = None
            if patch_size is not None and recorded is not None and int(patch_size) != recorded:
                raise InputError(f"patch size {patch_size} contradicts {Path(path).name}, whose patches "
                                 f"are {recorded} level-0 px: leave it out or give {recorded}")
            size = patch_size or recorded
            try:  # a heatmap's overlapping grid (`wsi run` records its overlap): drawn as the PNG draws it
                overlapping = float(handle.attrs.get("overlap", 0)) > 0
            except (TypeError, ValueError):
                overlapping = False
            raw: dict[str, np.ndarray] = {}
            names = set(handle)
            for name, dataset in handle.items():
                if not isinstance(dataset, h5py.Dataset) or len(dataset.shape) == 0:
                    continue
                method = score_set_name(name)
                if not method:
                    continue
                if dataset.shape[0] != len(coords) or int(np.prod(dataset.shape[1:])) != 1:
                    # not dropped: the method would be missing from the view without a word
                    raise InputError(
                        f"{path}: '{name}' has shape {dataset.shape} for {len(coords)} patches in 'coords'; "
                        "expected one score per patch, (N,) or (N, 1)"
                    )
                raw[method] = np.asarray(dataset, dtype=np.float64).reshape(-1)
    except OSError as exc:
        raise InputError(f"cannot read scores file {path}: {exc}") from None
    if len(coords) == 0:  # nothing to draw: an empty heatmap would look like scores of nothing but zero
        raise InputError(f"{path} holds no patch: 'coords' is empty")
    if not raw:
        # `wsi patch|features` write the layout's coords too: said, or the file reads as a damaged blockmap
        stage = "features" if "features" in names else "patch coordinates" if names == {"coords"} else ""
        made = f": it holds {stage} (`wsi patch|features`); `mil attention` or `wsi run` makes scores"
        made = made if stage else ""
        raise InputError(f"{path} holds no score dataset ('attention_scores' or 'scores_<method>'){made}")
    if size is None:
        size = _grid_step(coords)
        import warnings

        warnings.warn(  # an overlapping grid's step is smaller than its patches: say what was assumed
            f"{path} records no patch size: taken as its grid step, {size} level-0 px (store a patch_size "
            "attribute if the patches overlap)",
            stacklevel=2,
        )
    return {
        method: ScoreSet(method, coords, values, int(size), _scale(path, values, method), None, overlapping)
        for method, values in raw.items()
    }


def _coords(path: Path, dataset) -> np.ndarray:
    """A blockmap's ``coords`` as (N, 2) int64 level-0 corners; `InputError` for any other shape."""
    try:
        coords = np.asarray(dataset, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: 'coords' are not integers: {exc}") from None
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InputError(f"{path}: 'coords' has shape {coords.shape}; expected (N, 2) level-0 (x, y) corners")
    return coords


def _scale(path: Path, values: np.ndarray, method: str) -> ScoreScale:
    """`choose_scale`, its refusal naming the file and score set (NaN from a run cut short, say)."""
    try:
        return choose_scale(values, method)
    except InputError as exc:
        raise InputError(f"{path}: '{method}' scores: {exc}") from None


def fine_set_name(fine_method: str, mil_method: str) -> str:
    """The name of a fine-map file's score set (viewer method, `evaluate --run`'s lesions_<name>.json):
    its patch scores are the MIL method's and its maps the fine method's, so both are named unless they
    are the same method (without a comma: `evaluate --methods` splits on commas)."""
    if fine_method == mil_method:
        return f"fine maps ({fine_method})"
    return f"fine maps ({fine_method} of {mil_method} scores)"


def read_fine_score_set(path: Path) -> ScoreSet:
    """The score set of a fine-map file: the MIL method's patch scores, with the maps behind them."""
    from attnmap.wsi.heatmap.fine_render import FINE_CMAP
    from attnmap.wsi.heatmap.fine_store import FineMapFile

    with FineMapFile(path) as store:
        name = fine_set_name(store.method, store.mil_method)
        scale = ScoreScale("diverging", -store.scale, store.scale, FINE_CMAP)
        info = FineMapInfo(Path(path), store.method, scale, len(store))
        return ScoreSet(
            name,
            store.coords,
            store.scores,
            store.patch_size,
            _scale(Path(path), store.scores, store.mil_method),
            info,
        )


def _grid_step(coords: np.ndarray) -> int:
    """Patch size guessed as the grid's step: the commonest gap between neighbours in one column (or row).

    Why within a column: each tissue piece's grid starts at its own corner, so the smallest gap
    between distinct x over the whole slide was any number (7 px between pieces starting at x = 40
    and 47 for 48-px patches): the patches were drawn 7 px wide.
    """
    coords = np.asarray(coords, dtype=np.int64)
    for along, across in ((1, 0), (0, 1)):
        ordered = coords[np.lexsort((coords[:, along], coords[:, across]))]
        same_line = ordered[1:, across] == ordered[:-1, across]
        gaps = np.diff(ordered[:, along])[same_line]
        values, counts = np.unique(gaps[gaps > 0], return_counts=True)
        if len(values):
            return int(values[np.argmax(counts)])
    raise InputError("cannot tell the patch size from a single patch; store a 'patch_size' attribute")


def recorded_prediction(path: Path) -> dict:
    """The prediction a scores file records (``mil attention``'s export: ``prediction``, with
    ``prediction_name`` where the classes are named, and ``probabilities``), in a run's prediction
    JSON's keys; {} where it records none (or a fine-map file, which holds no prediction).

    Why: a slide viewed with ``--scores`` showed no prediction, though the file names it.
    """
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            attrs = handle.attrs
            if "prediction" not in attrs:
                return {}
            found: dict = {"prediction": int(attrs["prediction"])}
            if "prediction_name" in attrs:
                found["prediction_name"] = str(attrs["prediction_name"])
            stored = handle["probabilities"] if "probabilities" in handle else attrs.get("probabilities")
            if stored is not None:
                found["probabilities"] = [float(p) for p in np.asarray(stored, dtype=np.float64).reshape(-1)]
    except (OSError, TypeError, ValueError):  # (read as scores already) a record of another kind
        return {}
    return found
