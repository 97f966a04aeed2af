"""What `attnmap view` shows: slides with their score sets, found from a path the user gives.

Three kinds of path (see `discover`): a `wsi run` output folder (``heatmaps/<id>/<id>_blockmap.h5``
with the prediction JSON naming the slide), a folder holding several run folders (a cohort), or one
slide file with ``--scores`` files. Every score set of a blockmap is offered: ``attention_scores``
and any ``scores_<method>`` dataset (one score per patch, or the file is refused); and the fine maps of a run
(``<id>_fine_maps.h5``, `attnmap.wsi.heatmap.fine_store`, also accepted as a ``--scores`` file), whose
patch scores are drawn at coarse zoom and whose maps inside the patches when zoomed in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attnmap.errors import InputError
from attnmap.view.score_files import (
    ScoreSet,
    read_fine_score_set,
    read_score_sets,
    recorded_prediction,
)
from attnmap.wsi.slide_files import dicom_instance, slide_name


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
    file_id: str = ""
    """The id the run's files carry (``heatmaps/<id>/``), by which its annotations are named;
    ``slide_id`` differs in a folder of runs where two hold the id (``<run>-<id>``). Unset: ``slide_id``."""

    def __post_init__(self) -> None:
        self.file_id = self.file_id or self.slide_id


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
    """A digest of what the viewer shows of ``slide``, from the data read (scores, their colour
    scales and notes, prediction, outlines) and the identity of the files read lazily (the slide,
    fine maps).

    Why the data and not the files' times: a rerun may write a file while it is read; the digest
    then names what was read, so an open page reloads exactly when its slide's picture changed.
    Why the scales: a rerun with another ``heatmap.cmap`` keeps every score, and an open page kept
    its colour bar in the old colour map over tiles drawn in the new one.
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
        scales = [score_set.scale.to_json(), fine and fine.scale.to_json(), score_set.note]
        digest.update(json.dumps(scales, sort_keys=True).encode())
        digest.update(np.ascontiguousarray(score_set.coords).tobytes())
        digest.update(np.ascontiguousarray(score_set.scores).tobytes())
    for rings in (slide.tissue, slide.annotations):
        digest.update(b"|")
        for ring in rings:
            digest.update(np.ascontiguousarray(ring, dtype=np.float64).tobytes() + b";")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class UnshownSlide:
    """A slide of a run folder the viewer cannot show, and why (one line, shown on start and in the page)."""

    slide_id: str
    reason: str
    unfinished: bool = False
    """True when the run has not written its blockmap or prediction yet (interrupted or running)."""
    sources: tuple[Path, ...] = ()
    """Files and folders whose change may make it showable (watched like `ViewSlide.sources`)."""
    layer: str = ""
    """The layer left out of a slide that is shown (tissue, fine maps, ...); empty: the whole slide."""


@dataclass
class Discovery:
    """What a path holds: the slides to show, and those of its run folders that cannot be shown."""

    slides: list[ViewSlide]
    unshown: list[UnshownSlide] = field(default_factory=list)


