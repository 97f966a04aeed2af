"""Slide annotations in XML: ASAP (as CAMELYON ships it) and Aperio ImageScope, as level-0 `Region`s.

Why a reader per tool behind one door: both are called ``.xml`` and pathologists rename neither, so
the root element says which tool wrote the file; anything else is refused rather than read as no
annotations (a negative slide). What is not an area (ASAP dots and point sets, ImageScope rulers,
arrows and pins, rings of fewer than 3 points) is skipped and named in one warning per file.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import numpy as np
from matplotlib.path import Path as MplPath

from attnmap.errors import InputError
from attnmap.wsi.annotations import Region, polygon_ring, warn_skipped

ASAP_AREAS = ("Polygon", "Spline", "Rectangle")
APERIO_TYPES = {"0": "polygon", "1": "rectangle", "2": "ellipse", "3": "arrow", "4": "ruler", "5": "pin"}


def _number(text: str | None, path: Path, what: str) -> float:
    """A coordinate as written: a comma decimal separator (some locales' ASAP) is read as a point."""
    try:
        return float(str(text).strip().replace(",", "."))
    except ValueError:
        raise InputError(f"{path}: {what} is not a number: {text!r}") from None


def read_xml_annotations(path: str | Path) -> list[Region]:
    """Regions of an ASAP or Aperio ImageScope XML file; `InputError` for XML of another tool."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as exc:
        raise InputError(f"cannot read annotations {path}: {exc}") from None
    if root.find(".//Coordinate") is not None or root.tag == "ASAP_Annotations":
        return _asap(root, path)
    imagescope = root.find(".//Vertex") is not None or root.find("Annotation") is not None
    if root.tag == "Annotations" and imagescope:
        return _aperio(root, path)
    if root.tag == "Annotations" and len(root) == 0:
        return []
    raise InputError(
        f"{path}: root <{root.tag}> is neither ASAP XML (<ASAP_Annotations>) nor Aperio ImageScope XML "
        "(<Annotations> of <Region>s)"
    )


def _asap(root: ET.Element, path: Path) -> list[Region]:
    regions, skipped = [], Counter()
    for annotation in root.iter("Annotation"):
        name = annotation.get("Name") or "?"
        kind = annotation.get("Type", "Polygon")
        points = sorted(
            (
                _number(c.get("Order", i), path, f"annotation {name!r} Order"),
                _number(c.get("X"), path, f"annotation {name!r} X"),
                _number(c.get("Y"), path, f"annotation {name!r} Y"),
            )
            for i, c in enumerate(annotation.iter("Coordinate"))
        )
        ring = polygon_ring([(x, y) for _, x, y in points], path) if kind in ASAP_AREAS else None
        if kind not in ASAP_AREAS:
            skipped[kind] += 1
        elif ring is None:
            skipped["ring of fewer than 3 points"] += 1
        else:
            regions.append(Region(ring, [], annotation.get("PartOfGroup") or annotation.get("Name") or ""))
    if not regions and skipped["ring of fewer than 3 points"]:
        raise InputError(f"{path}: every ASAP polygon has fewer than 3 distinct points")
    warn_skipped(path, skipped)
    return regions


def _aperio_ring(kind: str, vertices: list[tuple[float, float]], path: Path) -> np.ndarray | None:
    if kind in ("1", "2") and len(vertices) >= 2:  # rectangle / ellipse: the box its vertices span
        (x0, y0), (x1, y1) = np.min(vertices, axis=0), np.max(vertices, axis=0)
        if kind == "1" and len(vertices) == 2:
            vertices = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        elif kind == "2":
            t = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
            cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
            vertices = list(zip(cx + rx * np.cos(t), cy + ry * np.sin(t), strict=True))
    return polygon_ring(vertices, path)


def _aperio(root: ET.Element, path: Path) -> list[Region]:
    """ImageScope layers (``Annotation``) of ``Region``s; a ``NegativeROA="1"`` region is a hole of
    the layer's region around it."""
    regions: list[Region] = []
    skipped: Counter = Counter()
    for layer in root.iter("Annotation"):
        label = layer.get("Name") or ""
        if not label:
            attribute = layer.find("./Attributes/Attribute")
            label = attribute.get("Name", "") if attribute is not None else ""
        positive, negative = [], []
        for region in layer.iter("Region"):
            kind = region.get("Type", "0")
            vertices = [
                (_number(v.get("X"), path, "Vertex X"), _number(v.get("Y"), path, "Vertex Y"))
                for v in region.iter("Vertex")
            ]
            if APERIO_TYPES.get(kind, "other") not in ("polygon", "rectangle", "ellipse"):
                skipped[APERIO_TYPES.get(kind, f"region type {kind}")] += 1
                continue
            ring = _aperio_ring(kind, vertices, path)
            if ring is None:
                skipped["ring of fewer than 3 points"] += 1
            elif region.get("NegativeROA", "0") == "1":
                negative.append(ring)
            else:
                positive.append(Region(ring, [], label or region.get("Text", "")))
        for hole in negative:
            around = [r for r in positive if MplPath(r.outer).contains_point(tuple(hole.mean(axis=0)))]
            for region in around:
                region.holes.append(hole)
            if not around:
                skipped["negative region inside no region"] += 1
        regions += positive
    warn_skipped(path, skipped)
    return regions
