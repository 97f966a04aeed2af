"""Slide annotations in: QuPath GeoJSON, ASAP XML (as CAMELYON ships it) and Aperio ImageScope XML,
as level-0 polygons.

Why one `Region` type for both: an annotation is used three ways (drawn in the viewer, as the ROI
that patches must fall in, as ground truth for `attnmap.evaluate.lesions`), and none of them cares
which tool drew it. ASAP groups follow CAMELYON16: ``Tumor``, ``_0`` and ``_1`` are lesions, ``_2``
marks normal tissue cut out of a lesion (an exclusion); GeoJSON classes named like those groups (or
``Exclusion``/``Ignore``) behave the same.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from matplotlib.path import Path as MplPath

from attnmap.errors import InputError
from attnmap.wsi.slide import SLIDE_SUFFIXES
from attnmap.wsi.slide_files import file_slide_name

ANNOTATION_SUFFIXES = (".geojson", ".json", ".xml")
EXCLUSION_LABELS = frozenset({"_2", "exclusion", "ignore", "ignore*", "normal"})


@dataclass
class Region:
    """A polygon in level-0 pixels: outer ring, holes, and the class it was drawn as."""

    outer: np.ndarray
    holes: list[np.ndarray] = field(default_factory=list)
    label: str = ""

    @property
    def exclusion(self) -> bool:
        return self.label.strip().lower() in EXCLUSION_LABELS

    def rings(self) -> list[np.ndarray]:
        return [self.outer, *self.holes]

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Which (N, 2) level-0 points lie inside the outer ring and outside every hole."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        inside = MplPath(self.outer).contains_points(points)
        for hole in self.holes:
            inside &= ~MplPath(hole).contains_points(points)
        return inside


def polygon_ring(points, source: Path) -> np.ndarray | None:
    """An (N, 2) float ring of ``points`` ([x, y] or [x, y, z]); None when it encloses no area
    (fewer than 3 distinct points, or all on one line). `InputError` if they are not numbers."""
    try:
        ring = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        shown = str(points)[:50]
        raise InputError(f"{source}: polygon coordinates are not [x, y] numbers: {shown}") from None
    if ring.ndim != 2 or ring.shape[1] < 2:
        if ring.size == 0:
            return None
        raise InputError(f"{source}: a polygon ring must be a list of [x, y] points, got shape {ring.shape}")
    if not np.isfinite(ring[:, :2]).all():
        raise InputError(f"{source}: polygon coordinates must be finite numbers")
    ring = ring[:, :2]
    if len(np.unique(ring, axis=0)) < 3 or np.linalg.matrix_rank(ring - ring[0]) < 2:
        return None  # no area: a point, or points on one line
    return ring


class AnnotationFileWarning(UserWarning):
    """What reading an annotation file left out or guessed (shapes that are not areas, the encoding).

    Its own category so a caller that has already shown a file's warnings can leave them out when it
    reads the file again (`wsi run` checks every ROI file before it starts, then reads each per slide).
    """


def warn_skipped(source: Path, skipped: Counter) -> None:
    """One warning naming what a file held that is not an area (so nothing is dropped unsaid).

    A file whose polygons all have fewer than 3 points is refused by its reader instead: it is
    damaged, and reading it as no annotations would make its slide a negative one."""
    if skipped:
        listed = ", ".join(f"{n} {what}" for what, n in skipped.items())
        warnings.warn(
            f"{source}: skipped {listed} (only polygon areas are regions)",
            AnnotationFileWarning,
            stacklevel=3,
        )


def _read_text(path: Path) -> str:
    """UTF-8 (a byte-order mark allowed); Latin-1, with a warning, for files a Windows tool wrote."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read annotations {path}: {exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        warnings.warn(
            f"{path}: not UTF-8 (byte {data[exc.start]:#04x} at {exc.start}); read as Latin-1",
            AnnotationFileWarning,
            stacklevel=3,
        )
        return data.decode("latin-1")


def _label_of(properties: dict) -> str:
    classification = properties.get("classification")
    if isinstance(classification, dict):
        return str(classification.get("name", "") or "")
    if isinstance(classification, str):
        return classification
    return str(properties.get("name", "") or "")


QUPATH_02_KINDS = {"PathDetectionObject": "detection", "PathCellObject": "cell", "PathTileObject": "tile"}
GEOMETRY_TYPES = (
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
)


