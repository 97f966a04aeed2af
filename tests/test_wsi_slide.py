"""Slide reading: OpenSlide pyramids, SubIFD pyramids, plain images, geometry and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from attnmap.errors import InputError
from attnmap.wsi import ArraySlide, open_slide
from attnmap.wsi.slide import OpenSlideSlide, TiffSlideSlide

HERE = Path(__file__).parent
FIXTURE_SLIDE = HERE / "fixtures" / "heatmap" / "clam_synth_slide.tif"
REAL_SLIDE = HERE / "data" / "cmu_small_region.svs"


def gradient_image(width: int, height: int) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs % 256, ys % 256, (xs + ys) % 256], axis=2).astype(np.uint8)


def write_page_pyramid(path: Path, image: np.ndarray, levels: int = 3, mpp: float = 0.5) -> Path:
    """Levels as separate tiled pages, reduced ones with subfiletype 1 (what OpenSlide reads)."""
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        for level in range(levels):
            page = image[:: 2**level, :: 2**level]
            ppcm = 1e4 / (mpp * 2**level)
            tif.write(page, tile=(256, 256), photometric="rgb", compression="zlib",
                      subfiletype=int(level > 0), resolution=(ppcm, ppcm), resolutionunit="CENTIMETER",
                      metadata=None)
    return path


def test_fixture_slide_levels_and_regions():
    with open_slide(FIXTURE_SLIDE) as slide:
        assert isinstance(slide, OpenSlideSlide)
        assert slide.level_count == 3
        assert slide.level_dimensions == ((4096, 4096), (2048, 2048), (1024, 1024))
        assert slide.level_downsamples == (1.0, 2.0, 4.0)
        assert slide.dimensions == (4096, 4096)
        assert slide.get_best_level_for_downsample(32) == 2
        assert slide.get_best_level_for_downsample(3.9) == 1
        assert slide.get_best_level_for_downsample(0.5) == 0
        region = slide.read_region((400, 800), 1, (64, 32))
        assert region.shape == (32, 64, 3) and region.dtype == np.uint8


def test_page_pyramid_keeps_mpp_and_pixels(tmp_path):
    image = gradient_image(1024, 768)
    path = write_page_pyramid(tmp_path / "pyramid.tif", image, mpp=0.25)
    with open_slide(path) as slide:
        assert slide.level_dimensions == ((1024, 768), (512, 384), (256, 192))
        assert slide.mpp == pytest.approx(0.25)
        np.testing.assert_array_equal(slide.read_region((100, 50), 0, (300, 200)), image[50:250, 100:400])
        np.testing.assert_array_equal(slide.read_region((0, 0), 1, (512, 384)), image[::2, ::2])


def test_subifd_pyramid_uses_tiffslide(tmp_path):
    image = gradient_image(1024, 1024)
    path = tmp_path / "subifd.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(256, 256), photometric="rgb", subifds=1, metadata=None,
                  resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
        tif.write(image[::2, ::2], tile=(256, 256), photometric="rgb", subfiletype=1, metadata=None)
    with open_slide(path) as slide:
        assert isinstance(slide, TiffSlideSlide)
        assert slide.level_count == 2
        expected = image[::2, ::2][128:192, 256:320]
        np.testing.assert_array_equal(slide.read_region((512, 256), 1, (64, 64)), expected)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".webp", ".WEBP", "_rgba.png", "_rgba.tif"])
def test_plain_images(tmp_path, suffix):
    """PNG, JPEG, WebP (it was refused as "not a supported or intact slide"), TIFF; RGBA ones too."""
    image = gradient_image(300, 200)
    path = tmp_path / f"plain{suffix}"
    stored = np.dstack([image, np.full((200, 300), 255, np.uint8)]) if "rgba" in suffix else image
    if suffix.endswith(".tif"):
        tifffile.imwrite(path, stored, photometric="rgb", resolution=(2e4, 2e4), resolutionunit="CENTIMETER",
                         extrasamples=[2] if "rgba" in suffix else None)
    else:
        Image.fromarray(stored).save(path, lossless=True)  # (WebP: exact pixels; ignored by the others)
    with open_slide(path) as slide:
        assert slide.level_dimensions == ((300, 200),)
        region = slide.read_region((10, 20), 0, (50, 40))
        if suffix == ".jpg":
            assert np.abs(region.astype(int) - image[20:60, 10:60]).mean() < 8
        else:
            np.testing.assert_array_equal(region, image[20:60, 10:60])
        if suffix.endswith(".tif"):
            assert slide.mpp == pytest.approx(0.5)
        else:
            assert slide.mpp is None  # no pixel size: nothing in the pipeline needs one (patches are pixels)


@pytest.mark.parametrize("name", ["scan.gif", "scan.czi", "scan"])
def test_a_format_that_is_not_read_is_named_with_the_formats_that_are(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".gif"):
        Image.fromarray(gradient_image(64, 64)).save(path)
    else:
        path.write_bytes(b"\x00vendor data" * 16)
    with pytest.raises(InputError) as caught:
        open_slide(path)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert "is not a format attnmap reads" in message and ".svs" in message and ".webp" in message


def test_out_of_bounds_pixels_are_black():
    slide = ArraySlide(np.full((10, 10, 3), 200, np.uint8))
    region = slide.read_region((-5, 5), 0, (10, 10))
    assert (region[:5, 5:] == 200).all() and (region[:, :5] == 0).all() and (region[5:] == 0).all()


def test_real_svs_slide():
    with open_slide(REAL_SLIDE) as slide:
        assert slide.dimensions == (2220, 2967)
        assert slide.mpp == pytest.approx(0.499)
        assert slide.read_region((1000, 1000), 0, (16, 16)).std() > 0


def test_missing_corrupt_and_bad_level(tmp_path):
    with pytest.raises(InputError, match="not found.*nowhere.svs"):
        open_slide(tmp_path / "nowhere.svs")
    corrupt = tmp_path / "broken.tif"
    corrupt.write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(InputError, match="broken.tif"):
        open_slide(corrupt)
    bad_png = tmp_path / "broken.png"
    bad_png.write_bytes(b"\x89PNG not really")
    with pytest.raises(InputError, match="broken.png"):
        open_slide(bad_png)
    with open_slide(FIXTURE_SLIDE) as slide, pytest.raises(InputError, match="level 3 does not exist"):
        slide.read_region((0, 0), 3, (10, 10))


def _write_grey_rgb16_float(tmp_path: Path, image: np.ndarray) -> dict[str, Path]:
    grey = image[:, :, 0]
    names = ("grey.tif", "rgb16.tif", "grey16.png", "float.tif", "rgb16_pyr.tif")
    paths = {name: tmp_path / name for name in names}
    tifffile.imwrite(paths["grey.tif"], grey)
    tifffile.imwrite(paths["rgb16.tif"], image.astype(np.uint16) * 257, photometric="rgb")
    Image.fromarray(grey.astype(np.uint16) * 257).save(paths["grey16.png"])
    tifffile.imwrite(paths["float.tif"], image.astype(np.float32) / 255, photometric="rgb")
    with tifffile.TiffWriter(paths["rgb16_pyr.tif"]) as tif:  # a 16-bit SubIFD pyramid
        tif.write(image.astype(np.uint16) * 257, tile=(64, 64), photometric="rgb", subifds=1, metadata=None)
        tif.write(image[::2, ::2].astype(np.uint16) * 257, tile=(64, 64), photometric="rgb", subfiletype=1,
                  metadata=None)
    return paths


def test_grey_and_16_bit_slides_read_as_rgb8(tmp_path):
    """Grey and 16-bit files (TIFF through tiffslide or the plain reader, PNG through Pillow) give
    the 8-bit RGB a viewer shows: never a crash, never a white or clipped image."""
    image = gradient_image(256, 192)
    paths = _write_grey_rgb16_float(tmp_path, image)
    grey = np.repeat(image[:, :, :1], 3, axis=2)
    for name, expected in (("grey.tif", grey), ("rgb16.tif", image), ("grey16.png", grey)):
        with open_slide(paths[name]) as slide:
            region = slide.read_region((10, 20), 0, (50, 40))
            assert region.dtype == np.uint8 and region.shape == (40, 50, 3), name
            np.testing.assert_array_equal(region, expected[20:60, 10:60], err_msg=name)
    with open_slide(paths["rgb16_pyr.tif"]) as slide:
        assert slide.level_count == 2
        np.testing.assert_array_equal(slide.read_region((0, 0), 1, (128, 96)), image[::2, ::2])
    with pytest.raises(InputError, match="float.tif.*float32"):
        open_slide(paths["float.tif"])


def test_a_corrupt_tiff_is_one_error_without_tifffile_warnings(tmp_path, caplog):
    corrupt = tmp_path / "broken.tif"
    corrupt.write_bytes(b"II*\x00garbage" * 10)
    with caplog.at_level("WARNING"), pytest.raises(InputError, match="broken.tif"):
        open_slide(corrupt)
    assert [record for record in caplog.records if record.name.startswith("tifffile")] == []


def test_tifffile_is_silenced_inside_slide_reading_only_and_its_level_is_left_alone(caplog):
    """The silencing drops tifffile's records without touching logger levels (every setLevel clears
    the level cache of all the process's loggers): nested entries stay silent until the last exits,
    and tifffile's warnings outside slide reading still reach the user."""
    import logging

    from attnmap.wsi.slide_files import quiet_tifffile

    logger = logging.getLogger("tifffile")
    level = logger.level
    with caplog.at_level("WARNING"):
        with quiet_tifffile():
            with quiet_tifffile():
                logger.warning("inner")
                assert logger.level == level
            logger.warning("outer")
        logger.warning("after")
    assert [r.getMessage() for r in caplog.records if r.name == "tifffile"] == ["after"]


def test_a_plain_image_too_large_to_load_whole_says_so(tmp_path, monkeypatch):
    """PIL refuses images above its pixel limit; that read as "not a supported or intact" image."""
    import PIL.Image

    path = tmp_path / "huge.png"
    Image.fromarray(gradient_image(64, 64)).save(path)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 1000)  # 64² > 2 × 1000: PIL's error, not warning
    with pytest.raises(InputError, match=r"huge.png: a plain image is loaded whole and this one is too "
                       r"large \(.*\); convert it to a tiled pyramidal TIFF$"):
        open_slide(path)
