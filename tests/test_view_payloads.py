"""What the viewer says of each slide: the colour scale of each score set (the one its legend states and
its tiles use), the version an open page reloads on, the label."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from attnmap.mil.explain import METHODS
from attnmap.view.score_files import read_score_sets


def _mil_scores_file(path: Path, rng: np.random.Generator) -> Path:
    """A scores file laid out as `mil attention --method all` writes it, every relevance score
    positive (a slide whose every patch speaks for the class: it happens, and sign is still the
    point of these methods)."""
    coords = np.stack(np.meshgrid(np.arange(0, 512, 64), np.arange(0, 256, 64)), -1).reshape(-1, 2)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("coords", data=coords)
        handle.attrs["patch_size"] = 64
        handle.create_dataset("attention_scores", data=rng.normal(2.0, 0.1, (len(coords), 1)))
        for method in METHODS:
            handle.create_dataset(f"scores_{method}", data=rng.uniform(0.01, 0.02, len(coords)))
    return path


@pytest.mark.parametrize("method", [m for m in METHODS if m != "attention"])
def test_every_mil_relevance_method_is_drawn_signed_even_when_all_its_scores_are_positive(tmp_path, method):
    """`gradient_x_input` and `integrated_gradients` (the names `mil attention` writes) were not
    known as signed: all-positive scores were drawn on jet between their percentiles, the least
    positive patch in the colour of "nothing here", against the docs' "signed scores on a diverging
    map centred on 0"."""
    sets = read_score_sets(_mil_scores_file(tmp_path / "bag_attention.h5", np.random.default_rng(0)))
    assert sets[method].scale.kind == "diverging"
    assert sets[method].scale.low == -sets[method].scale.high
    assert sets["attention"].scale.kind == "robust"  # raw attention: zero means nothing


def _report(run: Path, cmap: str) -> None:
    """A `run_report.json` recording the colour map the run drew its heatmaps with."""
    import json

    parameters = json.dumps({"heatmap": {"cmap": cmap}})
    (run / "run_report.json").write_text(json.dumps({"provenance": {"parameters": parameters}}))


def test_a_rerun_that_only_changes_the_colour_map_changes_the_slides_version(tmp_path):
    """A rerun with another `heatmap.cmap` redraws only the pictures: the scores are the same. The
    slide's version (what an open page compares to know it must reload) was a digest of the scores,
    so it stayed, and the open page kept its colour bar in the old colour map over tiles drawn in
    the new one."""
    from view_fixtures import write_run_folder

    from attnmap.view import ViewerContent, find_slides

    run = write_run_folder(tmp_path, fine=False)
    _report(run, "jet")
    content = ViewerContent(find_slides(run), reload=lambda: find_slides(run), watch=[run], check_interval=0)
    try:
        before = content.slide_version(0)
        assert content.info(0)["methods"][0]["scale"]["cmap"] == "jet"
        _report(run, "viridis")
        content.refresh()
        assert content.info(0)["methods"][0]["scale"]["cmap"] == "viridis"
        assert content.slide_version(0) != before  # the open page reloads: bar and tiles in viridis
        assert content.info(0)["version"] == content.slide_version(0)
    finally:
        content.close()


def test_a_slide_list_without_labels_gives_the_page_no_label(tmp_path):
    """A slide CSV without a label column (allowed: the label is optional) makes `wsi run` record
    ``"label": ""``; the page titled the slide "... — label" with nothing after it. No label is
    given as none, as for a prediction without the field."""
    import json

    from view_fixtures import write_run_folder

    from attnmap.view import ViewerContent, find_slides

    run = write_run_folder(tmp_path, fine=False)
    prediction = run / "heatmaps" / "slide_a" / "slide_a_prediction.json"
    prediction.write_text(json.dumps({**json.loads(prediction.read_text()), "label": ""}))
    content = ViewerContent(find_slides(run))
    try:
        assert content.slide_list()["slides"][0]["label"] is None
        assert content.info(0)["prediction"]["label"] is None
    finally:
        content.close()


@pytest.mark.parametrize(
    "heatmap",
    [
        {"scale": "minmax", "cmap": "viridis"},
        {"scale": "clam"},
        {"scale": "clam", "percentiles": False},
        {"scale": "diverging", "cmap": "RdBu_r"},
        {"scale": "robust"},
    ],
    ids=["minmax", "clam", "clam-raw", "diverging", "robust"],
)
def test_the_viewer_colours_a_runs_attention_on_the_scale_its_heatmap_png_used(tmp_path, heatmap):
    """The viewer drew the attention of every run between its 1st and 99th percentile (following only
    `heatmap.cmap`): a run with `heatmap.scale: clam`, `minmax` or `diverging` had a PNG coloured
    otherwise than the viewer's tiles. The tiles now take the PNG's values, and the legend its scale;
    a relevance set keeps its own rule (signed: diverging)."""
    import json

    from view_fixtures import write_run_folder

    from attnmap.view import ViewerContent, find_slides
    from attnmap.wsi.heatmap.scores import prepare_values
    from attnmap.wsi.pipeline.legend import display_scores

    run = write_run_folder(tmp_path, fine=False)
    parameters = json.dumps({"heatmap": {"cmap": "jet", "percentiles": True, **heatmap}})
    (run / "run_report.json").write_text(json.dumps({"provenance": {"parameters": parameters}}))
    content = ViewerContent(find_slides(run))
    try:
        attention = content.slides[0].score_sets["attention"]
        values, reference, percentiles, png_scale = display_scores(
            attention.scores, None, heatmap["scale"], heatmap.get("percentiles", True),
            heatmap.get("cmap", "jet"),
        )
        drawn = np.clip(prepare_values(values, percentiles, reference), 0.0, 1.0)  # what the PNG colours
        assert np.allclose(content.layer(0, "heat-0").values, drawn)
        shown = content.info(0)["methods"][0]
        assert {key: shown["scale"][key] for key in png_scale.to_json()} == png_scale.to_json()
        assert f"heatmap.scale: {heatmap['scale']}" in shown["note"]
        assert content.info(0)["methods"][1]["scale"]["kind"] == "diverging"  # lrp: its own rule
    finally:
        content.close()
