"""QuPath GeoJSON out, QuPath GeoJSON / ASAP XML annotations in, lesion evaluation, TIFF in tiffslide."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from view_fixtures import PATCH, write_run_folder

from attnmap.cli.main import main
from attnmap.errors import InputError
from attnmap.evaluate.lesions import SlideScores, detections, froc, patch_auc
from attnmap.wsi.annotations import load_annotations, patches_in_regions, regions_mask

QUPATH = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "id": "a",
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[384, 128], [768, 128], [768, 512], [384, 512], [384, 128]],
                    [[512, 256], [640, 256], [640, 384], [512, 384], [512, 256]],
                ],
            },
            "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
        },
        {
            "type": "Feature",
            "geometry": {
                "type": "MultiPolygon",
                "coordinates": [[[[0, 640], [128, 640], [128, 768], [0, 768], [0, 640]]]],
            },
            "properties": {"objectType": "annotation", "classification": {"name": "Exclusion"}},
        },
    ],
}
ASAP = """<?xml version="1.0"?>
<ASAP_Annotations><Annotations>
<Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="_0" Color="#F4FA58"><Coordinates>
<Coordinate Order="1" X="300" Y="100"/><Coordinate Order="0" X="100" Y="100"/>
<Coordinate Order="2" X="300" Y="300"/><Coordinate Order="3" X="100" Y="300"/>
</Coordinates></Annotation>
<Annotation Name="Annotation 1" Type="Polygon" PartOfGroup="_2" Color="#64FE2E"><Coordinates>
<Coordinate Order="0" X="150" Y="150"/><Coordinate Order="1" X="250" Y="150"/>
<Coordinate Order="2" X="250" Y="250"/><Coordinate Order="3" X="150" Y="250"/>
</Coordinates></Annotation>
</Annotations><AnnotationGroups/></ASAP_Annotations>
"""


def test_qupath_geojson_annotations_with_holes_and_exclusions(tmp_path):
    path = tmp_path / "slide.geojson"
    path.write_text(json.dumps(QUPATH))
    regions = load_annotations(path)
    assert [r.label for r in regions] == ["Tumor", "Exclusion"] and len(regions[0].holes) == 1
    points = np.array([[400, 150], [576, 320], [64, 700], [900, 700]])
    np.testing.assert_array_equal(patches_in_regions(points - 0.5, 1.0, regions), [True, False, False, False])
    mask = regions_mask(regions, (1024, 768), 4.0)
    assert mask[150 // 4, 400 // 4] and not mask[320 // 4, 576 // 4]
    assert mask.sum() == pytest.approx((384 * 384 - 128 * 128) / 16, rel=0.03)


def test_asap_xml_orders_points_and_cuts_out_group_2(tmp_path):
    path = tmp_path / "tumor_001.xml"
    path.write_text(ASAP)
    lesion, excluded = load_annotations(path)
    assert lesion.outer.tolist() == [[100, 100], [300, 100], [300, 300], [100, 300]]
    assert excluded.exclusion and not lesion.exclusion
    inside = patches_in_regions(np.array([[110, 110], [190, 190]]), 20, [lesion, excluded])
    assert inside.tolist() == [True, False]
    with pytest.raises(InputError, match="annotations must be"):
        (tmp_path / "x.txt").write_text("")
        load_annotations(tmp_path / "x.txt")


def test_patch_auc_and_froc_reward_scores_on_the_lesion():
    xs, ys = np.meshgrid(np.arange(0, 1024, PATCH), np.arange(0, 768, PATCH))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)
    regions = load_regions_square(384, 128, 768, 512)
    inside = patches_in_regions(coords, PATCH, regions)
    good = SlideScores(coords, inside + np.linspace(0, 0.1, len(coords)), PATCH, regions)
    bad = SlideScores(coords, -good.scores, PATCH, regions)
    assert patch_auc(good)["auc"] == 1.0 and patch_auc(bad)["auc"] == 0.0
    assert froc([good])["froc_score"] == 1.0
    assert froc([bad])["sensitivity_at"][0.25] == 0.0
    negative = SlideScores(coords, np.linspace(0, 1, len(coords)), PATCH, [])
    result = froc([good, negative])
    assert result["n_lesions"] == 1 and result["n_slides"] == 2 and 0 < result["froc_score"] <= 1
    peaks = detections(good)
    assert len(peaks) > 1 and np.all(np.diff(peaks[:, 2]) <= 0)


def load_regions_square(x0, y0, x1, y1):
    from attnmap.wsi.annotations import Region

    return [Region(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float), [], "Tumor")]


def test_geojson_export_has_a_polygon_and_measurements_per_patch(tmp_path):
    run = write_run_folder(tmp_path)
    blockmap = run / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
    main(["wsi", "geojson", str(blockmap), "-o", str(tmp_path / "scores.geojson"), "--tissue"])
    payload = json.loads((tmp_path / "scores.geojson").read_text())
    detections_ = [f for f in payload["features"] if f["properties"]["objectType"] == "detection"]
    tissue = [f for f in payload["features"] if f["properties"]["objectType"] == "annotation"]
    assert len(detections_) == 48 and len(tissue) == 1
    first = detections_[0]
    ring = np.array(first["geometry"]["coordinates"][0])
    assert ring.tolist()[0] == ring.tolist()[-1] and np.ptp(ring, axis=0).tolist() == [PATCH, PATCH]
    assert set(first["properties"]["measurements"]) == {"attention", "attention rank", "lrp", "lrp rank"}
    assert first["properties"]["classification"]["name"] == "tumor"
    top = min(detections_, key=lambda f: f["properties"]["measurements"]["attention rank"])
    assert np.array(top["geometry"]["coordinates"][0]).min(axis=0).tolist() == [512, 256]
    with pytest.warns(UserWarning, match="skipped 48 detection object"):  # patches are no regions
        regions = load_annotations(tmp_path / "scores.geojson")  # what we write, we read back
    assert [r.label for r in regions] == ["Tissue"]


def test_wsi_evaluate_reads_annotations_folder(tmp_path, capsys):
    run = write_run_folder(tmp_path, hot=(512, 256))
    folder = tmp_path / "annotations"
    folder.mkdir()
    (folder / "slide_a.xml").write_text(
        ASAP.replace('X="100"', 'X="448"')
        .replace('X="300"', 'X="704"')
        .replace('Y="100"', 'Y="192"')
        .replace('Y="300"', 'Y="448"')
        .replace('PartOfGroup="_2"', 'PartOfGroup="_1"')
    )
    main(["wsi", "evaluate", str(run), "--annotations", str(folder), "-o", str(tmp_path / "eval.json")])
    report = json.loads((tmp_path / "eval.json").read_text())
    # two lesions: the first around the attention peak, the second (150..250 square) where attention is low
    assert report["froc"]["n_lesions"] == 2 and report["froc"]["sensitivity_at"]["0.25"] == 0.5
    assert report["slides"][0]["auc"] > 0.8
    assert "FROC score" in capsys.readouterr().out
    # the same evaluation through `attnmap evaluate`, for every score set of the run
    main(["evaluate", "--run", str(run), "--annotations", str(folder), "--out", str(tmp_path / "eval")])
    same = json.loads((tmp_path / "eval" / "lesions_attention.json").read_text())
    # the records differ only in the command and its time; the evaluation itself is the same
    record, same_record = report.pop("provenance"), same.pop("provenance")
    assert same == report
    for key in ("attnmap_version", "method", "run", "annotations"):
        assert record[key] == same_record[key], key
    assert record["method"] == "attention" and record["run"] == str(run)
    assert record["annotations"] == str(folder)
    assert record["command"].startswith("attnmap wsi evaluate") and "--run" in same_record["command"]


def test_evaluate_run_says_which_score_set_each_block_of_lines_is_and_quotes_its_command(tmp_path, capsys):
    """With several score sets the per-slide AUC and FROC lines came one block after another with
    nothing naming the set; the recorded command gave `--methods fine maps (lrp)` unquoted."""
    import shlex

    run = write_run_folder(tmp_path, hot=(512, 256))
    folder = tmp_path / "annotations"
    folder.mkdir()
    (folder / "slide_a.xml").write_text(ASAP.replace('X="100"', 'X="448"').replace('X="300"', 'X="704"'))
    capsys.readouterr()
    main(["evaluate", "--run", str(run), "--annotations", str(folder), "--out", str(tmp_path / "eval"),
          "--methods", "attention,fine maps (lrp)"])
    lines = capsys.readouterr().out.splitlines()
    headers = [index for index, line in enumerate(lines) if line.startswith("score set ")]
    assert [lines[index] for index in headers] == ["score set attention:", "score set fine maps (lrp):"]
    assert headers[0] == 0 and lines[headers[1] - 1].startswith("wrote ")
    report = json.loads((tmp_path / "eval" / "lesions_fine maps (lrp).json").read_text())
    assert shlex.split(report["provenance"]["command"])[-3:] == ["attention,fine maps (lrp)", "--out",
                                                                 str(tmp_path / "eval")]


def test_evaluate_run_again_with_fewer_methods_leaves_no_report_of_the_others(tmp_path, capsys):
    """`evaluate --run --out` kept lesions_<method>.json of methods no longer asked for beside the new
    reports (they read as this evaluation's); attnmap's own reports of other methods are removed, a
    user's file of the same pattern is kept."""
    run = write_run_folder(tmp_path, hot=(512, 256))
    folder = tmp_path / "annotations"
    folder.mkdir()
    (folder / "slide_a.xml").write_text(ASAP.replace('X="100"', 'X="448"').replace('X="300"', 'X="704"'))
    out = tmp_path / "eval"
    main(["evaluate", "--run", str(run), "--annotations", str(folder), "--out", str(out)])
    written = sorted(path.name for path in out.glob("lesions_*.json"))
    assert len(written) == 3 and "lesions_lrp.json" in written
    (out / "lesions_notes.json").write_text(json.dumps({"mine": True}))
    capsys.readouterr()
    main(["evaluate", "--run", str(run), "--annotations", str(folder), "--out", str(out), "--methods", "lrp"])
    kept = sorted(path.name for path in out.glob("lesions_*.json"))
    assert kept == ["lesions_lrp.json", "lesions_notes.json"]
    assert "removed" in capsys.readouterr().err


def test_heatmap_tiff_opens_in_tiffslide_with_the_slide_mpp(tmp_path):
    import tiffslide

    from attnmap.wsi import open_slide, write_heatmap_tiff

    run = write_run_folder(tmp_path)
    from attnmap.view.sources import discover

    (slide,) = discover(run)
    scores = slide.score_sets["attention"]
    with open_slide(slide.slide_path) as source:
        path = write_heatmap_tiff(
            tmp_path / "heat.tif",
            source,
            scores.coords,
            scores.scores,
            patch_size=PATCH,
            level=0,
            progress=False,
        )
    with tiffslide.TiffSlide(str(path)) as opened:
        assert opened.level_dimensions[0] == (1024, 768) and opened.level_count >= 2
        assert float(opened.properties["tiffslide.mpp-x"]) == pytest.approx(0.5, rel=1e-4)
        assert np.asarray(opened.read_region((0, 0), opened.level_count - 1, (32, 32))).shape[:2] == (32, 32)


def test_wsi_run_writes_geojson_and_keeps_patches_inside_the_roi(tmp_path, single_thread):
    from synthetic_slide_files import write_pipeline_setup

    from attnmap.wsi.pipeline import run_slide
    from attnmap.wsi.pipeline.config import load_config, read_slide_list

    roi = tmp_path / "roi"
    roi.mkdir()
    (roi / "slide_0.geojson").write_text(
        json.dumps(
            {
                "type": "Feature",
                "properties": {},
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [[[0, 0], [512, 0], [512, 768], [0, 768], [0, 0]]],
                },
            }
        )
    )
    config_path = write_pipeline_setup(
        tmp_path / "setup",
        n_slides=1,
        overrides={
            "patching": {"roi_annotations": str(roi)},
            "export": {"geojson": True},
            "heatmap": {"scale": "robust", "legend": True},
        },
    )  # the defaults
    config = load_config(config_path)
    entry = read_slide_list(config)[0]
    run_slide(entry, config)
    folder = Path(config.run.output_dir) / "heatmaps" / "slide_0"
    payload = json.loads((folder / "slide_0_scores.geojson").read_text())
    patches = [f for f in payload["features"] if f["properties"]["objectType"] == "detection"]
    corners = np.array([f["geometry"]["coordinates"][0][0] for f in patches])
    assert len(patches) > 0 and (corners[:, 0] + 32 <= 512).all()
    tissue = [f for f in payload["features"] if f["properties"].get("classification") == {"name": "Tissue"}]
    assert tissue and all(_signed_area(f["geometry"]["coordinates"][0]) > 0 for f in tissue)  # RFC 7946
    assert patches[0]["properties"]["classification"]["name"] in ("normal", "tumour")
    from attnmap.wsi.annotations import roi_filter

    with pytest.raises(InputError, match="no annotations for slide slide_0"):
        roi_filter(corners, 64, tmp_path, "slide_0")
    # default drawing: robust linear scale, the canvas unchanged inside a title and colour bar
    from PIL import Image

    from attnmap.render.scale import choose_scale
    from attnmap.wsi import HeatmapStyle, open_slide, render_heatmap
    from attnmap.wsi.pipeline.stage_files import load_blockmap, load_tissue

    block = load_blockmap(folder / "slide_0_blockmap.h5")
    with open_slide(entry.path) as slide:
        canvas = render_heatmap(
            slide,
            block["coords"],
            100 * choose_scale(block["scores"]).unit(block["scores"]),
            HeatmapStyle(vis_level=1, alpha=0.5, percentiles=False),
            patch_size=64,
            tissue=load_tissue(Path(config.run.output_dir) / "tissue" / "slide_0.json"),
        )
    picture = np.asarray(Image.open(folder / "slide_0_heatmap.png").convert("RGB"))
    assert picture.shape[0] > canvas.shape[0] and picture.shape[1] >= canvas.shape[1]
    left = (picture.shape[1] - canvas.shape[1]) // 2
    matches = [
        top
        for top in range(picture.shape[0] - canvas.shape[0] + 1)
        if np.array_equal(picture[top : top + canvas.shape[0], left : left + canvas.shape[1]], canvas)
    ]
    assert len(matches) == 1


