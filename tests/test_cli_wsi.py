"""`attnmap wsi segment|patch|features|heatmap|run` from the command line: outputs, reruns, errors."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from cli_runner import run_cli as cli
from PIL import Image
from synthetic_slide_files import (
    write_clam_checkpoint,
    write_pipeline_setup,
    write_test_slide,
    write_tiny_encoder,
)

from attnmap.io_utils import read_png_text
from attnmap.wsi.pipeline.outputs import STAGES

SEGMENT = ["--seg-level", "1", "--a-t", "0.05", "--a-h", "0.01"]
PATCH = ["--patch-size", "64"]




@pytest.fixture(scope="module")
def slide(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_slide(tmp_path_factory.mktemp("cli") / "s7.tif", seed=7)


def test_segment_patch_features_reuse_each_other(slide: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    code, stdout, _ = cli(capsys, "wsi", "segment", slide, "-o", out, *SEGMENT)
    assert code == 0 and "s7: segmented" in stdout and "tissue" in stdout
    assert (out / "tissue" / "s7.json").is_file()
    mask = np.asarray(Image.open(out / "tissue" / "s7_mask.png"))
    assert mask.shape == (384, 512) and 0.1 < (mask > 0).mean() < 0.9

    code, stdout, _ = cli(capsys, "wsi", "patch", slide, "-o", out, *SEGMENT, *PATCH)
    assert code == 0 and "patched:" in stdout
    with h5py.File(out / "patches" / "s7.h5", "r") as handle:
        n_patches = len(handle["coords"])
        assert handle["coords"].attrs["patch_size"] == 64

    encoder = write_tiny_encoder(tmp_path / "enc.pt")
    args = [
        "wsi",
        "features",
        slide,
        "-o",
        out,
        "--encoder",
        encoder,
        "--input-size",
        "32",
        "--device",
        "cpu",
        *SEGMENT,
        *PATCH,
    ]
    code, stdout, _ = cli(capsys, *args)
    assert code == 0 and f"extracted: {n_patches} × 8 features" in stdout
    with h5py.File(out / "features" / "h5_files" / "s7.h5", "r") as handle:
        assert handle["features"].shape == (n_patches, 8)
    assert (out / "features" / "pt_files" / "s7.pt").is_file()
    code, stdout, _ = cli(capsys, *args)
    assert code == 0 and "already extracted" in stdout
    code, stdout, _ = cli(capsys, *args, "--no-pt")  # the earlier .pt is not this run's: removed
    pt = out / "features" / "pt_files" / "s7.pt"
    assert code == 0 and f"already extracted: {n_patches} × 8 features" in stdout
    assert f"removed {pt} (--no-pt)" in stdout and not pt.exists() and not pt.with_suffix(".pt.json").exists()


def test_heatmap_from_scores_or_from_features_and_model(slide: Path, tmp_path: Path, capsys) -> None:
    from attnmap.mil import attention_scores, load_clam
    from attnmap.wsi.heatmap import HeatmapStyle, render_heatmap
    from attnmap.wsi.scores_io import save_scores_h5
    from attnmap.wsi.slide import open_slide

    out = tmp_path / "out"
    encoder = write_tiny_encoder(tmp_path / "enc.pt")
    cli(
        capsys,
        "wsi",
        "features",
        slide,
        "-o",
        out,
        "--encoder",
        encoder,
        "--input-size",
        "32",
        *SEGMENT,
        *PATCH,
    )
    features_h5 = out / "features" / "h5_files" / "s7.h5"
    with h5py.File(features_h5, "r") as handle:
        features, coords = handle["features"][()], handle["coords"][()].astype(np.int64)
    checkpoint = write_clam_checkpoint(tmp_path / "clam.pt")
    scores = attention_scores(load_clam(checkpoint), features, kind="raw")
    scores_h5 = save_scores_h5(tmp_path / "s7_blockmap.h5", coords, scores.astype(np.float32))

    png = tmp_path / "from_scores" / "s7_heatmap.png"
    code, _, err = cli(capsys, "wsi", "heatmap", slide, "--scores", scores_h5, "-o", png.parent,
                       "--vis-level", "1")
    assert code == 2 and "--patch-size" in err  # a plain scores file does not record the patch size
    code, stdout, _ = cli(
        capsys,
        "wsi",
        "heatmap",
        slide,
        "--scores",
        scores_h5,
        "-o",
        png.parent,
        "--vis-level",
        "1",
        "--patch-size",
        "64",
        "--tissue",
        out / "tissue" / "s7.json",
        "--tiff",
        "--scale",  # CLAM's exact colours, without the title and colour bar: compared pixel by pixel
        "clam",
        "--no-legend",
    )
    assert code == 0 and png.is_file() and png.with_suffix(".tif").is_file()
    from attnmap.wsi.pipeline.stage_files import load_tissue

    expected = render_heatmap(
        open_slide(slide),
        coords,
        scores.astype(np.float32).astype(np.float64),
        HeatmapStyle(vis_level=1),
        patch_size=64,
        tissue=load_tissue(out / "tissue" / "s7.json"),
    )
    np.testing.assert_array_equal(np.asarray(Image.open(png)), expected)

    png2 = tmp_path / "from_model" / "s7_heatmap.png"
    code, _, _ = cli(
        capsys,
        "wsi",
        "heatmap",
        slide,
        "--features",
        features_h5,
        "--model",
        checkpoint,
        "-o",
        png2.parent,
        "--vis-level",
        "1",
        "--patch-size",
        "64",
        "--raw",
        "--alpha",
        "1",
    )
    assert code == 0
    assert read_png_text(png2)["method"] == "clam_attention_raw_heatmap"
    # by default the picture carries a title band and a colour bar around the drawn canvas
    canvas = render_heatmap(open_slide(slide), coords, scores, HeatmapStyle(vis_level=1), patch_size=64)
    framed = np.asarray(Image.open(png2))
    assert framed.shape[0] > canvas.shape[0] and framed.shape[1] >= canvas.shape[1]
    code, _, err = cli(capsys, "wsi", "heatmap", slide, "--features", features_h5, "-o", png2.parent)
    assert code == 2 and "--model" in err


def test_heatmap_of_attnmap_features_takes_their_patch_size(slide: Path, tmp_path: Path, capsys) -> None:
    """A features file written by attnmap records its patching: --patch-size may be left out, and a
    value that disagrees (which drew every patch at the wrong size) is refused."""
    out = tmp_path / "out"
    encoder = write_tiny_encoder(tmp_path / "e.pt")
    code, _, _ = cli(capsys, "wsi", "features", slide, "-o", out, "--encoder", encoder, "--input-size", "32",
                     "--device", "cpu", *SEGMENT, "--patch-size", "32", "--patch-level", "1")
    assert code == 0
    features_h5 = out / "features" / "h5_files" / "s7.h5"
    checkpoint = write_clam_checkpoint(tmp_path / "clam.pt")
    args = ["wsi", "heatmap", slide, "--features", features_h5, "--model", checkpoint, "--vis-level", "1",
            "--device", "cpu"]
    code, _, err = cli(capsys, *args, "-o", tmp_path / "a")
    assert code == 0, err
    code, _, given = cli(capsys, *args, "-o", tmp_path / "b", "--patch-size", "64")  # 32 px at level 1
    assert code == 0, given
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a" / "s7_heatmap.png")),
                                  np.asarray(Image.open(tmp_path / "b" / "s7_heatmap.png")))
    code, _, err = cli(capsys, *args, "-o", tmp_path / "c", "--patch-size", "32")
    assert code == 2 and "--patch-size 32 disagrees with the 64-px (level-0) patches" in err
    assert len(err.strip().splitlines()) == 1


def test_heatmap_without_tiff_removes_an_earlier_runs_tiff(slide: Path, tmp_path: Path, capsys) -> None:
    """A rerun without --tiff left the earlier TIFF beside the new PNG, where it passed for this one."""
    import tifffile

    from attnmap.wsi.scores_io import save_scores_h5

    rng = np.random.default_rng(0)
    coords = np.stack(np.meshgrid(np.arange(0, 512, 64), np.arange(0, 384, 64)), -1).reshape(-1, 2)
    values = rng.random(len(coords)).astype(np.float32)
    scores_h5 = save_scores_h5(tmp_path / "s7_blockmap.h5", coords, values)
    out = tmp_path / "out"
    args = ["wsi", "heatmap", slide, "--scores", scores_h5, "-o", out, "--vis-level", "1",
            "--patch-size", "64"]
    tiff = out / "s7_heatmap.tif"
    code, _, err = cli(capsys, *args, "--tiff", "--tiff-level", "1")
    assert code == 0 and tiff.is_file(), err
    code, stdout, err = cli(capsys, *args)
    assert code == 0 and not tiff.exists() and (out / "s7_heatmap.png").is_file(), err
    assert f"removed {tiff}: an earlier run's TIFF (--tiff not given)" in stdout.splitlines()
    tifffile.imwrite(tiff, np.zeros((8, 8), np.uint8))  # not attnmap's: the user's file stays
    code, stdout, _ = cli(capsys, *args)
    assert code == 0 and tiff.is_file() and "removed" not in stdout


def test_a_missing_heatmap_level_names_the_option_that_asked_for_it(
    slide: Path, tmp_path: Path, capsys
) -> None:
    """`wsi heatmap --vis-level 0 --tiff-level 5` said "level 5 does not exist", not which option."""
    from attnmap.wsi.scores_io import save_scores_h5

    coords = np.stack(np.meshgrid(np.arange(0, 512, 64), np.arange(0, 384, 64)), -1).reshape(-1, 2)
    scores_h5 = save_scores_h5(tmp_path / "s7_blockmap.h5", coords, np.linspace(0, 1, len(coords)))
    args = ["wsi", "heatmap", slide, "--scores", scores_h5, "-o", tmp_path / "out", "--patch-size", "64"]
    for levels, option in [(["--vis-level", "5"], "--vis-level"),
                           (["--vis-level", "0", "--tiff", "--tiff-level", "5"], "--tiff-level")]:
        code, _, err = cli(capsys, *args, *levels)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{option}: level 5 does not exist" in err
        assert not (tmp_path / "out" / "s7_heatmap.png").exists()


def test_a_failed_heatmap_tiff_leaves_no_pair_from_two_calls(
    slide: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PNG was drawn and written before the TIFF's level was found missing (or before its
    writing failed): a failed command (exit 2) left a new PNG beside the earlier call's TIFF."""
    from attnmap.wsi.scores_io import save_scores_h5

    coords = np.stack(np.meshgrid(np.arange(0, 512, 64), np.arange(0, 384, 64)), -1).reshape(-1, 2)
    values = np.random.default_rng(1).random(len(coords)).astype(np.float32)
    scores_h5 = save_scores_h5(tmp_path / "s7_blockmap.h5", coords, values)
    out = tmp_path / "out"
    args = ["wsi", "heatmap", slide, "--scores", scores_h5, "-o", out, "--patch-size", "64", "--tiff"]
    code, _, err = cli(capsys, *args, "--vis-level", "1")
    png, tiff = out / "s7_heatmap.png", out / "s7_heatmap.tif"
    assert code == 0 and png.is_file() and tiff.is_file(), err
    before = {path: path.read_bytes() for path in (png, tiff)}
    code, _, err = cli(capsys, *args, "--vis-level", "0", "--tiff-level", "5")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "level 5 does not exist" in err
    assert {path: path.read_bytes() for path in (png, tiff)} == before  # nothing drawn

    import attnmap.wsi.heatmap.tiff as tiff_module
    from attnmap.errors import InputError

    def failing(*_args: object, **_kwargs: object) -> None:
        raise InputError("disk full")

    monkeypatch.setattr(tiff_module, "write_heatmap_tiff", failing)
    code, _, err = cli(capsys, *args, "--vis-level", "0")
    assert code == 2 and "disk full" in err
    assert not tiff.exists()  # the earlier call's TIFF is not left to pass for this PNG's


