"""Reruns after a user changed things between runs give what a fresh run into an empty folder gives.

Each test changes one input the way users do (a file replaced by other bytes with its old size and
mtime put back, weights updated in place through ``p.data``, a map rewritten by another run) and
compares the rerun's outputs with a fresh run's, not with the code's own idea of what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic_slide_files import write_changed_config, write_clam_checkpoint, write_pipeline_setup
from test_wsi_reruns import ran, run_all, snapshot

from attnmap.fingerprint import file_identity
from attnmap.wsi.pipeline.config import load_config

pytestmark = pytest.mark.usefixtures("single_thread")


def replace_keeping_stamp(path: Path, data: bytes) -> None:
    """Write ``data`` over ``path`` (same size) and put its old mtime back, as ``cp -p`` would."""
    status = path.stat()
    assert len(data) == status.st_size
    path.write_bytes(data)
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))


def write_raw_slide(path: Path, seed: int) -> None:
    """An uncompressed two-level pyramidal TIFF: every seed gives a file of the same size."""
    import tifffile
    from synthetic_slide_files import write_test_slide

    compressed = write_test_slide(path.with_name(f"zlib_{seed}.tif"), seed)
    with tifffile.TiffFile(compressed) as tif:
        image = tif.pages[0].asarray()
    compressed.unlink()
    with tifffile.TiffWriter(path) as tif:
        for index in range(2):
            tif.write(image, tile=(256, 256), photometric="rgb", subfiletype=min(index, 1),
                      resolution=(2e4 / 2**index, 2e4 / 2**index), resolutionunit="CENTIMETER")
            image = image[::2, ::2]


def test_file_identity_follows_the_bytes_not_the_mtime(tmp_path: Path) -> None:
    path = tmp_path / "weights.bin"
    path.write_bytes(b"a" * 1000)
    before = file_identity(path)
    replace_keeping_stamp(path, b"b" * 1000)
    after = file_identity(path)
    assert after["sha256"] != before["sha256"] == hashlib.sha256(b"a" * 1000).hexdigest()
    copy = tmp_path / "copy.bin"
    shutil.copyfile(path, copy)
    os.replace(copy, path)  # same bytes, new inode and mtime: nothing to recompute
    assert file_identity(path) == after
    moved = tmp_path / "elsewhere" / "weights.bin"  # moved to another folder: the same weights
    moved.parent.mkdir()
    shutil.move(path, moved)
    assert file_identity(moved) == after


def test_a_slide_replaced_with_its_size_and_mtime_is_recomputed(tmp_path: Path) -> None:
    setup = write_pipeline_setup(tmp_path / "setup", n_slides=1)
    slide = setup.parent / "slides" / "slide_0.tif"
    write_raw_slide(slide, seed=0)
    work = tmp_path / "work"
    config = load_config(write_changed_config(setup, work))
    run_all(config)
    other = tmp_path / "other.tif"
    write_raw_slide(other, seed=5)
    replace_keeping_stamp(slide, other.read_bytes())
    results = run_all(config)
    assert ran(results)["slide_0"] == {"tissue", "patches", "features", "attention", "heatmap", "sampling"}
    assert "tissue (slide.sha256 changed)" in results["slide_0"]["summary"]
    fresh = tmp_path / "fresh"
    run_all(load_config(write_changed_config(setup, fresh)))
    assert snapshot(work) == snapshot(fresh)
    assert ran(run_all(config))["slide_0"] == set()  # and now all of it is reused


def test_the_model_cache_reloads_a_checkpoint_replaced_in_place(tmp_path: Path) -> None:
    from attnmap.model_cache import cached_clam

    path = write_clam_checkpoint(tmp_path / "clam.pt", seed=0)
    first, checksum = cached_clam(str(path), "cpu")
    other = write_clam_checkpoint(tmp_path / "clam_1.pt", seed=1)
    renamed = tmp_path / "tmp" / "clam.pt"  # torch names the archive after the file: same name, same size
    renamed.parent.mkdir()
    torch.save(torch.load(other, weights_only=True), renamed)
    replace_keeping_stamp(path, renamed.read_bytes())
    second, new_checksum = cached_clam(str(path), "cpu")
    assert new_checksum != checksum and second is not first
    expected = torch.load(path, weights_only=True)
    assert all(torch.equal(second.state_dict()[key], value) for key, value in expected.items())


def tiny_vit() -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, num_classes=3
    ).eval()


@pytest.mark.parametrize("method", ["lrp", "transformer_attribution"])
def test_maps_after_weights_changed_through_data_are_the_new_models(method: str) -> None:
    import attnmap
    from attnmap.vit.lrp.weight_cache import weight_cache

    model, images = tiny_vit(), torch.randn(2, 3, 32, 32)
    with weight_cache():  # a caller's block around several calls reuses |W| ...
        attnmap.explain(model, images, method)
        attnmap.explain(model, images, method)
    attnmap.explain(model, images, method)
    for parameter in model.parameters():  # ... an EMA / DINO-teacher style update, no version bump
        parameter.data.mul_(0.7)
    updated = attnmap.explain(model, images, method)
    fresh = tiny_vit()
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(updated, attnmap.explain(fresh, images, method), rtol=0, atol=0)


def test_the_cpu_encoder_graph_follows_weights_written_through_data() -> None:
    from attnmap.wsi.encoder_graph import cpu_inference_graph

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 5, 3), torch.nn.Flatten()
    ).eval()
    batch = torch.randn(3, 3, 8, 8)
    with torch.inference_mode():
        cpu_inference_graph(model, batch)
        for parameter in model.parameters():
            parameter.data.copy_(torch.randn_like(parameter))
        graph = cpu_inference_graph(model, batch)
        torch.testing.assert_close(graph(batch), model(batch), rtol=1e-4, atol=1e-5)


def test_explain_redoes_maps_another_run_rewrote_and_images_edited_in_place(tmp_path: Path) -> None:
    from PIL import Image

    import attnmap.vit.batch as batch

    model = tiny_vit()
    rng = np.random.default_rng(0)
    paths = []
    for name in "ab":
        paths.append(tmp_path / f"{name}.png")
        Image.fromarray(rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)).save(paths[-1])

    def run(out: Path, method: str, **options) -> dict[str, np.ndarray]:
        batch.explain_paths(paths, model, method, None, out, batch_size=2, progress=False, **options)
        return {stem: np.load(out / f"{stem}_rollout.npy") for stem in "ab"}

    out = tmp_path / "out"
    run(out, "rollout", discard_ratio=0.5)
    run(out, "all")  # rewrites a_rollout.npy with the default options; a_rollout.png stays
    again = run(out, "rollout", discard_ratio=0.5)
    fresh = run(tmp_path / "fresh", "rollout", discard_ratio=0.5)
    assert all(np.array_equal(again[k], v) for k, v in fresh.items())
    pixels = np.asarray(Image.open(paths[0])).copy()
    pixels[:16, :16] = 255 - pixels[:16, :16]
    edited = tmp_path / "edited.png"
    Image.fromarray(pixels).save(edited)
    if edited.stat().st_size == paths[0].stat().st_size:
        replace_keeping_stamp(paths[0], edited.read_bytes())
    else:  # PNG sizes depend on the pixels: keep at least the old mtime
        status = paths[0].stat()
        shutil.copyfile(edited, paths[0])
        os.utime(paths[0], ns=(status.st_atime_ns, status.st_mtime_ns))
    before = again
    again = run(out, "rollout", discard_ratio=0.5)
    fresh = run(tmp_path / "fresh_2", "rollout", discard_ratio=0.5)
    # the edited image is redone alone (a batch of one) and the fresh run has both: the same map up to
    # float32 rounding, which can differ with the batch's size; a stale map differs by its whole range
    peak = float(np.abs(fresh["a"]).max())
    assert float(np.abs(before["a"] - fresh["a"]).max()) > 0.1 * peak
    np.testing.assert_allclose(again["a"], fresh["a"], rtol=1e-5, atol=1e-5 * peak)
    assert np.array_equal(again["b"], fresh["b"])


def test_mil_folds_retrain_after_a_bag_replaced_with_its_size_and_mtime(tmp_path: Path) -> None:
    from test_mil_train import make_cohort

    from attnmap.mil.bags import write_h5_bag
    from attnmap.mil.train import train_mil

    options = dict(folds=2, max_epochs=1, lr=1e-3, seed=3, k_sample=4, val_fraction=0.2, progress=False)
    features = tmp_path / "features"
    labels = make_cohort(features, n_slides=8, n_patches=6, dim=8)
    run = tmp_path / "run"
    train_mil(features, labels, run, verbose=False, **options)
    bag = features / "h5_files" / "slide_00.h5"
    other = tmp_path / "other.h5"
    write_h5_bag(other, np.random.default_rng(5).normal(size=(6, 8)).astype(np.float32),
                 np.stack([np.arange(6) * 256, np.zeros(6)], axis=1))
    if other.stat().st_size != bag.stat().st_size:
        pytest.skip("h5 bags of equal shape differ in size here")
    replace_keeping_stamp(bag, other.read_bytes())
    seen: list[int] = []
    train_mil(features, labels, run, verbose=False, on_epoch=lambda f, e, r: seen.append(f), **options)
    assert set(seen) == {0, 1}
    fresh = tmp_path / "fresh"
    train_mil(features, labels, fresh, verbose=False, **options)
    for fold in range(2):
        ours = torch.load(run / f"fold_{fold}" / "checkpoint.pt", weights_only=True)
        theirs = torch.load(fresh / f"fold_{fold}" / "checkpoint.pt", weights_only=True)
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    config = run / "config.json"  # cut short by a run killed while writing it: not a traceback
    config.write_bytes(config.read_bytes()[:10])
    seen.clear()
    train_mil(features, labels, run, verbose=False, on_epoch=lambda f, e, r: seen.append(f), **options)
    assert seen == [] and json.loads(config.read_text())["folds"] == 2


def test_each_drawn_file_is_redrawn_only_for_the_options_it_shows(tmp_path: Path) -> None:
    """A legend or class names change the PNG only, a tiff_level the TIFF only: a full-resolution
    TIFF takes minutes on a real slide. Every file still equals a fresh run's."""
    setup = write_pipeline_setup(tmp_path / "setup", n_slides=1)
    work = tmp_path / "work"
    folder = work / "heatmaps" / "slide_0"
    sections: dict = {"heatmap": {"tiff": True, "save_original": True}}

    def change(expected: set[str], **changes: dict) -> None:
        for section, values in changes.items():
            sections.setdefault(section, {}).update(values)
        stamps = {name: (folder / f"slide_0_{name}").stat().st_mtime_ns
                  for name in ("heatmap.png", "heatmap.tif", "original.png")}
        run_all(load_config(write_changed_config(setup, work, **sections)))
        redrawn = {name for name, stamp in stamps.items()
                   if (folder / f"slide_0_{name}").stat().st_mtime_ns != stamp}
        assert redrawn == expected, changes
        fresh = tmp_path / f"fresh_{len(list(tmp_path.iterdir()))}"
        run_all(load_config(write_changed_config(setup, fresh, **sections)))
        assert snapshot(work) == snapshot(fresh)

    run_all(load_config(write_changed_config(setup, work, **sections)))
    change({"heatmap.png"}, heatmap={"legend": True})
    change({"heatmap.png"}, model={"class_names": ["benign", "malignant"]})
    change({"heatmap.tif"}, heatmap={"tiff_level": 1})
    change({"heatmap.png", "heatmap.tif"}, heatmap={"cmap": "viridis"})
    change({"heatmap.png", "original.png"}, heatmap={"vis_level": 0})


