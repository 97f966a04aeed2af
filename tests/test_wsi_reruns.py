"""Reruns of the `wsi run` pipeline: exactly the stages a change affects rerun, damaged outputs are
remade, a run killed at random moments resumes to the same outputs, one run per folder."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from cli_runner import run_cli as _cli
from PIL import Image
from synthetic_slide_files import (
    write_changed_config,
    write_clam_checkpoint,
    write_pipeline_setup,
    write_test_slide,
    write_tiny_encoder,
)

from attnmap.errors import InputError
from attnmap.io_utils import TEMP_MARKER, remove_stale_temporaries, write_csv_atomic
from attnmap.lock import LOCK_NAME, folder_lock
from attnmap.wsi.pipeline import run_slide
from attnmap.wsi.pipeline.cohort import write_predictions
from attnmap.wsi.pipeline.config import load_config, read_slide_list
from attnmap.wsi.pipeline.outputs import STAGES, SlideOutputs, slide_complete

ALL = set(STAGES)


def _config(setup: Path, out: Path, **sections: dict) -> object:
    return load_config(write_changed_config(setup, out, **sections))


def run_all(config) -> dict[str, dict]:
    """What `wsi run` does for each slide, in this process (no Dask): lock, clean, run, predictions."""
    entries = read_slide_list(config)
    with folder_lock(config.run.output_dir):
        remove_stale_temporaries(config.run.output_dir)
        results = {entry.slide_id: run_slide(entry, config) for entry in entries}
        write_predictions(config, entries)
    return results


def ran(results: dict[str, dict]) -> dict[str, set[str]]:
    return {
        slide: {stage for stage, done in result["stages"].items() if done}
        for slide, result in results.items()
    }


def snapshot(out: Path) -> dict[str, object]:
    """Every output's content without its creation time: h5 datasets, image pixels, JSON without
    provenance, CSV text."""
    import tifffile

    content: dict[str, object] = {}
    for path in sorted(out.rglob("*")):
        name = str(path.relative_to(out))
        if not path.is_file() or path.name in (LOCK_NAME, "run_report.json") or name.endswith(".csv.json"):
            continue
        assert TEMP_MARKER not in path.name, f"temporary file left: {name}"
        if path.suffix == ".h5":
            with h5py.File(path, "r") as handle:
                content[name] = {key: handle[key][()].tobytes() for key in handle}
        elif path.suffix == ".png":
            content[name] = np.asarray(Image.open(path)).tobytes()
        elif path.suffix == ".tif":
            content[name] = [page.asarray().tobytes() for page in tifffile.TiffFile(path).pages]
        elif path.suffix == ".pt":  # torch names the archive's folder after the (temporary) file
            import torch

            content[name] = torch.load(path, weights_only=True).numpy().tobytes()
        elif path.suffix == ".json":
            payload = json.loads(path.read_text())
            payload.pop("provenance", None)
            payload.pop("created", None)  # sidecar records (e.g. features .pt.json) carry their creation time
            content[name] = payload
        else:
            content[name] = path.read_bytes()
    return content


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("reruns")
    path = write_pipeline_setup(root, n_slides=1)
    (root / "slides.csv").write_text("slide_id,label\nslide_0,0\n")
    return path


def test_each_class_of_change_reruns_exactly_its_stages(
    setup: Path, tmp_path: Path, single_thread: None
) -> None:
    work = tmp_path / "work"
    config = _config(setup, work)
    assert ran(run_all(config)) == {"slide_0": ALL}
    assert ran(run_all(config)) == {"slide_0": set()}
    unaffected = {"batch_size": 5, "save_pt": False}  # neither changes a result
    assert ran(run_all(_config(setup, work, features=unaffected))) == {"slide_0": set()}

    summaries: list[str] = []

    def change(expected: set[str], files: dict[str, str] | None = None, **sections: dict) -> None:
        for name, source in (files or {}).items():  # replace an input file in place
            shutil.copyfile(setup.parent / source, setup.parent / name)
        changed = _config(setup, work, **sections)
        results = run_all(changed)
        assert ran(results) == {"slide_0": expected}, results["slide_0"]["summary"]
        summaries.append(results["slide_0"]["summary"])
        fresh = tmp_path / f"fresh_{len(list(tmp_path.iterdir()))}"
        assert ran(run_all(_config(setup, fresh, **sections))) == {"slide_0": ALL}
        assert snapshot(work) == snapshot(fresh)

    segmentation = {"sthresh": 20}
    change(ALL, segmentation=segmentation)
    patching = {"patch_size": 48}
    change(ALL - {"tissue"}, segmentation=segmentation, patching=patching)
    assert "patches (patching.patch_size changed), features (patches changed)" in summaries[-1]
    assert summaries[-1].endswith("; reused tissue")
    write_tiny_encoder(setup.parent / "encoder_1.pt", seed=1)
    shutil.copyfile(setup.parent / "encoder.pt", setup.parent / "encoder_0.pt")
    change(
        ALL - {"tissue", "patches"},
        {"encoder.pt": "encoder_1.pt"},
        segmentation=segmentation,
        patching=patching,
    )
    write_clam_checkpoint(setup.parent / "clam_1.pt", seed=1)
    shutil.copyfile(setup.parent / "clam.pt", setup.parent / "clam_0.pt")
    expected = {"attention", "heatmap", "sampling"}
    change(expected, {"clam.pt": "clam_1.pt"}, segmentation=segmentation, patching=patching)
    prediction = json.loads((work / "heatmaps/slide_0/slide_0_prediction.json").read_text())
    from attnmap.provenance import model_checksum

    assert prediction["provenance"]["model_sha256"] == model_checksum(setup.parent / "clam.pt")
    sidecar = json.loads((work / "predictions.csv.json").read_text())
    assert sidecar["model_sha256"] == model_checksum(setup.parent / "clam.pt")
    change({"heatmap"}, segmentation=segmentation, patching=patching, heatmap={"cmap": "viridis"})
    # restore the original inputs for the other tests of this module
    for name in ("encoder", "clam"):
        shutil.copyfile(setup.parent / f"{name}_0.pt", setup.parent / f"{name}.pt")


def test_slide_list_changes_touch_only_the_slides_concerned(setup: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = _config(setup, out)
    run_all(config)
    write_test_slide(setup.parent / "slides" / "slide_9.tif", seed=9)
    listing = setup.parent / "slides_two.csv"
    listing.write_text("slide_id,label\nslide_0,1\nslide_9,0\n")
    results = run_all(_config(setup, out, slides={"csv": str(listing)}))
    assert ran(results) == {"slide_0": set(), "slide_9": ALL}
    assert "prediction (label changed)" in results["slide_0"]["summary"]
    assert json.loads((out / "heatmaps/slide_0/slide_0_prediction.json").read_text())["label"] == "1"
    rows = (out / "predictions.csv").read_text().splitlines()
    assert [row.split(",")[:2] for row in rows[1:]] == [["slide_0", "1"], ["slide_9", "0"]]
    fresh = tmp_path / "fresh"
    run_all(_config(setup, fresh, slides={"csv": str(listing)}))
    assert snapshot(out) == snapshot(fresh)


def test_damaged_outputs_are_remade_and_force_remakes_all(setup: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = _config(setup, out, heatmap={"tiff": True})
    entry = read_slide_list(config)[0]
    run_all(config)
    reference = snapshot(out)
    outputs = SlideOutputs(out, entry.slide_id)
    damaged = {
        "features": outputs.features_h5,
        "heatmap": outputs.named("heatmap.tif"),
        "attention": outputs.named("blockmap.h5"),
        "tissue": outputs.tissue,
    }
    for stage, path in damaged.items():
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])  # cut short
        assert not slide_complete(entry, config)
        result = run_slide(entry, config)
        assert result["stages"][stage] and "damaged" in result["reasons"][stage], result["summary"]
        assert snapshot(out) == reference
    png = outputs.named("heatmap.png")
    png.write_bytes(png.read_bytes()[:-20])
    assert "damaged" in run_slide(entry, config)["reasons"]["heatmap"]
    forced = run_slide(entry, config, force=True)
    assert set(forced["stages"]) == ALL and all(forced["stages"].values())
    assert snapshot(out) == reference
    no_tiff = _config(setup, out, heatmap={"tiff": False, "cmap": "viridis"})
    assert run_slide(entry, no_tiff)["stages"]["heatmap"] and not outputs.named("heatmap.tif").exists()


def _killable_run(config_path: str) -> None:
    """`attnmap wsi run CONFIG --workers 1` as the command line runs it (one worker: in process).

    Forked, the child shares tqdm's write lock with this process (a semaphore tqdm makes for forked
    bars): killed while drawing a bar, it left the lock held and this process's next bar waited
    forever. The child draws none, on a lock of its own."""
    import threading

    import torch
    from tqdm import tqdm

    from attnmap.cli.main import main

    tqdm.set_lock(threading.RLock())
    torch.set_num_threads(1)
    main(["--quiet", "wsi", "run", config_path, "--workers", "1"])


def test_runs_killed_at_random_moments_resume_to_the_uninterrupted_outputs(
    setup: Path, tmp_path: Path, single_thread: None
) -> None:
    reference_out = tmp_path / "reference"
    run_all(_config(setup, tmp_path / "warm_up", heatmap={"tiff": True}))  # imports and model caches
    start = time.perf_counter()
    run_all(_config(setup, reference_out, heatmap={"tiff": True}))
    seconds = time.perf_counter() - start
    out = tmp_path / "killed"
    config_path = write_changed_config(setup, out, heatmap={"tiff": True})
    config = load_config(config_path)
    context = multiprocessing.get_context("fork")  # the real command, without paying the imports again
    entry = read_slide_list(config)[0]
    rng = np.random.default_rng(13)
    interrupted = 0
    for _ in range(10):
        child = context.Process(target=_killable_run, args=(str(config_path),))
        child.start()
        time.sleep(float(rng.uniform(0.0, seconds)))
        os.kill(child.pid, signal.SIGKILL)
        child.join()
        interrupted += not slide_complete(entry, config)
    assert interrupted >= 1  # some kills landed mid-work (the others while checking or rewriting)
    run_all(config)  # takes over the dead runs' lock, drops their temporaries, finishes
    assert snapshot(out) == snapshot(reference_out)
    assert not (out / LOCK_NAME).exists()


def test_one_run_per_folder_and_live_temporaries_are_kept(tmp_path: Path) -> None:
    import subprocess
    import sys

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / LOCK_NAME).write_text(
            json.dumps({"pid": sleeper.pid, "host": os.uname().nodename, "since": 0, "command": "x"})
        )
        with (
            pytest.raises(InputError, match=f"in use by another run .*pid {sleeper.pid}"),
            folder_lock(tmp_path),
        ):
            pass
        live = tmp_path / f".a{TEMP_MARKER}{_tag()}-{sleeper.pid}-0123456789ab.h5"
        dead = tmp_path / f".b{TEMP_MARKER}{_tag()}-{_dead_pid()}-0123456789ab.h5"
        live.write_bytes(b"x")
        dead.write_bytes(b"x")
        assert remove_stale_temporaries(tmp_path) == 1 and live.exists() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    with folder_lock(tmp_path) as lock:  # its holder is gone: taken over
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()
    write_csv_atomic(tmp_path / "x.csv", ["a"], [[1]])
    with pytest.raises(InputError, match="is an existing file"), folder_lock(tmp_path / "x.csv"):
        pass


def _tag() -> str:
    from attnmap.io_utils import _host_tag

    return _host_tag()


def _dead_pid() -> int:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid




def test_single_stage_commands_do_not_reuse_other_parameters(tmp_path: Path, capsys) -> None:
    slide = write_test_slide(tmp_path / "s.tif", seed=3)
    out = tmp_path / "out"
    segment = ["--seg-level", "1", "--a-h", "0.01"]
    code, stdout, _ = _cli(
        capsys, "wsi", "patch", slide, "-o", out, *segment, "--a-t", "0.05", "--patch-size", "128"
    )
    assert code == 0 and "patched:" in stdout
    code, stdout, _ = _cli(
        capsys, "wsi", "patch", slide, "-o", out, *segment, "--a-t", "0.05", "--patch-size", "128"
    )
    assert "already patched" in stdout
    code, stdout, _ = _cli(
        capsys, "wsi", "patch", slide, "-o", out, *segment, "--a-t", "0.05", "--patch-size", "64"
    )
    assert "s: patched:" in stdout and "(--patch-size changed)" in stdout  # as the command takes it
    with h5py.File(out / "patches" / "s.h5", "r") as handle:
        assert handle["coords"].attrs["patch_size"] == 64
    code, stdout, _ = _cli(capsys, "wsi", "segment", slide, "-o", out, *segment, "--a-t", "100")
    assert "s: segmented" in stdout and "(--a-t changed)" in stdout


def test_bad_inputs_are_one_line_exit_2(setup: Path, tmp_path: Path, capsys) -> None:
    import subprocess
    import sys

    config_path = write_changed_config(setup, tmp_path / "out")
    config = load_config(config_path)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        Path(config.run.output_dir).mkdir()
        (Path(config.run.output_dir) / LOCK_NAME).write_text(
            json.dumps({"pid": sleeper.pid, "host": os.uname().nodename, "since": 0})
        )
        code, _, err = _cli(capsys, "wsi", "run", config_path, "--quiet")
        assert code == 2 and len(err.strip().splitlines()) == 1 and "in use by another run" in err
    finally:
        sleeper.kill()
        sleeper.wait()
    shutil.rmtree(config.run.output_dir)
    Path(config.run.output_dir).write_text("a file")
    code, _, err = _cli(capsys, "wsi", "run", config_path, "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "existing file" in err

    from attnmap.wsi.scores_io import save_scores_h5

    empty = tmp_path / "empty_blockmap.h5"
    with h5py.File(empty, "w") as handle:
        handle.create_dataset("attention_scores", shape=(0, 1), dtype="f4")
        handle.create_dataset("coords", shape=(0, 2), dtype="i8")
    slide = setup.parent / "slides" / "slide_0.tif"
    code, _, err = _cli(
        capsys, "wsi", "heatmap", slide, "--scores", empty, "--patch-size", "64", "-o", tmp_path / "h.png"
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no patches" in err
    with pytest.raises(InputError, match="empty"):
        save_scores_h5(tmp_path / "e.h5", np.zeros((0, 2)), np.zeros(0))


def test_patch_file_brought_from_clam_is_used_as_it_is(setup: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = _config(setup, out, sampling={"top_k": 0, "bottom_k": 0})
    entry = read_slide_list(config)[0]
    coords = np.array([[256, 256], [320, 256], [256, 320]], dtype=np.int64)
    (out / "patches").mkdir(parents=True)
    with h5py.File(out / "patches" / "slide_0.h5", "w") as handle:  # CLAM's layout, no attnmap record
        handle.create_dataset("coords", data=coords).attrs["patch_size"] = 64
    result = run_slide(entry, config)
    assert not result["stages"]["patches"] and result["stages"]["features"]
    assert result["n_patches"] == 3
    assert ran({"s": run_slide(entry, config)}) == {"s": set()}
    forced = run_slide(entry, config, force=True)  # the user's patch file is an input: kept
    assert forced["n_patches"] == 3 and not forced["stages"]["patches"] and forced["stages"]["features"]


def test_a_patch_file_brought_for_another_patch_size_is_refused(setup: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    config = _config(setup, out)  # 64-px patches at level 0
    entry = read_slide_list(config)[0]
    (out / "patches").mkdir(parents=True)
    with h5py.File(out / "patches" / "slide_0.h5", "w") as handle:  # CLAM's 256-px grid
        stored = handle.create_dataset("coords", data=np.array([[256, 256], [512, 256]], dtype=np.int64))
        stored.attrs["patch_size"], stored.attrs["patch_level"] = 256, 0
    # 64-px crops at the corners of 256-px patches would be a map of a sixteenth of the tissue
    refused = r"slide_0.h5 records 256-px patches at level 0, .*patch_size 64 at patching"
    with pytest.raises(InputError, match=refused):
        run_slide(entry, config)
    assert (out / "patches" / "slide_0.h5").is_file()  # the user's file: kept
    assert not SlideOutputs(out, entry.slide_id).features_h5.exists()


def test_a_patch_file_brought_from_another_slide_is_refused(setup: Path, tmp_path: Path) -> None:
    """CLAM's patch file records the size of the slide level it was cut from (``level_dim``): one of
    another slide (a rescan, a slide of the same name), its corners inside this one, was used as
    this slide's patches without a word."""
    out = tmp_path / "out"
    config = _config(setup, out)  # 64-px patches at level 0 of a 1024×768 slide
    entry = read_slide_list(config)[0]
    (out / "patches").mkdir(parents=True)
    with h5py.File(out / "patches" / "slide_0.h5", "w") as handle:
        stored = handle.create_dataset("coords", data=np.array([[256, 256], [320, 256]], dtype=np.int64))
        stored.attrs.update({"patch_size": 64, "patch_level": 0, "level_dim": np.array([40000, 30000])})
    with pytest.raises(InputError, match=r"slide_0.h5 records patches of a 40000×30000 level 0, "
                       r"slide slide_0 is 1024×768 there"):
        run_slide(entry, config)
    assert (out / "patches" / "slide_0.h5").is_file()  # the user's file: kept
    assert not SlideOutputs(out, "slide_0").features_h5.exists()
    with h5py.File(out / "patches" / "slide_0.h5", "a") as handle:  # this slide's: used as it is
        handle["coords"].attrs["level_dim"] = np.array([1024, 768])
    assert run_slide(entry, config)["n_patches"] == 2


