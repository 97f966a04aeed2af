"""`attnmap wsi segment|patch|features` over several slides: one slide's failure does not stop the others."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli as cli
from PIL import Image
from synthetic_slide_files import write_test_slide, write_tiny_encoder

SEGMENT = ["--seg-level", "1", "--a-t", "0.05", "--a-h", "0.01"]
PATCH = ["--patch-size", "64"]


def test_a_failing_slide_is_named_and_the_slides_after_it_are_done(tmp_path: Path, capsys) -> None:
    """`wsi segment a broken b` stopped at the broken file: b was never segmented."""
    first = write_test_slide(tmp_path / "a.tif", seed=1)
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff at all")
    last = write_test_slide(tmp_path / "b.tif", seed=2)
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "wsi", "segment", first, broken, last, "-o", out, *SEGMENT)
    assert code == 1, err
    assert (out / "tissue" / "a.json").is_file() and (out / "tissue" / "b.json").is_file()
    assert "a: segmented" in stdout and "b: segmented" in stdout
    failed = [line for line in stdout.splitlines() if line.startswith("broken: failed: ")]
    assert len(failed) == 1
    assert "1 of 3 slides failed: broken" in err and f"failed: {broken}: " in err and "Traceback" not in err
    code, stdout, err = cli(capsys, "--debug", "wsi", "segment", first, broken, last, "-o", out, *SEGMENT)
    assert code == 1 and "a: already segmented" in stdout and "Traceback (most recent call last)" in err


def test_a_slide_without_tissue_fails_alone_in_each_stage(tmp_path: Path, capsys) -> None:
    """A blank slide among others: `wsi patch` and `wsi features` name it and do the others."""
    first = write_test_slide(tmp_path / "a.tif", seed=1)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((384, 512, 3), 245, dtype=np.uint8)).save(blank)
    last = write_test_slide(tmp_path / "b.tif", seed=2)
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "wsi", "patch", first, blank, last, "-o", out, *SEGMENT, *PATCH)
    assert code == 1 and "1 of 3 slides failed: blank" in err, err
    assert "blank: failed: InputError: " in stdout
    assert (out / "patches" / "a.h5").is_file() and (out / "patches" / "b.h5").is_file()
    encoder = write_tiny_encoder(tmp_path / "enc.pt")
    code, stdout, err = cli(capsys, "wsi", "features", blank, first, last, "-o", out, "--encoder", encoder,
                            "--input-size", "32", "--device", "cpu", *SEGMENT, *PATCH)
    assert code == 1 and "1 of 3 slides failed: blank" in err, err
    features = out / "features" / "h5_files"
    assert (features / "a.h5").is_file() and (features / "b.h5").is_file()
    # one slide given: its failure is the command's error, one line and status 2, as before
    code, _, err = cli(capsys, "wsi", "patch", blank, "-o", out, *SEGMENT, *PATCH)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "slides failed" not in err


def test_an_encoder_that_cannot_work_is_refused_before_any_slide(tmp_path: Path, capsys) -> None:
    """With each slide's failure recorded, an unknown encoder or weights of another architecture
    failed every slide alike, each after its tissue and patches: the command's error, before any."""
    import torch

    slides = [write_test_slide(tmp_path / f"s{index}.tif", seed=index) for index in range(2)]
    foreign = tmp_path / "foreign.pt"
    torch.save({"fc.weight": torch.zeros(3, 3)}, foreign)
    out = tmp_path / "out"
    for encoder, problem in [
        (["--encoder", "no-such-encoder"], "--encoder: unknown encoder 'no-such-encoder'"),
        (["--encoder", "resnet50_trunc", "--checkpoint", foreign], f"--checkpoint: checkpoint {foreign} "),
    ]:
        args = ["wsi", "features", *slides, "-o", out, *encoder, "--device", "cpu", *SEGMENT, *PATCH]
        code, _, err = cli(capsys, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and problem in err, err
        assert not (out / "tissue").exists()


def test_a_folder_of_slides_stands_for_its_slides(tmp_path: Path, capsys) -> None:
    """`wsi segment slides/` was refused as "a folder without DICOM files, not a slide"."""
    folder = tmp_path / "slides"
    for index in range(2):
        write_test_slide(folder / f"s{index}.tif", seed=index)
    (folder / "notes.txt").write_text("not a slide")
    (folder / "._s0.tif").write_bytes(b"a Mac's resource fork")
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "wsi", "segment", folder, "-o", out, *SEGMENT)
    assert code == 0, err
    assert sorted(path.name for path in (out / "tissue").glob("*.json")) == ["s0.json", "s1.json"]
    assert "s0: segmented" in stdout and "s1: segmented" in stdout
    write_test_slide(tmp_path / "more" / "S0.tif", seed=3)  # s0's outputs on a case-insensitive disk
    code, _, err = cli(capsys, "wsi", "segment", folder, tmp_path / "more", "-o", out, *SEGMENT)
    assert code == 2 and "S0.tif share a name" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "wsi", "segment", folder / "s1.tif", folder / "s1.tif", "-o", out, *SEGMENT)
    assert code == 2 and f"{folder / 's1.tif'} is given twice" in err
    (tmp_path / "empty").mkdir()
    code, _, err = cli(capsys, "wsi", "segment", tmp_path / "empty", "-o", out)
    assert code == 2 and "is a folder holding no slide" in err