def test_geojson_of_a_missing_scores_file_says_not_found(tmp_path, capsys):
    """It printed h5py's "Unable to synchronously open file (... errno = 2 ...)" instead."""
    from cli_runner import run_cli

    missing = tmp_path / "nope_blockmap.h5"
    code, _, err = run_cli(capsys, "wsi", "geojson", missing, "-o", tmp_path / "x.geojson")
    err = err.strip()
    assert code == 2 and err.endswith(f"scores file not found: {tmp_path / 'nope_blockmap.h5'}")
    assert "\n" not in err


def test_evaluate_run_with_annotations_named_after_no_slide_says_so(tmp_path, capsys):
    run = write_run_folder(tmp_path, hot=(512, 256))
    folder = tmp_path / "annotations"
    folder.mkdir()
    (folder / "slide-a.xml").write_text(ASAP)  # a typo in the slide id: nothing matches
    with pytest.raises(SystemExit) as done:
        main(["evaluate", "--run", str(run), "--annotations", str(folder), "--out", str(tmp_path / "e")])
    assert done.value.code == 2
    error = capsys.readouterr().err
    assert "no annotated region for any slide" in error and "slide_a" in error and "Traceback" not in error


def test_geojson_tissue_annotations_have_unique_ids_and_keep_their_exterior(tmp_path):
    """QuPath 0.4 exports every object with an id; tissue annotations had none (two of them shared
    the missing id), and a contour with a degenerate outer ring had its hole promoted to exterior."""
    from attnmap.wsi.qupath import tissue_features, write_scores_geojson

    square = np.array([[0, 0], [100, 0], [100, 100], [0, 100]])
    hole = np.array([[40, 40], [60, 40], [60, 60], [40, 60]])
    features = tissue_features([(square, [hole]), (square + 200, []), (np.array([[5, 5], [6, 6]]), [hole])])
    assert len(features) == 2  # the 2-point outer ring is no area: its hole is not made an exterior
    assert features[0]["geometry"]["coordinates"][0][0] == [0.0, 0.0]
    ids = [feature["id"] for feature in features]
    assert all(isinstance(i, str) and i for i in ids) and len(set(ids)) == 2
    assert [f["id"] for f in tissue_features([(square, [hole])])] == ids[:1]  # stable across exports
    path = write_scores_geojson(tmp_path / "s.geojson", np.array([[0, 0], [64, 0]]), 64,
                                {"attention": np.array([1.0, 2.0])}, tissue=[(square, [hole])])
    written = json.loads(path.read_text())["features"]
    every = [feature.get("id") for feature in written]
    assert None not in every and len(set(every)) == len(every) == 3


