"""`mil attention` names the predicted class: from the fold's ``model.json`` beside the checkpoint
(written by `mil train`) or ``--class-names``; ``p_<c>`` columns stay as they were."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_runner import run_cli as cli

from attnmap.mil.bags import write_h5_bag

pytestmark = pytest.mark.usefixtures("single_thread")


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    from synthetic_slide_files import write_clam_checkpoint

    (tmp_path / "fold_0").mkdir()
    checkpoint = write_clam_checkpoint(tmp_path / "fold_0" / "checkpoint.pt", embed_dim=8)
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        write_h5_bag(tmp_path / "bags" / f"{name}.h5", rng.normal(size=(5, 8)).astype(np.float32),
                     np.zeros((5, 2)))
    return checkpoint, tmp_path / "bags"


def _predictions(out: Path) -> list[dict[str, str]]:
    with open(out / "predictions.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_predictions_name_the_class_recorded_beside_the_checkpoint(tmp_path: Path, capsys) -> None:
    checkpoint, bags = _setup(tmp_path)
    names = ["benign", "tumour, LUAD"]
    (checkpoint.parent / "model.json").write_text(json.dumps({"n_classes": 2, "class_names": names}))
    code, out, err = cli(capsys, "mil", "attention", checkpoint, bags, "-o", tmp_path / "out", "--quiet")
    assert code == 0, err
    rows = _predictions(tmp_path / "out")
    assert list(rows[0])[:7] == ["slide_id", "prediction", "prediction_name", "branch", "n_patches",
                                 "p_0", "p_1"]
    for row in rows:
        assert row["prediction_name"] == names[int(row["prediction"])]
        assert int(row["prediction"]) == int(np.argmax([float(row["p_0"]), float(row["p_1"])]))
        with h5py.File(tmp_path / "out" / f"{row['slide_id']}_attention.h5") as handle:
            assert handle.attrs["prediction_name"] == row["prediction_name"]
            assert json.loads(handle.attrs["class_names"]) == names
        sidecar = json.loads((tmp_path / "out" / f"{row['slide_id']}_attention.json").read_text())
        assert sidecar["prediction_name"] == row["prediction_name"]
        assert f"({row['prediction_name']})" in out

    # --class-names wins over the file beside the checkpoint
    code, _, err = cli(capsys, "mil", "attention", checkpoint, bags, "-o", tmp_path / "out", "--quiet",
                       "--class-names", "N,T")
    assert code == 0, err
    assert {row["prediction_name"] for row in _predictions(tmp_path / "out")} <= {"N", "T"}


def test_without_names_the_table_is_as_before(tmp_path: Path, capsys) -> None:
    checkpoint, bags = _setup(tmp_path)
    code, _, err = cli(capsys, "mil", "attention", checkpoint, bags, "-o", tmp_path / "out", "--quiet")
    assert code == 0, err
    assert list(_predictions(tmp_path / "out")[0]) == ["slide_id", "prediction", "branch", "n_patches",
                                                       "p_0", "p_1"]
    with h5py.File(tmp_path / "out" / "a_attention.h5") as handle:
        assert "prediction_name" not in handle.attrs


@pytest.mark.parametrize(
    ("recorded", "given", "problem"),
    [
        (["a", "b", "c"], None, "model.json"),  # another model's file: 3 names for 2 classes
        ("ab", None, "model.json"),
        (None, "x", "--class-names"),
        (None, "x,y,z", "--class-names"),
        (None, "x,x", "--class-names"),
        (None, "x,", "--class-names"),
    ],
)
def test_names_that_do_not_fit_the_model_are_refused_in_one_line(tmp_path, capsys, recorded, given, problem):
    checkpoint, bags = _setup(tmp_path)
    if recorded is not None:
        (checkpoint.parent / "model.json").write_text(json.dumps({"class_names": recorded}))
    extra = ("--class-names", given) if given is not None else ()
    code, _, err = cli(capsys, "mil", "attention", checkpoint, bags, "-o", tmp_path / "out", *extra)
    assert code == 2 and len(err.strip().splitlines()) == 1 and problem in err
    assert (recorded is None) or "give --class-names" in err  # the way past another model's file
    assert not (tmp_path / "out").exists()


def test_a_model_json_without_class_names_is_not_ours_and_ignored(tmp_path, capsys) -> None:
    checkpoint, bags = _setup(tmp_path)
    (checkpoint.parent / "model.json").write_text(json.dumps({"architectures": ["Other"]}))
    code, _, err = cli(capsys, "mil", "attention", checkpoint, bags, "-o", tmp_path / "out", "--quiet")
    assert code == 0, err
    assert "prediction_name" not in _predictions(tmp_path / "out")[0]


def test_target_may_be_a_class_name(tmp_path: Path, capsys) -> None:
    """explain takes --target stroma; mil attention took indices only, though it knows the names."""
    checkpoint, bags = _setup(tmp_path)
    (checkpoint.parent / "model.json").write_text(json.dumps({"class_names": ["benign", "tumour"]}))
    runs = {}
    for target in ("tumour", "1"):
        code, _, err = cli(capsys, "mil", "attention", checkpoint, bags / "a.h5", "-o", tmp_path / target,
                           "--quiet", "--method", "gradient_x_input", "--target", target)
        assert code == 0, err
        with h5py.File(tmp_path / target / "a_attention.h5") as handle:
            assert int(handle.attrs["target"]) == 1
            runs[target] = handle["scores_gradient_x_input"][:]
    np.testing.assert_array_equal(runs["tumour"], runs["1"])
    refused = ("mil", "attention", checkpoint, bags, "-o", tmp_path / "x", "--target")
    code, _, err = cli(capsys, *refused, "Tumor")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'benign', 'tumour'" in err
    for target in ("2", "-1"):
        code, _, err = cli(capsys, *refused, target)
        assert code == 2 and "out of range" in err
    (checkpoint.parent / "model.json").unlink()
    code, _, err = cli(capsys, *refused, "tumour")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--class-names" in err
    assert not (tmp_path / "x").exists()


def test_a_model_json_of_another_architecture_is_refused(tmp_path, capsys) -> None:
    """Two class names fit any two-class model: a model.json left by another fold's model (here an
    ABMIL on 16-d features beside a CLAM on 8-d) named its classes without a word."""
    checkpoint, bags = _setup(tmp_path)
    record = {"model": "abmil", "embed_dim": 16, "n_classes": 2, "gate": True, "class_names": ["x", "y"]}
    (checkpoint.parent / "model.json").write_text(json.dumps(record))
    code, _, err = cli(capsys, "mil", "attention", checkpoint, bags, "-o", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "another model" in err and "--class-names" in err
    code, _, err = cli(capsys, "mil", "attention", checkpoint, bags, "-o", tmp_path / "out", "--quiet",
                       "--class-names", "a,b")
    assert code == 0, err


@pytest.mark.parametrize("target", [" tumour ", "TUMOUR", "Tumor", "+1 "])
def test_a_class_name_target_follows_explains_rule(tmp_path: Path, capsys, target: str) -> None:
    """mil attention matched a name exactly; explain also ignored case but not spaces around it, and
    each refused an unknown name in its own words (one listed the names, the other did not)."""
    from torch import nn

    from attnmap.errors import InputError
    from attnmap.vit.original import class_index

    checkpoint, bags = _setup(tmp_path)
    names = ["benign", "tumour"]
    (checkpoint.parent / "model.json").write_text(json.dumps({"class_names": names}))
    vit = nn.Module()
    vit.pretrained_cfg = {"label_names": names}  # how a timm model names its classes
    try:
        explained = class_index(vit, target) if target.strip().isalpha() else int(target)
    except InputError as error:
        explained = str(error)
    code, _, err = cli(capsys, "mil", "attention", checkpoint, bags / "a.h5", "-o", tmp_path / "out",
                       "--quiet", "--method", "gradient_x_input", "--target", target)
    if isinstance(explained, str):  # refused by both, in the same words, naming every class
        assert "'benign', 'tumour'" in explained and "similar: 'tumour'" in explained
        assert code == 2 and err.strip() == f"attnmap: error: {explained}"
    else:
        assert explained == 1 and code == 0, err
        with h5py.File(tmp_path / "out" / "a_attention.h5") as handle:
            assert int(handle.attrs["target"]) == 1


def test_a_fold_or_run_folder_as_the_checkpoint_says_which_file_to_give(tmp_path: Path, capsys) -> None:
    """`mil attention runs/clam/fold_0 ...` stopped at click's "File '...' is a directory"; the whole
    run folder too, where the loader's own folder message would have suggested a Hugging Face one."""
    checkpoint, bags = _setup(tmp_path)
    for given in (tmp_path / "fold_0", tmp_path):
        code, _, err = cli(capsys, "mil", "attention", given, bags, "-o", tmp_path / "out")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert str(checkpoint) in err and "Hugging Face" not in err and "is a directory" not in err
    assert not (tmp_path / "out").exists()