def test_heatmap_refuses_the_tissue_of_another_slide(slide: Path, tmp_path: Path, capsys) -> None:
    """--tissue of another slide (other size) coloured the heatmap only where that slide's tissue
    lay: a silently wrong map. The tissue file records the level-0 size it was found on."""
    from attnmap.wsi.scores_io import save_scores_h5

    other = write_test_slide(tmp_path / "other.tif", seed=2, size=(768, 512))
    code, _, err = cli(capsys, "wsi", "segment", other, "-o", tmp_path / "seg", *SEGMENT)
    assert code == 0, err
    coords = np.stack(np.meshgrid(np.arange(0, 512, 64), np.arange(0, 384, 64)), -1).reshape(-1, 2)
    scores_h5 = save_scores_h5(tmp_path / "s7_blockmap.h5", coords, np.linspace(0, 1, len(coords)))
    code, _, err = cli(capsys, "wsi", "heatmap", slide, "--scores", scores_h5, "-o", tmp_path / "out",
                       "--patch-size", "64", "--tissue", tmp_path / "seg" / "tissue" / "other.json")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "other.json" in err and "768×512" in err and "1024×768" in err
    assert not (tmp_path / "out" / "s7_heatmap.png").exists()


@pytest.mark.slow
def test_run_records_a_broken_slide_and_finishes_the_others(tmp_path: Path, capsys) -> None:
    config_path = write_pipeline_setup(tmp_path, n_slides=2)
    (tmp_path / "slides" / "broken.tif").write_bytes(b"not a tiff at all")
    with open(tmp_path / "slides.csv", "a") as handle:
        handle.write("broken,1\n")
    code, stdout, err = cli(capsys, "wsi", "run", config_path, "--workers", "1", "--quiet")
    assert code == 1 and "2 done, 0 already done, 1 failed" in stdout and "broken" in err
    out = tmp_path / "out"
    report = json.loads((out / "run_report.json").read_text())
    broken = [item for item in report["items"] if item["status"] == "failed"]
    assert len(broken) == 1 and broken[0]["item"].endswith("broken.tif") and broken[0]["traceback"]
    assert report["provenance"]["model_sha256"] and report["summary"]["done"] == 2
    assert report["summary"]["stage_counts"] == dict.fromkeys(STAGES, 2)  # per-stage progress events
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("slide_id,label,prediction") and [r.split(",")[0] for r in rows[1:]] == [
        "slide_0",
        "slide_1",
    ]
    assert json.loads((out / "predictions.csv.json").read_text())["n_slides"] == "2"