def test_a_multi_file_slide_changes_with_any_of_its_files(tmp_path: Path) -> None:
    from attnmap.wsi.pipeline.fingerprint import slide_identity

    mirax = tmp_path / "slide.mrxs"
    mirax.write_bytes(b"index")
    (tmp_path / "slide").mkdir()
    data = tmp_path / "slide" / "Data0001.dat"
    data.write_bytes(b"x" * 100)
    before = slide_identity(mirax)
    replace_keeping_stamp(data, b"y" * 100)
    assert slide_identity(mirax) != before
    dicom = [tmp_path / "dicom" / name for name in ("level0", "level1")]
    dicom[0].parent.mkdir()
    for index, path in enumerate(dicom):
        path.write_bytes(b"\0" * 128 + b"DICM" + bytes([index]) * 50)
    before = slide_identity(dicom[0])
    replace_keeping_stamp(dicom[1], b"\0" * 128 + b"DICM" + b"\7" * 50)
    assert slide_identity(dicom[0]) != before


def test_the_tissue_mask_follows_a_tissue_file_another_command_remade(tmp_path: Path, capsys) -> None:
    from cli_runner import run_cli
    from PIL import Image
    from synthetic_slide_files import write_test_slide

    slide = write_test_slide(tmp_path / "s.tif", seed=3)
    common = ["--seg-level", "1", "--a-h", "0.01", "--a-t", "0.05", "--patch-size", "128"]

    def mask(out: Path, command: str, sthresh: str) -> np.ndarray:
        options = common if command == "patch" else common[:6]
        code, _, _ = run_cli(capsys, "wsi", command, slide, "-o", out, *options, "--sthresh", sthresh)
        assert code == 0
        return np.asarray(Image.open(out / "tissue" / "s_mask.png"))

    out = tmp_path / "out"
    first = mask(out, "segment", "8")
    run_cli(capsys, "wsi", "patch", slide, "-o", out, *common, "--sthresh", "90")  # tissue remade, no mask
    again = mask(out, "segment", "90")
    assert np.array_equal(again, mask(tmp_path / "fresh", "segment", "90"))
    assert not np.array_equal(again, first)


