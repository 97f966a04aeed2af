"""The patch size each reader takes from the attributes of an h5 ``coords`` dataset (CLAM's
``patch_size`` / ``patch_level`` / ``downsample``, TRIDENT's ``patch_size_level0``), edge by edge.

The readers: ``features_patch_size`` (`wsi heatmap --features`), ``load_scores_with_patch_size``
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
from attnmap.wsi.pipeline.stage_files import features_patch_size, load_scores_with_patch_size

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
    return features_patch_size(path, DOWNSAMPLES), load_scores_with_patch_size(path, DOWNSAMPLES)[2]


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
    assert load_scores_with_patch_size(path, DOWNSAMPLES)[2] == 2048
    assert _viewer(path) == (2048, False)


def test_the_file_level_patch_size_comes_first(tmp_path: Path):
    """attnmap's blockmap records its level-0 size on the file; it is read before ``coords``'."""
    path = _file(tmp_path / "f.h5", {"patch_size": 256, "patch_level": 1}, {"patch_size": 1024})
    assert load_scores_with_patch_size(path, DOWNSAMPLES)[2] == 1024
    assert _viewer(path) == (1024, False)


@pytest.mark.parametrize("value", [0, -5, "abc", np.nan], ids=["zero", "negative", "text", "nan"])
def test_the_viewer_refuses_a_size_that_is_no_size_in_one_line(tmp_path: Path, value: object):
    path = _file(tmp_path / "z.h5", {"patch_size": value, "patch_level": 0})
    with pytest.raises(InputError, match="patch_size") as raised:
        read_score_sets(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)
    # a size given replaces a record that is no size
    assert read_score_sets(path, patch_size=128)["attention"].patch_size == 128