def test_run_config_errors_are_one_line(tmp_path: Path, capsys) -> None:
    config_path = write_pipeline_setup(tmp_path, n_slides=1)
    raw = yaml.safe_load(config_path.read_text())
    raw["features"]["batchsize"] = 3
    config_path.write_text(yaml.safe_dump(raw))
    code, _, err = cli(capsys, "wsi", "run", config_path)
    assert code == 2 and "features.batchsize: unknown key; known: encoder" in err and "Traceback" not in err
    raw["features"].pop("batchsize")
    config_path.write_text(yaml.safe_dump(raw))
    import torch

    if not torch.cuda.is_available():
        code, _, err = cli(capsys, "wsi", "run", config_path, "--device", "cuda")
        assert code == 2 and "no CUDA GPU is available" in err
    code, _, err = cli(capsys, "wsi", "segment", tmp_path / "missing.svs", "-o", tmp_path)
    assert code == 2 and "missing.svs" in err


def test_odd_single_slide_options_are_one_line_errors(slide: Path, tmp_path: Path, capsys) -> None:
    """Found by bench/wsi_config_sweep.py: a huge median or closing kernel failed inside OpenCV or
    numpy, a downscale below one pixel inside PIL, --tiff-level without --tiff was ignored, and an
    output that is a folder was named by its temporary file."""
    from attnmap.wsi.scores_io import save_scores_h5

    coords = np.stack(np.meshgrid(np.arange(0, 512, 64), np.arange(0, 384, 64)), -1).reshape(-1, 2)
    scores_h5 = save_scores_h5(tmp_path / "s7_blockmap.h5", coords, np.linspace(0, 1, len(coords)))
    heatmap = ["wsi", "heatmap", slide, "--scores", scores_h5, "-o", tmp_path / "hm", "--patch-size", "64"]
    for args, problem in [
        (["wsi", "segment", slide, "-o", tmp_path / "a", *SEGMENT, "--mthresh", "9999"], "1<=x<=255"),
        (["wsi", "segment", slide, "-o", tmp_path / "b", *SEGMENT, "--close", "1000000000"], "0<=x<=255"),
        ([*heatmap, "--downscale", "100000"], "shrinks the 512×384 px heatmap below one pixel"),
        ([*heatmap, "--tiff-level", "1"], "tiff_level 1 acts only with tiff"),
        (["wsi", "geojson", scores_h5, "--out", tmp_path], f"is a folder, not a file to write: {tmp_path}\n"),
    ]:
        code, _, err = cli(capsys, *args)
        assert code == 2 and len(err.strip().splitlines()) == 1 and problem in err, err
    assert not (tmp_path / "hm" / "s7_heatmap.tif").exists()


