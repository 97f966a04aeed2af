"""What `attnmap explain` reads and writes around the maps themselves (found by
bench/explain_cli_sweep.py): which files a folder or pattern gives, where the outputs may go, and
what a rerun into a folder of earlier runs keeps, replaces or removes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from cli_runner import run_cli
from PIL import Image

import attnmap.vit.batch as batch
from attnmap.errors import InputError
from attnmap.io_utils import read_png_text, temporary_name
from attnmap.vit.image_files import EarlierOutputWarning, expand_image_paths

pytestmark = pytest.mark.usefixtures("single_thread")
MODEL = ["--model", "timm:vit_tiny_patch16_224", "--model-arg", "depth=1", "--model-arg", "img_size=32"]


def _image(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (36, 36, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, num_classes=3
    ).eval()


def _run(model, paths, out, method="grad_rollout", target=None, **kwargs) -> list[Path]:
    return batch.explain_paths(paths, model, method, target, out, progress=False, **kwargs)


def test_folders_patterns_and_repeats_give_each_file_once(tmp_path: Path) -> None:
    """A file named twice (directly and through its folder, a pattern, a link) was explained twice
    under two names; a pattern no shell expanded was "not found"; macOS's ._x.png stopped a folder."""
    a, b = _image(tmp_path / "in" / "a.png", 0), _image(tmp_path / "in" / "b.png", 1)
    (tmp_path / "in" / "._a.png").write_bytes(b"\x00\x05\x16\x07" + bytes(60))  # AppleDouble, not an image
    os.symlink(a, tmp_path / "link.png")
    found = expand_image_paths([a, tmp_path / "in", str(tmp_path / "in" / "*.png"), tmp_path / "link.png"])
    assert found == [a, b]
    with pytest.raises(InputError, match="no file matches"):
        expand_image_paths([str(tmp_path / "in" / "*.jpg")])
    with pytest.raises(InputError, match="is the image folder"):
        expand_image_paths([tmp_path / "in"], out_dir=tmp_path / "in")
    assert expand_image_paths([a], out_dir=tmp_path / "in") == [a]  # a file: only it is read


def test_a_folder_of_subfolders_says_how_to_name_their_images(tmp_path: Path) -> None:
    """A folder holding its images in subfolders said only 'no images in directory': the user was
    not told that subfolders are not read, nor how to name them."""
    _image(tmp_path / "scans" / "day1" / "a.png", 0)
    _image(tmp_path / "scans" / "day2" / "b.png", 1)
    with pytest.raises(InputError, match="subfolders \\(day1, day2\\) are not read") as refused:
        expand_image_paths([tmp_path / "scans"])
    pattern = str(refused.value).split("such as ")[1].strip("'")
    assert [p.name for p in expand_image_paths([pattern])] == ["a.png", "b.png"]  # the hint works
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="in directory .*empty$"):
        expand_image_paths([tmp_path / "empty"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", ""], "no method given"),
        (["--method", "rollout,rollout"], "rollout is named more than once"),
        (["--method", "rollout", "--scheduler", "no-port"], "not a Dask scheduler address"),
        (["--method", "rollout", "--out", ""], "is empty: give a folder"),
    ],
)
def test_odd_options_are_one_line_errors(
    tmp_path: Path, capsys, monkeypatch, args: list[str], message: str
) -> None:
    """'' ran the default method, a repeated method wrote its files twice, a bad scheduler address
    was an internal error, and --out '' wrote into the working folder."""
    image = _image(tmp_path / "a.png", 0)
    monkeypatch.chdir(tmp_path)  # where --out '' wrote
    out = ["--out", str(tmp_path / "out")] if "--out" not in args else []
    code, _, err = run_cli(capsys, "explain", image, *MODEL, *args, *out, "--quiet")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


