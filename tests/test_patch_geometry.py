"""Patch size and level on ``coords`` of the features and attention h5 files: written, read, checked."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_runner import run_cli as cli
from PIL import Image
from synthetic_slide_files import write_clam_checkpoint, write_test_slide, write_tiny_encoder

from attnmap.errors import InputError
from attnmap.mil.bags import read_bag
from attnmap.view.score_files import read_score_sets
from attnmap.wsi.patch_geometry import PatchGeometry, check_geometry, file_geometry, read_geometry

SEGMENT = ["--seg-level", "1", "--a-t", "0.05", "--a-h", "0.01"]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A slide, its features (32-px patches at level 1, downsample 2) and their `mil attention` h5."""
    root = tmp_path_factory.mktemp("geometry")
    slide = write_test_slide(root / "s3.tif", seed=3)
    encoder = write_tiny_encoder(root / "enc.pt")
    out = root / "out"
    args = ["wsi", "features", slide, "-o", out, "--encoder", encoder, "--input-size", "32",
            "--device", "cpu", *SEGMENT, "--patch-size", "32", "--patch-level", "1"]
    from attnmap.cli.main import main  # run_cli wants a capsys, which a module fixture has not

    for command in (args, ["mil", "attention", write_clam_checkpoint(root / "clam.pt"),
                           out / "features" / "h5_files" / "s3.h5", "-o", root / "attention", "--no-csv"]):
        try:
            main([str(item) for item in command])
        except SystemExit as done:
            assert not done.code, command
    return {"slide": slide, "features": out / "features" / "h5_files" / "s3.h5",
            "attention": root / "attention" / "s3_attention.h5", "root": root}


def test_features_and_attention_files_record_the_patch_geometry(made: dict[str, Path]):
    for name in ("features", "attention"):
        with h5py.File(made[name], "r") as handle:
            attrs = dict(handle["coords"].attrs)
        assert int(attrs["patch_size"]) == 32 and int(attrs["patch_level"]) == 1, name
        assert np.asarray(attrs["downsample"]).tolist() == [2.0, 2.0], name
        assert file_geometry(made[name]) == PatchGeometry(32, 1, 2.0)
    assert read_bag(made["features"]).geometry == PatchGeometry(32, 1, 2.0)


def test_readers_take_the_recorded_size_and_refuse_a_contradiction(made: dict[str, Path], tmp_path: Path,
                                                                    capsys):
    sets = read_score_sets(made["attention"])  # the viewer: 32 px at downsample 2
    assert {item.patch_size for item in sets.values()} == {64}
    assert {item.patch_size for item in read_score_sets(made["attention"], patch_size=64).values()} == {64}
    with pytest.raises(InputError, match="patch size 32 contradicts s3_attention.h5") as raised:
        read_score_sets(made["attention"], patch_size=32)
    assert "\n" not in str(raised.value)

    args = ["wsi", "heatmap", made["slide"], "--scores", made["attention"], "--vis-level", "1"]
    code, _, err = cli(capsys, *args, "-o", tmp_path / "a")
    assert code == 0, err
    code, _, err = cli(capsys, *args, "-o", tmp_path / "b", "--patch-size", "64")
    assert code == 0, err
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / "s3_heatmap.png")),
                                  np.asarray(Image.open(tmp_path / "b" / "s3_heatmap.png")))
    code, _, err = cli(capsys, *args, "-o", tmp_path / "c", "--patch-size", "32")
    assert code == 2 and "--patch-size 32 disagrees with the 64-px (level-0) patches" in err
    assert len(err.strip().splitlines()) == 1


def test_files_without_the_attributes_keep_working(made: dict[str, Path], tmp_path: Path, capsys):
    """CLAM's features (no attributes on coords) and attnmap's older files: read as before."""
    old = tmp_path / "old.h5"
    with h5py.File(made["features"], "r") as source, h5py.File(old, "w") as handle:
        handle.create_dataset("features", data=source["features"][()])
        handle.create_dataset("coords", data=source["coords"][()])
    assert file_geometry(old) is None and read_bag(old).geometry is None
    code, _, err = cli(capsys, "mil", "attention", made["root"] / "clam.pt", old, "-o", tmp_path / "att",
                       "--no-csv")
    assert code == 0, err
    with h5py.File(tmp_path / "att" / "old_attention.h5", "r") as handle:
        assert "patch_size" not in handle["coords"].attrs
    args = ["wsi", "heatmap", made["slide"], "--scores", tmp_path / "att" / "old_attention.h5",
            "--vis-level", "1"]
    code, _, err = cli(capsys, *args, "-o", tmp_path / "h")
    assert code == 2 and "does not record the patch size: give --patch-size" in err
    code, _, err = cli(capsys, *args, "-o", tmp_path / "h", "--patch-size", "64")
    assert code == 0, err
    with pytest.warns(UserWarning, match="records no patch size"):
        read_score_sets(tmp_path / "att" / "old_attention.h5")


