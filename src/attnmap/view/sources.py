"""What `attnmap view` shows: slides with their score sets, found from a path the user gives.

Three kinds of path (see `discover`): a `wsi run` output folder (``heatmaps/<id>/<id>_blockmap.h5``
with the prediction JSON naming the slide), a folder holding several run folders (a cohort), or one
slide file with ``--scores`` files. Every score set of a blockmap is offered: ``attention_scores``
and any ``scores_<method>`` dataset of the same length; and the fine maps of a run
(``<id>_fine_maps.h5``, `attnmap.wsi.heatmap.fine_store`, also accepted as a ``--scores`` file), whose
patch scores are drawn at coarse zoom and whose maps inside the patches when zoomed in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
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


@dataclass
class ViewSlide:
    """A slide and everything drawn over it."""

    slide_id: str
    slide_path: Path
    score_sets: dict[str, ScoreSet]
    prediction: dict = field(default_factory=dict)
    tissue: list[np.ndarray] = field(default_factory=list)
    annotations: list[np.ndarray] = field(default_factory=list)
    sources: tuple[Path, ...] = ()
    """Files and folders the slide was read from (present or not): a change to any means a rerun."""
    run_dimensions: tuple[int, int] | None = None
    """The slide's level-0 size when the run read it, where the run recorded it."""


def source_state(paths) -> tuple:
    """(inode, mtime, ctime, size) of each path, None where it is missing: equal states, same content.

    Why the folders too: a rerun that adds a slide, or writes through a new file and renames it,
    changes the folder's mtime even where no file we read was touched. Why the ctime: a file
    rewritten in place to the same size with its mtime put back (a copy keeping times, ``touch -r``)
    still gets a new ctime, which no program can set.
    """
    states = []
    for path in paths:
        try:
            stat = Path(path).stat()
        except (OSError, ValueError):
            states.append(None)
        else:
            states.append((stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size))
    return tuple(states)


def slide_digest(slide: ViewSlide) -> str:
    """A digest of what the viewer shows of ``slide``, from the data read (scores, prediction,
    outlines) and the identity of the files read lazily (the slide, fine maps).

    Why the data and not the files' times: a rerun may write a file while it is read; the digest
    then names what was read, so an open page reloads exactly when its slide's picture changed.
    """
    import hashlib

    digest = hashlib.sha1()
    digest.update(repr((slide.slide_id, str(slide.slide_path), source_state([slide.slide_path]))).encode())
    digest.update(json.dumps(slide.prediction, sort_keys=True, default=str).encode())
    for name, score_set in slide.score_sets.items():
        fine = score_set.fine
        digest.update(
            repr((name, score_set.patch_size, fine and (str(fine.path), source_state([fine.path])))).encode()
        )
        digest.update(np.ascontiguousarray(score_set.coords).tobytes())
        digest.update(np.ascontiguousarray(score_set.scores).tobytes())
    for rings in (slide.tissue, slide.annotations):
        digest.update(b"|")
        for ring in rings:
            digest.update(np.ascontiguousarray(ring, dtype=np.float64).tobytes() + b";")
    return digest.hexdigest()[:16]


def read_score_sets(path: Path, patch_size: int | None = None) -> dict[str, ScoreSet]:
    """Every score set in a blockmap-style h5 file (``attention_scores``, ``scores_<method>``)."""
    import h5py

    if not Path(path).is_file():
        raise InputError(f"scores file not found: {path}")
    try:
        with h5py.File(path, "r") as handle:
            if "coords" not in handle:
                raise InputError(f"{path} has no 'coords' dataset; expected CLAM's _blockmap.h5 layout")
            coords = _coords(path, handle["coords"])
            stored = handle.attrs.get("patch_size", handle["coords"].attrs.get("patch_size"))
            size = patch_size or _stored_patch_size(path, stored)
            try:  # a heatmap's overlapping grid (`wsi run` records its overlap): drawn as the PNG draws it
                overlapping = float(handle.attrs.get("overlap", 0)) > 0
            except (TypeError, ValueError):
                overlapping = False
            raw: dict[str, np.ndarray] = {}
            for name, dataset in handle.items():
                if not isinstance(dataset, h5py.Dataset) or len(dataset.shape) == 0:
                    continue
                method = (
                    "attention"
                    if name == "attention_scores"
                    else (name[len("scores_") :] if name.startswith("scores_") else None)
                )
                if method and dataset.shape[0] == len(coords) and int(np.prod(dataset.shape[1:])) == 1:
                    raw[method] = np.asarray(dataset, dtype=np.float64).reshape(-1)
    except OSError as exc:
        raise InputError(f"cannot read scores file {path}: {exc}") from None
    if not raw:
        raise InputError(f"{path} holds no score dataset ('attention_scores' or 'scores_<method>')")
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