def test_out_as_the_image_folder_is_refused_before_a_rerun_reads_its_overlays(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "photos"
    _image(folder / "a.png", 0)
    code, _, err = run_cli(
        capsys, "explain", folder, *MODEL, "--method", "rollout", "--out", folder, "--quiet"
    )
    assert code == 2 and "is the image folder" in err
    assert sorted(p.name for p in folder.iterdir()) == ["a.png"]


def test_files_named_in_the_output_folder_leave_out_its_earlier_pictures(tmp_path: Path, capsys) -> None:
    """`photos/*.png --out photos` was refused only as a folder: named file by file, a rerun
    explained the first run's overlays and grid as photos (photo_rollout_rollout.png). Now the
    pictures attnmap wrote there are left out, said in one line; the photos are kept as before."""
    folder = tmp_path / "photos"
    photos = [_image(folder / "a.png", 0), _image(folder / "b.png", 1)]
    args = ["explain", *MODEL, "--method", "rollout,attention", "--out", folder, "--quiet"]
    assert run_cli(capsys, *args[:1], *photos, *args[1:])[0] == 0
    names = sorted(p.name for p in folder.iterdir())
    assert "a_rollout.png" in names and "b_attention.png" in names
    every_png = sorted(folder.glob("*.png"))  # what the shell gives for photos/*.png
    with pytest.warns(EarlierOutputWarning, match="and 3 more: pictures an earlier run wrote"):
        code, out, _ = run_cli(capsys, *args[:1], *every_png, *args[1:])
    assert code == 0 and f"kept {len(names) - len(photos)} made" in out  # every output, records too
    assert sorted(p.name for p in folder.iterdir()) == names
    code, _, err = run_cli(capsys, *args[:1], folder / "a_rollout.png", *args[1:])
    assert code == 2 and "not images to explain" in err and len(err.strip().splitlines()) == 1
    elsewhere = tmp_path / "copy_of_an_overlay.png"  # outside the output folder: an image as any
    elsewhere.write_bytes((folder / "a_rollout.png").read_bytes())
    assert expand_image_paths([elsewhere], out_dir=folder) == [elsewhere]


def test_pictures_of_a_rewritten_map_go_unless_they_show_the_same_map(model, tmp_path: Path) -> None:
    """A --method all run rewrote the maps for another target and left the single-method overlay
    drawn for the old target beside them; a single-method run left a grid showing the old map."""
    image, out = _image(tmp_path / "a.png", 0), tmp_path / "out"
    _run(model, [image], out, target=0)
    _run(model, [image], out, method="all", target=0)  # the same maps: the overlay still shows them
    assert (out / "a_grad_rollout.png").is_file() and (out / "a_all_methods.png").is_file()
    _run(model, [image], out, alpha=0.3, target=0)  # only the drawing changed: the grid stays true
    assert (out / "a_all_methods.png").is_file()
    _run(model, [image], out, target=1)  # another map: the grid showing the old one goes
    assert not (out / "a_all_methods.png").exists()
    _run(model, [image], out, method="all", target=2)
    assert not (out / "a_grad_rollout.png").exists()
    record = json.loads((out / "a_grad_rollout.npy.json").read_text())
    assert json.loads(record["parameters"])["target"] == 2
    Image.new("RGB", (8, 8)).save(out / "a_grad_rollout.png")  # not attnmap's (no record): never deleted
    _run(model, [image], out, method="all", target=0)
    assert (out / "a_grad_rollout.png").is_file()


def test_an_interrupted_runs_temporaries_are_removed(model, tmp_path: Path) -> None:
    image, out = _image(tmp_path / "a.png", 0), tmp_path / "out"
    _run(model, [image], out)
    dead = temporary_name(out / "a_grad_rollout.npy")
    dead = dead.with_name(dead.name.replace(f"-{os.getpid()}-", "-4194303-"))  # no such process
    dead.write_bytes(b"partial")
    mine = temporary_name(out / "a_grad_rollout.png")  # a live writer's (this process): kept
    mine.write_bytes(b"being written")
    _run(model, [image], out)
    assert not dead.exists() and mine.exists()


def test_a_later_run_keeps_another_images_outputs_of_the_same_name(
    model, tmp_path: Path, monkeypatch
) -> None:
    """day2/scan.png explained into the folder holding day1/scan.png's maps overwrote them."""
    first, second = _image(tmp_path / "day1" / "scan.png", 0), _image(tmp_path / "day2" / "scan.png", 1)
    out = tmp_path / "out"
    _run(model, [first], out)
    _run(model, [second], out)
    images = {name: read_png_text(out / f"{name}_grad_rollout.png")["image"] for name in ("scan", "scan_2")}
    assert images == {"scan": str(first), "scan_2": str(second)}
    explained = []
    original = batch.explain
    monkeypatch.setattr(
        batch, "explain", lambda m, x, *a, **k: explained.append(len(x)) or original(m, x, *a, **k)
    )
    _run(model, [second, first], out)  # both again, in another order: each keeps its name, nothing redone
    assert explained == []
    _image(first, 2)  # day1's image changed in place: its own name, recomputed
    _run(model, [first], out)
    assert explained == [1] and read_png_text(out / "scan_grad_rollout.png")["image"] == str(first)


def test_direction_rows_are_counted_against_the_images_explained(tmp_path: Path, capsys) -> None:
    """A file named twice is explained once: two rows for it are refused by the option's name, not
    as a shape the model's output does not fit."""
    image = _image(tmp_path / "a.png", 0)
    np.save(tmp_path / "rows.npy", np.random.default_rng(0).normal(size=(2, 192)))
    args = ["explain", image, image, *MODEL, "--model-arg", "num_classes=0", "--method", "lrp"]
    code, _, err = run_cli(
        capsys, *args, "--direction", tmp_path / "rows.npy", "--out", tmp_path / "o", "--quiet"
    )
    assert code == 2 and "holds 2 rows for 1 images" in err and len(err.strip().splitlines()) == 1, err


def test_long_names_and_relative_paths(model, tmp_path: Path, monkeypatch) -> None:
    """A 200-character photo name failed ("File name too long" from a temporary's name); "a.png"
    given relative to two working folders recorded "a.png" twice, so the second run took the
    first's outputs for its own."""
    from attnmap.vit.explain_outputs import MAX_STEM_BYTES

    long = [_image(tmp_path / "long" / f"{'é' * 120}{tail}.png", 0) for tail in ("", "x")]
    written = _run(model, long, tmp_path / "out")
    stems = {path.name.split("_grad_rollout")[0] for path in written}
    assert len(stems) == 2 and all(len(stem.encode()) <= MAX_STEM_BYTES for stem in stems)
    first, second = _image(tmp_path / "one" / "a.png", 1), _image(tmp_path / "two" / "a.png", 2)
    for image in (first, second):
        monkeypatch.chdir(image.parent)
        _run(model, [Path("a.png")], tmp_path / "shared")
    records = sorted(json.loads(p.read_text())["image"] for p in (tmp_path / "shared").glob("*.npy.json"))
    assert records == [str(first), str(second)]


def test_unreadable_files_do_not_stop_the_others(model, tmp_path: Path) -> None:
    """One corrupt file in a folder stopped its whole batch: now every readable image is written,
    then one line names what could not be read."""
    good = [_image(tmp_path / "in" / f"{name}.png", i) for i, name in enumerate("ace")]
    (tmp_path / "in" / "b.png").write_bytes(b"<html>not a png</html>")
    Image.new("RGB", (4, 4)).save(tmp_path / "in" / "d.png")  # smaller than one patch
    paths = expand_image_paths([tmp_path / "in"])
    with pytest.raises(InputError, match=r"^2 of 5 images could not be explained.*b\.png.*\(and 1 more\)$"):
        _run(model, paths, tmp_path / "out", batch_size=8)
    assert sorted(p.name for p in (tmp_path / "out").glob("*.npy")) == [
        f"{p.stem}_grad_rollout.npy" for p in good
    ]
    with pytest.raises(InputError, match="^cannot read image"):  # the bad one alone: its own message
        _run(model, [tmp_path / "in" / "b.png"], tmp_path / "out")


def test_an_image_that_can_no_longer_be_read_keeps_no_map_of_its_earlier_content(
    model, tmp_path: Path
) -> None:
    """a.png explained, then overwritten by a broken file: the rerun failed on it and left the old
    content's map and overlay as a.png's; another image's outputs and files not attnmap's stay."""
    image, other = _image(tmp_path / "in" / "a.png", 0), _image(tmp_path / "in" / "b.png", 1)
    out = tmp_path / "out"
    _run(model, [image, other], out)
    Image.new("RGB", (8, 8)).save(out / "a_all_methods.png")  # not attnmap's (no record): never deleted
    image.write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"^cannot read image .*a\.png"):
        _run(model, [image, other], out)
    assert sorted(path.name for path in out.iterdir()) == [
        "a_all_methods.png", "b_grad_rollout.npy", "b_grad_rollout.npy.json", "b_grad_rollout.png"
    ]


