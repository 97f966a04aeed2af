"""The patch size each reader takes from the attributes of an h5 ``coords`` dataset (CLAM's
``patch_size`` / ``patch_level`` / ``downsample``, TRIDENT's ``patch_size_level0``), edge by edge.

The readers: ``features_patch_size`` (`wsi heatmap --features`), ``scores_file_patch_size``
(`wsi heatmap --scores`) and the viewer's ``read_score_sets``. Each reads the same attributes the
same way (`attnmap.wsi.patch_geometry`); the viewer, with no slide at hand, falls back to the
grid step (with a warning) where the others need the slide's level downsamples.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest

from attnmap.errors import InputError
from attnmap.view.score_files import read_score_sets
from attnmap.wsi.pipeline.stage_files import features_patch_size, scores_file_patch_size

DOWNSAMPLES = (1.0, 4.0)  # the slide's: two levels
STEP = 256  # the grid step of the coordinates below (what the viewer guesses without a size)
GRID = np.stack(np.meshgrid(np.arange(4) * STEP, np.arange(3) * STEP), -1).reshape(-1, 2)


def _file(path: Path, coord_attrs: dict, file_attrs: dict | None = None) -> Path:
    """An h5 file that is a features bag and a scores file at once, with these attributes."""
    with h5py.File(path, "w") as handle:
        handle["features"] = np.zeros((len(GRID), 4), np.float32)
        handle["attention_scores"] = np.arange(len(GRID), dtype=np.float32).reshape(-1, 1)
        handle["coords"] = GRID
        handle["coords"].attrs.update(coord_attrs)
        handle.attrs.update(file_attrs or {})
    return path


def _viewer(path: Path) -> tuple[int, bool]:
    """The viewer's patch size, and whether it warned that it took the grid step."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        size = read_score_sets(path)["attention"].patch_size
    return size, any("records no patch size" in str(item.message) for item in said)


def _sizes(path: Path) -> tuple[int | None, int | None]:
    return features_patch_size(path, DOWNSAMPLES), scores_file_patch_size(path, DOWNSAMPLES)


@pytest.mark.parametrize(
    "attrs",
    [
        {"patch_size": 256, "patch_level": 0},
        {"patch_size": np.int32(256), "patch_level": np.uint8(0)},  # numpy scalars
        {"patch_size": np.array([256]), "patch_level": np.array([0])},  # one-element arrays
        {"patch_size": 256.0, "patch_level": 0.0},  # whole floats
        {"patch_size": "256", "patch_level": "0"},  # numbers written as text
        {"patch_size": np.bytes_(b"256"), "patch_level": np.bytes_(b"0")},  # fixed-length bytes
    ],
    ids=["int", "numpy-scalar", "array", "whole-float", "text", "bytes"],
)
def test_a_level0_size_reads_alike_whatever_its_type(tmp_path: Path, attrs: dict):
    path = _file(tmp_path / "a.h5", attrs)
    assert _sizes(path) == (256, 256)
    assert _viewer(path) == (256, False)


def test_a_size_at_a_reduced_level_is_scaled_by_its_downsample(tmp_path: Path):
    """CLAM's patch files: 256 px at level 1, whose downsample (4) is the slide's."""
    recorded = _file(tmp_path / "r.h5", {"patch_size": 256, "patch_level": 1, "downsample": [4.0, 4.0]})
    assert _sizes(recorded) == (1024, 1024)
    assert _viewer(recorded) == (1024, False)
    bare = _file(tmp_path / "b.h5", {"patch_size": 256, "patch_level": 1})  # no downsample: the slide's
    assert _sizes(bare) == (1024, 1024)
    assert _viewer(bare) == (STEP, True)  # no slide at hand: the grid step, said


def test_trident_level0_size_is_read_by_the_features_reader_and_the_viewer(tmp_path: Path):
    """TRIDENT's ``patch_size`` is at its target magnification; ``patch_size_level0`` is the footprint."""
    path = _file(tmp_path / "t.h5", {"patch_size": 224, "patch_size_level0": 448, "target_magnification": 20})
    assert features_patch_size(path, DOWNSAMPLES) == 448
    assert _viewer(path) == (448, False)


def test_files_without_the_attributes_say_nothing(tmp_path: Path):
    for name, attrs in (("none", {}), ("level-only", {"patch_level": 0})):
        path = _file(tmp_path / f"{name}.h5", attrs)
        assert _sizes(path) == (None, None), name
        assert _viewer(path) == (STEP, True), name


def test_a_recorded_downsample_places_a_level_the_slide_lacks(tmp_path: Path):
    path = _file(tmp_path / "l.h5", {"patch_size": 256, "patch_level": 5, "downsample": [8.0, 8.0]})
    assert scores_file_patch_size(path, DOWNSAMPLES) == 2048
    assert _viewer(path) == (2048, False)


def test_the_file_level_patch_size_comes_first(tmp_path: Path):
    """attnmap's blockmap records its level-0 size on the file; it is read before ``coords``'."""
    path = _file(tmp_path / "f.h5", {"patch_size": 256, "patch_level": 1}, {"patch_size": 1024})
    assert scores_file_patch_size(path, DOWNSAMPLES) == 1024
    assert _viewer(path) == (1024, False)


@pytest.mark.parametrize("value", [0, -5, "abc", np.nan], ids=["zero", "negative", "text", "nan"])
def test_the_viewer_refuses_a_size_that_is_no_size_in_one_line(tmp_path: Path, value: object):
    path = _file(tmp_path / "z.h5", {"patch_size": value, "patch_level": 0})
    with pytest.raises(InputError, match="patch_size") as raised:
        read_score_sets(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)
    # a size given replaces a record that is no size
    assert read_score_sets(path, patch_size=128)["attention"].patch_size == 128