def _annotation_sources(folder: Path | None, slide_id: str) -> tuple[Path, ...]:
    """The files whose change redraws the slide: its annotation file as found (any case, QuPath's
    ``<id>.<ext>.geojson``) beside the exact names; a lookup that fails is reported when read."""
    if folder is None:
        return ()
    from attnmap.wsi.annotations import annotation_file

    try:
        found = annotation_file(folder, slide_id)
    except InputError:
        found = None
    exact = tuple(folder / f"{slide_id}{suffix}" for suffix in (".geojson", ".json", ".xml"))
    return (folder, *exact, *((found,) if found is not None and found not in exact else ()))


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
    path: str | Path,
    scores: list[str | Path] | None = None,
    annotations: str | Path | None = None,
    purpose: str = "view",
) -> Discovery:
    """`discover`'s slides with those of the run folders that cannot be shown and why: unfinished,
    failed in the run (``run_report.json``), or whose files do not read (a slide moved away, a
    damaged blockmap, annotations that do not parse). `InputError` when no slide can be shown, saying
    there is "nothing to <purpose>" (the viewer's "view", the evaluation's "evaluate")."""
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
    if path.is_file() or (path.is_dir() and dicom_instance(path) is not None):  # DICOM: a folder
        return Discovery([_single_slide(path, scores, annotations, annotation_dir)])
    if scores:
        raise InputError(f"--scores goes with a slide file or a DICOM slide's folder, not with {path}")
    if not path.is_dir():
        raise InputError(f"nothing to view: {path} is neither a folder nor a slide file")
    unshown: list[UnshownSlide] = []
    is_run = (path / "heatmaps").is_dir() or (path / "run_report.json").is_file()
    from attnmap.view.run_folder import run_slides

    slides = run_slides(path, annotation_dir, unshown) if is_run else []
    if not slides and not unshown:
        found: list[tuple[str, ViewSlide]] = []
        for child in sorted(p for p in path.iterdir() if _is_run(p)):
            child_unshown: list[UnshownSlide] = []
            found += [(child.name, slide) for slide in run_slides(child, annotation_dir, child_unshown)]
            unshown += [
                UnshownSlide(f"{child.name}/{item.slide_id}", item.reason, item.unfinished, item.sources,
                             item.layer)
                for item in child_unshown
            ]
        slides = _named_by_run(found)
    if slides:
        return Discovery(slides, unshown)
    refused = [item for item in unshown if not item.unfinished]
    if refused:
        more = f" ({len(unshown) - 1} more slide(s) not shown either)" if len(unshown) > 1 else ""
        raise InputError(
            f"nothing to {purpose} in {path}: slide {refused[0].slide_id}: {refused[0].reason}{more}"
        )
    if unshown:
        raise InputError(
            f"nothing to {purpose} in {path} yet: no slide folder has both its blockmap and its prediction "
            f"file ({len(unshown)} without: an interrupted or running `wsi run`?)"
        )
    if is_run:  # a run that has made its folders and written no slide yet: it is a run folder
        raise InputError(
            f"nothing to {purpose} in {path} yet: {path / 'heatmaps'} holds no slide folder "
            "(a `wsi run` just started?)"
        )
    from attnmap.view.empty_folders import refuse_empty_folder

    refuse_empty_folder(path, purpose)


def _is_run(path: Path) -> bool:
    """Whether a folder of runs' child is a run: its slide folders, or only a `wsi run`'s report (every
    slide failed; not `attnmap explain`'s report)."""
    from attnmap.view.run_folder import _read_report

    if (path / "heatmaps").is_dir():
        return True
    provenance = _read_report(path / "run_report.json").get("provenance")
    return isinstance(provenance, dict) and provenance.get("method") == "attnmap wsi run"


def _single_slide(
    path: Path, scores: list[str | Path] | None, annotations: Path | None, annotation_dir: Path | None
) -> ViewSlide:
    if not scores:
        if path.suffix.lower() in (".h5", ".hdf5"):  # a blockmap is no slide: say what to give instead
            import warnings

            with warnings.catch_warnings():  # (only whether it holds scores matters here)
                warnings.simplefilter("ignore")
                read_score_sets(path)  # patches or features: named as such, never offered as --scores
            where = (
                f"view its run: attnmap view {path.parent.parent.parent}, or "
                if path.parent.parent.name == "heatmaps"
                else ""
            )
            raise InputError(
                f"{path} is a scores file, not a slide: {where}give the slide with --scores {path}"
            )
        kind = "a slide (a DICOM folder)" if path.is_dir() else "a slide file"
        raise InputError(f"{path} is {kind}: give its scores with --scores FILE.h5")
    sets: dict[str, ScoreSet] = {}
    from attnmap.wsi.heatmap.fine_store import is_fine_map_file
    from attnmap.wsi.pipeline.stage_files import check_made_from, output_record

    for score_file in scores:
        check_made_from(score_file, output_record(Path(score_file)), path)  # another slide's, same size
        found = (
            {(fine := read_fine_score_set(Path(score_file))).method: fine}
            if is_fine_map_file(score_file)
            else read_score_sets(Path(score_file))
        )
        for method, score_set in found.items():
            name = method if method not in sets else f"{Path(score_file).stem}:{method}"
            sets[name] = score_set
    slide = ViewSlide(slide_name(path), path.resolve(), sets, sources=(path, *map(Path, scores)))
    predictions = [found for file in scores if (found := _file_prediction(Path(file)))]
    if len({found["prediction"] for found in predictions}) == 1:  # files that disagree (two models): none
        slide.prediction = max(predictions, key=len)  # the one that names the class, say
    if annotations is not None and annotations.is_file():
        from attnmap.wsi.annotations import load_annotations

        slide.annotations = [ring for region in load_annotations(annotations) for ring in region.rings()]
        slide.sources += (annotations,)
    else:
        slide.annotations = _find_annotations(annotation_dir, slide.slide_id)
        slide.sources += _annotation_sources(annotation_dir, slide.slide_id)
    _check_against_slide(slide)
    return slide