def _polygons(geometry: dict, skipped: Counter) -> list[list]:
    """The polygons (lists of rings) of a GeoJSON geometry; what is not an area is counted."""
    kind = geometry.get("type")
    if kind == "Polygon":
        return [geometry.get("coordinates") or []]
    if kind == "MultiPolygon":
        return list(geometry.get("coordinates") or [])
    if kind == "GeometryCollection":
        parts = [g for g in geometry.get("geometries") or [] if isinstance(g, dict)]
        return [polygon for part in parts for polygon in _polygons(part, skipped)]
    skipped[str(kind)] += 1
    return []


def read_geojson(path: str | Path) -> list[Region]:
    """Polygons and multipolygons of a GeoJSON file as QuPath exports it (a FeatureCollection, a list
    of Features, one Feature, or a bare geometry).

    QuPath ``detection``/``cell``/``tile`` objects, points and lines, features without geometry and
    rings of fewer than 3 points are skipped with one warning naming them: only annotated areas are
    regions (an export with detections would otherwise count every cell as a lesion).
    """
    path = Path(path)
    try:
        payload = json.loads(_read_text(path))
    except ValueError as exc:
        raise InputError(f"cannot read annotations {path}: {exc}") from None
    if isinstance(payload, dict) and payload.get("type") == "FeatureCollection":
        features = payload.get("features") or []
    elif isinstance(payload, dict) and payload.get("type") == "Feature":
        features = [payload]
    elif isinstance(payload, dict) and payload.get("type") in GEOMETRY_TYPES:
        features = [{"type": "Feature", "geometry": payload, "properties": {}}]
    elif isinstance(payload, list):
        features = payload
    else:
        raise InputError(
            f"{path} is not GeoJSON (a FeatureCollection, a Feature, a list of them or a geometry)"
        )
    regions: list[Region] = []
    skipped: Counter = Counter()
    for index, feature in enumerate(features):
        if not isinstance(feature, dict) or not isinstance(feature.get("properties") or {}, dict):
            raise InputError(f"{path}: feature {index} is not a GeoJSON Feature (an object with properties)")
        properties = feature.get("properties") or {}
        # QuPath 0.3+ says objectType; 0.2 put the Java class in the feature's id
        kind = properties.get("objectType", QUPATH_02_KINDS.get(str(feature.get("id")), "annotation"))
        if kind not in ("annotation", None):
            skipped[f"{kind} object(s)"] += 1
            continue
        geometry = feature.get("geometry") if feature.get("type", "Feature") == "Feature" else feature
        if not isinstance(geometry, dict):
            skipped["feature(s) without geometry"] += 1
            continue
        label = _label_of(properties)
        for rings in _polygons(geometry, skipped):
            if not isinstance(rings, list):
                shown = str(rings)[:40]
                raise InputError(f"{path}: feature {index}'s polygon is not a list of rings: {shown}")
            outer = polygon_ring(rings[0], path) if rings else None
            if outer is None:
                skipped["ring(s) of fewer than 3 points"] += 1
                continue
            holes = [polygon_ring(r, path) for r in rings[1:]]
            skipped["hole(s) of fewer than 3 points"] += sum(h is None for h in holes)
            regions.append(Region(outer, [h for h in holes if h is not None], label))
    if not regions and skipped["ring(s) of fewer than 3 points"]:  # broken, not a negative slide
        raise InputError(
            f"{path} is not GeoJSON areas: every polygon ring has fewer than 3 distinct points "
            "(a GeoJSON ring lists at least 4 positions)"
        )
    warn_skipped(path, +skipped)
    return regions


def read_asap_xml(path: str | Path) -> list[Region]:
    """Polygons of an ASAP (or Aperio ImageScope) annotation XML; see `attnmap.wsi.annotation_xml`."""
    from attnmap.wsi.annotation_xml import read_xml_annotations

    return read_xml_annotations(path)


def load_annotations(path: str | Path) -> list[Region]:
    """Regions of a ``.geojson``/``.json`` (QuPath) or ``.xml`` (ASAP, Aperio ImageScope) file."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"annotation path is a folder, not a file: {path}")
    if not path.is_file():
        raise InputError(f"annotation file not found: {path}")
    if path.suffix.lower() == ".xml":
        return read_asap_xml(path)
    if path.suffix.lower() in ANNOTATION_SUFFIXES:
        return read_geojson(path)
    raise InputError(
        f"{path}: annotations must be QuPath GeoJSON (.geojson, .json) or ASAP / Aperio ImageScope XML (.xml)"
    )


def inside_regions(points: np.ndarray, regions: list[Region]) -> np.ndarray:
    """Points inside some non-exclusion region and inside no exclusion region."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    positive = np.zeros(len(points), dtype=bool)
    excluded = np.zeros(len(points), dtype=bool)
    for region in regions:
        if region.exclusion:
            excluded |= region.contains(points)
        else:
            positive |= region.contains(points)
    return positive & ~excluded


