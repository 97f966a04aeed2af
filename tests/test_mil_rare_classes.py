"""Labels a cohort really has: rare classes, more folds than cases of a class, gaps in integer labels.
Each is refused in one line before any training, rather than folds trained or tested without a class."""

from __future__ import annotations

import numpy as np
import pytest
from cli_runner import run_cli

from attnmap.errors import InputError
from attnmap.mil import write_h5_bag
from attnmap.mil.splits import make_folds, read_labels


def _labels(tmp_path, labels, name="labels.csv"):
    path = tmp_path / name
    path.write_text("slide_id,label\n" + "".join(f"s{i},{label}\n" for i, label in enumerate(labels)))
    return path


def test_a_class_rarer_than_the_folds_is_named(tmp_path):
    cohort = read_labels(_labels(tmp_path, ["tumour", "normal"] * 4))  # 4 cases per class
    assert len(make_folds(cohort, 4)) == 4
    for split in make_folds(cohort, 4):  # every test fold holds one case of each class
        assert sorted(cohort.labels[cohort.slide_ids.index(s)] for s in split.test) == [0, 1]
    with pytest.raises(InputError, match=r"class .normal. has 4 case\(s\), fewer than the 5 folds") as error:
        make_folds(cohort, 5)
    assert "use 4 folds or fewer" in str(error.value)
    single = read_labels(_labels(tmp_path, ["a"] * 7 + ["b"], "single.csv"))
    with pytest.raises(InputError, match="class 'b' has 1 case.*label more cases"):
        make_folds(single, 2)


def test_integer_labels_with_a_missing_class_are_refused(tmp_path):
    with pytest.raises(InputError, match="no slide has label 1; renumber"):
        read_labels(_labels(tmp_path, [0, 2, 0, 2]))


def test_mil_train_stops_before_training_on_a_single_slide_class(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in range(4):
        write_h5_bag(tmp_path / "feat" / "h5_files" / f"s{i}.h5", rng.normal(size=(3, 4)), np.zeros((3, 2)))
    labels = _labels(tmp_path, ["a", "a", "a", "b"])
    code, _, err = run_cli(capsys, "mil", "train", tmp_path / "feat", labels, "--out", tmp_path / "run",
                           "--folds", "2", "--max-epochs", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "class 'b' has 1 case" in err
    assert not list((tmp_path / "run").glob("fold_*"))


def test_every_missing_bag_is_named_at_once(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for i in (0, 1, 3, 4):
        write_h5_bag(tmp_path / "feat" / "h5_files" / f"s{i}.h5", rng.normal(size=(3, 4)), np.zeros((3, 2)))
    labels = _labels(tmp_path, ["a", "b"] * 4)  # s2, s5, s6, s7 have no bag
    code, _, err = run_cli(capsys, "mil", "train", tmp_path / "feat", labels, "--out", tmp_path / "run",
                           "--folds", "2", "--max-epochs", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "for 4 of 8 listed slides: s2, s5, s6, s7" in err


def test_labels_differing_only_in_case_are_refused(tmp_path):
    with pytest.raises(InputError, match="labels 'LUAD' and 'luad' differ only in case"):
        read_labels(_labels(tmp_path, ["LUAD", "LUSC", "luad", "LUSC"]))
    assert read_labels(_labels(tmp_path, ["LUAD", "LUSC"] * 2, "ok.csv")).class_names == ["LUAD", "LUSC"]


def test_a_non_finite_bag_stops_training_before_the_first_fold(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = ["a", "b"] * 4
    for i in range(8):
        features = rng.normal(size=(3, 4))
        features[0, 0] = np.inf if i == 7 else features[0, 0]
        write_h5_bag(tmp_path / "feat" / "h5_files" / f"s{i}.h5", features, np.zeros((3, 2)))
    code, _, err = run_cli(capsys, "mil", "train", tmp_path / "feat", _labels(tmp_path, labels),
                           "--out", tmp_path / "run", "--folds", "4", "--max-epochs", "1")
    assert code == 2 and "s7.h5: features contain NaN or infinite values" in err
    assert not list((tmp_path / "run").glob("fold_*"))  # no fold trained on the rest first