@pytest.mark.parametrize("rows", [3, None])  # None: as many rows as the patches, other positions
def test_features_brought_for_other_patches_are_refused_not_overwritten(
    setup: Path, tmp_path: Path, rows: int | None
) -> None:
    out = tmp_path / "out"
    config = _config(setup, out, sampling={"top_k": 0, "bottom_k": 0})
    entry = read_slide_list(config)[0]
    outputs = SlideOutputs(out, entry.slide_id)
    run_slide(entry, config)
    with h5py.File(outputs.patches, "r") as handle:
        n = len(handle["coords"])
    for path in (outputs.features_h5, outputs.features_pt):
        path.unlink()
    shutil.rmtree(outputs.heatmap_dir)
    n = rows or n
    user = np.arange(n * 8, dtype=np.float32).reshape(n, 8)  # e.g. CLAM's features of its own patches
    with h5py.File(outputs.features_h5, "w") as handle:
        handle["features"] = user
        handle.create_dataset("coords", data=np.stack([np.arange(n) * 64, np.zeros(n)], 1).astype(np.int64))
    with pytest.raises(InputError, match=r"slide_0.h5.*not made by attnmap.*patches/slide_0.h5"):
        run_slide(entry, config)
    with h5py.File(outputs.features_h5, "r") as handle:  # the user's features are an input: untouched
        assert np.array_equal(handle["features"][()], user)


