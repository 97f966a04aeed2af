"""``--method all``: each image explained once, each left-out method said once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from cli_runner import run_cli
from PIL import Image

from attnmap.vit import batch as batch_module
from attnmap.vit import method_choice
from attnmap.vit.batch import explain_paths
from attnmap.vit.method_choice import SkippedMethodWarning


def _images(folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        paths.append(folder / f"img{index}.png")
        Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def _counting(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Images each method is run on, over every call (the probe's and the batches')."""
    seen: Counter = Counter()

    def counted(original):
        def explain(model, images, method, target=None, **options):
            seen[method] += images.shape[0]
            return original(model, images, method, target, **options)

        return explain

    monkeypatch.setattr(batch_module, "explain", counted(batch_module.explain))
    monkeypatch.setattr(method_choice, "explain", counted(method_choice.explain))
    return seen


@pytest.mark.parametrize("batch_size", [1, 2])
def test_the_probed_image_is_explained_once_with_the_maps_of_single_method_runs(
    tmp_path, monkeypatch, batch_size
):
    """`--method all` ran every method on the first image to find the runnable ones, then again on
    that image in the main loop. Now the probe's maps are the first image's: each method runs on
    each image once, and the maps are those of a run of that method alone."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=32, num_classes=3)
    model = model.double().eval()  # float64: maps equal whatever images share their batch
    paths = _images(tmp_path / "images", 3)
    seen = _counting(monkeypatch)
    explain_paths(paths, model, "all", None, tmp_path / "all", batch_size=batch_size, progress=False)
    assert set(seen) == set(method_choice.methods())
    assert all(count == len(paths) for count in seen.values()), seen
    for name in ("rollout", "lrp", "transformer_attribution"):
        explain_paths(paths, model, name, None, tmp_path / name, batch_size=3, progress=False)
        for path in paths:
            alone = np.load(tmp_path / name / f"{path.stem}_{name}.npy")
            together = np.load(tmp_path / "all" / f"{path.stem}_{name}.npy")
            np.testing.assert_allclose(together, alone, rtol=1e-9, atol=1e-12 * np.abs(alone).max())


def test_an_unreadable_first_file_leaves_the_probe_on_the_next_one(tmp_path, monkeypatch):
    """The probe is the first readable image: unreadable files before it are still reported, and it
    is written with its batch's others."""
    from attnmap.errors import InputError

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, num_classes=3)
    paths = _images(tmp_path / "images", 2)
    broken = tmp_path / "images" / "a_broken.png"
    broken.write_bytes(b"not a png")
    seen = _counting(monkeypatch)
    with pytest.raises(InputError, match="1 of 3 images could not be explained"):
        explain_paths([broken, *paths], model, "all", None, tmp_path / "out", batch_size=2, progress=False)
    assert all(count == len(paths) for count in seen.values()), seen
    for path in paths:
        assert (tmp_path / "out" / f"{path.stem}_all_methods.png").is_file()
        assert np.load(tmp_path / "out" / f"{path.stem}_lrp.npy").shape == (32, 32)


def test_a_skipped_method_is_named_once_on_its_line(tmp_path, capsys):
    """The line said 'method lrp skipped: method 'lrp' needs a target: ...'. Now the method is named
    once, the reason following."""
    paths = _images(tmp_path / "images", 1)
    args = ["explain", *paths, "--model", "attnmap:patch-vit", "--method", "all", "--out", tmp_path / "out"]
    with pytest.warns(SkippedMethodWarning) as record:
        code, _, _ = run_cli(capsys, *args, "--quiet")
    assert code == 0
    lines = [str(w.message) for w in record if w.category is SkippedMethodWarning]
    assert lines
    for line in lines:
        name = line.split()[1]
        assert line.startswith(f"method {name} skipped: needs a target: the model is headless"), line
        assert line.count(name) == 1, line


def test_an_animated_first_image_is_read_once(tmp_path):
    """The probe read the first image, then the main loop read it again: an animated GIF's
    first-frame warning came twice. Now it is read once."""
    from attnmap.vit.preprocess import FirstFrameWarning

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, num_classes=3)
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(2)]
    gif = tmp_path / "moving.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    with pytest.warns(FirstFrameWarning) as record:
        explain_paths([gif], model, "all", None, tmp_path / "out", progress=False)
    assert sum(w.category is FirstFrameWarning for w in record) == 1