def test_evaluate_refuses_a_folder_as_its_report_before_any_work(tmp_path, capsys):
    """`wsi evaluate --out FOLDER` evaluated the whole run, then failed with "Is a directory"."""
    code, _, err = cli(capsys, "wsi", "evaluate", tmp_path, "--annotations", tmp_path, "--out", tmp_path)
    assert code == 2 and "is a directory" in err and "Traceback" not in err


@pytest.mark.parametrize("gpus", [0, 2])
def test_a_device_with_an_index_is_named_as_asked_for(tmp_path: Path, capsys, monkeypatch, gpus: int) -> None:
    """`--device cuda:3` was reported as 'cuda' when no GPU was there, and passed unchecked on a
    machine with fewer GPUs than its index: the message must name the device the user asked for."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    config_path = write_pipeline_setup(tmp_path, n_slides=1)
    code, out, err = cli(capsys, "wsi", "run", config_path, "--device", "cuda:3")
    err = err.strip()
    assert code == 2 and "'cuda:3'" in err and "'cuda'" not in err and len(err.splitlines()) == 1, err
    assert f"{gpus} CUDA GPU" in err if gpus else "no CUDA GPU" in err, err


def test_heatmap_draws_the_score_set_method_names(slide: Path, tmp_path: Path, capsys) -> None:
    """`wsi heatmap --scores` drew only `attention_scores`; a run's relevance sets (`scores_<method>`,
    named as in the viewer and `wsi evaluate`) could not be drawn. --method picks one."""
    from attnmap.wsi.scores_io import save_scores_h5

    xs, ys = np.meshgrid(np.arange(0, 512, 64), np.arange(0, 384, 64))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    attention = (coords[:, 0] / 512.0).astype(np.float32)
    relevance = np.cos(coords[:, 1] / 60.0).astype(np.float32)  # another pattern than the attention's
    both = save_scores_h5(tmp_path / "both" / "s7_blockmap.h5", coords, attention)
    with h5py.File(both, "a") as handle:
        handle.create_dataset("scores_lrp", data=relevance)
    alone = save_scores_h5(tmp_path / "alone" / "s7_blockmap.h5", coords, relevance)
    common = ["--patch-size", "64", "--vis-level", "1", "--scale", "clam", "--no-legend"]

    def draw(scores: Path, folder: str, *method: str) -> np.ndarray:
        code, _, err = cli(capsys, "wsi", "heatmap", slide, "--scores", scores, "-o", tmp_path / folder,
                           *common, *method)
        assert code == 0, err
        return np.asarray(Image.open(tmp_path / folder / "s7_heatmap.png"))

    lrp = draw(both, "lrp", "--method", "lrp")
    assert np.array_equal(lrp, draw(alone, "alone"))  # the lrp set, drawn as its own file draws it
    assert not np.array_equal(lrp, draw(both, "attention"))  # the default stays the attention
    code, _, err = cli(capsys, "wsi", "heatmap", slide, "--scores", both, "-o", tmp_path / "x", *common,
                       "--method", "gradient")
    err = err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "'gradient'" in err, err
    assert "attention, lrp" in err and str(both) in err, err


def test_heatmap_draws_signed_scores_centred_on_zero_as_the_viewer_does(slide: Path, tmp_path: Path, capsys):
    """`wsi heatmap --method lrp` drew LRP scores on jet between their percentiles, where 0 (no
    evidence) got whatever colour its rank gave, while the viewer draws the same set centred on 0.
    Signed sets now get the diverging scale unless --scale or --cmap is given."""
    import json

    from attnmap.io_utils import read_png_text
    from attnmap.wsi.scores_io import save_scores_h5

    xs, ys = np.meshgrid(np.arange(0, 512, 64), np.arange(0, 384, 64))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    relevance = np.linspace(-1.0, 3.0, len(coords)).astype(np.float32)  # mostly positive, 0 inside
    path = save_scores_h5(tmp_path / "s7_blockmap.h5", coords, np.zeros(len(coords), np.float32))
    with h5py.File(path, "a") as handle:
        handle.create_dataset("scores_lrp", data=relevance)

    def draw(folder: str, *extra: str) -> dict:
        code, _, err = cli(capsys, "wsi", "heatmap", slide, "--scores", path, "-o", tmp_path / folder,
                           "--patch-size", "64", "--vis-level", "1", "--no-legend", "--method", "lrp", *extra)
        assert code == 0, err
        return json.loads(read_png_text(tmp_path / folder / "s7_heatmap.png")["parameters"])

    drawn = draw("auto")
    assert (drawn["scale"], drawn["cmap"]) == ("diverging", "RdBu_r")
    assert draw("robust", "--scale", "robust")["scale"] == "robust"  # the user's choice is kept
    pictures = [np.asarray(Image.open(tmp_path / name / "s7_heatmap.png")) for name in ("auto", "robust")]
    assert not np.array_equal(*pictures)
    kept = draw("jet", "--cmap", "jet")
    assert (kept["scale"], kept["cmap"]) == ("diverging", "jet")


def test_heatmap_refuses_features_scores_or_tissue_of_another_slide_of_the_same_size(
    slide: Path, tmp_path: Path, capsys
) -> None:
    """Two slides of one scanner often share their level-0 size: the features, blockmap or tissue
    of one drawn on the other made a map where the first slide's tissue lay, without a word. Every
    slide output records the slide's content hash; a renamed copy of the slide is still accepted."""
    out = tmp_path / "out"
    encoder = write_tiny_encoder(tmp_path / "e.pt")
    code, _, err = cli(capsys, "wsi", "features", slide, "-o", out, "--encoder", encoder,
                       "--input-size", "32", "--device", "cpu", *SEGMENT, *PATCH)
    assert code == 0, err
    features_h5, tissue = out / "features" / "h5_files" / "s7.h5", out / "tissue" / "s7.json"
    other = write_test_slide(tmp_path / "other.tif", seed=8)  # 1024×768 like s7
    checkpoint = write_clam_checkpoint(tmp_path / "clam.pt")
    common = ["--vis-level", "1", "--device", "cpu"]
    code, _, err = cli(capsys, "wsi", "heatmap", other, "--features", features_h5, "--model", checkpoint,
                       "-o", tmp_path / "a", *common)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "s7.h5 was made from slide s7.tif, not from other.tif" in err
    assert not (tmp_path / "a").exists()

    renamed = tmp_path / "renamed.tif"
    renamed.write_bytes(slide.read_bytes())
    code, _, err = cli(capsys, "wsi", "heatmap", renamed, "--features", features_h5, "--model", checkpoint,
                       "--tissue", tissue, "-o", tmp_path / "b", *common)
    assert code == 0, err

    from attnmap.wsi.scores_io import save_scores_h5  # scores of no recorded slide: drawn as before

    coords = np.stack(np.meshgrid(np.arange(0, 512, 64), np.arange(0, 384, 64)), -1).reshape(-1, 2)
    scores_h5 = save_scores_h5(tmp_path / "other_blockmap.h5", coords, np.linspace(0, 1, len(coords)))
    code, _, err = cli(capsys, "wsi", "heatmap", other, "--scores", scores_h5, "--patch-size", "64",
                       "--tissue", tissue, "-o", tmp_path / "c", *common)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "s7.json was made from slide s7.tif, not from other.tif" in err


