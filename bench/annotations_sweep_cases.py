"""The annotation files of `bench/annotations_sweep.py`, as QuPath, ASAP and Aperio ImageScope write
them (and as they arrive damaged), each with the regions a reader must find in it.

A case's truth is a list of `Truth` polygons in level-0 pixels (outer ring, holes, label); a
reader's inside-test is compared with an even-odd ray casting written here, independent of the
readers (matplotlib / OpenCV). ``skipped`` says the file holds things that are not regions
(points, lines, detections, degenerate rings) which a reader should drop with a warning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

SIZE = (1024, 768)  # the slide's level-0 width, height


@dataclass
class Truth:
    outer: list
    holes: list = field(default_factory=list)
    label: str = "Tumor"
    exclusion: bool = False


@dataclass
class Case:
    name: str
    files: dict[str, bytes]  # relative path → bytes ("dir/" suffix: a folder)
    slide_id: str = "s1"
    truth: list[Truth] = field(default_factory=list)
    expect: str = "ok"  # or "error"
    skipped: bool = False  # the file holds non-regions that must be named in a warning
    note: str = ""


def even_odd(points: np.ndarray, ring) -> np.ndarray:
    """Ray casting: which points are inside ``ring`` (even-odd rule)."""
    ring = np.asarray(ring, dtype=np.float64)
    x1, y1 = ring[:, 0][None], ring[:, 1][None]
    x2, y2 = np.roll(ring[:, 0], -1)[None], np.roll(ring[:, 1], -1)[None]
    out = np.zeros(len(points), bool)
    step = max(1, 4_000_000 // len(ring))
    for start in range(0, len(points), step):  # chunks keep a (points, edges) table small
        x, y = points[start : start + step, 0][:, None], points[start : start + step, 1][:, None]
        crosses = (y1 > y) != (y2 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
        out[start : start + step] = (np.count_nonzero(crosses & (x < at), axis=1) % 2) == 1
    return out


def truth_inside(points: np.ndarray, truth: list[Truth]) -> np.ndarray:
    positive = np.zeros(len(points), bool)
    excluded = np.zeros(len(points), bool)
    for t in truth:
        inside = even_odd(points, t.outer)
        for hole in t.holes:
            inside &= ~even_odd(points, hole)
        if t.exclusion:
            excluded |= inside
        else:
            positive |= inside
    return positive & ~excluded


def rect(x0, y0, x1, y1) -> list:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def closed(ring: list) -> list:
    return [*ring, ring[0]]


def ellipse(cx, cy, rx, ry, n=64) -> list:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([cx + rx * np.cos(t), cy + ry * np.sin(t)]).round(3).tolist()


A = rect(96, 96, 480, 480)  # a lesion with a hole
A_HOLE = rect(224, 224, 352, 352)
B = rect(600, 200, 920, 600)
STAR = (
    (
        np.c_[np.cos(np.arange(5) * 0.8 * np.pi - np.pi / 2), np.sin(np.arange(5) * 0.8 * np.pi - np.pi / 2)]
        * 300
        + [500, 400]
    )
    .round(2)
    .tolist()
)
BOWTIE = [[100, 100], [300, 310], [300, 100], [100, 310]]


def feature(
    geometry: dict,
    name: str | None = "Tumor",
    kind: str = "annotation",
    string_class=False,
    extra: dict | None = None,
) -> dict:
    properties: dict = {"objectType": kind} if kind else {}
    if name is not None:
        properties["classification"] = name if string_class else {"name": name, "color": [200, 0, 0]}
    properties.update(extra or {})
    return {"type": "Feature", "id": "x", "geometry": geometry, "properties": properties}


def poly(*rings) -> dict:
    return {"type": "Polygon", "coordinates": [closed(r) for r in rings]}


def js(payload) -> bytes:
    return json.dumps(payload).encode()


def collection(*features) -> bytes:
    return js({"type": "FeatureCollection", "features": list(features)})


def asap(annotations: list[tuple[str, str, list]], groups=("Tumor", "_2"), order=None, comma=False) -> bytes:
    """ASAP XML: (type, group, points) per annotation; ``order`` permutes the Coordinate elements."""
    out = ['<?xml version="1.0"?>', "<ASAP_Annotations>", "<Annotations>"]
    for i, (kind, group, points) in enumerate(annotations):
        out.append(f'<Annotation Name="Annotation {i}" Type="{kind}" PartOfGroup="{group}" Color="#F4FA58">')
        out.append("<Coordinates>")
        index = list(range(len(points))) if order is None else order(len(points))
        for k in index:
            x, y = (f"{v:.2f}".replace(".", ",") if comma else str(v) for v in points[k])
            out.append(f'<Coordinate Order="{k}" X="{x}" Y="{y}" />')
        out += ["</Coordinates>", "</Annotation>"]
    out += ["</Annotations>", "<AnnotationGroups>"]
    out += [f'<Group Name="{g}" PartOfGroup="None" Color="#64FE2E"><Attributes /></Group>' for g in groups]
    out += ["</AnnotationGroups>", "</ASAP_Annotations>"]
    return "\n".join(out).encode()


def aperio(regions: list[tuple[str, int, list]]) -> bytes:
    """Aperio ImageScope XML: (type code, NegativeROA, vertices) per region of one annotation layer."""
    out = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>',
        '<Annotations MicronsPerPixel="0.25">',
        '<Annotation Id="1" Name="Tumor" LineColor="65280" Visible="1"><Attributes/><Regions>',
    ]
    for i, (kind, negative, vertices) in enumerate(regions):
        out.append(f'<Region Id="{i + 1}" Type="{kind}" NegativeROA="{negative}" Text=""><Vertices>')
        out += [f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in vertices]
        out.append("</Vertices></Region>")
    out += ["</Regions></Annotation>", "</Annotations>"]
    return "\n".join(out).encode()


def cases() -> list[Case]:
    t_a = Truth(A, [A_HOLE], "Tumor")
    t_b = Truth(B, [], "Tumor")
    g = "s1.geojson"
    shuffled = lambda n: list(np.random.default_rng(0).permutation(n))  # noqa: E731
    circle = ellipse(512, 384, 300, 300, n=100_000)
    out = [
        Case("geojson FeatureCollection", {g: collection(feature(poly(A, A_HOLE)))}, truth=[t_a]),
        Case(
            "geojson bare Feature list",
            {g: js([feature(poly(A, A_HOLE)), feature(poly(B))])},
            truth=[t_a, t_b],
        ),
        Case("geojson single Feature", {g: js(feature(poly(B)))}, truth=[t_b]),
        Case("geojson geometry only", {g: js(poly(B))}, truth=[Truth(B, [], "")]),
        Case(
            "geojson GeometryCollection",
            {g: js({"type": "GeometryCollection", "geometries": [poly(B)]})},
            truth=[Truth(B, [], "")],
        ),
        Case(
            "geojson MultiPolygon (hole in part 1)",
            {
                g: collection(
                    feature(
                        {
                            "type": "MultiPolygon",
                            "coordinates": [poly(A, A_HOLE)["coordinates"], poly(B)["coordinates"]],
                        }
                    )
                )
            },
            truth=[t_a, t_b],
        ),
        Case(
            "geojson Point + LineString + polygon",
            {
                g: collection(
                    feature({"type": "Point", "coordinates": [700, 100]}),
                    feature({"type": "LineString", "coordinates": [[10, 10], [500, 500]]}),
                    feature({"type": "MultiPoint", "coordinates": [[10, 10], [50, 60]]}),
                    feature(poly(B)),
                )
            },
            truth=[t_b],
            skipped=True,
        ),
        Case(
            "geojson points only",
            {g: collection(feature({"type": "Point", "coordinates": [700, 100]}))},
            skipped=True,
        ),
        Case(
            "geojson ellipse as polygon",
            {g: collection(feature(poly(ellipse(500, 380, 300, 200))))},
            truth=[Truth(ellipse(500, 380, 300, 200), [], "Tumor")],
        ),
        Case(
            "geojson classification string",
            {g: collection(feature(poly(B), "Exclusion", string_class=True), feature(poly(A)))},
            truth=[Truth(B, [], "Exclusion", True), Truth(A, [], "Tumor")],
        ),
        Case(
            "geojson detections + annotation",
            {
                g: collection(
                    feature(poly(B)),
                    *(feature(poly(rect(x, 50, x + 32, 82)), kind="detection") for x in range(0, 320, 32)),
                )
            },
            truth=[t_b],
            skipped=True,
        ),
        Case(
            "geojson QuPath 0.2 ids (PathDetectionObject)",
            {
                g: js(
                    [
                        {**feature(poly(B), kind=""), "id": "PathAnnotationObject"},
                        {**feature(poly(A), kind=""), "id": "PathDetectionObject"},
                        {**feature(poly(A_HOLE), kind=""), "id": "PathCellObject"},
                    ]
                )
            },
            truth=[t_b],
            skipped=True,
        ),
        Case(
            "geojson pentagram (self-intersecting)",
            {g: collection(feature(poly(STAR)))},
            truth=[Truth(STAR)],
            note="even-odd fill (the centre is outside), in the inside-test and the mask alike",
        ),
        Case(
            "geojson properties missing",
            {g: js({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": poly(B)}]})},
            truth=[Truth(B, [], "")],
        ),
        Case(
            "geojson properties null, name",
            {
                g: collection(
                    {"type": "Feature", "geometry": poly(B), "properties": None},
                    feature(poly(A), None, extra={"name": "_2"}),
                )
            },
            truth=[Truth(B, [], ""), Truth(A, [], "_2", True)],
        ),
        Case(
            "geojson measurements",
            {
                g: collection(
                    feature(
                        poly(B),
                        extra={"measurements": {"Area µm^2": 1.5e4, "Perimeter": 400}, "isLocked": False},
                    )
                )
            },
            truth=[t_b],
        ),
        Case(
            "geojson geometry null",
            {g: collection({"type": "Feature", "geometry": None, "properties": {}}, feature(poly(B)))},
            truth=[t_b],
            skipped=True,
        ),
        Case("geojson empty file", {g: b""}, expect="error"),
        Case("geojson zero features", {g: collection()}),
        Case("geojson self-intersecting", {g: collection(feature(poly(BOWTIE)))}, truth=[Truth(BOWTIE)]),
        Case(
            "geojson ring of 2 points",
            {g: collection(feature(poly([[10, 10], [50, 50]])), feature(poly(B)))},
            truth=[t_b],
            skipped=True,
            note="drop the ring with a warning, or refuse the file",
        ),
        Case(
            "geojson only a 1-point ring",
            {g: js({"type": "Polygon", "coordinates": [[[1, 2]]]})},
            expect="error",
            note="damaged: refused, not read as a negative slide",
        ),
        Case(
            "geojson partly outside slide",
            {g: collection(feature(poly(rect(800, 600, 1400, 1000))))},
            truth=[Truth(rect(800, 600, 1400, 1000))],
        ),
        Case(
            "geojson negative coordinates",
            {g: collection(feature(poly(rect(-200, -100, 200, 240))))},
            truth=[Truth(rect(-200, -100, 200, 240))],
        ),
        Case(
            "geojson level-2 coordinates",
            {g: collection(feature(poly(rect(24, 24, 120, 120))))},
            truth=[Truth(rect(24, 24, 120, 120))],
            note="read as level 0 (documented)",
        ),
        Case(
            "geojson 100k-vertex polygon",
            {g: collection(feature(poly(circle)))},
            truth=[Truth(ellipse(512, 384, 300, 300, n=4096))],
        ),
        Case(
            "geojson non-UTF8 bytes",
            {g: collection(feature(poly(B), "Tumör")).replace(b"\\u00f6", "ö".encode("latin-1"))},
            truth=[Truth(B, [], "Tumör")],
            skipped=True,
            note="Latin-1 text: read with a warning, or refused",
        ),
        Case("geojson UTF-8 BOM", {g: b"\xef\xbb\xbf" + collection(feature(poly(B)))}, truth=[t_b]),
        Case("json not GeoJSON", {"s1.json": js({"slide": "s1", "regions": [1, 2]})}, expect="error"),
        Case("json list of numbers", {"s1.json": js([1, 2, 3])}, expect="error"),
        Case(
            "geojson coordinates as strings",
            {
                g: collection(
                    feature({"type": "Polygon", "coordinates": [[["a", "b"], ["c", "d"], ["e", "f"]]]})
                )
            },
            expect="error",
        ),
        Case(
            "geojson properties a list",
            {g: collection({"type": "Feature", "geometry": poly(B), "properties": [1]})},
            expect="error",
        ),
        Case("folder named like the file", {"s1.geojson/": b""}, expect="error"),
        Case("id matches by case", {"S1.GeoJSON": collection(feature(poly(B)))}, truth=[t_b]),
        Case(
            "id with slide extension (QuPath default)",
            {"s1.svs.geojson": collection(feature(poly(B)))},
            truth=[t_b],
        ),
        Case(
            "two files for one slide",
            {g: collection(feature(poly(B))), "s1.xml": asap([("Polygon", "Tumor", A)])},
            expect="error",
        ),
        Case(
            "asap ordered",
            {"s1.xml": asap([("Polygon", "Tumor", A), ("Polygon", "_2", A_HOLE)])},
            truth=[Truth(A, [], "Tumor"), Truth(A_HOLE, [], "_2", True)],
        ),
        Case(
            "asap Order shuffled",
            {"s1.xml": asap([("Polygon", "_0", ellipse(500, 380, 300, 200))], order=shuffled)},
            truth=[Truth(ellipse(500, 380, 300, 200), [], "_0")],
        ),
        Case("asap comma decimals", {"s1.xml": asap([("Polygon", "Tumor", B)], comma=True)}, truth=[t_b]),
        Case(
            "asap Dot + Rectangle + Spline",
            {"s1.xml": asap([("Dot", "Tumor", [[10, 10]]), ("Rectangle", "Tumor", B), ("Spline", "_1", A)])},
            truth=[t_b, Truth(A, [], "_1")],
            skipped=True,
        ),
        Case(
            "asap 2-point polygon",
            {"s1.xml": asap([("Polygon", "Tumor", [[1, 1], [5, 5]]), ("Polygon", "Tumor", B)])},
            truth=[t_b],
            skipped=True,
        ),
        Case("asap zero annotations", {"s1.xml": asap([])}),
        Case("asap empty file", {"s1.xml": b""}, expect="error"),
        Case(
            "asap coordinate without X",
            {"s1.xml": asap([("Polygon", "Tumor", B)]).replace(b' X="600"', b"")},
            expect="error",
        ),
        Case(
            "aperio regions + NegativeROA",
            {"s1.xml": aperio([(0, 0, A), (0, 1, A_HOLE), (1, 0, B)])},
            truth=[t_a, t_b],
            note="supported, or refused in one line",
        ),
        Case(
            "xml of another tool",
            {"s1.xml": b"<?xml version='1.0'?><Slide><Mark x='1'/></Slide>"},
            expect="error",
        ),
    ]
    return out