def test_a_lock_whose_pid_now_names_another_process_is_taken_over(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    from attnmap.errors import InputError
    from attnmap.lock import LOCK_NAME, folder_lock, process_start

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = {"pid": sleeper.pid, "host": socket.gethostname(), "since": 0, "command": "x"}
        if process_start(sleeper.pid) is None:
            pytest.skip("no /proc here: process start times unknown")
        lock = tmp_path / LOCK_NAME
        lock.write_text(json.dumps({**holder, "start": process_start(sleeper.pid)}))  # its real holder
        with pytest.raises(InputError, match="in use by another run"), folder_lock(tmp_path):
            pass
        lock.write_text(json.dumps({**holder, "start": "1"}))  # a killed run's pid, given to the sleeper
        with folder_lock(tmp_path) as taken:
            assert json.loads(taken.read_text())["pid"] == os.getpid()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_any_output_deleted_or_cut_short_is_made_again_as_a_fresh_run_makes_it(tmp_path: Path) -> None:
    """Every file of a finished run in turn: deleted, then cut to half its size; the rerun brings
    back the reference folder (sidecars, sample crops and the GeoJSON included)."""
    setup = write_pipeline_setup(tmp_path / "setup", n_slides=1)
    work = tmp_path / "work"
    config = load_config(write_changed_config(
        setup, work, heatmap={"tiff": True, "save_original": True}, export={"geojson": True}
    ))
    run_all(config)
    reference = snapshot(work)
    files = sorted(path for path in work.rglob("*") if path.is_file() and path.name != "run_report.json")
    assert len(files) >= 15
    for path in files:
        for damage in ("delete", "cut"):
            if damage == "delete":
                path.unlink()
            else:
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            run_all(config)
            assert snapshot(work) == reference, f"{damage} {path.relative_to(work)}"


def test_the_users_own_feature_file_replaced_remakes_the_attention(tmp_path: Path) -> None:
    """CLAM features brought by the user are used as they are: their content, not attnmap's chain of
    fingerprints, is what the attention depends on."""
    import h5py

    from attnmap.mil.bags import write_h5_bag
    from attnmap.wsi.pipeline import run_slide
    from attnmap.wsi.pipeline.config import read_slide_list
    from attnmap.wsi.pipeline.outputs import SlideOutputs

    setup = write_pipeline_setup(tmp_path / "setup", n_slides=1)
    sections = {"features": {"save_pt": False}, "sampling": {"top_k": 0, "bottom_k": 0}}
    grid = SlideOutputs(tmp_path / "grid", "slide_0")  # attnmap's patch grid, for CLAM-style features
    grid_config = load_config(write_changed_config(setup, grid.root, **sections))
    run_slide(read_slide_list(grid_config)[0], grid_config)
    with h5py.File(grid.patches, "r") as handle:
        coords = handle["coords"][()]

    def bring(out: Path, seed: int) -> dict:
        outputs = SlideOutputs(out, "slide_0")
        outputs.patches.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(grid.patches, outputs.patches)
        features = np.random.default_rng(seed).normal(size=(len(coords), 8)).astype(np.float32)
        write_h5_bag(outputs.features_h5, features, coords)  # no attnmap record: the user's file
        config = load_config(write_changed_config(setup, out, **sections))
        return run_slide(read_slide_list(config)[0], config)

    work = tmp_path / "work"
    assert not bring(work, seed=0)["stages"]["features"]
    again = bring(work, seed=1)
    assert again["stages"]["attention"] and not again["stages"]["features"], again["summary"]
    bring(tmp_path / "fresh", seed=1)
    assert snapshot(work) == snapshot(tmp_path / "fresh")


def test_slides_and_models_moved_to_another_folder_are_reused(tmp_path: Path) -> None:
    """Slides, encoder and model copied elsewhere (new paths, inodes and mtimes, same bytes): no
    stage is recomputed; only the prediction, which records the slide's path, is written again."""
    setup = write_pipeline_setup(tmp_path / "setup", n_slides=1)
    work = tmp_path / "work"
    run_all(load_config(write_changed_config(setup, work)))
    moved = tmp_path / "moved"
    shutil.copytree(setup.parent, moved)
    results = run_all(load_config(write_changed_config(moved / setup.name, work)))
    assert ran(results)["slide_0"] == set(), results["slide_0"]["summary"]
    assert "prediction (slide_path changed)" in results["slide_0"]["summary"]
    fresh = tmp_path / "fresh"
    run_all(load_config(write_changed_config(moved / setup.name, fresh)))
    ours, theirs = snapshot(work), snapshot(fresh)
    sidecar = "features/pt_files/slide_0.pt.json"  # a flat provenance record: it names the old paths
    assert ours.pop(sidecar)["attnmap_fingerprint"] == theirs.pop(sidecar)["attnmap_fingerprint"]
    assert ours == theirs
