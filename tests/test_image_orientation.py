"""EXIF orientation: photos are explained and drawn upright, as PIL.ImageOps.exif_transpose shows them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import timm
import torch
from PIL import Image, ImageOps

from attnmap.vit.batch import explain_paths
from attnmap.vit.preprocess import load_image, preprocess

ORIENTATIONS = range(1, 9)


def _stored(height: int = 48, width: int = 80) -> np.ndarray:
    """Smooth, asymmetric content (no two turns of it alike) that survives JPEG."""
    y, x = np.mgrid[:height, :width]
    channels = [x * 255 // width, y * 255 // height, (x + 2 * y) * 255 // (width + 2 * height)]
    return np.stack(channels, -1).astype(np.uint8)


def _save(path: Path, array: np.ndarray, orientation: int) -> None:
    if path.suffix == ".tif":  # tifffile writes the TIFF tag itself (tag 274 is what EXIF copies)
        tifffile.imwrite(path, array, photometric="rgb", extratags=[(274, 3, 1, orientation, True)])
        return
    exif = Image.Exif()
    exif[0x0112] = orientation
    extra = {"lossless": True} if path.suffix == ".webp" else {}
    Image.fromarray(array).save(path, exif=exif, **extra)


def _seen(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif"])
@pytest.mark.parametrize("orientation", ORIENTATIONS)
def test_files_load_as_exif_transpose_shows_them(tmp_path: Path, suffix: str, orientation: int) -> None:
    path = tmp_path / f"photo{suffix}"
    _save(path, _stored(), orientation)
    expected = _seen(path)
    assert expected.shape[:2] == ((80, 48) if orientation >= 5 else (48, 80))  # the tag was written
    np.testing.assert_array_equal(np.asarray(load_image(path)), expected)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_reduced_decodes_are_upright_too(tmp_path: Path, orientation: int) -> None:
    array = _stored(320, 480)
    for suffix in (".png", ".jpg", ".tif"):
        path = tmp_path / f"photo{suffix}"
        _save(path, array, orientation)
        full = Image.fromarray(_seen(path))
        reduced = load_image(path, min_side=80)  # 320 // 80: reduced by 4 (JPEG: DCT-scaled by 1/4)
        assert reduced.size == (full.width // 4, full.height // 4)
        difference = np.abs(np.asarray(reduced, float) - np.asarray(full.reduce(4), float))
        if suffix == ".jpg":
            assert difference.mean() < 3.0  # DCT scaling is not a box filter; a wrong turn is ~60 off
        else:
            assert difference.max() == 0


@pytest.fixture(scope="module")
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, num_classes=3, img_size=64)


def test_model_input_and_maps_are_those_of_the_upright_image(
    tmp_path: Path, tiny_model: torch.nn.Module, single_thread: None
) -> None:
    stored = _stored(96, 64)
    turned = tmp_path / "phone.jpg"
    _save(turned, stored, 6)
    upright = tmp_path / "upright.png"
    Image.fromarray(_seen(turned)).save(upright)
    for given in (turned, Image.open(turned)):  # a path, or a PIL image the user opened
        tensor, views = preprocess(tiny_model, given)
        reference, reference_views = preprocess(tiny_model, upright)
        torch.testing.assert_close(tensor, reference, rtol=0, atol=0)
        np.testing.assert_array_equal(views[0], reference_views[0])
    for name in ("phone", "upright"):
        explain_paths(
            [tmp_path / ("phone.jpg" if name == "phone" else "upright.png")],
            tiny_model,
            "rollout",
            0,
            tmp_path / name,
            progress=False,
            on="original",
            legend=False,
        )
    np.testing.assert_array_equal(
        np.load(tmp_path / "phone" / "phone_rollout.npy"),
        np.load(tmp_path / "upright" / "upright_rollout.npy"),
    )
    with Image.open(tmp_path / "phone" / "phone_rollout.png") as drawn:
        assert drawn.size == (96, 64)  # on the upright original: 96 wide, 64 high (stored 64 wide, 96 high)
