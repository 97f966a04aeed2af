"""`wsi run` never leaves an earlier configuration's results where they would be taken for this
run's: not after a rerun that fails, not for files a configuration stops or starts asking for,
not in the legend's class names or the QuPath export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from synthetic_slide_files import write_changed_config, write_clam_checkpoint, write_pipeline_setup

from attnmap.errors import InputError
from attnmap.view.sources import discover
from attnmap.wsi.pipeline import run_slide
from attnmap.wsi.pipeline.config import load_config, read_slide_list
from attnmap.wsi.pipeline.outputs import SlideOutputs


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pipeline_setup(tmp_path_factory.mktemp("stale"), n_slides=1)


def _run(setup: Path, out: Path, **sections: dict) -> dict:
    config = load_config(write_changed_config(setup, out, **sections))
    return run_slide(read_slide_list(config)[0], config)


def test_a_failed_rerun_leaves_no_result_of_the_earlier_configuration(setup: Path, tmp_path: Path) -> None:
    """A new a_t that finds no tissue: the old scores, heatmap and prediction were kept beside the
    new tissue file, and the viewer showed them as this run's."""
    out = tmp_path / "out"
    _run(setup, out, export={"geojson": True})
    assert [slide.slide_id for slide in discover(out)] == ["slide_0"]
    with pytest.raises(InputError, match="no tissue"):
        _run(setup, out, segmentation={"a_t": 1000.0}, export={"geojson": True})
    left = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert left == ["tissue/slide_0.json"]  # the new segmentation, and nothing made before it
    with pytest.raises(InputError, match="nothing to view"):
        discover(out)
    result = _run(setup, out, export={"geojson": True})  # back to the first configuration: all remade
    assert all(result["stages"].values()) and "tissue (segmentation.a_t changed)" in result["summary"]