def _stored_patch_size(path: Path, stored) -> int | None:
    """The ``patch_size`` attribute as a positive whole number of level-0 px (None when absent).

    Why refuse the others: a size of 0 or below draws nothing (or everything) without a word, and
    a text value failed deep inside the reader.
    """
    if stored is None:
        return None
    try:
        value = float(np.asarray(stored, dtype=np.float64).item())
    except (TypeError, ValueError):
        value = float("nan")
    if not (np.isfinite(value) and value.is_integer() and value > 0):
        raise InputError(
            f"{path}: patch_size {np.asarray(stored).tolist()!r} is not a positive whole number of level-0 px"
        )
    return int(value)


def _scale(path: Path, values: np.ndarray, method: str) -> ScoreScale:
    """`choose_scale`, its refusal naming the file and score set (NaN from a run cut short, say)."""
    try:
        return choose_scale(values, method)
    except InputError as exc:
        raise InputError(f"{path}: '{method}' scores: {exc}") from None


def read_fine_score_set(path: Path) -> ScoreSet:
    """The score set of a fine-map file: the MIL method's patch scores, with the maps behind them."""
    from attnmap.wsi.heatmap.fine_render import FINE_CMAP
    from attnmap.wsi.heatmap.fine_store import FineMapFile

    with FineMapFile(path) as store:
        name = f"fine maps ({store.method})"
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


@dataclass(frozen=True)
class UnshownSlide:
    """A slide of a run folder the viewer cannot show, and why (one line, shown on start and in the page)."""

    slide_id: str
    reason: str
    unfinished: bool = False
    """True when the run has not written its blockmap or prediction yet (interrupted or running)."""
    sources: tuple[Path, ...] = ()
    """Files and folders whose change may make it showable (watched like `ViewSlide.sources`)."""


@dataclass
class Discovery:
    """What a path holds: the slides to show, and those of its run folders that cannot be shown."""

    slides: list[ViewSlide]
    unshown: list[UnshownSlide] = field(default_factory=list)


def _annotation_sources(folder: Path | None, slide_id: str) -> tuple[Path, ...]:
    if folder is None:
        return ()
    return (folder, *(folder / f"{slide_id}{suffix}" for suffix in (".geojson", ".json", ".xml")))


def _find_annotations(folder: Path | None, slide_id: str) -> list[np.ndarray]:
    if folder is None:
        return []
    from attnmap.wsi.annotations import annotation_file, load_annotations

    path = annotation_file(folder, slide_id)
    return [] if path is None else [ring for region in load_annotations(path) for ring in region.rings()]


def discover(
    path: str | Path,
    scores: list[str | Path] | None = None,
    annotations: str | Path | None = None,
    skipped: list[str] | None = None,
) -> list[ViewSlide]:
    """The slides to show for ``path`` (run folder, cohort folder, or slide file with ``scores``).

    ``annotations``: an annotation file (single slide) or a folder of ``<slide id>.geojson|.xml``.
    ``skipped``: receives the slide folders not shown because their blockmap or prediction file is
    missing (a run interrupted, or still running), so the caller can say so; `find_slides` also
    gives the slides not shown for other reasons.
    Raises `InputError` when ``path`` holds nothing to show.
    """
    found = find_slides(path, scores, annotations)
    if skipped is not None:
        skipped += [item.slide_id for item in found.unshown if item.unfinished]
    return found.slides