def test_mil_attention_scores_keep_the_slide_of_their_features(slide: Path, tmp_path: Path, capsys) -> None:
    """`mil attention` on a `wsi features` file wrote scores that named no slide, so README's
    `wsi heatmap SLIDE --scores scores/<slide>_attention.h5` drew them on any slide of the size."""
    out = tmp_path / "out"
    encoder = write_tiny_encoder(tmp_path / "e.pt")
    code, _, err = cli(capsys, "wsi", "features", slide, "-o", out, "--encoder", encoder,
                       "--input-size", "32", "--device", "cpu", *SEGMENT, *PATCH)
    assert code == 0, err
    checkpoint = write_clam_checkpoint(tmp_path / "clam.pt")
    code, _, err = cli(capsys, "mil", "attention", checkpoint, out / "features" / "h5_files" / "s7.h5",
                       "-o", tmp_path / "scores", "--device", "cpu")
    assert code == 0, err
    scores = tmp_path / "scores" / "s7_attention.h5"
    other = write_test_slide(tmp_path / "other.tif", seed=8)
    args = ["wsi", "heatmap", "--scores", scores, "--vis-level", "1", "--device", "cpu"]
    code, _, err = cli(capsys, *args, other, "-o", tmp_path / "a")
    assert code == 2 and "s7_attention.h5 was made from slide s7.tif, not from other.tif" in err, err
    code, _, err = cli(capsys, *args, slide, "-o", tmp_path / "b")
    assert code == 0, err