def test_reused_outputs_stay_and_the_reasons_name_the_change(setup: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(setup, out)
    features = SlideOutputs(out, "slide_0").features_h5
    made = features.stat().st_mtime_ns
    result = _run(setup, out, model={"checkpoint": str(write_clam_checkpoint(tmp_path / "other.pt", seed=3))})
    assert features.stat().st_mtime_ns == made  # reusable: not deleted with the stale ones
    assert "attention (model.sha256, model.size changed)" in result["summary"]


def test_files_no_longer_asked_for_go_even_when_all_else_is_reused(setup: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    outputs = SlideOutputs(out, "slide_0")
    _run(setup, out, heatmap={"tiff": True, "save_original": True})
    assert outputs.named("heatmap.tif").is_file() and outputs.named("original.png").is_file()
    result = _run(setup, out)
    assert not outputs.named("heatmap.tif").exists() and not outputs.named("original.png").exists()
    assert not any(result["stages"].values()), result["summary"]
    assert _run(setup, out)["summary"] == "slide_0: reused all stages"


def test_geojson_export_follows_the_scores_and_the_switch(setup: Path, tmp_path: Path) -> None:
    """Turned on after a finished run it was never written; a new model left the old scores in it."""
    out = tmp_path / "out"
    geojson = SlideOutputs(out, "slide_0").named("scores.geojson")

    def measurements() -> list[float]:
        features = json.loads(geojson.read_text())["features"]
        return [f["properties"]["measurements"]["attention"] for f in features
                if "measurements" in f["properties"]]

    _run(setup, out)
    result = _run(setup, out, export={"geojson": True})
    assert geojson.is_file() and result["reasons"]["export"] == "missing"
    first = measurements()
    other = write_clam_checkpoint(tmp_path / "other.pt", seed=3)
    result = _run(setup, out, export={"geojson": True}, model={"checkpoint": str(other)})
    assert result["reasons"]["export"] and measurements() != first
    scores = json.loads(SlideOutputs(out, "slide_0").prediction.read_text())
    assert scores["provenance"]["model_sha256"] == json.loads(
        SlideOutputs(out, "slide_0").named("scores.geojson.json").read_text()
    )["provenance"]["model_sha256"]
    _run(setup, out, model={"checkpoint": str(other)})
    assert not geojson.exists()


def test_new_class_names_redraw_the_legend_that_names_them(setup: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(setup, out, heatmap={"legend": True})
    result = _run(setup, out, heatmap={"legend": True}, model={"class_names": ["benign", "malignant"]})
    assert result["stages"]["heatmap"] and result["reasons"]["heatmap"] == "class_names changed"
    assert not _run(setup, out, heatmap={"legend": False}, model={"class_names": ["a", "b"]})["stages"][
        "attention"
    ]


def test_kept_samples_record_only_what_made_them(setup: Path, tmp_path: Path) -> None:
    """New class names leave the sampled crops as they are: their list recorded the old names, so a
    rerun's samples.json differed from a fresh run's (found by bench/wsi_config_sweep.py)."""
    out, fresh = tmp_path / "out", tmp_path / "fresh"
    names = {"class_names": ["benign", "malignant"]}
    _run(setup, out)
    assert not _run(setup, out, model=names)["stages"]["sampling"]
    _run(setup, fresh, model=names)
    kept, made = (json.loads(SlideOutputs(folder, "slide_0").named("samples.json").read_text())
                  for folder in (out, fresh))
    assert kept["files"] == made["files"]
    assert kept["provenance"]["parameters"] == made["provenance"]["parameters"]
    recorded = json.loads(made["provenance"]["parameters"])["model"]
    assert recorded == {"checkpoint": str(setup.parent / "clam.pt")}


def test_every_optional_output_turned_off_goes_and_the_summary_says_so(setup: Path, tmp_path: Path) -> None:
    """Each option of a run turned off again (TIFF, original, overlap grid, fine maps, sample crops,
    GeoJSON, features .pt): their files of the earlier run are removed, named in the slide's line,
    and the viewer no longer shows the fine maps. The .pt stayed, and removals went unsaid."""
    import torch

    write_clam_checkpoint(setup.parent / "clam64.pt", embed_dim=64)
    vit = {"encoder": "timm:test_vit", "input_size": 32, "encoder_args": {"global_pool": "token"}}
    common = {"model": {"checkpoint": "clam64.pt"}}
    out = tmp_path / "out"
    outputs = SlideOutputs(out, "slide_0")
    _run(setup, out, features=vit, heatmap={"tiff": True, "save_original": True, "overlap": 0.5,
                                            "fine": {"top_k": 2}}, export={"geojson": True}, **common)
    optional = ["heatmap.tif", "original.png", "overlap_blockmap.h5", "fine_maps.h5", "fine_gallery.png",
                "heatmap_fine.tif", "samples.json", "scores.geojson", "scores.geojson.json"]
    assert all(outputs.named(name).is_file() for name in optional)
    assert outputs.features_pt.is_file() and (outputs.heatmap_dir / "topk_high_attention").is_dir()
    assert "fine maps (lrp)" in discover(out)[0].score_sets
    off = {"features": {**vit, "save_pt": False}, "sampling": {"top_k": 0, "bottom_k": 0}, **common}
    result = _run(setup, out, **off)
    assert result["summary"].endswith(
        "; removed heatmap.tif, original.png, overlap_blockmap.h5, fine_maps.h5, fine_gallery.png, "
        "heatmap_fine.tif, sample crops, scores.geojson, pt_files/slide_0.pt (not asked)"
    ), result["summary"]
    left = sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file())
    assert left == ["features/h5_files/slide_0.h5", "heatmaps/slide_0/slide_0_blockmap.h5",
                    "heatmaps/slide_0/slide_0_heatmap.png", "heatmaps/slide_0/slide_0_prediction.json",
                    "patches/slide_0.h5", "tissue/slide_0.json"]
    assert list(discover(out)[0].score_sets) == ["attention"]
    torch.save(torch.zeros(3, 64), outputs.features_pt)  # a CLAM .pt the user put there: an input, kept
    again = _run(setup, out, **off)
    assert again["summary"] == "slide_0: reused all stages" and outputs.features_pt.is_file()


def test_a_lone_removal_is_said_in_the_line_of_a_slide_otherwise_reused(setup: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(setup, out, heatmap={"tiff": True})
    assert _run(setup, out)["summary"] == "slide_0: reused all stages; removed heatmap.tif (not asked)"