def find_slides(
    path: str | Path, scores: list[str | Path] | None = None, annotations: str | Path | None = None
) -> Discovery:
    """`discover`'s slides with those of the run folders that cannot be shown and why: unfinished,
    failed in the run (``run_report.json``), or whose files do not read (a slide moved away, a
    damaged blockmap, annotations that do not parse). `InputError` when no slide can be shown."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"nothing to view: {path} does not exist")
    annotations = Path(annotations) if annotations is not None else None
    if annotations is not None and not annotations.exists():
        raise InputError(f"--annotations {annotations} does not exist")
    if annotations is not None and annotations.is_file() and not path.is_file():
        raise InputError(
            f"--annotations {annotations} is a file; for a run folder give a folder of "
            "<slide id>.geojson|.xml files"
        )
    annotation_dir = annotations if annotations is not None and annotations.is_dir() else None
    if path.is_file():
        return Discovery([_single_slide(path, scores, annotations, annotation_dir)])
    if scores:
        raise InputError("--scores goes with a slide file, not with a folder")
    if not path.is_dir():
        raise InputError(f"nothing to view: {path} is neither a folder nor a slide file")
    unshown: list[UnshownSlide] = []
    is_run = (path / "heatmaps").is_dir() or (path / "run_report.json").is_file()
    from attnmap.view.run_folder import run_slides

    slides = run_slides(path, annotation_dir, unshown) if is_run else []
    if not slides and not unshown:
        for child in sorted(p for p in path.iterdir() if (p / "heatmaps").is_dir()):
            child_unshown: list[UnshownSlide] = []
            for slide in run_slides(child, annotation_dir, child_unshown):
                slide.slide_id = f"{child.name}-{slide.slide_id}" if _clash(slides, slide) else slide.slide_id
                slides.append(slide)
            unshown += [
                UnshownSlide(f"{child.name}/{item.slide_id}", item.reason, item.unfinished, item.sources)
                for item in child_unshown
            ]
    if slides:
        return Discovery(slides, unshown)
    refused = [item for item in unshown if not item.unfinished]
    if refused:
        more = f" ({len(unshown) - 1} more slide(s) not shown either)" if len(unshown) > 1 else ""
        raise InputError(f"nothing to view in {path}: slide {refused[0].slide_id}: {refused[0].reason}{more}")
    if unshown:
        raise InputError(
            f"nothing to view in {path} yet: no slide folder has both its blockmap and its prediction "
            f"file ({len(unshown)} without: an interrupted or running `wsi run`?)"
        )
    raise InputError(
        f"nothing to view in {path}: expected a `wsi run` output folder "
        "(heatmaps/<id>/<id>_blockmap.h5), "
        "a folder of such folders, or a slide file with --scores"
    )


def _single_slide(
    path: Path, scores: list[str | Path] | None, annotations: Path | None, annotation_dir: Path | None
) -> ViewSlide:
    if not scores:
        raise InputError(f"{path} is a slide file: give its scores with --scores FILE.h5")
    sets: dict[str, ScoreSet] = {}
    from attnmap.wsi.heatmap.fine_store import is_fine_map_file

    for score_file in scores:
        found = (
            {(fine := read_fine_score_set(Path(score_file))).method: fine}
            if is_fine_map_file(score_file)
            else read_score_sets(Path(score_file))
        )
        for method, score_set in found.items():
            name = method if method not in sets else f"{Path(score_file).stem}:{method}"
            sets[name] = score_set
    slide = ViewSlide(path.stem, path.resolve(), sets, sources=(path, *map(Path, scores)))
    if annotations is not None and annotations.is_file():
        from attnmap.wsi.annotations import load_annotations

        slide.annotations = [ring for region in load_annotations(annotations) for ring in region.rings()]
        slide.sources += (annotations,)
    else:
        slide.annotations = _find_annotations(annotation_dir, slide.slide_id)
        slide.sources += _annotation_sources(annotation_dir, slide.slide_id)
    _check_against_slide(slide)
    return slide


def _check_against_slide(slide: ViewSlide) -> None:
    """`InputError` unless the slide file opens and every patch of every score set starts inside it.

    Why before serving: a file that is no slide would only fail tile by tile in the browser, and a
    scores file of another slide (or at another level) would draw a heatmap in the wrong place or
    none at all, without a word.
    """
    from attnmap.wsi.slide import open_slide

    with open_slide(slide.slide_path) as handle:
        width, height = handle.dimensions
    if slide.run_dimensions is not None and tuple(slide.run_dimensions) != (width, height):
        ran = "x".join(map(str, slide.run_dimensions))
        raise InputError(
            f"slide {slide.slide_id}: {slide.slide_path} is {width}x{height} px at level 0 but the run "
            f"read a {ran} slide there; was the file replaced? Rerun `wsi run` for it"
        )
    outside_rings = sum(
        1
        for ring in slide.annotations
        if len(ring)
        and (
            ring[:, 0].max() < 0
            or ring[:, 1].max() < 0
            or ring[:, 0].min() >= width
            or ring[:, 1].min() >= height
        )
    )
    if outside_rings:
        raise InputError(
            f"slide {slide.slide_id}: {outside_rings} of {len(slide.annotations)} annotation rings lie "
            f"wholly outside the slide ({width}x{height} px at level 0); of another slide, or not in "
            "level-0 pixels?"
        )
    for name, score_set in slide.score_sets.items():
        x, y = score_set.coords[:, 0], score_set.coords[:, 1]
        outside = int(np.count_nonzero((x < 0) | (y < 0) | (x >= width) | (y >= height)))
        if outside:
            raise InputError(
                f"slide {slide.slide_id}: {outside} of {len(x)} '{name}' patches start outside the slide "
                f"({width}x{height} px at level 0); are the scores of another slide?"
            )


def _clash(slides: list[ViewSlide], slide: ViewSlide) -> bool:
    return any(other.slide_id == slide.slide_id for other in slides)