def patches_in_regions(coords: np.ndarray, patch_size: float, regions: list[Region]) -> np.ndarray:
    """Which patches (level-0 top-left ``coords``) have their centre inside the regions: a run's ROI."""
    return inside_regions(np.asarray(coords, dtype=np.float64) + patch_size / 2.0, regions)


def regions_mask(regions: list[Region], dimensions: tuple[int, int], downsample: float) -> np.ndarray:
    """Boolean mask of the regions (exclusions and holes cut out) at ``downsample`` of level 0."""
    width, height = (max(1, int(np.ceil(d / downsample))) for d in dimensions)
    mask = np.zeros((height, width), dtype=np.uint8)

    def fill(rings: list[np.ndarray], value: int) -> None:
        scaled = [np.rint(np.asarray(r) / downsample).astype(np.int32) for r in rings]
        cv2.fillPoly(mask, scaled, value)

    for region in regions:
        if not region.exclusion:
            fill([region.outer], 1)
            fill(region.holes, 0)
    for region in regions:
        if region.exclusion:
            fill([region.outer], 0)
    return mask.astype(bool)


def annotation_file(folder: str | Path, slide_id: str) -> Path | None:
    """The slide's annotation file in ``folder``: ``<slide_id>.geojson`` (or ``.json``, ``.xml``).

    Names that differ only by case, or that keep the slide's extension as QuPath's export does
    (``<slide_id>.svs.geojson``), are found when no exact name is. `InputError` when two files
    would do (which one the pathologist meant is not ours to guess) or the name is a folder.
    """
    folder = Path(folder)
    try:
        names = [entry.name for entry in folder.iterdir()]
    except OSError:
        return None
    wanted = slide_id.lower()
    tiers: list[list[str]] = [[], [], []]
    for name in names:
        stem, suffix = name[: -len(Path(name).suffix) or None], Path(name).suffix.lower()
        if suffix not in ANNOTATION_SUFFIXES:
            continue
        slide_suffix = Path(stem).suffix.lower()
        if stem == slide_id and suffix in (".geojson", ".json", ".xml") and name == stem + suffix:
            tiers[0].append(name)
        elif stem.lower() == wanted:
            tiers[1].append(name)
        elif slide_suffix in SLIDE_SUFFIXES and file_slide_name(stem).lower() == wanted:  # x.ome.tif: x
            tiers[2].append(name)
    for found in tiers:
        if len(found) > 1:
            listed = ", ".join(sorted(found))
            raise InputError(
                f"{folder}: {len(found)} annotation files for slide {slide_id}: {listed}; keep one"
            )
        if found:
            path = folder / found[0]
            if path.is_dir():
                raise InputError(f"annotation path for slide {slide_id} is a folder, not a file: {path}")
            return path
    return None


def unmatched_annotation_files(folder: str | Path, slide_ids: list[str]) -> list[str]:
    """Names of the annotation files in ``folder`` that no slide of ``slide_ids`` reads (by
    `annotation_file`'s rule; a cohort's unshown slides are named ``<run>/<id>``).

    Why: a misspelt file name (``slide-b.xml`` for ``slide_b``) is otherwise ignored without a word,
    its slide evaluated as negative or drawn without its outlines.
    """
    folder = Path(folder)
    used = set()
    for slide_id in (name.rsplit("/", 1)[-1] for name in slide_ids):
        try:
            found = annotation_file(folder, slide_id)
        except InputError:  # two files for one slide: neither is unmatched
            found = None
            used.update(p.name for p in folder.iterdir() if p.name.lower().startswith(slide_id.lower()))
        if found is not None:
            used.add(found.name)
    return sorted(
        entry.name
        for entry in folder.iterdir()
        if entry.is_file() and entry.suffix.lower() in ANNOTATION_SUFFIXES and entry.name not in used
    )


def roi_filter(coords: np.ndarray, patch_size: float, folder: str | Path, slide_id: str) -> np.ndarray:
    """The patches of ``coords`` centred inside the slide's annotations in ``folder`` (a run's ROI).

    Raises `InputError` when the folder has no annotation file for the slide: a missing ROI must not
    silently widen the run to the whole slide.
    """
    path = annotation_file(folder, slide_id)
    if path is None:
        raise InputError(f"no annotations for slide {slide_id} in {folder} ({slide_id}.geojson or .xml)")
    return np.asarray(coords)[patches_in_regions(coords, patch_size, load_annotations(path))]
