"""Large photos: decoded at reduced size (JPEG draft, TIFF bands/levels, PNG reduce), bombs refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from attnmap.errors import InputError
from attnmap.vit.preprocess import _to_rgb_uint8, load_image


def _pattern(height: int, width: int, dtype: type = np.uint16) -> np.ndarray:
    y, x = np.ogrid[:height, :width]
    top = np.iinfo(dtype).max
    values = [(x * 37 + y * 11) % top, (x * y) % top, (x * 5 + y * 91) % top]
    return np.stack(values, axis=-1).astype(dtype)


@pytest.mark.parametrize("layout", [{"rowsperstrip": 7}, {"tile": (16, 16)}, {}])
def test_tiff_read_in_bands_equals_reducing_the_whole_image(tmp_path: Path, layout: dict) -> None:
    array = _pattern(203, 150)
    path = tmp_path / "photo.tif"
    tifffile.imwrite(path, array, photometric="rgb", compression="zlib", **layout)
    whole = _to_rgb_uint8(array, path)
    np.testing.assert_array_equal(np.asarray(load_image(path)), whole)
    reduced = load_image(path, min_side=40)  # factor 150 // 40 = 3
    np.testing.assert_array_equal(np.asarray(reduced), np.asarray(Image.fromarray(whole).reduce(3)))
    assert min(reduced.size) >= 40


def test_pyramidal_tiff_is_read_from_the_smallest_sufficient_level(tmp_path: Path) -> None:
    path = tmp_path / "pyramid.tif"
    full = _pattern(256, 256, np.uint8)
    with tifffile.TiffWriter(path) as tif:
        tif.write(full, photometric="rgb", subifds=2, tile=(64, 64))
        tif.write(full[::2, ::2], photometric="rgb", subfiletype=1, tile=(64, 64))
        tif.write(full[::4, ::4], photometric="rgb", subfiletype=1, tile=(64, 64))
    assert load_image(path).size == (256, 256)
    level = load_image(path, min_side=100)
    assert level.size == (128, 128)
    np.testing.assert_array_equal(np.asarray(level), full[::2, ::2])


def test_jpeg_and_png_decode_smaller_but_never_below_min_side(tmp_path: Path) -> None:
    picture = Image.fromarray(_pattern(1200, 1000, np.uint8))
    picture.save(tmp_path / "photo.jpg", quality=90)
    picture.save(tmp_path / "photo.png")
    assert load_image(tmp_path / "photo.jpg").size == (1000, 1200)
    jpeg = load_image(tmp_path / "photo.jpg", min_side=200)
    assert jpeg.mode == "RGB" and jpeg.size == (250, 300)  # DCT-scaled by 1/4 (1/8 would be < 200)
    png = load_image(tmp_path / "photo.png", min_side=200)
    assert png.size == (200, 240)
    np.testing.assert_array_equal(np.asarray(png), np.asarray(picture.reduce(5)))
    with pytest.raises(InputError, match="min_side"):
        load_image(tmp_path / "photo.png", min_side=0)


def test_decompression_bombs_are_refused_for_tiff_as_for_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    array = _pattern(100, 100, np.uint8)
    tifffile.imwrite(tmp_path / "bomb.tif", array, photometric="rgb")
    Image.fromarray(array).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 100² > 2 × 1000: a bomb under this limit
    with pytest.raises(InputError, match="decompression bomb"):
        load_image(tmp_path / "bomb.tif")
    with pytest.raises(InputError, match="cannot read image .*bomb.png"):
        load_image(tmp_path / "bomb.png")


_MAKE_IMAGES = """
import sys, numpy as np, tifffile
from PIL import Image
side, folder = 8000, sys.argv[1]
y, x = np.ogrid[:side, :side]
band = ((x * 7 + y * 3) % 256).astype(np.uint8)
Image.fromarray(np.stack([band, band.T, band[::-1]], -1)).save(folder + "/big.jpg", quality=80)
Image.fromarray(np.stack([band, band.T, band[::-1]], -1)).save(folder + "/big.png", compress_level=0)
del band
wide = ((x * 5 + y * 11) % 65536).astype(np.uint16)
tifffile.imwrite(folder + "/big16.tif", np.stack([wide, wide.T, wide[::-1]], -1), photometric="rgb",
                 rowsperstrip=64)
"""

_EXPLAIN_PEAK = """
import sys, tempfile
import torch
torch.set_num_threads(1)
from attnmap.vit.batch import explain_paths
from attnmap.vit.models import load_model
model = load_model("timm:vit_tiny_patch16_224")
with tempfile.TemporaryDirectory() as out:
    explain_paths([sys.argv[1]], model, "transformer_attribution", None, out, progress=False)
# VmHWM: this process's own peak (ru_maxrss would carry over the peak of the process that spawned it)
print(next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM")))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak memory read from /proc (Linux)")
def test_explain_on_8000_pixel_images_peaks_under_1_5_gb(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", _MAKE_IMAGES, str(tmp_path)], check=True)
    for name in ("big.jpg", "big.png", "big16.tif"):
        done = subprocess.run(
            [sys.executable, "-c", _EXPLAIN_PEAK, str(tmp_path / name)],
            check=True,
            capture_output=True,
            text=True,
        )
        peak = int(done.stdout.split()[-1])
        assert peak <= 1.5e9, f"{name}: explain peaked at {peak / 1e9:.2f} GB"


@pytest.mark.parametrize(
    ("path", "min_side", "message"),
    [
        (Image.new("RGB", (8, 8)), None, r"^load_image reads an image file: path must be .* got Image"),
        (np.zeros((8, 8, 3)), None, r"^load_image reads an image file: path must be .* got ndarray"),
        (None, 2.5, r"^min_side must be a whole number of pixels >= 1, got 2.5"),
        (None, "64", r"^min_side must be a whole number of pixels >= 1, got '64'"),
        (None, True, r"^min_side must be a whole number of pixels >= 1, got True"),
    ],
)
def test_load_image_arguments_of_the_wrong_type_are_one_line(tmp_path, path, min_side, message) -> None:
    """A PIL image or an array (which preprocess takes) given to load_image, or min_side as a float
    or a string, were TypeErrors from os.fspath, PIL's draft or a comparison."""
    saved = tmp_path / "image.png"
    Image.new("RGB", (16, 16)).save(saved)
    with pytest.raises(InputError, match=message):
        load_image(saved if path is None else path, min_side)
    assert load_image(saved, 16).size == (16, 16)
