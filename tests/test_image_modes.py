"""Image modes and containers a user may hand over: each loads sensibly or fails in one line."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import timm
import torch
from cli_runner import run_cli
from PIL import Image

from attnmap.errors import InputError
from attnmap.vit.preprocess import FirstFrameWarning, _as_pil, load_image, preprocess


def _rgb(height: int = 40, width: int = 60) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["CMYK", "P", "LA", "1", "RGBA", "L"])
def test_eight_bit_modes_load_as_pil_converts_them(tmp_path: Path, mode: str) -> None:
    image = Image.fromarray(_rgb()).convert(mode)
    options = {"transparency": 0} if mode == "P" else {}  # a palette PNG with a transparent colour
    path = tmp_path / ("photo.jpg" if mode == "CMYK" else "photo.png")
    image.save(path, **options)
    with Image.open(path) as stored:
        assert stored.mode == mode
        expected = np.asarray(stored.convert("RGB"))
    np.testing.assert_array_equal(np.asarray(load_image(path)), expected)


def test_sixteen_bit_png_uses_the_type_range(tmp_path: Path) -> None:
    values = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    loaded = np.asarray(load_image(tmp_path / "grey16.png"))[..., 0]
    np.testing.assert_array_equal(loaded, np.round(values / 65535 * 255).astype(np.uint8))


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        ([[-30000, -10000], [0, 20000]], np.int16),  # signed: a negative value cast to uint8 wrapped round
        ([[-4.0, -2.5], [-1.0, -0.5]], np.float32),  # all below 0: clipped to a black picture
        ([[0.0, 300.0], [700.0, 1000.0]], np.float32),  # beyond 255: clipped to white
    ],
)
def test_signed_and_out_of_range_images_are_shown_on_their_data_range(
    tmp_path: Path, values: list, dtype: type
) -> None:
    array = np.array(values, dtype=dtype)
    tifffile.imwrite(tmp_path / "data.tif", array)
    loaded = np.asarray(load_image(tmp_path / "data.tif"))[..., 0].astype(int)
    flat, order = loaded.ravel(), np.argsort(array.ravel(), kind="stable")
    assert flat.min() == 0 and flat.max() == 255
    assert np.all(np.diff(flat[order]) > 0)  # the order of the samples is kept: no wrap, no clipping
    # the same samples as a PIL image object (mode "I" or "F") are shown the same way
    pil = Image.fromarray(array.astype(np.int32) if dtype == np.int16 else array)
    np.testing.assert_array_equal(np.asarray(_as_pil(pil)), loaded.astype(np.uint8)[..., None].repeat(3, -1))


def test_float_image_without_finite_values_is_refused(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "nan.tif", np.full((8, 8), np.nan, dtype=np.float32))
    with pytest.raises(InputError, match="no finite pixel values"):
        load_image(tmp_path / "nan.tif")


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_animated_images_give_their_first_frame_with_a_warning(tmp_path: Path, suffix: str) -> None:
    frames = [Image.fromarray(np.full((16, 24, 3), value, dtype=np.uint8)) for value in (40, 200)]
    path = tmp_path / f"anim{suffix}"
    frames[0].save(path, save_all=True, append_images=frames[1:], lossless=True, duration=100)
    with pytest.warns(FirstFrameWarning, match="2 frames"):
        loaded = np.asarray(load_image(path))
    assert np.all(np.abs(loaded.astype(int) - 40) <= 1)
    with Image.open(path) as image:
        with pytest.warns(FirstFrameWarning, match="2 frames.*its first frame"):
            _as_pil(image)
        image.seek(1)  # a PIL image is taken at the frame its owner left it on, and the warning says so
        with pytest.warns(FirstFrameWarning, match=r"only frame 2 \(the current one\)"):
            second = np.asarray(_as_pil(image))
    assert np.all(np.abs(second.astype(int) - 200) <= 1)


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, num_classes=3, img_size=64)


def test_image_smaller_than_a_patch_is_refused(tmp_path: Path, tiny_model: torch.nn.Module) -> None:
    Image.fromarray(_rgb(12, 60)).save(tmp_path / "strip.png")
    with pytest.raises(InputError, match="60×12 pixels, smaller than one 16×16 patch"):
        preprocess(tiny_model, tmp_path / "strip.png")
    preprocess(tiny_model, Image.fromarray(_rgb(16, 60)))  # one patch high: explained


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"hello, not a picture", "cannot identify image file"),
        (None, "smaller than one 16"),
    ],
)
def test_cli_reports_unreadable_files_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, message: str
) -> None:
    path = tmp_path / "input.png"
    if content is None:
        Image.fromarray(_rgb(4, 4)).save(path)
    else:
        path.write_bytes(content)
    model = ["--model", "timm:vit_tiny_patch16_224", "--model-arg", "depth=1", "--model-arg", "img_size=32"]
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, "explain", path, *model, "--method", "attention", "--out", out)
    errors = [line for line in err.splitlines() if line.startswith("attnmap: error")]
    assert code == 2 and len(errors) == 1 and message in errors[0] and "Traceback" not in err, err


def test_folders_expand_to_every_readable_image_kind(tmp_path: Path) -> None:
    from attnmap.vit.image_files import expand_image_paths

    for suffix in (".webp", ".bmp", ".gif", ".png"):
        Image.fromarray(_rgb()).save(tmp_path / f"photo{suffix}")
    (tmp_path / "notes.txt").write_text("not an image")
    found = expand_image_paths([tmp_path])
    assert [path.suffix for path in found] == [".bmp", ".gif", ".png", ".webp"]
    for path in found:
        assert load_image(path).size == (60, 40)


def test_a_camera_mpo_jpeg_is_one_photo_without_a_warning(tmp_path: Path) -> None:
    """Cameras save a JPEG with a preview or depth picture after it (MPO): its first frame is the photo."""
    frames = [Image.fromarray(np.full((16, 24, 3), value, dtype=np.uint8)) for value in (40, 200)]
    frames[0].save(tmp_path / "camera.mpo", save_all=True, append_images=frames[1:])
    (tmp_path / "camera.mpo").rename(tmp_path / "camera.jpg")
    with Image.open(tmp_path / "camera.jpg") as image:
        assert image.format == "MPO" and image.n_frames == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", FirstFrameWarning)
        loaded = np.asarray(load_image(tmp_path / "camera.jpg"))
    assert np.all(np.abs(loaded.astype(int) - 40) <= 1)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_grey_and_alpha_tiffs_load_their_grey(tmp_path: Path, dtype: type) -> None:
    grey = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, size=(20, 30), dtype=dtype)
    alpha = np.full_like(grey, np.iinfo(dtype).max // 3)
    tifffile.imwrite(
        tmp_path / "la.tif", np.stack([grey, alpha], -1), photometric="minisblack", extrasamples=[2]
    )
    loaded = np.asarray(load_image(tmp_path / "la.tif"))
    expected = np.asarray(load_image_of(tmp_path, grey))
    np.testing.assert_array_equal(loaded, expected)


def load_image_of(folder: Path, grey: np.ndarray) -> Image.Image:
    tifffile.imwrite(folder / "grey.tif", grey, photometric="minisblack")
    return load_image(folder / "grey.tif")


def test_cli_prints_warnings_on_one_line_of_their_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import warnings as warnings_module

    from attnmap.cli.main import one_line_warning

    frames = [Image.fromarray(np.full((40, 40, 3), value, dtype=np.uint8)) for value in (40, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    before = warnings_module.formatwarning
    model = ["--model", "timm:vit_tiny_patch16_224", "--model-arg", "depth=1", "--model-arg", "img_size=32"]
    with warnings_module.catch_warnings():
        warnings_module.simplefilter("always")
        # print through formatwarning as Python does outside pytest (pytest records them instead)
        warnings_module.showwarning = lambda message, category, filename, lineno, file=None, line=None: (
            sys.stderr.write(warnings_module.formatwarning(message, category, filename, lineno, line))
        )
        code, _, err = run_cli(
            capsys, "explain", tmp_path / "anim.gif", *model, "--method", "attention", "--out", tmp_path / "o"
        )
    err = err.replace("\r", "\n").splitlines()
    assert code == 0 and warnings_module.formatwarning is before  # the CLI's format is undone on return
    animated = [line for line in err if "animated" in line]
    assert animated == [
        "attnmap: warning: "
        + f"{tmp_path / 'anim.gif'} is animated (2 frames); only its first frame is explained"
    ]
    assert not any("warnings.warn" in line or ".py:" in line for line in err), err
    other = one_line_warning("a  third-party\nwarning", DeprecationWarning, "lib.py", 3)
    assert other == "attnmap: warning: DeprecationWarning: a third-party warning\n"


def test_an_animated_image_drawn_on_the_original_is_warned_about_once(
    tmp_path: Path, tiny_model: torch.nn.Module
) -> None:
    """With on="original" the image was read a second time for the drawing, and the user was told
    twice that only its first frame is explained."""
    from attnmap.vit.batch import explain_paths

    frames = [Image.fromarray(np.full((64, 80, 3), value, dtype=np.uint8)) for value in (40, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        explain_paths([tmp_path / "anim.gif"], tiny_model.eval(), "attention", None, tmp_path / "out",
                      on="original", progress=False)
    assert [str(w.message).count("2 frames") for w in seen if w.category is FirstFrameWarning] == [1]
    assert (tmp_path / "out" / "anim_attention.png").is_file()


def test_a_tiff_stack_gives_its_first_page_with_a_warning(tmp_path: Path) -> None:
    """A multi-page TIFF (a z-stack, a time series, channels as pages) was explained as its first page
    without a word, where an animated GIF says so."""
    # five pages (three or four of one size are written as one planar RGB or RGBA image)
    stack = np.stack([np.full((16, 24), value, dtype=np.uint8) for value in (40, 80, 120, 160, 200)])
    tifffile.imwrite(tmp_path / "stack.tif", stack)
    with pytest.warns(FirstFrameWarning, match=r"stack.tif holds 5 images \(pages\); only its first"):
        loaded = np.asarray(load_image(tmp_path / "stack.tif"))
    assert loaded.shape == (16, 24, 3) and np.all(loaded == 40)
    # one image, and a pyramid (the same image at several sizes), are read without a warning
    tifffile.imwrite(tmp_path / "photo.tif", _rgb())
    with tifffile.TiffWriter(tmp_path / "pyramid.tif") as writer:
        writer.write(_rgb(64, 64), subifds=1, tile=(16, 16))
        writer.write(_rgb(32, 32), subfiletype=1, tile=(16, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FirstFrameWarning)
        load_image(tmp_path / "photo.tif")
        load_image(tmp_path / "pyramid.tif")


@pytest.mark.parametrize("kind", ["palette", "cmyk", "cmyk16", "cmyk_planar", "miniswhite"])
def test_a_tiff_whose_samples_are_not_rgb_loads_in_its_colours(tmp_path: Path, kind: str) -> None:
    """A palette TIFF loaded as its indices drawn as grey, a CMYK one as its inks taken for RGB
    (inverted colours) and a min-is-white one inverted: explained and drawn as another picture.
    Now each loads as PIL shows it (8 bits) and as its 8-bit twin (16 bits, planes apart)."""
    rgb = _rgb(64, 96)
    path = tmp_path / f"{kind}.tif"
    if kind == "palette":
        shown = Image.fromarray(rgb).convert("P")
        shown.save(path)  # PIL writes the colour map; tifffile reads indices and map as stored
    elif kind == "miniswhite":
        grey = np.asarray(Image.fromarray(rgb).convert("L"))
        tifffile.imwrite(path, 255 - grey, photometric="miniswhite")
        shown = Image.fromarray(grey)
    else:
        inks = np.asarray(Image.fromarray(rgb).convert("CMYK"))
        shown = Image.fromarray(inks, mode="CMYK")
        if kind == "cmyk16":
            tifffile.imwrite(path, inks.astype(np.uint16) * 257, photometric="separated")
        elif kind == "cmyk_planar":
            tifffile.imwrite(path, np.moveaxis(inks, -1, 0), photometric="separated", planarconfig="separate")
        else:
            tifffile.imwrite(path, inks, photometric="separated")
    expected = np.asarray(shown.convert("RGB")).astype(int)
    np.testing.assert_allclose(np.asarray(load_image(path)).astype(int), expected, atol=1)
    reduced = np.asarray(load_image(path, min_side=32)).astype(int)  # read a band at a time, reduced
    np.testing.assert_allclose(reduced, np.asarray(shown.convert("RGB").reduce(2)).astype(int), atol=2)