def test_a_brought_features_file_for_other_patches_is_refused(made: dict[str, Path], tmp_path: Path, capsys):
    """Features the user put in the run folder (no attnmap record) cut at another patch size than
    the options ask: refused in one line, not used for the wrong patches."""
    out = tmp_path / "out"
    code, _, err = cli(capsys, "wsi", "patch", made["slide"], "-o", out, *SEGMENT, "--patch-size", "64")
    assert code == 0, err
    with h5py.File(out / "patches" / "s3.h5", "r") as handle:
        coords = handle["coords"][()]
    (out / "features" / "h5_files").mkdir(parents=True)
    with h5py.File(out / "features" / "h5_files" / "s3.h5", "w") as handle:  # as CLAM writes, plus attrs
        handle.create_dataset("features", data=np.zeros((len(coords), 8), np.float32))
        dataset = handle.create_dataset("coords", data=coords)
        dataset.attrs.update({"patch_size": 128, "patch_level": 0})
    encoder = write_tiny_encoder(tmp_path / "enc.pt")
    code, _, err = cli(capsys, "wsi", "features", made["slide"], "-o", out, "--encoder", encoder,
                       "--input-size", "32", "--device", "cpu", *SEGMENT, "--patch-size", "64")
    assert code == 2 and "patch size 64 contradict(s) s3.h5" in err and "128-px patches at level 0" in err
    assert len(err.strip().splitlines()) == 1


def test_geometry_attributes_are_read_strictly():
    assert read_geometry({"patch_size": np.int64(256), "patch_level": np.array([0])}) == PatchGeometry(256, 0)
    assert read_geometry({"patch_size": 256}) is None  # a size without its level says too little
    assert read_geometry({"patch_size": 0, "patch_level": 0}) is None
    assert read_geometry({"patch_size": 25.5, "patch_level": 0}) is None
    assert PatchGeometry(256, 1).level0_size((1.0, 4.0)) == 1024
    assert PatchGeometry(256, 1).level0_size() is None
    check_geometry("a.h5", None, 512, 3)  # nothing recorded: nothing to contradict
    check_geometry("a.h5", PatchGeometry(256, 1), 256, 1)
    with pytest.raises(InputError, match="patch level 0 contradict"):
        check_geometry("a.h5", PatchGeometry(256, 1), 256, 0)


def test_the_runs_blockmaps_record_the_patch_geometry_and_readers_take_it(tmp_path: Path, capsys):
    """`wsi run`'s ``_blockmap.h5`` and ``overlap_blockmap.h5`` carry ``patch_size`` /
    ``patch_level`` / ``downsample`` on ``coords`` as the features h5 does; a reader that knows
    only those (CLAM's, or ours once the file's own level-0 ``patch_size`` is gone) draws the
    patches at their size."""
    from synthetic_slide_files import write_changed_config, write_pipeline_setup

    from attnmap.wsi.pipeline import run_slide
    from attnmap.wsi.pipeline.config import load_config, read_slide_list
    from attnmap.wsi.pipeline.outputs import SlideOutputs
    from attnmap.wsi.pipeline.stage_files import scores_file_patch_size

    setup = write_pipeline_setup(tmp_path / "setup", n_slides=1)
    changed = write_changed_config(setup, tmp_path / "out", patching={"patch_size": 32, "level": 1},
                                   heatmap={"overlap": 0.5}, sampling={"top_k": 0, "bottom_k": 0})
    config = load_config(changed)
    entry = read_slide_list(config)[0]
    run_slide(entry, config)
    out = SlideOutputs(Path(config.run.output_dir), entry.slide_id)
    for name in ("blockmap.h5", "overlap_blockmap.h5"):
        path = out.named(name)
        assert file_geometry(path) == file_geometry(out.features_h5) == PatchGeometry(32, 1, 2.0), name
        with h5py.File(path, "r+") as handle:
            assert int(handle.attrs["patch_size"]) == 64, name  # the level-0 size, as before
            del handle.attrs["patch_size"]
        assert scores_file_patch_size(path) == 64, name  # no slide needed: the downsample is recorded
        assert {item.patch_size for item in read_score_sets(path).values()} == {64}, name
    args = ["wsi", "heatmap", entry.path, "--scores", out.named("blockmap.h5"), "--vis-level", "1"]
    code, _, err = cli(capsys, *args, "-o", tmp_path / "h", "--patch-size", "32")
    assert code == 2 and "disagrees with the 64-px (level-0) patches" in err