def test_an_image_named_like_another_images_output_gets_its_own_files(model, tmp_path: Path) -> None:
    """x.png's lrp_attention map and x_lrp.png's attention map were both written to
    x_lrp_attention.npy: one image's map was lost and the file passed for the other's."""
    plain, suffixed = _image(tmp_path / "in" / "x.png", 0), _image(tmp_path / "in" / "x_lrp.png", 1)
    out = tmp_path / "out"
    for _ in range(2):  # a fresh folder, then a rerun into it
        written = _run(model, [plain, suffixed], out, method="attention,lrp_attention")
        records = [json.loads(path.read_text()) for path in out.glob("*.npy.json")]
        pairs = {(record["image"], record["method"]) for record in records}
        assert pairs == {(str(p), m) for p in (plain, suffixed) for m in ("attention", "lrp_attention")}
    assert len({path.name for path in written}) == len(written)


def test_a_flat_map_is_reported_by_its_file_in_every_batch(tmp_path: Path) -> None:
    """explain_paths let `explain`'s warning through as "the attn_gradcam map of image 1": the
    position in a batch, not the file, and Python's once-per-message filter then hid the same
    position in the next batches."""
    import warnings

    from attnmap.vit.explain import FlatMapWarning

    torch.manual_seed(0)
    flat = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, num_classes=3)
    with torch.no_grad():
        flat.head.weight.zero_()  # no gradient reaches the attention: every attn_gradcam map is zero
    paths = [_image(tmp_path / "in" / f"photo{index}.png", index) for index in range(5)]
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")  # Python's filter outside pytest: each message once
        _run(flat.eval(), paths, tmp_path / "out", method="attn_gradcam", batch_size=2)
    messages = sorted(str(w.message) for w in seen if issubclass(w.category, FlatMapWarning))
    said = "is all zero: it shows nothing about the image"
    assert messages == [f"attnmap: the attn_gradcam map of {path} {said}" for path in paths]