@pytest.mark.slow
def test_workers_say_each_warning_once_on_one_line(tmp_path):
    """With --workers 2 every task (a batch) printed the skipped methods again, and the workers
    printed them in Python's two-line format. Now the tasks return their warnings and the command
    says each once, as the one-line warnings of a run in process."""
    import subprocess
    import sys

    pytest.importorskip("distributed")
    paths = _images(tmp_path / "images", 2)
    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(2)]
    frames[0].save(tmp_path / "images" / "moving.gif", save_all=True, append_images=frames[1:])
    args = [sys.executable, "-m", "attnmap", "explain", tmp_path / "images", "--model", "attnmap:patch-vit",
            "--method", "all", "--out", tmp_path / "out", "--workers", "2", "--batch-size", "1", "--quiet"]
    done = subprocess.run([str(arg) for arg in args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    skipped = [line for line in lines if " skipped: " in line]
    assert len(skipped) == 6 and len(set(skipped)) == len(skipped), lines  # the six that need a target
    assert sum("moving.gif is animated" in line for line in lines) == 1, lines
    assert all(line.startswith("attnmap: warning: ") for line in lines), lines
    for path in [*paths, tmp_path / "images" / "moving.gif"]:
        assert (tmp_path / "out" / f"{path.stem}_all_methods.png").is_file()


def test_a_failed_task_still_says_its_warnings(tmp_path):
    """A task's warnings went back with its result; a task that failed (an unreadable image in its
    batch) has none, and its other images' warnings were lost. They are said where it ran."""
    from attnmap.errors import InputError
    from attnmap.vit.batch import explain_chunk
    from attnmap.vit.preprocess import FirstFrameWarning

    rng = np.random.default_rng(1)
    frames = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(2)]
    frames[0].save(tmp_path / "moving.gif", save_all=True, append_images=frames[1:])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.warns(FirstFrameWarning), pytest.raises(InputError, match="broken.png"):
        explain_chunk([str(tmp_path / "moving.gif"), str(tmp_path / "broken.png")],
                      model_spec="attnmap:patch-vit", checkpoint=None, method="rollout", target=None,
                      out_dir=str(tmp_path / "out"))
    assert (tmp_path / "out" / "moving_rollout.npy").is_file()


def test_a_class_name_target_reaches_the_tasks(tmp_path, capsys):
    """`--target circle --workers N` failed every batch with 'TypeError: new(): invalid data type
    'str'': a task sliced the target per image before the name was looked up in the model. Now
    the tasks write the maps of a run in process, the name recorded as its index."""
    import json

    paths = _images(tmp_path / "images", 2)
    args = ["explain", *paths, "--model", "attnmap:shapes-vit", "--method", "grad_rollout"]
    args += ["--target", "circle"]
    assert run_cli(capsys, *args, "--out", tmp_path / "here", "--quiet")[0] == 0
    code, out, err = run_cli(capsys, *args, "--out", tmp_path / "tasks", "--workers", "1", "--quiet")
    assert code == 0 and "0 failed" in out, err
    for path in paths:
        here = np.load(tmp_path / "here" / f"{path.stem}_grad_rollout.npy")
        there = np.load(tmp_path / "tasks" / f"{path.stem}_grad_rollout.npy")
        np.testing.assert_allclose(there, here, rtol=1e-5)
        record = json.loads((tmp_path / "tasks" / f"{path.stem}_grad_rollout.npy.json").read_text())
        assert json.loads(record["parameters"])["target"] == 0


def test_a_class_name_for_a_headless_model_points_to_a_direction(tmp_path, capsys):
    """A class name for a headless model said 'give the class index', which a headless model refuses
    too. Now it says the model is headless and points to --direction; a classifier without class
    names still gets the index hint."""
    paths = _images(tmp_path / "images", 1)
    for model, hint in (("attnmap:patch-vit", "--direction"), ("timm:vit_tiny_patch16_224", "class index")):
        args = ["explain", *paths, "--model", model, "--model-arg", "depth=1", "--target", "circle"]
        if model.startswith("attnmap"):
            args = args[:4] + args[6:]  # the bundled model takes no architecture arguments
        code, _, err = run_cli(capsys, *args, "--out", tmp_path / "out", "--quiet")
        said = err.strip().splitlines()[-1]
        assert code == 2 and "names no classes" in said and hint in said, err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.npy"))


def test_a_complete_rerun_asks_no_method_and_still_names_the_skipped_ones(tmp_path, capsys, monkeypatch):
    """A rerun of `--method all` whose outputs were all there still ran every method on the first
    image to find the ones to skip. Now the grids record the refusals: a complete rerun runs no
    method and says the same skipped lines; a grid of the previous version (no such record) is
    still kept, the methods asked again; another target asks again too."""
    import warnings

    from attnmap._version import __version__
    from attnmap.io_utils import read_png_text, save_png
    from attnmap.vit.explain_outputs import SKIPPED_KEY

    paths = _images(tmp_path / "images", 2)
    out = tmp_path / "out"
    args = ["explain", *paths, "--model", "attnmap:patch-vit", "--method", "all", "--out", out, "--quiet"]

    def run(*extra):
        seen = _counting(monkeypatch)
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            code, printed, _ = run_cli(capsys, *args, *extra)
        assert code == 0
        lines = sorted(str(w.message) for w in record if w.category is SkippedMethodWarning)
        return seen, lines, printed

    first, said, _ = run()
    assert first and said
    again, said_again, printed = run()
    assert sum(again.values()) == 0, again  # no method ran
    assert said_again == said and "wrote 0 files" in printed

    def rewrite_grids(change):
        for path in paths:
            grid = out / f"{path.stem}_all_methods.png"
            text = read_png_text(grid)
            change(text)
            save_png(grid, np.asarray(Image.open(grid).convert("RGB")), text)

    rewrite_grids(lambda text: text.update(attnmap_version=text["attnmap_version"] + ".other"))
    other, said_other, printed = run()  # another version may run what this one refused: asked again
    assert sum(other.values()) > 0 and said_other == said and "wrote 0 files" in printed
    assert all(SKIPPED_KEY in read_png_text(out / f"{path.stem}_all_methods.png") for path in paths)
    def as_before(text):  # this version's grid as the previous one wrote it: no record of the refusals
        text.update(attnmap_version=__version__)
        del text[SKIPPED_KEY]

    rewrite_grids(as_before)
    old, said_old, printed = run()
    assert sum(old.values()) > 0 and said_old == said and "wrote 0 files" in printed
    np.save(tmp_path / "direction.npy", np.random.default_rng(1).normal(size=64).astype(np.float32))
    directed, said_directed, _ = run("--direction", tmp_path / "direction.npy")
    assert "lrp" in directed and not said_directed  # the target changed: asked again, and lrp now runs
    assert (out / f"{paths[0].stem}_lrp.npy").is_file()
