"""Slide annotations in: QuPath GeoJSON and ASAP XML (as CAMELYON ships it), as level-0 polygons.

Why one `Region` type for both: an annotation is used three ways (drawn in the viewer, as the ROI
that patches must fall in, as ground truth for `attnmap.evaluate.lesions`), and none of them cares
which tool drew it. ASAP groups follow CAMELYON16: ``Tumor``, ``_0`` and ``_1`` are lesions, ``_2``
marks normal tissue cut out of a lesion (an exclusion); GeoJSON classes named like those groups (or
``Exclusion``/``Ignore``) behave the same.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from matplotlib.path import Path as MplPath

from attnmap.errors import InputError

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


def _ring(points, source: Path) -> np.ndarray:
    ring = np.asarray(points, dtype=np.float64)
    if ring.ndim != 2 or ring.shape[1] < 2 or len(ring) < 3:
        raise InputError(f"{source}: a polygon ring needs at least 3 [x, y] points, got shape {ring.shape}")
    return ring[:, :2]


def _label_of(properties: dict) -> str:
    classification = properties.get("classification")
    if isinstance(classification, dict):
        return str(classification.get("name", ""))
    if isinstance(classification, str):
        return classification
    return str(properties.get("name", "") or "")


def read_geojson(path: str | Path) -> list[Region]:
    """Polygons and multipolygons of a GeoJSON file as QuPath exports it (collection, list or feature)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read annotations {path}: {exc}") from None
    if isinstance(payload, dict) and payload.get("type") == "FeatureCollection":
        features = payload.get("features", [])
    elif isinstance(payload, dict) and payload.get("type") == "Feature":
        features = [payload]
    elif isinstance(payload, list):
        features = payload
    else:
        raise InputError(f"{path} is not GeoJSON features (a FeatureCollection, a Feature or a list of them)")
    regions: list[Region] = []
    for feature in features:
        geometry = (feature or {}).get("geometry") or {}
        label = _label_of(feature.get("properties") or {})
        kind = geometry.get("type")
        polygons = (
            [geometry.get("coordinates", [])]
            if kind == "Polygon"
            else (geometry.get("coordinates", []) if kind == "MultiPolygon" else [])
        )
        for rings in polygons:
            if rings:
                regions.append(Region(_ring(rings[0], path), [_ring(r, path) for r in rings[1:]], label))
    return regions


def read_asap_xml(path: str | Path) -> list[Region]:
    """Polygons of an ASAP annotation XML (``Annotation`` / ``Coordinates`` / ``Coordinate X Y Order``)."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise InputError(f"cannot read annotations {path}: {exc}") from None
    regions = []
    for annotation in root.iter("Annotation"):
        points = sorted(
            (int(float(c.get("Order", i))), float(c.get("X")), float(c.get("Y")))
            for i, c in enumerate(annotation.iter("Coordinate"))
        )
        if annotation.get("Type", "Polygon") in ("Polygon", "Spline", "Rectangle") and len(points) >= 3:
            label = annotation.get("PartOfGroup") or annotation.get("Name") or ""
            regions.append(Region(_ring([(x, y) for _, x, y in points], path), [], label))
    return regions


def load_annotations(path: str | Path) -> list[Region]:
    """Regions of a ``.geojson``/``.json`` (QuPath) or ``.xml`` (ASAP) file; `InputError` if neither."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"annotation file not found: {path}")
    if path.suffix.lower() == ".xml":
        return read_asap_xml(path)
    if path.suffix.lower() in (".geojson", ".json"):
        return read_geojson(path)
    raise InputError(f"{path}: annotations must be QuPath GeoJSON (.geojson, .json) or ASAP XML (.xml)")


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
    """``<folder>/<slide_id>.geojson`` (or ``.json``, ``.xml``) if one exists."""
    for suffix in (".geojson", ".json", ".xml"):
        candidate = Path(folder) / f"{slide_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def roi_filter(coords: np.ndarray, patch_size: float, folder: str | Path, slide_id: str) -> np.ndarray:
    """The patches of ``coords`` centred inside the slide's annotations in ``folder`` (a run's ROI).

    Raises `InputError` when the folder has no annotation file for the slide: a missing ROI must not
    silently widen the run to the whole slide.
    """
    path = annotation_file(folder, slide_id)
    if path is None:
        raise InputError(f"no annotations for slide {slide_id} in {folder} ({slide_id}.geojson or .xml)")
    return np.asarray(coords)[patches_in_regions(coords, patch_size, load_annotations(path))]