def test_a_stage_remade_says_why_in_the_options_of_the_command(tmp_path: Path, capsys) -> None:
    """`wsi patch --patch-size 96` after 64 said "(patching.patch_size changed)", a `wsi run` key."""
    slide = write_test_slide(tmp_path / "a.tif", seed=1)
    out = tmp_path / "out"
    code, _, err = cli(capsys, "wsi", "patch", slide, "-o", out, *SEGMENT, *PATCH)
    assert code == 0, err
    code, stdout, err = cli(capsys, "wsi", "patch", slide, "-o", out, *SEGMENT, "--patch-size", "96")
    assert code == 0 and "(--patch-size changed)" in stdout and "patching." not in stdout, stdout + err
    code, stdout, err = cli(capsys, "wsi", "segment", slide, "-o", out, *SEGMENT[2:], "--seg-level", "0")
    assert code == 0 and "(--seg-level changed)" in stdout and "segmentation." not in stdout, stdout + err


def test_features_remade_says_why_in_the_options_of_the_command(tmp_path: Path, capsys) -> None:
    """`wsi features --input-size 48` after 32 said "(encoder.input_size changed)", a fingerprint key
    that is neither an option of the command nor a `wsi run` setting."""
    slide = write_test_slide(tmp_path / "a.tif", seed=1)
    out = tmp_path / "out"
    encoder = write_tiny_encoder(tmp_path / "enc.pt")
    args = ["wsi", "features", slide, "-o", out, "--encoder", encoder, "--device", "cpu", *SEGMENT, *PATCH]
    code, _, err = cli(capsys, *args, "--input-size", "32")
    assert code == 0, err
    code, stdout, err = cli(capsys, *args, "--input-size", "48")
    assert code == 0 and "(--input-size changed)" in stdout and "encoder." not in stdout, stdout + err
    write_tiny_encoder(tmp_path / "enc.pt", seed=1)  # other weights in the same file
    code, stdout, err = cli(capsys, *args, "--input-size", "48")
    assert code == 0 and "(--encoder changed)" in stdout and "encoder." not in stdout, stdout + err

def test_slides_of_different_pixel_sizes_are_warned_of_as_in_wsi_run(tmp_path: Path, capsys) -> None:
    """`wsi patch` / `wsi features` over a 20× and a 40× scan cut patches of one pixel size from both,
    covering tissue twice apart, without the warning `wsi run` gives for that slide list."""
    first = write_test_slide(tmp_path / "a.tif", seed=1, mpp=0.5)
    other = write_test_slide(tmp_path / "b.tif", seed=2, mpp=0.25)
    from attnmap.wsi.pipeline.slide_list import MixedResolutionWarning

    with pytest.warns(MixedResolutionWarning) as said:
        code, stdout, err = cli(capsys, "wsi", "patch", first, other, "-o", tmp_path / "o", *SEGMENT, *PATCH)
    assert code == 0 and "b: patched" in stdout, err
    (warning,) = [str(item.message) for item in said if item.category is MixedResolutionWarning]
    assert "(0.25 µm/px: b; 0.5 µm/px: a): --patch-size is 64 px at level 0" in warning
    # its remedy in this command's terms: `wsi patch` is given slides, it has no slide list
    assert "slide list" not in warning and "each resolution's slides to a `wsi patch` of their own" in warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", MixedResolutionWarning)  # no patches cut: nothing to compare
        code, _, err = cli(capsys, "wsi", "segment", first, other, "-o", tmp_path / "o", *SEGMENT)
    assert code == 0, err


def test_an_ome_tiff_slide_is_named_without_both_parts_of_its_suffix(tmp_path: Path, capsys) -> None:
    """`x.ome.tif` got the slide id `x.ome`: its outputs, and the ids a slide list or annotations
    give it, were named after half a suffix."""
    from attnmap.wsi.slide_files import slide_name

    folder = tmp_path / "slides"
    write_test_slide(folder / "x.ome.tif", seed=1)
    write_test_slide(folder / "y.OME.TIFF", seed=2)
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "wsi", "segment", folder, "-o", out, *SEGMENT)
    assert code == 0 and "x: segmented" in stdout and "y: segmented" in stdout, stdout + err
    assert sorted(path.name for path in (out / "tissue").glob("*.json")) == ["x.json", "y.json"]
    assert slide_name(Path("a.b.tif")) == "a.b" and slide_name(Path(".ome.tif")) == ".ome"


def test_patch_samples_of_an_ome_tiff_carry_the_slide_id(tmp_path: Path) -> None:
    """The top/bottom patch crops were named after `Path(slide.path).stem`, `x.ome` for `x.ome.tif`,
    while the slide's other outputs are named `x` (`slide_files.slide_name`)."""
    from attnmap.wsi import open_slide, save_patch_samples

    path = write_test_slide(tmp_path / "x.ome.tif", seed=1)
    coords, scores = np.array([[0, 0], [256, 256]]), np.array([0.2, 0.9])
    with open_slide(path) as slide:
        written = save_patch_samples(slide, coords, scores, tmp_path, patch_size=64, top_k=1, bottom_k=1)
    assert len(written) == 2 and all(p.name.startswith("0_x_x_") for p in written), [p.name for p in written]