def test_a_feature_size_the_model_does_not_take_names_the_bag(setup: Path, tmp_path: Path, capsys) -> None:
    wide = write_clam_checkpoint(tmp_path / "clam_16.pt", embed_dim=16)
    entry = read_slide_list(_config(setup, tmp_path / "out"))[0]
    run_slide(entry, _config(setup, tmp_path / "out"))  # 8-d features made for the 8-d model, then reused:
    with pytest.raises(InputError, match=r"^features.encoder .* gives 8-d features but .* expects 16-d"):
        _config(setup, tmp_path / "out", model={"checkpoint": str(wide)})  # refused while loading
    config = _config(setup, tmp_path / "out")
    config.model.checkpoint = str(wide)  # the API, unchecked: the stored bag is named
    features = SlideOutputs(tmp_path / "out", entry.slide_id).features_h5
    with pytest.raises(InputError, match=f"{features}: .*8 columns .* expects 16"):
        run_slide(entry, config)
    code, _, err = _cli(
        capsys,
        "wsi",
        "heatmap",
        entry.path,
        "--features",
        features,
        "--model",
        wide,
        "-o",
        tmp_path / "h.png",
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(features) in err


def test_a_new_features_precision_remakes_the_features_and_what_follows(
    setup: Path, tmp_path: Path, capsys, single_thread: None
) -> None:
    out = tmp_path / "out"
    assert ran(run_all(_config(setup, out))) == {"slide_0": ALL}
    half = _config(setup, out, features={"precision": "bfloat16"})
    results = run_all(half)
    assert ran(results) == {"slide_0": ALL - {"tissue", "patches"}}, results["slide_0"]["summary"]
    assert "features (precision changed)" in results["slide_0"]["summary"]
    features_h5 = SlideOutputs(out, "slide_0").features_h5
    with h5py.File(features_h5, "r") as handle:
        assert handle["features"].dtype == np.float32
        assert json.loads(handle.attrs["parameters"])["features"]["precision"] == "bfloat16"
    assert ran(run_all(half)) == {"slide_0": set()}  # the same precision again: all reused
    config_path = write_changed_config(setup, out)
    assert ran(run_all(load_config(config_path))) == {"slide_0": ALL - {"tissue", "patches"}}  # never stale
    code, _, err = _cli(capsys, "wsi", "run", config_path, "--quiet")
    assert code == 0, err
    broken = yaml.safe_load(config_path.read_text())
    broken["features"]["precision"] = "float8"
    config_path.write_text(yaml.safe_dump(broken))
    code, _, err = _cli(capsys, "wsi", "run", config_path, "--quiet")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "features.precision" in err and "'float8'" in err
    slide = setup.parent / "slides" / "slide_0.tif"
    code, _, err = _cli(capsys, "wsi", "features", slide, "-o", tmp_path / "f", "--precision", "half")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "'half'" in err


def test_an_edited_roi_annotation_remakes_the_patches(setup: Path, tmp_path: Path) -> None:
    """The patch grid's fingerprint named the ROI folder only: an edited <slide>.geojson reused the
    old grid (and features, heatmap) from the first run."""
    rois = tmp_path / "rois"
    rois.mkdir()

    def roi(right: int) -> None:
        ring = [[0, 0], [right, 0], [right, 768], [0, 768], [0, 0]]
        geometry = {"type": "Polygon", "coordinates": [ring]}
        feature = {"type": "Feature", "properties": {}, "geometry": geometry}
        collection = {"type": "FeatureCollection", "features": [feature]}
        (rois / "slide_0.geojson").write_text(json.dumps(collection))

    roi(512)
    config = _config(setup, tmp_path / "out", patching={"roi_annotations": str(rois)})
    first = run_all(config)["slide_0"]
    roi(1024)
    second = run_all(config)["slide_0"]
    assert {"patches", "features", "heatmap"} <= ran({"slide_0": second})["slide_0"]
    assert second["n_patches"] > first["n_patches"]
    assert ran(run_all(config)) == {"slide_0": set()}  # unchanged: all reused


def test_what_a_roi_file_skips_is_said_once_per_run(setup: Path, tmp_path: Path) -> None:
    """The run's check of every ROI file and each slide's patch stage both read the file: its
    warning (a point it holds, not an area) was shown twice."""
    from attnmap.wsi.pipeline.cohort import run_cohort

    rois = tmp_path / "rois"
    rois.mkdir()
    ring = [[0, 0], [1024, 0], [1024, 768], [0, 768], [0, 0]]
    features = [
        {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}},
        {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [10, 10]}},
    ]
    (rois / "slide_0.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    (rois / "slide_1.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features[:1]}))
    config = _config(setup, tmp_path / "out", patching={"roi_annotations": str(rois)})
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        report = run_cohort(config, workers=1, progress=False)
    assert report.failed == []
    skipped = [str(w.message) for w in said if "skipped 1 Point" in str(w.message)]
    assert len(skipped) == 1, skipped