def test_blockmap_stores_the_branch_as_a_number(tmp_path):
    """The run's record gave the blockmap a text ``branch`` attribute ('0') where `mil attention`'s h5
    stores a number: a script reading both got a string from one."""
    import h5py

    from attnmap.wsi.pipeline.stage_files import save_blockmap

    attention = {"coords": np.array([[0, 0], [64, 0]]), "scores": np.array([0.5, 1.5]),
                 "prediction": 1, "probs": np.array([0.25, 0.75]), "branch": 1, "patch_size": 64}
    record = {"method": "clam_attention_raw", "branch": "1"}
    path = save_blockmap(tmp_path / "s_blockmap.h5", attention, record)
    with h5py.File(path, "r") as handle:
        keys = ("branch", "attention_branch", "prediction", "patch_size")
        values = {key: handle.attrs[key] for key in keys}
    assert all(isinstance(value, np.integer) for value in values.values()), values
    assert values["branch"] == 1


def test_geojson_of_an_overlap_blockmap_takes_the_class_and_tissue_of_its_slide(tmp_path):
    """A run with ``heatmap.overlap`` writes ``<id>_overlap_blockmap.h5``: its export took the slide id
    as ``<id>_overlap``, so its patches had no class and ``--tissue`` looked for
    ``tissue/<id>_overlap.json``, which no run writes."""
    import shutil

    run = write_run_folder(tmp_path)
    folder = run / "heatmaps" / "slide_a"
    overlap = folder / "slide_a_overlap_blockmap.h5"
    shutil.copy(folder / "slide_a_blockmap.h5", overlap)
    main(["wsi", "geojson", str(overlap), "-o", str(tmp_path / "o.geojson"), "--tissue"])
    features = json.loads((tmp_path / "o.geojson").read_text())["features"]
    detections_ = [f for f in features if f["properties"]["objectType"] == "detection"]
    tissue = [f for f in features if f["properties"]["objectType"] == "annotation"]
    assert len(detections_) == 48 and len(tissue) == 1
    assert {f["properties"]["classification"]["name"] for f in detections_} == {"tumor"}


