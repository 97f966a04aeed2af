"""The one rule that turns a labels CSV's labels into class indices (README, "Attention MIL"):
labels that are all whole numbers are the class indices; other numbers are classes in order of
value; names are numbered in natural order; numbers mixed with names are refused."""

from __future__ import annotations

import pytest

from attnmap.errors import InputError
from attnmap.mil.splits import read_labels


def _read(tmp_path, labels):
    path = tmp_path / "labels.csv"
    path.write_text("slide_id,label\n" + "".join(f"s{i},{label}\n" for i, label in enumerate(labels)))
    return read_labels(path)


@pytest.mark.parametrize(
    "labels", [["0", "1", "2", "1"], ["0.0", "1.0", "2.0", "1.0"], ["0", "1.0", "2", "1"]]
)
def test_whole_numbers_are_the_class_indices_however_written(tmp_path, labels):
    cohort = _read(tmp_path, labels)
    assert cohort.labels == [0, 1, 2, 1] and cohort.class_names == ["0", "1", "2"]


@pytest.mark.parametrize(
    "labels",
    [["1", "2", "1"], ["1.0", "2.0", "1.0"], ["2.0", "10.0", "2.0"], ["1", "1e17"], ["1", "99999999999999"]],
)
def test_whole_numbers_must_start_at_zero_however_written(tmp_path, labels):
    """"1","2" was refused while "1.0","2.0" trained as the texts "1.0" < "2.0" (and "10.0" before
    "2.0"): the same classes written two ways gave two behaviours."""
    with pytest.raises(InputError, match=r"class indices 0\.\..*no slide has label 0"):
        _read(tmp_path, labels)


def test_other_numbers_are_classes_in_order_of_value(tmp_path):
    cohort = _read(tmp_path, ["10.5", "2.5", "0.5", "2.50"])
    assert cohort.class_names == ["0.5", "2.5", "10.5"]
    assert cohort.labels == [2, 1, 0, 1]  # 2.50 is 2.5


def test_names_are_numbered_in_natural_order(tmp_path):
    cohort = _read(tmp_path, ["grade 10", "grade 2", "grade 1", "grade 2"])
    assert cohort.class_names == ["grade 1", "grade 2", "grade 10"]
    assert cohort.labels == [2, 1, 0, 1]
    assert _read(tmp_path, ["tumour", "benign"]).class_names == ["benign", "tumour"]


def test_digits_of_other_scripts_are_names_not_numbers(tmp_path):
    """'١' (Arabic-Indic one) was read as the integer 1 by int()."""
    cohort = _read(tmp_path, ["\u0661", "\u0660", "\u0661"])
    assert cohort.class_names == ["\u0660", "\u0661"] and cohort.labels == [1, 0, 1]
    with pytest.raises(InputError, match="mix numbers .* and names"):
        _read(tmp_path, ["0", "\u0661", "0", "\u0661"])


@pytest.mark.parametrize("labels", [["0", "tumour"], ["1", "NaN", "0"], ["0.5", "high"]])
def test_numbers_mixed_with_names_are_refused_in_one_line(tmp_path, labels):
    with pytest.raises(InputError, match="mix numbers .* and names") as error:
        _read(tmp_path, labels)
    assert "\n" not in str(error.value) and "labels.csv" in str(error.value)


def test_a_whole_number_too_large_for_an_index_is_refused_at_once(tmp_path):
    """int() of 1e99999999 built a 10^8-digit number: the command hung."""
    with pytest.raises(InputError, match="1e99999999 is too large for a class index"):
        _read(tmp_path, ["0", "1e99999999", "1"])


def test_a_blank_case_id_equal_to_another_slide_s_case_is_refused(tmp_path):
    """A blank case_id means a case of its own, named by the slide id; slide 'p1' without a case
    joined patient p1's case unannounced."""
    path = tmp_path / "labels.csv"
    path.write_text("slide_id,label,case_id\np1,a,\nx,a,p1\ny,b,p2\nz,b,\n")
    with pytest.raises(InputError, match="slide 'p1' has no case_id, and 'p1' is the case_id of slide 'x'"):
        read_labels(path)
    path.write_text("slide_id,label,case_id\np9,a,\nx,a,p1\ny,b,p2\nz,b,\n")
    assert read_labels(path).case_ids == ["p9", "p1", "p2", "z"]