def test_tissue_files_of_earlier_versions_are_checked_by_their_fingerprint(
    slide: Path, tmp_path: Path, capsys
) -> None:
    """Tissue files written before outputs recorded ``slide_sha256`` name their slide's content in
    their fingerprint's inputs: those of another slide are refused too, not taken as unknown."""
    code, _, err = cli(capsys, "wsi", "segment", slide, "-o", tmp_path / "seg", *SEGMENT)
    assert code == 0, err
    tissue = tmp_path / "seg" / "tissue" / "s7.json"
    payload = json.loads(tissue.read_text())
    del payload["provenance"]["slide_sha256"]  # as an earlier attnmap wrote it
    tissue.write_text(json.dumps(payload))
    other = write_test_slide(tmp_path / "other.tif", seed=8)
    scores = tmp_path / "scores_blockmap.h5"
    from attnmap.wsi.scores_io import save_scores_h5

    coords = np.stack(np.meshgrid(np.arange(0, 512, 64), np.arange(0, 384, 64)), -1).reshape(-1, 2)
    save_scores_h5(scores, coords, np.linspace(0, 1, len(coords)))
    args = ["wsi", "heatmap", "--scores", scores, "--patch-size", "64", "--tissue", tissue]
    code, _, err = cli(capsys, *args, other, "-o", tmp_path / "a")
    assert code == 2 and "s7.json was made from slide s7.tif, not from other.tif" in err, err
    code, _, err = cli(capsys, *args, slide, "-o", tmp_path / "b")
    assert code == 0, err


