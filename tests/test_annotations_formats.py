"""Annotation files as QuPath, ASAP and Aperio ImageScope write them, and as they arrive damaged:
read as meant, refused in one line, or what is skipped named in a warning."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from attnmap.errors import InputError
from attnmap.wsi.annotations import annotation_file, inside_regions, load_annotations, roi_filter

OUTER = [[100, 100], [500, 100], [500, 500], [100, 500], [100, 100]]
HOLE = [[200, 200], [300, 200], [300, 300], [200, 300], [200, 200]]
SECOND = [[600, 100], [900, 100], [900, 400], [600, 400], [600, 100]]
# inside the outer ring, in the hole, in the second part, outside everything
PROBES = np.array([[150, 150], [250, 250], [700, 200], [950, 600]])


def feature(geometry, **properties):
    return {"type": "Feature", "geometry": geometry, "properties": properties}


def write(tmp_path, name, payload) -> object:
    path = tmp_path / name
    path.write_bytes(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    return path


def read_quietly(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing skipped: no warning either
        return load_annotations(path)


def test_multipolygon_keeps_every_part_and_its_hole(tmp_path):
    geometry = {"type": "MultiPolygon", "coordinates": [[OUTER, HOLE], [SECOND]]}
    for payload in (
        {"type": "FeatureCollection", "features": [feature(geometry, classification={"name": "Tumor"})]},
        [feature(geometry, classification="Tumor")],  # a bare list, classification as a string
        geometry,  # geometry only
        {"type": "GeometryCollection", "geometries": [geometry]},
    ):
        regions = read_quietly(write(tmp_path, "s.geojson", payload))
        assert inside_regions(PROBES, regions).tolist() == [True, False, True, False]
        assert {r.label for r in regions} <= {"Tumor", ""} and len(regions) == 2


def test_points_lines_detections_and_degenerate_rings_are_skipped_with_a_warning(tmp_path):
    path = write(
        tmp_path,
        "s.geojson",
        {
            "type": "FeatureCollection",
            "features": [
                feature({"type": "Point", "coordinates": [10, 10]}, objectType="annotation"),
                feature({"type": "LineString", "coordinates": [[0, 0], [9, 9]]}),
                feature({"type": "Polygon", "coordinates": [SECOND]}, objectType="detection"),
                feature({"type": "Polygon", "coordinates": [[[0, 0], [5, 5], [0, 0]]]}),
                feature(None),
                feature({"type": "Polygon", "coordinates": [OUTER]}, objectType="annotation", name="Tumor"),
            ],
        },
    )
    with pytest.warns(UserWarning) as caught:
        regions = load_annotations(path)
    message = str(caught[0].message)
    assert len(caught) == 1 and "s.geojson" in message
    for what in (
        "1 Point",
        "1 LineString",
        "1 detection",
        "1 ring(s) of fewer than 3",
        "1 feature(s) without",
    ):
        assert what in message
    assert [r.label for r in regions] == ["Tumor"]
    assert inside_regions(PROBES, regions).tolist() == [True, True, False, False]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        (b"", "cannot read annotations"),
        ({"slide": "x"}, "is not GeoJSON"),
        ([1, 2], "feature 0 is not a GeoJSON Feature"),
        ([feature({"type": "Polygon", "coordinates": 5})], "feature 0's polygon is not a list of rings"),
        ([feature({"type": "Polygon", "coordinates": [OUTER]}) | {"properties": [1]}], "feature 0"),
        (
            [feature({"type": "Polygon", "coordinates": [[["a", "b"], ["c", "d"], ["e", "f"]]]})],
            r"not \[x, y\] numbers",
        ),
    ],
)
def test_damaged_geojson_is_one_line_input_error_naming_the_file(tmp_path, payload, problem):
    path = write(tmp_path, "bad.geojson", payload)
    with pytest.raises(InputError, match=problem) as error:
        load_annotations(path)
    assert "bad.geojson" in str(error.value) and "\n" not in str(error.value)


def test_bom_and_latin1_text(tmp_path):
    body = json.dumps(feature({"type": "Polygon", "coordinates": [OUTER]}, classification={"name": "Tumör"}))
    assert read_quietly(write(tmp_path, "a.geojson", b"\xef\xbb\xbf" + body.encode()))[0].label == "Tumör"
    latin = body.replace("\\u00f6", "\u00f6").encode("latin-1")
    with pytest.warns(UserWarning, match="not UTF-8"):
        assert load_annotations(write(tmp_path, "b.geojson", latin))[0].label == "Tumör"


def asap(coordinates: str, kind="Polygon", group="Tumor") -> bytes:
    return (
        f'<ASAP_Annotations><Annotations><Annotation Name="A" Type="{kind}" PartOfGroup="{group}">'
        f"<Coordinates>{coordinates}</Coordinates></Annotation></Annotations></ASAP_Annotations>"
    ).encode()


def test_asap_comma_decimals_shuffled_order_and_dots(tmp_path):
    points = [(2, "500,5", "500,5"), (0, "100,0", "100,0"), (3, "100,0", "500,5"), (1, "500,5", "100,0")]
    coordinates = "".join(f'<Coordinate Order="{o}" X="{x}" Y="{y}"/>' for o, x, y in points)
    (region,) = read_quietly(write(tmp_path, "a.xml", asap(coordinates)))
    assert region.outer.tolist() == [[100, 100], [500.5, 100], [500.5, 500.5], [100, 500.5]]
    with pytest.warns(UserWarning, match="skipped 1 Dot"):
        assert (
            load_annotations(write(tmp_path, "b.xml", asap('<Coordinate Order="0" X="1" Y="1"/>', "Dot")))
            == []
        )
    with pytest.raises(InputError, match="c.xml: annotation 'A' X is not a number"):
        load_annotations(write(tmp_path, "c.xml", asap('<Coordinate Order="0" Y="1"/>')))
    with pytest.raises(InputError, match="d.xml: root <Slide> is neither ASAP"):
        load_annotations(write(tmp_path, "d.xml", b"<Slide><Mark/></Slide>"))


def test_aperio_imagescope_regions_with_negative_roa_holes(tmp_path):
    def region(kind, negative, ring):
        vertices = "".join(f'<Vertex X="{x}" Y="{y}" Z="0"/>' for x, y in ring)
        return f'<Region Type="{kind}" NegativeROA="{negative}"><Vertices>{vertices}</Vertices></Region>'

    xml = (
        '<Annotations><Annotation Id="1" Name="Tumor"><Regions>'
        + region(0, 0, OUTER[:-1])
        + region(0, 1, HOLE[:-1])
        + region(1, 0, [SECOND[0], SECOND[2]])
        + region(4, 0, [[0, 0], [9, 9]])
        + "</Regions></Annotation></Annotations>"
    )
    with pytest.warns(UserWarning, match="skipped 1 ruler"):
        regions = load_annotations(write(tmp_path, "s.xml", xml.encode()))
    assert [r.label for r in regions] == ["Tumor", "Tumor"] and len(regions[0].holes) == 1
    assert inside_regions(PROBES, regions).tolist() == [True, False, True, False]


def test_slide_lookup_by_case_and_slide_extension_refuses_two_files_and_folders(tmp_path):
    polygon = feature({"type": "Polygon", "coordinates": [OUTER]})
    write(tmp_path, "Slide_1.GeoJSON", [polygon])
    assert annotation_file(tmp_path, "slide_1") == tmp_path / "Slide_1.GeoJSON"
    write(tmp_path, "slide_2.svs.geojson", [polygon])
    assert annotation_file(tmp_path, "slide_2") == tmp_path / "slide_2.svs.geojson"
    assert annotation_file(tmp_path, "slide_2.svs") == tmp_path / "slide_2.svs.geojson"
    assert annotation_file(tmp_path, "slide") is None
    write(tmp_path, "slide_3.geojson", [polygon])
    write(tmp_path, "slide_3.xml", asap(""))
    with pytest.raises(
        InputError, match="2 annotation files for slide slide_3: slide_3.geojson, slide_3.xml"
    ):
        annotation_file(tmp_path, "slide_3")
    (tmp_path / "slide_4.geojson").mkdir()
    with pytest.raises(InputError, match="slide_4 is a folder"):
        roi_filter(np.zeros((1, 2)), 16, tmp_path, "slide_4")


def test_qupath_02_detections_named_by_their_id_are_skipped(tmp_path):
    polygon = {"type": "Polygon", "coordinates": [OUTER]}
    features = [
        feature(polygon) | {"id": "PathAnnotationObject"},
        feature(polygon) | {"id": "PathCellObject"},
    ]
    with pytest.warns(UserWarning, match="skipped 1 cell object"):
        assert len(load_annotations(write(tmp_path, "s.geojson", features))) == 1


def test_a_file_of_only_broken_polygons_is_refused_not_read_as_a_negative_slide(tmp_path):
    ring = [[0, 0], [5, 5], [0, 0]]
    with pytest.raises(InputError, match="a.geojson is not GeoJSON areas: every polygon ring has fewer"):
        load_annotations(write(tmp_path, "a.geojson", {"type": "Polygon", "coordinates": [ring]}))
    xml = asap('<Coordinate Order="0" X="1" Y="1"/><Coordinate Order="1" X="2" Y="2"/>')
    with pytest.raises(InputError, match="b.xml: every ASAP polygon has fewer than 3"):
        load_annotations(write(tmp_path, "b.xml", xml))