def test_a_tissue_mask_of_other_parameters_never_stays_beside_remade_tissue(tmp_path: Path, capsys) -> None:
    slide = write_test_slide(tmp_path / "s.tif", seed=3)
    out = tmp_path / "out"
    segment = ["--seg-level", "1", "--a-t", "0.05", "--a-h", "0.01"]
    mask = out / "tissue" / "s_mask.png"
    code, _, _ = _cli(capsys, "wsi", "segment", slide, "-o", out, *segment, "--sthresh", "60")
    assert code == 0 and mask.is_file()
    # `wsi patch` with other segmentation options remakes tissue/s.json without a mask: the
    # earlier mask (sthresh 60) must not stay beside the new contours (sthresh 8)
    code, _, _ = _cli(capsys, "wsi", "patch", slide, "-o", out, *segment, "--patch-size", "64")
    assert code == 0 and json.loads((out / "tissue" / "s.json").read_text())["parameters"]["sthresh"] == 8
    assert not mask.exists()
    code, stdout, _ = _cli(capsys, "wsi", "segment", slide, "-o", out, *segment)
    assert code == 0 and "already segmented" in stdout and mask.is_file()  # drawn again from the tissue
    # a `wsi run` into the folder with other options: the same
    _cli(capsys, "wsi", "segment", slide, "-o", out, *segment, "--sthresh", "60")
    assert mask.is_file()
    setup = write_pipeline_setup(tmp_path / "setup", n_slides=1)
    raw = yaml.safe_load(setup.read_text())
    raw["slides"] = {"csv": str(tmp_path / "one.csv")}
    (tmp_path / "one.csv").write_text(f"slide_path\n{slide}\n")
    raw["run"]["output_dir"] = str(out)
    setup.write_text(yaml.safe_dump(raw))
    code, _, _ = _cli(capsys, "wsi", "run", setup)
    assert code == 0 and json.loads((out / "tissue" / "s.json").read_text())["parameters"]["sthresh"] == 8
    assert not mask.exists()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(mask)  # not attnmap's: the user's file stays
    other = [*segment, "--sthresh", "60", "--patch-size", "64"]
    code, _, _ = _cli(capsys, "wsi", "patch", slide, "-o", out, *other)
    assert code == 0 and mask.is_file()


