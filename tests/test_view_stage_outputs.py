"""`attnmap view` on what the single-stage whole-slide commands write (no `wsi run` around them)."""

from __future__ import annotations

from pathlib import Path

from cli_runner import run_cli as cli
from synthetic_slide_files import write_test_slide, write_tiny_encoder

SEGMENT = ["--seg-level", "1", "--a-t", "0.05", "--a-h", "0.01"]


def test_a_folder_of_stage_outputs_is_named_as_such_with_how_to_get_scores(tmp_path: Path, capsys) -> None:
    """`wsi segment|patch -o out` then `attnmap view out`: the viewer said it expected a run folder,
    a folder of them or a slide with --scores, as if out were none of the run's layout."""
    slides = [write_test_slide(tmp_path / "x.ome.tif", seed=1), write_test_slide(tmp_path / "b.tif", seed=2)]
    out = tmp_path / "out"
    code, _, err = cli(capsys, "wsi", "patch", *slides, "-o", out, "--patch-size", "64", *SEGMENT)
    assert code == 0, err
    assert (out / "tissue" / "x.json").is_file() and (out / "patches" / "x.h5").is_file()
    code, stdout, err = cli(capsys, "view", out, "--export", tmp_path / "site")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "tissue/, patches/ of `wsi segment|patch|features` but no scores to draw" in lines[0]
    assert f"run.output_dir {out}" in lines[0] and "--scores" in lines[0]
    assert not (tmp_path / "site").exists()


def test_a_patch_or_features_file_is_named_not_offered_as_scores(tmp_path: Path, capsys) -> None:
    """`attnmap view out/patches/x.h5` said it "is a scores file, not a slide: give the slide with
    --scores out/patches/x.h5", and that command then said the file holds no score dataset."""
    slide = write_test_slide(tmp_path / "x.ome.tif", seed=1)
    encoder = write_tiny_encoder(tmp_path / "encoder.pt")
    out = tmp_path / "out"
    code, _, err = cli(capsys, "wsi", "features", slide, "-o", out, "--patch-size", "64", *SEGMENT,
                       "--encoder", encoder, "--input-size", "32")
    assert code == 0, err
    files = {"patch coordinates": out / "patches" / "x.h5", "features": out / "features/h5_files/x.h5"}
    for what, path in files.items():
        for args in ((path,), (slide, "--scores", path)):
            code, _, err = cli(capsys, "view", *args, "--export", tmp_path / "site")
            lines = err.strip().splitlines()
            assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
            assert "is a scores file" not in lines[0] and "holds no score dataset" in lines[0]
            assert f"it holds {what} (`wsi patch|features`)" in lines[0] and "mil attention" in lines[0]


def test_an_ome_tiff_slides_annotations_under_qupaths_name_are_drawn(tmp_path: Path, capsys) -> None:
    """QuPath names an export after the image, ``x.ome.tif.geojson``; the OME-TIFF's slide id is
    ``x``, and the lookup cut only ``.tif``, so the outlines were left out ("matching no slide")."""
    import json

    from view_fixtures import write_run_folder

    from attnmap.view import ViewerContent, find_slides

    run = write_run_folder(tmp_path, "x", fine=False)
    slide = (tmp_path / "slides" / "x.tif").rename(tmp_path / "slides" / "x.ome.tif")
    prediction = run / "heatmaps" / "x" / "x_prediction.json"
    prediction.write_text(json.dumps({**json.loads(prediction.read_text()), "slide_path": str(slide)}))
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    (annotations / "x.ome.tif.geojson").write_text(
        '{"type": "Polygon", "coordinates": [[[600, 300], [900, 300], [900, 600], [600, 300]]]}'
    )
    content = ViewerContent(find_slides(run, annotations=annotations), check_interval=0)
    try:
        assert content.info(0)["id"] == "x" and content.info(0)["annotations"] is not None
    finally:
        content.close()
    code, _, err = cli(capsys, "view", run, "--annotations", annotations, "--export", tmp_path / "site")
    assert code == 0 and "matching no slide" not in err, err