def test_features_of_a_slide_since_replaced_say_so(slide: Path, tmp_path: Path, capsys) -> None:
    """A slide rescanned under its old name: the refusal read "made from slide s7.tif, not from
    s7.tif"; it says the file changed since, and what to do."""
    out = tmp_path / "out"
    copy = tmp_path / "scan" / "s7.tif"
    copy.parent.mkdir()
    copy.write_bytes(slide.read_bytes())
    encoder = write_tiny_encoder(tmp_path / "e.pt")
    code, _, err = cli(capsys, "wsi", "features", copy, "-o", out, "--encoder", encoder,
                       "--input-size", "32", "--device", "cpu", *SEGMENT, *PATCH)
    assert code == 0, err
    write_test_slide(copy, seed=8)  # rescanned
    code, _, err = cli(capsys, "wsi", "heatmap", copy, "--features", out / "features" / "h5_files" / "s7.h5",
                       "--model", write_clam_checkpoint(tmp_path / "clam.pt"), "-o", tmp_path / "a")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "s7.h5 was made from slide s7.tif as it was before: its bytes differ now; rerun" in err


def test_no_patches_names_the_options_as_the_command_takes_them(slide: Path, tmp_path: Path, capsys) -> None:
    """`wsi patch --no-padding` on a slide smaller than a patch said "patching.padding is off", a
    `wsi run` configuration key the user never wrote."""
    import tifffile

    tiny = tmp_path / "tiny.png"  # tissue only, 50×40: smaller than a 64-px patch
    Image.fromarray(tifffile.imread(slide)[300:340, 400:450]).save(tiny)
    args = ["wsi", "patch", tiny, "-o", tmp_path / "out", "--seg-level", "0", "--a-t", "0", "--a-h", "0"]
    code, _, stderr = cli(capsys, *args, *PATCH, "--no-padding")
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    hint = "smaller than one 64-px patch, with --no-padding: use a smaller --patch-size or --padding"
    assert hint in stderr
    assert "patching." not in stderr
    code, _, stderr = cli(capsys, *args[:-4], "--seg-level", "0", "--a-t", "100", *PATCH)
    assert code == 2 and "--a-t 100 asks for tissue regions" in stderr and "segmentation." not in stderr