def _file_prediction(path: Path) -> dict:
    """`recorded_prediction` of a scores file, named by the prediction JSON beside it where it is a
    `wsi run` blockmap: the blockmap records only the class index, and the run's page names it."""
    found = recorded_prediction(path)
    suffix = "_blockmap.h5"
    beside = path.with_name(path.name[: -len(suffix)] + "_prediction.json")
    if found and path.name.endswith(suffix) and beside.is_file():
        try:
            record = json.loads(beside.read_text())
            if record["prediction"] == found["prediction"] and isinstance(record["prediction_name"], str):
                found["prediction_name"] = record["prediction_name"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):  # the index alone, then
            pass
    return found


def _check_against_slide(slide: ViewSlide) -> tuple[int, int]:
    """The slide's level-0 size; `InputError` unless the slide file opens and every patch of every
    score set starts inside it.

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
    check_rings_inside(slide.slide_id, slide.annotations, (width, height))
    for name, score_set in slide.score_sets.items():
        check_inside(slide.slide_id, name, score_set, (width, height))
    return width, height


def check_rings_inside(slide_id: str, rings: list[np.ndarray], size: tuple[int, int]) -> None:
    """`InputError` when an annotation ring lies wholly outside a slide of level-0 ``size``: the file
    is of another slide, or not in level-0 pixels (drawn nowhere; as ground truth, never found)."""
    width, height = size
    outside_rings = sum(
        1
        for ring in rings
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
            f"slide {slide_id}: {outside_rings} of {len(rings)} annotation rings lie "
            f"wholly outside the slide ({width}x{height} px at level 0); of another slide, or not in "
            "level-0 pixels?"
        )


def check_inside(slide_id: str, name: str, score_set: ScoreSet, size: tuple[int, int]) -> None:
    """`InputError` unless every patch of ``score_set`` starts inside a slide of level-0 ``size``."""
    width, height = size
    x, y = score_set.coords[:, 0], score_set.coords[:, 1]
    outside = int(np.count_nonzero((x < 0) | (y < 0) | (x >= width) | (y >= height)))
    if outside:
        raise InputError(
            f"slide {slide_id}: {outside} of {len(x)} '{name}' patches start outside the slide "
            f"({width}x{height} px at level 0); are the scores of another slide?"
        )


def _named_by_run(found: list[tuple[str, ViewSlide]]) -> list[ViewSlide]:
    """The slides of a folder of runs, each id that two runs hold named ``<run>-<id>`` in every run.

    Why every copy: naming only the later ones left the first with the plain id, as if it were the
    slide and the others its variants (and which was first hung on the runs' folder names' order).
    """
    from collections import Counter

    counts = Counter(slide.slide_id for _, slide in found)
    for run, slide in found:
        if counts[slide.slide_id] > 1:
            slide.slide_id = f"{run}-{slide.slide_id}"
    return [slide for _, slide in found]