def _signed_area(ring) -> float:
    ring = np.asarray(ring, dtype=np.float64)
    return float(np.sum(ring[:-1, 0] * ring[1:, 1] - ring[1:, 0] * ring[:-1, 1]) / 2)


def test_geojson_rings_follow_the_right_hand_rule_whatever_order_the_contours_come_in():
    """RFC 7946 (3.1.6): exterior rings counterclockwise, holes clockwise. The patch squares were, but
    tissue rings kept OpenCV's order (exteriors clockwise): one file, two orientations."""
    from attnmap.wsi.qupath import patch_features, tissue_features

    square = np.array([[0, 0], [100, 0], [100, 100], [0, 100]])  # counterclockwise (positive area)
    hole = np.array([[40, 40], [60, 40], [60, 60], [40, 60]])
    contours = [(square, [hole]), (square[::-1] + 200, [hole[::-1] + 200])]
    for feature in tissue_features(contours) + patch_features(np.array([[0, 0]]), 64, {"a": np.ones(1)}):
        exterior, *holes = feature["geometry"]["coordinates"]
        assert _signed_area(exterior) > 0 and all(_signed_area(h) < 0 for h in holes)
        assert feature["geometry"].is_valid
    for (outer, inner), feature in zip(contours, tissue_features(contours), strict=True):
        exterior, hole_ring = (np.array(r[:-1]) for r in feature["geometry"]["coordinates"])
        assert exterior[0].tolist() == outer[0].tolist()  # the same ring, only its direction changed
        assert sorted(map(tuple, exterior.tolist())) == sorted(map(tuple, outer.tolist()))
        assert sorted(map(tuple, hole_ring.tolist())) == sorted(map(tuple, inner[0].tolist()))