def test_the_same_fine_maps_written_another_way_keep_their_fingerprint(setup: Path, tmp_path: Path) -> None:
    """`heatmap.fine` was fingerprinted as written: {method: lrp, top_k: 5} rewritten as {top_k: 5} (lrp
    is the default) recomputed every fine map, "fine.method changed". The maps' options as they are
    read are fingerprinted: only a real change (another top_k, method or MIL method) recomputes."""
    from attnmap.wsi.pipeline.config import SlideEntry
    from attnmap.wsi.pipeline.fingerprint import StageFingerprints

    entry = SlideEntry(str(setup.parent / "slides" / "slide_0.tif"), "slide_0")
    write_clam_checkpoint(setup.parent / "clam_tiny.pt", embed_dim=64)  # attnmap:tiny's 64-d features
    tiny = {"features": {"encoder": "attnmap:tiny", "input_size": None},
            "model": {"checkpoint": "clam_tiny.pt"}}

    def fine_print(fine: dict) -> dict:
        config = _config(setup, tmp_path, heatmap={"fine": fine}, **tiny)
        return StageFingerprints(entry, config).fine.value

    same = [{"top_k": 5}, {"method": "lrp", "top_k": 5}, {"mil_method": "lrp", "top_k": 5, "method": "lrp"}]
    assert all(fine_print(fine) == fine_print(same[0]) for fine in same[1:])
    assert fine_print({"top_k": "all"}) == fine_print({"top_k": "ALL"})
    for other in ({"top_k": 4}, {"top_k": "all"}, {"top_k": 5, "mil_method": "gradient_x_input"}):
        assert fine_print(other) != fine_print(same[0])
