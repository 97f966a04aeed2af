"""`wsi run` names its predictions with the class names `mil train` recorded beside the checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml
from cli_runner import run_cli as cli
from synthetic_slide_files import write_pipeline_setup


def _setup(tmp_path: Path) -> Path:
    """A one-slide setup whose configuration gives no model.class_names."""
    config_path = write_pipeline_setup(tmp_path, n_slides=1)
    raw = yaml.safe_load(config_path.read_text())
    raw["model"].pop("class_names")
    config_path.write_text(yaml.safe_dump(raw))
    return config_path


def _predictions(out: Path) -> list[dict[str, str]]:
    with open(out / "predictions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_names_its_predictions_from_the_model_json_beside_the_checkpoint(tmp_path: Path, capsys) -> None:
    """A fold of `mil train` (checkpoint + model.json with class_names): `wsi run` wrote class indices."""
    config_path = _setup(tmp_path)
    names = ["benign", "malignant"]
    record = {"model": "clam_sb", "n_classes": 2, "class_names": names}
    (tmp_path / "model.json").write_text(json.dumps(record))
    code, _, err = cli(capsys, "wsi", "run", config_path, "--quiet")
    assert code == 0, err
    (row,) = _predictions(tmp_path / "out")
    assert row["prediction_name"] == names[int(row["prediction"])]
    stored = json.loads((tmp_path / "out" / "heatmaps" / "slide_0" / "slide_0_prediction.json").read_text())
    assert stored["prediction_name"] == names[stored["prediction"]]

    # the configuration's own names win over the file's, as --class-names does for `mil attention`
    raw = yaml.safe_load(config_path.read_text())
    raw["model"]["class_names"] = ["a", "b"]
    config_path.write_text(yaml.safe_dump(raw))
    code, _, err = cli(capsys, "wsi", "run", config_path, "--quiet")
    assert code == 0, err
    (row,) = _predictions(tmp_path / "out")
    assert row["prediction_name"] == ["a", "b"][int(row["prediction"])]


def test_a_model_json_that_does_not_fit_is_refused_in_the_config_words(tmp_path: Path, capsys) -> None:
    config_path = _setup(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"class_names": ["x", "y", "z"]}))
    code, _, err = cli(capsys, "wsi", "run", config_path, "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "model.json (beside the checkpoint) names 3 classes" in err and "give model.class_names" in err
    assert "--class-names" not in err and not (tmp_path / "out" / "predictions.csv").exists()


def test_heatmap_of_a_models_attention_names_the_predicted_class(tmp_path: Path, capsys) -> None:
    """`wsi heatmap --features --model` titled its picture 'predicted class 1' beside a model.json
    naming the classes, which `mil attention` reads."""
    import h5py
    import numpy as np
    from synthetic_slide_files import write_clam_checkpoint, write_test_slide

    from attnmap.io_utils import read_png_text

    slide = write_test_slide(tmp_path / "s1.tif", seed=1)
    coords = np.stack(np.meshgrid(np.arange(0, 1024, 64), np.arange(0, 768, 64)), -1).reshape(-1, 2)
    features = tmp_path / "s1.h5"
    with h5py.File(features, "w") as handle:
        handle["features"] = np.random.default_rng(0).normal(size=(len(coords), 8)).astype(np.float32)
        handle["coords"] = coords
    (tmp_path / "fold_0").mkdir()  # as `mil train` leaves a fold: checkpoint.pt and model.json
    checkpoint = write_clam_checkpoint(tmp_path / "fold_0" / "checkpoint.pt")
    names = ["benign", "malignant"]
    (checkpoint.parent / "model.json").write_text(json.dumps({"n_classes": 2, "class_names": names}))
    args = ["wsi", "heatmap", slide, "--features", features, "--model", checkpoint, "--patch-size", "64"]
    code, _, err = cli(capsys, *args, "-o", tmp_path / "a")
    assert code == 0, err
    record = read_png_text(tmp_path / "a" / "s1_heatmap.png")
    assert record["prediction_name"] == names[int(record["prediction"])]
    code, _, err = cli(capsys, *args, "-o", tmp_path / "b", "--class-names", "x,y")
    assert code == 0, err
    record = read_png_text(tmp_path / "b" / "s1_heatmap.png")
    assert record["prediction_name"] == ["x", "y"][int(record["prediction"])]
    (checkpoint.parent / "model.json").write_text(json.dumps({"class_names": ["x", "y", "z"]}))
    code, _, err = cli(capsys, *args, "-o", tmp_path / "c")
    assert code == 2 and "names 3 classes" in err and "give --class-names" in err
    assert not (tmp_path / "c").exists()