@pytest.mark.parametrize("command", ["wsi", "evaluate"])
def test_evaluating_against_annotations_wholly_outside_the_slide_is_refused(tmp_path, capsys, command):
    """Annotations of another slide, or not in level-0 pixels, lay beyond the slide: every lesion was
    missed and the run reported FROC 0.000 as a result (the viewer refuses the same files)."""
    from cli_runner import run_cli

    run = write_run_folder(tmp_path)
    folder = tmp_path / "annotations"
    folder.mkdir()
    far = ASAP.replace('X="', 'X="9000').replace('Y="', 'Y="9000')  # beyond the 1024 x 768 slide
    (folder / "slide_a.xml").write_text(far)
    args = ["--annotations", folder]
    if command == "wsi":
        code, out, err = run_cli(capsys, "wsi", "evaluate", run, *args, "-o", tmp_path / "e.json")
    else:
        code, out, err = run_cli(capsys, "evaluate", "--run", run, *args, "--out", tmp_path / "e")
    assert code == 2 and "FROC score" not in out, out
    assert "slide_a" in err and "outside the slide" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "e.json").exists() and not (tmp_path / "e").exists()


def test_a_slide_of_the_run_that_cannot_be_read_is_named_not_left_out_of_the_evaluation(tmp_path, capsys):
    """A slide moved away (or failed in the run) was dropped without a word: the FROC, averaged over
    the slides that remained, was printed as the run's."""
    from cli_runner import run_cli

    run = write_run_folder(tmp_path, "slide_a")
    write_run_folder(tmp_path, "slide_b")
    (tmp_path / "slides" / "slide_b.tif").unlink()
    folder = tmp_path / "annotations"
    folder.mkdir()
    for slide_id in ("slide_a", "slide_b"):
        (folder / f"{slide_id}.geojson").write_text(json.dumps(QUPATH))
    report_file = tmp_path / "e.json"
    code, out, err = run_cli(capsys, "wsi", "evaluate", run, "--annotations", folder, "-o", report_file)
    assert code == 0 and "slide_a: 2 region(s)" in out
    named = [line for line in err.splitlines() if "slide_b" in line]
    assert len(named) == 1 and "not evaluated" in named[0] and "slide_b.tif" in named[0], err
    assert "over 1 of 2 slides" in out
    report = json.loads((tmp_path / "e.json").read_text())
    assert [row["slide_id"] for row in report["slides"]] == ["slide_a"]
    assert [row["slide_id"] for row in report["not_evaluated"]] == ["slide_b"]


