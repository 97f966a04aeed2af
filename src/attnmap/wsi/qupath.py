"""Per-patch scores as QuPath detections: GeoJSON polygons in level-0 pixels with ``measurements``.

Why GeoJSON detections: QuPath imports them by drag-and-drop, colours them by any measurement and
lists them in its measurement table, so a pathologist can inspect attention next to their own
annotations. Each patch is one square ``Polygon`` feature (``objectType: detection``) carrying every
score set of the file (``<method>`` and ``<method> rank``), classified as the slide's predicted
class; tissue contours are optional ``annotation`` features classified ``Tissue``.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import geojson
import numpy as np

from attnmap.io_utils import atomic_path, check_no_file_above

PATCH_NAMESPACE = uuid.UUID("6f1c7c1e-9a57-4c8e-8a7d-2c2a3c5b0a11")


def _square(x: int, y: int, size: int) -> geojson.Polygon:
    return geojson.Polygon([[(x, y), (x + size, y), (x + size, y + size), (x, y + size), (x, y)]])


def patch_features(
    coords: np.ndarray,
    patch_size: int,
    scores: dict[str, np.ndarray],
    class_name: str | None = None,
    progress: bool = False,
) -> list[geojson.Feature]:
    """One detection feature per patch with a measurement per score set (and its rank, 1 = highest);
    ``progress``: a bar over the patches (where the time of a large slide's export goes)."""
    from tqdm.auto import tqdm

    coords = np.asarray(coords, dtype=np.int64)
    ranks = {}
    for method, values in scores.items():
        order = np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")
        ranks[method] = np.empty(len(order), dtype=np.int64)
        ranks[method][order] = np.arange(1, len(order) + 1)
    features = []
    rows = tqdm(coords.tolist(), desc="GeoJSON", unit="patches", disable=not progress, leave=False)
    for index, (x, y) in enumerate(rows):
        measurements = {}
        for method, values in scores.items():
            measurements[method] = float(values[index])
            measurements[f"{method} rank"] = int(ranks[method][index])
        properties = {"objectType": "detection", "measurements": measurements, "isLocked": True}
        if class_name:
            properties["classification"] = {"name": class_name}
        identifier = str(uuid.uuid5(PATCH_NAMESPACE, f"{x},{y},{patch_size}"))
        features.append(
            geojson.Feature(id=identifier, geometry=_square(x, y, patch_size), properties=properties)
        )
    return features


def _oriented(ring: np.ndarray, exterior: bool) -> np.ndarray:
    """``ring`` (open, (N, 2)) in RFC 7946's direction: an exterior counterclockwise (positive signed
    area in the coordinates' own axes), a hole clockwise; its first point kept.

    Why: OpenCV's contours come clockwise, so the tissue rings ran against the patch squares of the
    same file and against the right-hand rule the RFC requires of a writer.
    """
    if len(ring) < 3:
        return ring
    following = np.roll(ring, -1, axis=0)
    area = float(np.sum(ring[:, 0] * following[:, 1] - following[:, 0] * ring[:, 1]))
    if area == 0 or (area > 0) == exterior:
        return ring
    return np.concatenate([ring[:1], ring[:0:-1]])


def tissue_features(polygons: list[tuple[np.ndarray, list[np.ndarray]]]) -> list[geojson.Feature]:
    """Tissue contours ((outer ring, holes) in level 0) as locked QuPath annotations classed ``Tissue``.

    Each carries an ``id`` like every object QuPath 0.4 exports, derived from its rings, so a
    re-export names the same contour the same way and no two differ only by a missing id. A contour
    whose outer ring has fewer than 3 points is no area and is left out whole: keeping its holes
    would make the first hole the exterior.
    """
    features = []
    for outer, holes in polygons:
        outer = np.asarray(outer, dtype=np.float64).reshape(-1, 2)
        if len(outer) < 3:
            continue
        rings = [_oriented(outer, exterior=True)]
        rings += [_oriented(np.asarray(r, dtype=np.float64).reshape(-1, 2), exterior=False) for r in holes]
        closed = [[*map(tuple, r.tolist()), tuple(r[0].tolist())] for r in rings if len(r) >= 3]
        identifier = str(uuid.uuid5(PATCH_NAMESPACE, "tissue:" + repr(closed)))
        features.append(
            geojson.Feature(
                id=identifier,
                geometry=geojson.Polygon(closed),
                properties={
                    "objectType": "annotation",
                    "classification": {"name": "Tissue"},
                    "isLocked": True,
                },
            )
        )
    return features


def write_scores_geojson(
    path: str | Path,
    coords: np.ndarray,
    patch_size: int,
    scores: dict[str, np.ndarray],
    class_name: str | None = None,
    tissue: list[tuple[np.ndarray, list[np.ndarray]]] | None = None,
    progress: bool = False,
) -> Path:
    """Write a FeatureCollection of patch detections (+ tissue annotations) atomically; returns the
    path. ``progress``: a bar over the patches."""
    with atomic_path(path) as temporary:  # first: a folder at ``path`` is refused before the work
        collection = geojson.FeatureCollection(
            patch_features(coords, patch_size, scores, class_name, progress) + tissue_features(tissue or [])
        )
        Path(temporary).write_text(geojson.dumps(collection))
    return Path(path)


def _slide_id(scores_file: Path) -> str:
    """The slide a scores file belongs to: in a run's ``heatmaps/<id>/`` folder, ``<id>`` for its
    ``<id>_blockmap.h5`` and its overlapping grid's ``<id>_overlap_blockmap.h5`` alike.

    Why the folder's name first: stripping ``_blockmap.h5`` made the overlapping grid's slide
    ``<id>_overlap``, whose prediction (the class) and tissue file do not exist; and stripping
    ``_overlap`` too would misname a slide whose own id ends in it.
    """
    folder = scores_file.parent.name
    if scores_file.name in (f"{folder}_blockmap.h5", f"{folder}_overlap_blockmap.h5"):
        return folder
    return scores_file.name.removesuffix("_blockmap.h5")


def _run_tissue_file(scores_file: Path, slide_id: str) -> Path:
    """``tissue/<id>.json`` of the `wsi run` folder holding ``scores_file`` (``heatmaps/<id>/``).

    Why the layout is checked: three folders up from a scores file kept elsewhere is some unrelated
    folder (the root for ``/tmp/x_blockmap.h5``), and "not found: /tissue/x.json" told the user
    nothing about what was looked for or how to give the contours.
    """
    from attnmap.errors import InputError

    folder = scores_file.absolute().parent  # absolute: "x_blockmap.h5" has "." for every parent
    if folder.name != slide_id or folder.parent.name != "heatmaps":
        raise InputError(
            f"--tissue takes tissue/{slide_id}.json of the `wsi run` folder a scores file sits in "
            f"(heatmaps/{slide_id}/), and {scores_file} is not in one: name the contours file, --tissue-file"
        )
    return folder.parent.parent / "tissue" / f"{slide_id}.json"


def _not_over(out: Path, source: Path) -> None:
    """`InputError` when ``out`` is ``source`` (by any path): the GeoJSON would replace what it is
    made from (``-o`` naming the blockmap by a slip of tab completion lost the run's scores)."""
    from attnmap.errors import InputError

    if Path(out).exists() and Path(source).exists() and Path(out).samefile(source):
        raise InputError(f"-o {out} would overwrite {source}, which the GeoJSON is made from")


def _ring(points: object) -> np.ndarray:
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def _predicted_class(prediction: Path) -> str | None:
    """The class name a run's prediction JSON records, as text (QuPath reads class names as text);
    `InputError` when the file does not parse or is no object (it was an internal error)."""
    import json

    from attnmap.errors import InputError

    try:
        record = json.loads(prediction.read_text())
        if not isinstance(record, dict):
            raise ValueError(f"a JSON {type(record).__name__}, not an object")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{prediction} is not a prediction file of `wsi run`: {exc}") from None
    name = record.get("prediction_name")
    return None if name is None else str(name)


def export_blockmap_geojson(
    scores_file: str | Path,
    out: str | Path,
    tissue: bool | str | Path = False,
    class_name: str | None = None,
    progress: bool = False,
) -> Path:
    """GeoJSON of a ``_blockmap.h5`` (every score set); the class and tissue come from its run folder.

    ``tissue``: True takes ``tissue/<id>.json`` of the `wsi run` layout the file sits in, a path takes
    that tissue file, False writes patches only. ``class_name`` (default: the prediction JSON's) classes
    every patch. ``progress``: a bar over the patches.
    """
    import json

    from attnmap.errors import InputError
    from attnmap.view.score_files import read_score_sets

    scores_file = Path(scores_file)
    # a file where its folder should be: one line, not FileExistsError (a folder: atomic_path says so)
    check_no_file_above(Path(out), Path(out).parents)
    _not_over(out, scores_file)
    sets = read_score_sets(scores_file)
    first = next(iter(sets.values()))
    slide_id = _slide_id(scores_file)
    prediction = scores_file.with_name(f"{slide_id}_prediction.json")
    if class_name is None and prediction.is_file():
        class_name = _predicted_class(prediction)
    polygons = None
    if tissue:
        given = not isinstance(tissue, bool)
        tissue_file = Path(tissue) if given else _run_tissue_file(scores_file, slide_id)
        if not tissue_file.is_file():
            hint = "" if given else (
                f" (looked for ../../tissue/{slide_id}.json from {scores_file}, the `wsi run` layout; "
                "otherwise name the contours file, --tissue-file)"
            )
            raise InputError(f"tissue contours not found: {tissue_file}{hint}")
        _not_over(out, tissue_file)
        from attnmap.wsi.pipeline.stage_files import check_same_slide, output_record

        made = output_record(scores_file)  # contours of another slide beside these patches: refused
        check_same_slide(tissue_file, output_record(tissue_file), made.get("slide_sha256"), made.get("slide"))
        try:  # rings as numbers here: text in a ring failed later, as an internal error
            contours = json.loads(tissue_file.read_text())["contours"]
            if not isinstance(contours, list):
                raise TypeError(f"'contours' is a {type(contours).__name__}, not a list")
            polygons = [(_ring(c["outer"]), [_ring(h) for h in c["holes"]]) for c in contours]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{tissue_file} is not a tissue file written by attnmap: {exc}") from None
    scores = {method: s.scores for method, s in sets.items()}
    return write_scores_geojson(out, first.coords, first.patch_size, scores, class_name, polygons, progress)