# Where the readers disagreed, the one rule (`attnmap.wsi.patch_geometry`) below.


def _refused(path: Path, attribute: str) -> None:
    """Every reader refuses the file in one line naming it and the attribute."""
    for read in (lambda: features_patch_size(path, DOWNSAMPLES),
                 lambda: scores_file_patch_size(path, DOWNSAMPLES), lambda: read_score_sets(path)):
        with pytest.raises(InputError, match=f"coords attribute {attribute} ") as raised:
            read()
        assert str(path) in str(raised.value) and "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("attrs", "attribute"),
    [
        ({"patch_size": 255.7, "patch_level": 0}, "patch_size"),  # was truncated to 255 by one reader
        ({"patch_size": 127.5, "patch_level": 1, "downsample": [2.0, 2.0]}, "patch_size"),
        ({"patch_size": 256, "patch_level": 1.5}, "patch_level"),  # was read as level 1
        ({"patch_size": 256, "patch_level": -1}, "patch_level"),
        ({"patch_size": 0, "patch_level": 0}, "patch_size"),  # was "not recorded" for two readers
        ({"patch_size": -5, "patch_level": 0}, "patch_size"),
        ({"patch_size": "abc", "patch_level": 0}, "patch_size"),
        ({"patch_size": 256, "patch_level": 1, "downsample": [0.0, 0.0]}, "downsample"),
        ({"patch_size": 256, "patch_level": 1, "downsample": "x"}, "downsample"),  # was drawn as level 0
        ({"patch_size": 224, "patch_size_level0": 0}, "patch_size_level0"),
        ({"patch_size": 224, "patch_size_level0": "abc"}, "patch_size_level0"),
    ],
)
def test_a_recorded_value_that_is_no_size_is_refused_by_every_reader(tmp_path: Path, attrs: dict,
                                                                      attribute: str):
    """A pixel count or a level is whole: a fraction or a non-positive value is a damaged record,
    and a size guessed from it draws patches that miss their neighbours without a word."""
    _refused(_file(tmp_path / "bad.h5", attrs), attribute)


def test_trident_level0_size_is_rounded_and_read_by_every_reader(tmp_path: Path):
    """``patch_size_level0`` is a length on level 0 (a size at 20x times the magnification ratio):
    a fractional one is rounded, as CLAM's size times downsample is; it was truncated by the
    features reader, refused by the viewer and not read at all by the ``--scores`` reader."""
    whole = _file(tmp_path / "w.h5", {"patch_size": 224, "patch_size_level0": 448})
    assert scores_file_patch_size(whole, DOWNSAMPLES) == 448
    fractional = _file(tmp_path / "f.h5", {"patch_size": 224, "patch_size_level0": 448.7})
    assert _sizes(fractional) == (449, 449)
    assert _viewer(fractional) == (449, False)


def test_a_size_without_its_level_is_not_read_as_level0_by_the_viewer(tmp_path: Path):
    """TRIDENT's ``patch_size`` alone is at its target magnification: the viewer drew it as level-0
    px (half size on a 40x slide); it now takes the grid step and says so, as for no size at all."""
    path = _file(tmp_path / "s.h5", {"patch_size": 128})
    assert _sizes(path) == (None, None)
    assert _viewer(path) == (STEP, True)


def test_the_recorded_downsample_comes_before_the_slides(tmp_path: Path):
    """The features reader scaled by the slide's downsample where the others took the file's: the
    same file drew different patches; the file's, what the patches were cut at, for all."""
    path = _file(tmp_path / "d.h5", {"patch_size": 256, "patch_level": 1, "downsample": [3.0, 3.0]})
    assert _sizes(path) == (768, 768)
    assert _viewer(path) == (768, False)


def test_a_level_the_slide_lacks_without_a_downsample_is_named(tmp_path: Path):
    path = _file(tmp_path / "l.h5", {"patch_size": 256, "patch_level": 5})
    for read in (features_patch_size, scores_file_patch_size):
        with pytest.raises(InputError, match="coords attribute patch_level 5 is not a level of the slide"):
            read(path, DOWNSAMPLES)
    assert _viewer(path) == (STEP, True)  # no slide at hand: the grid step, said


@pytest.mark.parametrize("value", [25.5, 0, -256, "abc"])
def test_a_file_level_size_that_is_no_size_is_refused_by_the_scores_reader(tmp_path: Path, value: object):
    """``wsi heatmap --scores`` truncated it (0 drew nothing); the viewer refused it: now both."""
    path = _file(tmp_path / "f.h5", {}, {"patch_size": value})
    for read in (lambda: scores_file_patch_size(path, DOWNSAMPLES), lambda: read_score_sets(path)):
        with pytest.raises(InputError, match="patch_size .* is not a positive whole number") as raised:
            read()
        assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_heatmap_cli_takes_the_size_given_over_a_record_that_is_no_size(tmp_path: Path, capsys):
    from cli_runner import run_cli
    from synthetic_slide_files import write_test_slide

    slide = write_test_slide(tmp_path / "s.tif", 0, size=(1024, 768))
    scores = _file(tmp_path / "scores.h5", {"patch_size": 255.5, "patch_level": 0})
    args = ["wsi", "heatmap", slide, "--scores", scores, "--vis-level", "1"]
    code, _, err = run_cli(capsys, *args, "-o", tmp_path / "a")
    assert code == 2 and "coords attribute patch_size 255.5" in err and "give --patch-size" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, *args, "-o", tmp_path / "b", "--patch-size", "256")
    assert code == 0, err
    assert (tmp_path / "b" / "s_heatmap.png").is_file()