def test_annotation_files_that_match_no_slide_of_the_run_are_named(tmp_path, capsys):
    """``slide-b.xml`` (a typo for slide_b) was ignored without a word: slide_b was scored as a slide
    without lesions, its lesion's detections counted as false positives."""
    from cli_runner import run_cli

    run = write_run_folder(tmp_path, "slide_a")
    write_run_folder(tmp_path, "slide_b")
    folder = tmp_path / "annotations"
    folder.mkdir()
    (folder / "slide_a.geojson").write_text(json.dumps(QUPATH))
    (folder / "slide-b.geojson").write_text(json.dumps(QUPATH))
    (folder / "notes.txt").write_text("not an annotation file")
    report_file = tmp_path / "e.json"
    code, _, err = run_cli(capsys, "wsi", "evaluate", run, "--annotations", folder, "-o", report_file)
    assert code == 0
    named = [line for line in err.splitlines() if "slide-b.geojson" in line]
    assert len(named) == 1 and "no slide of the run" in named[0] and "notes.txt" not in err, err
    assert json.loads(report_file.read_text())["unmatched_annotations"] == ["slide-b.geojson"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("prediction", "{broken", "slide_a_prediction.json is not a prediction file"),
        ("prediction", "[1, 2]", "slide_a_prediction.json is not a prediction file"),
        ("tissue", '{"contours": [{"outer": [[1, 2], [3, 4], [5, "x"]], "holes": []}]}', "not a tissue file"),
        ("tissue", '{"contours": {}}', "not a tissue file"),
    ],
)
def test_geojson_of_a_run_with_a_damaged_prediction_or_tissue_file_is_one_line(
    tmp_path, capsys, name, text, message
):
    """A prediction JSON that does not parse (or is no object) and tissue rings holding text were
    internal errors (JSONDecodeError, AttributeError, ValueError); contours that are no list were
    taken as no tissue at all."""
    from cli_runner import run_cli

    run = write_run_folder(tmp_path)
    target = run / "heatmaps" / "slide_a" / "slide_a_prediction.json" if name == "prediction" else (
        run / "tissue" / "slide_a.json"
    )
    target.write_text(text)
    blockmap = run / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
    code, _, err = run_cli(capsys, "wsi", "geojson", blockmap, "-o", tmp_path / "s.geojson", "--tissue")
    assert code == 2 and message in err and "internal error" not in err, err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "s.geojson").exists()


def test_geojson_classes_are_names_even_when_the_prediction_records_a_number(tmp_path):
    """QuPath reads ``classification.name`` as text; a number there came from the prediction JSON as is."""
    run = write_run_folder(tmp_path)
    prediction = run / "heatmaps" / "slide_a" / "slide_a_prediction.json"
    prediction.write_text(json.dumps({**json.loads(prediction.read_text()), "prediction_name": 5}))
    blockmap = run / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
    main(["wsi", "geojson", str(blockmap), "-o", str(tmp_path / "s.json")])
    features = json.loads((tmp_path / "s.json").read_text())["features"]
    assert {feature["properties"]["classification"]["name"] for feature in features} == {"5"}


@pytest.mark.parametrize("command", ["geojson", "evaluate"])
def test_an_output_under_a_file_is_one_line_before_any_work(tmp_path, capsys, command):
    """``-o report.json`` under a path that is a file was an internal error (FileExistsError) from
    making its folder; `wsi evaluate` failed so only after scoring every slide."""
    from cli_runner import run_cli

    run = write_run_folder(tmp_path, fine=False)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    folder = tmp_path / "annotations"
    folder.mkdir()
    (folder / "slide_a.geojson").write_text(json.dumps(QUPATH))
    if command == "geojson":
        blockmap = run / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
        code, out, err = run_cli(capsys, "wsi", "geojson", blockmap, "-o", blocker / "s.geojson")
    else:
        report = blocker / "e.json"
        code, out, err = run_cli(capsys, "wsi", "evaluate", run, "--annotations", folder, "-o", report)
    assert code == 2 and "internal error" not in err and "a_file is a file" in err, err
    assert len(err.strip().splitlines()) == 1 and "FROC" not in out


def test_geojson_written_over_its_own_scores_or_tissue_file_is_refused(tmp_path, capsys):
    """``-o`` naming the blockmap itself (a slip of tab completion) replaced the run's scores with
    the GeoJSON; the tissue file it reads was replaced the same way."""
    from cli_runner import run_cli

    run = write_run_folder(tmp_path, fine=False)
    blockmap = run / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
    tissue = run / "tissue" / "slide_a.json"
    before = blockmap.read_bytes(), tissue.read_bytes()
    for target in (blockmap, tissue, run / "heatmaps" / "slide_a" / ".." / "slide_a" / blockmap.name):
        code, _, err = run_cli(capsys, "wsi", "geojson", blockmap, "-o", target, "--tissue")
        assert code == 2 and "would overwrite" in err and len(err.strip().splitlines()) == 1, err
    assert (blockmap.read_bytes(), tissue.read_bytes()) == before


def test_an_evaluation_report_written_over_an_annotation_file_is_refused(tmp_path, capsys):
    """``-o annotations/slide_a.geojson`` replaced the ground truth with the report."""
    from cli_runner import run_cli

    run = write_run_folder(tmp_path, fine=False)
    folder = tmp_path / "annotations"
    folder.mkdir()
    truth = folder / "slide_a.geojson"
    truth.write_text(json.dumps(QUPATH))
    code, _, err = run_cli(capsys, "wsi", "evaluate", run, "--annotations", folder, "-o", truth)
    assert code == 2 and "would overwrite" in err and len(err.strip().splitlines()) == 1, err
    assert json.loads(truth.read_text()) == QUPATH