def test_a_grid_on_a_large_original_is_drawn_at_the_size_of_its_panels(
    model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--method all --on original`` on a 12-megapixel photo took a minute with a tiny model: the
    crop was traced through the preprocessing once per method, and each method's overlay was drawn
    at full resolution for a panel a few hundred pixels wide."""
    import attnmap.render.placement as placement
    from attnmap.render.grid import panel_pixels
    from attnmap.vit.registry import methods

    traced, drawn = [], []
    real_crop_box, real_overlay = batch.crop_box, placement.overlay_in_box
    monkeypatch.setattr(batch, "crop_box", lambda *a, **k: traced.append(a[1]) or real_crop_box(*a, **k))
    def drawing(image, *args, **kwargs):
        drawn.append(image.shape)
        return real_overlay(image, *args, **kwargs)

    monkeypatch.setattr(placement, "overlay_in_box", drawing)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (1500, 2000, 3), dtype=np.uint8)).save(photo)
    _run(model, [photo], tmp_path / "grid", method="all", on="original")
    assert traced == [(2000, 1500)]  # the crop traced once per image, on the photo's own size
    assert drawn == [(2 * panel_pixels() * 3 // 4, 2 * panel_pixels(), 3)] * len(methods())
    with Image.open(tmp_path / "grid" / "photo_all_methods.png") as grid:
        assert grid.size[0] > grid.size[1]
    traced.clear(), drawn.clear()
    _run(model, [photo], tmp_path / "one", method="rollout,attention", on="original")
    assert traced == [(2000, 1500)] and drawn == [(1500, 2000, 3)] * 2  # an overlay PNG: full size
