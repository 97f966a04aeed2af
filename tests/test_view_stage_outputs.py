"""`attnmap view` on what the single-stage whole-slide commands write (no `wsi run` around them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
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


@pytest.mark.filterwarnings("ignore:.*records no patch size")
def test_a_slide_with_mil_attention_scores_shows_the_named_prediction(tmp_path: Path, capsys) -> None:
    """`attnmap view SLIDE --scores <id>_attention.h5` (of `mil attention`, whose model names its
    classes) showed no prediction at all, though the file records the class, its name and the
    probabilities; the page's slide list now carries them as for a `wsi run` slide."""
    import csv
    import json
    import re
    import threading
    import urllib.request

    from synthetic_slide_files import write_clam_checkpoint

    from attnmap.mil.bags import write_h5_bag
    from attnmap.view import ViewerContent, discover, make_server

    slide = write_test_slide(tmp_path / "x.ome.tif", seed=1)
    (tmp_path / "fold_0").mkdir()
    checkpoint = write_clam_checkpoint(tmp_path / "fold_0" / "checkpoint.pt", embed_dim=8)
    names = ["benign", "tumour, LUAD"]
    (checkpoint.parent / "model.json").write_text(json.dumps({"n_classes": 2, "class_names": names}))
    xs, ys = np.meshgrid(np.arange(0, 1024, 64), np.arange(0, 768, 64))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)
    features = np.random.default_rng(0).normal(size=(len(coords), 8)).astype(np.float32)
    write_h5_bag(tmp_path / "bags" / "x.h5", features, coords)
    out = tmp_path / "att"
    code, _, err = cli(capsys, "mil", "attention", checkpoint, tmp_path / "bags", "-o", out, "--quiet")
    assert code == 0, err
    with open(out / "predictions.csv", newline="") as handle:
        (row,) = csv.DictReader(handle)
    predicted = int(row["prediction"])
    content = ViewerContent(discover(slide, [out / "x_attention.h5"]), check_interval=0)
    server = make_server(content, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/data/slides.js"
        with urllib.request.urlopen(url) as response:
            text = response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        content.close()
    (listed,) = json.loads(re.fullmatch(r'attnmapData\("slides", (.*)\);?\s*', text, re.S).group(1))["slides"]
    assert listed["id"] == "x" and listed["prediction"] == names[predicted] == row["prediction_name"]
    assert listed["probability"] == pytest.approx(float(row[f"p_{predicted}"]))


def test_folders_of_wsi_heatmap_and_mil_attention_say_what_to_give(tmp_path: Path, capsys) -> None:
    """`attnmap view out` on `wsi heatmap --model -o out` (pictures only) or `mil attention -o out`
    (<id>_attention.h5) said it expected a `wsi run` folder, naming neither what out holds nor how to
    view it (the slide with --scores)."""
    from synthetic_slide_files import write_clam_checkpoint

    from attnmap.mil.bags import write_h5_bag

    slide = write_test_slide(tmp_path / "x.ome.tif", seed=1)
    checkpoint = write_clam_checkpoint(tmp_path / "checkpoint.pt", embed_dim=8)
    xs, ys = np.meshgrid(np.arange(0, 1024, 64), np.arange(0, 768, 64))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)
    bag = tmp_path / "bags" / "x.h5"
    write_h5_bag(bag, np.ones((len(coords), 8), np.float32), coords)
    code, _, err = cli(capsys, "wsi", "heatmap", slide, "--features", bag, "--model", checkpoint,
                       "--class-names", "benign,tumour", "--patch-size", "64", "-o", tmp_path / "heat")
    assert code == 0, err
    code, _, err = cli(capsys, "mil", "attention", checkpoint, bag, "-o", tmp_path / "att", "--quiet")
    assert code == 0, err
    for folder, said in (("heat", "heatmap pictures (x_heatmap.png) of `wsi heatmap`"),
                         ("att", f"--scores {tmp_path / 'att' / 'x_attention.h5'}")):
        code, _, err = cli(capsys, "view", tmp_path / folder, "--export", tmp_path / "site")
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
        assert said in lines[0] and "expected a `wsi run` output folder" not in lines[0]


def test_a_run_blockmap_given_as_scores_shows_the_runs_class_name(tmp_path: Path) -> None:
    """A `wsi run` blockmap records only the predicted class's index: given with --scores, the slide
    showed "predicted 1" where the run's own page says the class's name (its prediction JSON)."""
    import json

    from view_fixtures import write_run_folder

    from attnmap.view import ViewerContent, discover

    run = write_run_folder(tmp_path, "x", fine=False)
    recorded = json.loads((run / "heatmaps" / "x" / "x_prediction.json").read_text())
    blockmap = run / "heatmaps" / "x" / "x_blockmap.h5"
    content = ViewerContent(discover(tmp_path / "slides" / "x.tif", [blockmap]))
    try:
        (listed,) = content.slide_list()["slides"]
    finally:
        content.close()
    assert listed["prediction"] == recorded["prediction_name"]
    assert listed["probability"] == pytest.approx(recorded["probabilities"][recorded["prediction"]])