@pytest.mark.parametrize(
    ("command", "layout"),
    [("wsi", "empty"), ("evaluate", "empty"), ("wsi", "started"), ("evaluate", "started"),
     ("wsi", "missing")],
)  # `evaluate --run` is click.Path(exists=True): click names a missing folder itself
def test_evaluating_a_folder_that_is_no_run_says_what_evaluate_needs(tmp_path, capsys, command, layout):
    """An empty folder was told "nothing to view", the viewer's wording: it must say that the
    evaluation needs a `wsi run` output folder with heatmaps/blockmaps, and name the folder."""
    from cli_runner import run_cli

    folder = tmp_path / "not_a_run"
    if layout != "missing":
        folder.mkdir()
    if layout == "started":  # a run that has written no slide yet
        (folder / "heatmaps").mkdir()
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    if command == "wsi":
        code, out, err = run_cli(capsys, "wsi", "evaluate", folder, "--annotations", annotations)
    else:
        code, out, err = run_cli(capsys, "evaluate", "--run", folder, "--annotations", annotations)
    err = err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "view" not in err and str(folder) in err and "blockmap" in err, err


def test_a_slide_id_held_by_two_runs_of_a_cohort_is_scored_against_its_own_annotations(tmp_path, capsys):
    """The second run's slide is shown as `<run>-<id>`; the evaluation looked for annotations under that
    name, found none and scored the annotated slide as negative. Both copies must read `<id>.xml`."""
    import shutil

    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for name in ("one", "two"):
        write_run_folder(tmp_path / name, hot=(512, 256))
        shutil.move(tmp_path / name / "run", cohort / name)
    folder = tmp_path / "annotations"
    folder.mkdir()
    (folder / "slide_a.xml").write_text(  # lesions over patches, as in the single-run evaluation above
        ASAP.replace('X="100"', 'X="448"').replace('X="300"', 'X="704"').replace('Y="100"', 'Y="192"')
        .replace('Y="300"', 'Y="448"').replace('PartOfGroup="_2"', 'PartOfGroup="_1"')
    )
    main(["wsi", "evaluate", str(cohort), "--annotations", str(folder), "-o", str(tmp_path / "eval.json")])
    report = json.loads((tmp_path / "eval.json").read_text())
    alone = write_run_folder(tmp_path / "alone", hot=(512, 256))
    main(["wsi", "evaluate", str(alone), "--annotations", str(folder), "-o", str(tmp_path / "alone.json")])
    single = json.loads((tmp_path / "alone.json").read_text())["slides"][0]
    rows = report["slides"]
    assert [row["slide_id"] for row in rows] == ["one-slide_a", "two-slide_a"]  # told apart in the report
    assert all(row["n_regions"] == single["n_regions"] > 0 for row in rows), rows
    assert rows[1]["auc"] == rows[0]["auc"] == single["auc"]
    single_froc = json.loads((tmp_path / "alone.json").read_text())["froc"]
    assert report["froc"]["n_lesions"] == 2 * single_froc["n_lesions"]
    assert report["unmatched_annotations"] == [] and "matching no slide" not in capsys.readouterr().err


def test_geojson_refuses_the_tissue_file_of_another_slide(tmp_path, capsys):
    """``--tissue-file`` of another slide put that slide's contours beside these patches in QuPath,
    without a word; both files record the slide they were made from (its content hash)."""
    import h5py
    from cli_runner import run_cli

    run = write_run_folder(tmp_path, fine=False)
    blockmap = run / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
    with h5py.File(blockmap, "a") as handle:
        handle.attrs.update({"slide": "slide_a.tif", "slide_sha256": "a" * 64})
    tissue = run / "tissue" / "slide_a.json"
    payload = json.loads(tissue.read_text())
    other = tmp_path / "slide_b.json"
    record = {"slide": "slide_b.tif", "slide_sha256": "b" * 64}
    other.write_text(json.dumps({**payload, "provenance": record}))
    args = ["wsi", "geojson", blockmap, "-o", tmp_path / "s.geojson", "--tissue-file"]
    code, _, err = run_cli(capsys, *args, other)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "slide_b.json was made from slide slide_b.tif, not from slide_a.tif" in err
    assert not (tmp_path / "s.geojson").exists()
    same = tmp_path / "same.json"
    same.write_text(json.dumps({**payload, "provenance": {**record, "slide_sha256": "a" * 64}}))
    code, _, err = run_cli(capsys, *args, same)
    assert code == 0 and (tmp_path / "s.geojson").is_file(), err