@pytest.mark.slow
def test_a_missing_slide_fails_alone_and_the_others_run(tmp_path: Path, capsys) -> None:
    """A listed slide gone (moved, renamed, or deleted since the last run) stopped the whole run up
    front ("1 slide(s) ... not found"), although a failing slide is recorded in run_report.json and
    the others go on; only when no listed slide exists is it a configuration error."""
    from attnmap.wsi.pipeline.outputs import SlideOutputs

    config_path = write_pipeline_setup(tmp_path, n_slides=1)
    with open(tmp_path / "slides.csv", "a") as handle:
        handle.write("gone,1\n")
    gone = tmp_path / "slides" / "gone.tif"
    earlier = SlideOutputs(tmp_path / "out", "gone")  # files of a run made before it went
    for path in (earlier.tissue, earlier.patches, earlier.features_h5, earlier.named("blockmap.h5"),
                 earlier.named("heatmap.png"), earlier.prediction):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"earlier")
    code, stdout, err = cli(capsys, "wsi", "run", config_path, "--quiet")
    assert code == 1 and "1 done, 0 already done, 1 failed" in stdout, err
    assert f"gone: failed: InputError: slide file not found: {gone}" in stdout
    assert f"failed: {gone}: InputError: slide file not found" in err and "Traceback" not in err
    report = json.loads((tmp_path / "out" / "run_report.json").read_text())
    failed = [item for item in report["items"] if item["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["item"].endswith("gone.tif")
    rows = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["slide_0"]  # a slide not there has no prediction
    assert earlier.prediction.read_bytes() == b"earlier"  # kept: the slide may come back
    (tmp_path / "slides" / "slide_0.tif").unlink()  # none left: the configuration is wrong
    code, _, err = cli(capsys, "wsi", "run", config_path, "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "2 slide(s) in" in err and "not found" in err


def test_stage_refusals_name_the_options_of_the_command(slide: Path, tmp_path: Path, capsys,
                                                         monkeypatch) -> None:
    """A level too large to segment and a patch file brought for another patch size named wsi run's
    keys (segmentation.level, patching.patch_size) under `wsi segment` / `wsi patch`."""
    import attnmap.wsi.tissue

    monkeypatch.setattr(attnmap.wsi.tissue, "MAX_SEGMENTATION_PIXELS", 1000)
    code, _, err = cli(capsys, "wsi", "segment", slide, "-o", tmp_path / "out", "--seg-level", "0")
    assert code == 2 and "--seg-level: level 0 of" in err and "set --seg-level to a coarser one (1" in err
    assert "segmentation." not in err
    monkeypatch.undo()
    brought = tmp_path / "out" / "patches" / "s7.h5"
    brought.parent.mkdir(parents=True)
    with h5py.File(brought, "w") as handle:  # CLAM's attributes, no fingerprint: the user's file
        handle["coords"] = np.array([[0, 0], [128, 0]], dtype=np.int64)
        handle["coords"].attrs.update(patch_size=128, patch_level=0)
    code, _, err = cli(capsys, "wsi", "patch", slide, "-o", tmp_path / "out", *SEGMENT, *PATCH)
    assert code == 2 and "this run asks for --patch-size 64 at --patch-level 0: set those" in err
    assert "patching." not in err