def test_a_damaged_layer_of_an_evaluated_slide_is_not_counted_as_a_slide_left_out(tmp_path, capsys):
    """A run whose one slide has a fine-map file cut short: its attention was evaluated, yet the layer
    the viewer leaves out was listed under not_evaluated as a second slide ("FROC ... over 1 of 2
    slides")."""
    run = write_run_folder(tmp_path, hot=(512, 256))
    fine = run / "heatmaps" / "slide_a" / "slide_a_fine_maps.h5"
    fine.write_bytes(fine.read_bytes()[:3000])
    folder = tmp_path / "annotations"
    folder.mkdir()
    (folder / "slide_a.xml").write_text(ASAP.replace('X="100"', 'X="448"').replace('X="300"', 'X="704"'))
    main(["evaluate", "--run", str(run), "--annotations", str(folder), "--out", str(tmp_path / "eval"),
          "--methods", "attention"])
    printed = capsys.readouterr()
    report = json.loads((tmp_path / "eval" / "lesions_attention.json").read_text())
    assert report["not_evaluated"] == [] and report["froc"]["n_slides"] == 1
    assert "not evaluated" not in printed.err and " of 2 slides" not in printed.out


def test_lesion_reports_give_the_froc_of_random_scores_beside_the_method(tmp_path, capsys):
    """The lesion report stated no floor: a FROC score means little without the one seeded random patch
    scores reach on the same slides and lesions (a lesion covering much of a slide is hit by chance)."""
    run = write_run_folder(tmp_path, hot=(512, 256))
    folder = tmp_path / "annotations"
    folder.mkdir()
    big = ASAP.replace('X="100"', 'X="64"').replace('X="300"', 'X="960"').replace('Y="100"', 'Y="64"')
    big = big.replace('Y="300"', 'Y="704"').replace('PartOfGroup="_2"', 'PartOfGroup="_1"')
    (folder / "slide_a.xml").write_text(big)
    main(["wsi", "evaluate", str(run), "--annotations", str(folder), "-o", str(tmp_path / "a.json")])
    main(["wsi", "evaluate", str(run), "--annotations", str(folder), "-o", str(tmp_path / "b.json")])
    printed = capsys.readouterr().out
    first, again = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "b.json"))
    assert first["random"] == again["random"]  # seeded: the same floor on every run
    assert first["random"]["froc"]["n_lesions"] == first["froc"]["n_lesions"]
    assert first["random"]["froc"]["froc_score"] >= 0.5  # the big lesion (of two) is found by chance
    assert "random patch scores" in printed and "FROC score" in printed


def test_a_score_set_of_some_slides_only_is_refused_as_such(tmp_path, capsys):
    """`--methods lrp` on a folder of runs where one slide has no lrp scores said "score set(s) not in the
    run: lrp" though the run holds them; the refusal now says they are not on every slide."""
    import shutil

    import h5py

    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for name, slide_id in (("one", "slide_a"), ("two", "slide_b")):
        write_run_folder(tmp_path / name, slide_id=slide_id)
        shutil.move(tmp_path / name / "run", cohort / name)
    with h5py.File(cohort / "two" / "heatmaps" / "slide_b" / "slide_b_blockmap.h5", "a") as handle:
        del handle["scores_lrp"]
    folder = tmp_path / "annotations"
    folder.mkdir()
    (folder / "slide_a.xml").write_text(ASAP.replace('X="100"', 'X="448"').replace('X="300"', 'X="704"'))
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", "--run", str(cohort), "--annotations", str(folder), "--methods", "lrp",
              "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and "not on every slide of the run: lrp" in err
    assert "not in the run" not in err


def test_evaluating_a_run_whose_slide_moved_says_evaluate_not_view(tmp_path, capsys):
    """`evaluate --run` on a run whose slide file was moved said "nothing to view in RUN", the viewer's
    words, to a user who asked for no viewer."""
    run = write_run_folder(tmp_path, hot=(512, 256))
    prediction = json.loads((run / "heatmaps" / "slide_a" / "slide_a_prediction.json").read_text())
    Path(prediction["slide_path"]).unlink()
    folder = tmp_path / "annotations"
    folder.mkdir()
    with pytest.raises(SystemExit) as stopped:
        main(["evaluate", "--run", str(run), "--annotations", str(folder), "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and len(err.splitlines()) == 1
    assert f"nothing to evaluate in {run}" in err and "missing" in err and "view" not in err


def test_geojson_shows_a_bar_over_the_patches_unless_quiet(tmp_path, capsys):
    """200,000 patches take seconds (each a GeoJSON feature) with nothing on the screen."""
    from cli_runner import run_cli

    blockmap = write_run_folder(tmp_path) / "heatmaps" / "slide_a" / "slide_a_blockmap.h5"
    for extra, shown in (((), True), (("--quiet",), False)):
        code, _, err = run_cli(capsys, *extra, "wsi", "geojson", blockmap, "-o", tmp_path / "s.geojson")
        assert code == 0, err
        assert ("/48 [" in err and "patches/s" in err) == shown, err
