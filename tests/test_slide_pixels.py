"""Slide files whose pixels are not plain 8-bit RGB, and pyramids OpenSlide sees wrongly: each must
read as the colours it shows (found by bench/slide_files_sweep.py), or be refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from attnmap.errors import InputError
from attnmap.wsi import open_slide, segment_tissue

WIDTH, HEIGHT = 96, 64


def picture() -> np.ndarray:
    """White glass with a saturated pink block (tissue) and a blue square at (40..48, 24..32)."""
    image = np.full((HEIGHT, WIDTH, 3), 245, np.uint8)
    image[8:56, 16:80] = (214, 120, 170)
    image[24:32, 40:48] = (40, 60, 200)
    return image


def halves(image: np.ndarray, n: int) -> list[np.ndarray]:
    levels = [image]
    for _ in range(n - 1):
        levels.append(levels[-1][::2, ::2])
    return levels


def write_pages(path: Path, levels: list[np.ndarray], order=None, tiles=None, **options) -> Path:
    """Levels as top-level tiled pages, reduced ones subfiletype 1; resolution 0.5 µm at level 0."""
    with tifffile.TiffWriter(path) as tif:
        for index in order or range(len(levels)):
            per_cm = 2e4 * levels[index].shape[1] / levels[0].shape[1]
            tif.write(
                levels[index],
                tile=tiles[index] if tiles else (16, 16),
                subfiletype=int(index > 0),
                resolution=(per_cm, per_cm),
                resolutionunit="CENTIMETER",
                metadata=None,
                **options,
            )
    return path


def scanned_rgba(fill: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(stored RGBA: alpha 0 left of x = 8 with ``fill`` under it, what it shows: white there)."""
    shown = picture()
    stored = np.dstack([shown, np.full((HEIGHT, WIDTH), 255, np.uint8)])
    stored[:, :8] = (*fill, 0)
    stored[:, :8, :3] = fill
    shown = shown.copy()
    shown[:, :8] = 255
    return stored, shown


@pytest.mark.parametrize("layout", ["pages", "subifds"])
def test_unscanned_transparent_pixels_are_white_glass_not_black_or_tissue(
    tmp_path: Path, layout: str
) -> None:
    stored, shown = scanned_rgba((200, 30, 30))  # a saturated colour under alpha 0 looked like tissue
    path = tmp_path / "rgba.tif"
    if layout == "pages":  # OpenSlide: alpha 0 came back black
        write_pages(path, [stored], photometric="rgb", extrasamples=[2], compression="zlib")
    else:  # tiffslide: the colour under alpha 0 came back as it is stored
        with tifffile.TiffWriter(path) as tif:  # a SubIFD pyramid
            for index, level in enumerate(halves(stored, 2)):
                tif.write(
                    level,
                    tile=(16, 16),
                    photometric="rgb",
                    extrasamples=[2],
                    subfiletype=int(index > 0),
                    subifds=1 if index == 0 else None,
                    metadata=None,
                )
    with open_slide(path) as slide:
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (WIDTH, HEIGHT)), shown)
        beyond = slide.read_region((WIDTH - 8, HEIGHT - 8), 0, (16, 16))  # outside the slide: black
        np.testing.assert_array_equal(beyond[8:, :], 0)
        np.testing.assert_array_equal(beyond[:, 8:], 0)
        mask = segment_tissue(slide, level=0, a_t=0.001, a_h=0.001, close=0, mthresh=1).mask(0)
    assert not mask[:, :8].any()
    assert mask[8:56, 16:80].mean() > 0.9


def test_a_transparent_png_is_white_where_it_is_transparent(tmp_path: Path) -> None:
    stored, shown = scanned_rgba((0, 0, 0))
    Image.fromarray(stored).save(tmp_path / "export.png")
    with open_slide(tmp_path / "export.png") as slide:
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (WIDTH, HEIGHT)), shown)


@pytest.mark.parametrize("kind", ["palette", "cmyk", "miniswhite"])
def test_palette_cmyk_and_min_is_white_tiffs_read_as_the_colours_they_show(tmp_path: Path, kind: str) -> None:
    image = picture()
    path = tmp_path / f"{kind}.tif"
    # stripped: OpenSlide refuses them, and tiffslide handed over indices, inks and inverted grey as stored
    if kind == "palette":
        quantised = Image.fromarray(image).quantize(16, dither=Image.Dither.NONE)
        colours = np.zeros((256, 3), np.uint16)
        used = np.asarray(quantised.getpalette(), np.uint16).reshape(-1, 3)[:256]
        colours[: len(used)] = used
        index = np.asarray(quantised)
        colormap = (colours.T * 257).astype(np.uint16)
        tifffile.imwrite(path, index, photometric="palette", colormap=colormap, rowsperstrip=16)
        want = colours[index]
    elif kind == "cmyk":
        inks = np.dstack([255 - image, np.zeros((HEIGHT, WIDTH), np.uint8)])
        tifffile.imwrite(path, inks, photometric="separated", rowsperstrip=16)
        want = image
    else:
        grey = image[..., 1]
        tifffile.imwrite(path, 255 - grey, photometric="miniswhite", rowsperstrip=16)
        want = np.dstack([grey] * 3)
    with open_slide(path) as slide:
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (WIDTH, HEIGHT)), want)


def test_sixteen_bit_grey_pyramid_keeps_its_grey_at_every_level(tmp_path: Path) -> None:
    grey = picture()[..., 1]
    levels = halves(grey, 2)
    path = write_pages(
        tmp_path / "grey16.tif", [level.astype(np.uint16) * 257 for level in levels], photometric="minisblack"
    )
    with open_slide(path) as slide:  # OpenSlide scaled 16-bit grey wrongly (mean error 11 to 30 levels)
        for index, level in enumerate(levels):
            read = slide.read_region((0, 0), index, slide.level_dimensions[index])
            np.testing.assert_array_equal(read, np.dstack([level] * 3))


def test_float_pixels_are_refused_when_opened_by_their_type(tmp_path: Path) -> None:
    path = write_pages(tmp_path / "float.tif", [picture().astype(np.float32) / 255], photometric="rgb")
    with pytest.raises(InputError, match=r"float\.tif: unsupported pixel type float32"):
        open_slide(path)  # OpenSlide opened it, and every read then failed as "damaged or truncated"


def test_uncompressed_levels_with_different_tile_sizes_read(tmp_path: Path) -> None:
    big = np.tile(picture(), (4, 4, 1))
    levels = halves(big, 3)
    path = write_pages(tmp_path / "raw.tif", levels, photometric="rgb", tiles=[(64, 64), (32, 32), (16, 16)])
    with open_slide(path) as slide:  # OpenSlide 4.0.1 failed on level 1 once level 2 was read
        for index in (2, 1, 0):
            read = slide.read_region((0, 0), index, slide.level_dimensions[index])
            np.testing.assert_array_equal(read, levels[index])


def test_a_pyramid_written_smallest_page_first_has_its_full_resolution(tmp_path: Path) -> None:
    levels = halves(np.tile(picture(), (2, 2, 1)), 3)
    path = write_pages(tmp_path / "order.tif", levels, order=[2, 1, 0], photometric="rgb", compression="zlib")
    with open_slide(path) as slide:  # OpenSlide dropped level 0 and took the smallest page's pixel size
        assert slide.level_dimensions == tuple((level.shape[1], level.shape[0]) for level in levels)
        assert slide.mpp == pytest.approx(0.5)
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, slide.dimensions), levels[0])
        np.testing.assert_array_equal(slide.read_region((0, 0), 2, slide.level_dimensions[2]), levels[2])


def test_a_one_level_ome_tiff_has_its_ome_pixel_size(tmp_path: Path) -> None:
    path = tmp_path / "flat.ome.tif"
    tifffile.imwrite(
        path,
        picture(),
        tile=(16, 16),
        photometric="rgb",
        ome=True,
        metadata={
            "axes": "YXS",
            "PhysicalSizeX": 250.0,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 250.0,
            "PhysicalSizeYUnit": "nm",
        },
    )
    with open_slide(path) as slide:  # OpenSlide reads it as a generic TIFF and ignores the OME-XML
        assert slide.mpp == pytest.approx(0.25)


def test_an_extra_sample_of_unspecified_meaning_is_not_alpha(tmp_path: Path) -> None:
    image = picture()
    stored = np.dstack([image, np.full((HEIGHT, WIDTH), 77, np.uint8)])
    path = write_pages(tmp_path / "extra.tif", [stored], photometric="rgb", extrasamples=[0])
    with open_slide(path) as slide:  # OpenSlide (libtiff) took it for alpha: colours faded towards white
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (WIDTH, HEIGHT)), image)


def test_a_label_written_before_the_pyramid_is_not_taken_for_the_slide(tmp_path: Path) -> None:
    levels = halves(np.tile(picture(), (2, 2, 1)), 2)
    path = tmp_path / "label_first.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.full((40, 30, 3), 250, np.uint8), photometric="rgb", subfiletype=1, metadata=None)
        for index, level in enumerate(levels):
            per_cm = 2e4 / 2**index
            tif.write(
                level,
                tile=(16, 16),
                photometric="rgb",
                subfiletype=int(index > 0),
                metadata=None,
                resolution=(per_cm, per_cm),
                resolutionunit="CENTIMETER",
            )
    with open_slide(path) as slide:  # the 30×40 label was read as the whole slide
        assert slide.level_dimensions == tuple((level.shape[1], level.shape[0]) for level in levels)
        assert slide.mpp == pytest.approx(0.5)
        np.testing.assert_array_equal(slide.read_region((0, 0), 1, slide.level_dimensions[1]), levels[1])


@pytest.mark.parametrize("tiled", [True, False])
def test_channels_written_as_pages_are_refused_not_read_as_a_grey_slide(tmp_path: Path, tiled: bool) -> None:
    path = tmp_path / "channels.tif"
    with tifffile.TiffWriter(path) as tif:
        for channel in range(3):
            layout = {"tile": (16, 16)} if tiled else {"rowsperstrip": 16}
            tif.write(picture()[..., channel], photometric="minisblack", metadata=None, **layout)
    with pytest.raises(InputError, match=r"channels\.tif: several of its levels are 96×64 px.*channels"):
        open_slide(path)  # OpenSlide (tiled) or the image reader (stripped) showed the first channel


def test_a_full_resolution_in_a_subifd_under_a_smaller_first_page_is_level_0(tmp_path: Path) -> None:
    levels = halves(np.tile(picture(), (2, 2, 1)), 3)
    path = tmp_path / "subifd_order.tif"
    with tifffile.TiffWriter(path) as tif:  # the smallest level first, the larger ones as its SubIFDs
        for index, level in enumerate(levels[::-1]):
            per_cm = 2e4 * level.shape[1] / levels[0].shape[1]
            tif.write(
                level,
                tile=(16, 16),
                photometric="rgb",
                subifds=2 if index == 0 else None,
                metadata=None,
                subfiletype=int(index > 0),
                resolution=(per_cm, per_cm),
                resolutionunit="CENTIMETER",
            )
    with open_slide(path) as slide:  # OpenSlide showed the first, smallest page as the whole slide
        assert slide.level_dimensions == tuple((level.shape[1], level.shape[0]) for level in levels)
        assert slide.mpp == pytest.approx(0.5)
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, slide.dimensions), levels[0])


@pytest.mark.parametrize("kind", ["cielab", "ycbcr"])
def test_pixels_with_no_rgb_reading_here_are_refused_at_open_by_their_interpretation(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / f"{kind}.tif"
    if kind == "cielab":  # tiled: OpenSlide opened it (then drew it in colours of its own or failed to read)
        tifffile.imwrite(path, picture(), photometric=kind, tile=(16, 16))
    else:  # stripped, uncompressed: tiffslide handed YCbCr over as RGB
        tifffile.imwrite(path, picture(), photometric=kind, subsampling=(1, 1), rowsperstrip=16)
    said = "CIELAB" if kind == "cielab" else "YCbCr stored without JPEG compression"
    with pytest.raises(InputError, match=rf"{kind}\.tif: its .*{said}"):
        open_slide(path)


def test_slides_read_by_meaning_carry_the_reading_in_their_fingerprint(tmp_path: Path) -> None:
    """Outputs of a run made before alpha became white glass (and palettes, 16 bits, ... were read
    by their meaning) must be made again: the slide's identity names how its pixels are read, for
    every slide but those OpenSlide reads as stored, whose fingerprints stay as they were."""
    from attnmap.fingerprint import file_identity
    from attnmap.wsi.pipeline.fingerprint import PIXEL_READING_VERSION, slide_identity

    plain = write_pages(tmp_path / "plain.tif", halves(picture(), 2), photometric="rgb")
    assert slide_identity(plain) == file_identity(plain)
    stored, _ = scanned_rgba((200, 30, 30))
    rgba = write_pages(tmp_path / "rgba.tif", [stored], photometric="rgb", extrasamples=[2])
    Image.fromarray(stored).save(tmp_path / "export.png")
    grey16 = write_pages(tmp_path / "grey16.tif", halves(picture()[..., 0].astype(np.uint16) * 257, 2))
    expected = {
        rgba: "OpenSlide, alpha over white", tmp_path / "export.png": "in memory", grey16: "tiffslide"
    }
    for path, reading in expected.items():
        assert slide_identity(path)["reading"] == {"pixels": reading, "version": PIXEL_READING_VERSION}


def test_a_pil_image_handed_to_array_slide_reads_as_the_same_image_opened_from_a_file(tmp_path: Path) -> None:
    """One reading of a PIL image: `ArraySlide` dropped a transparent image's alpha (the colour
    under alpha 0 showed), where opening the same PNG made it white glass."""
    from attnmap.wsi import ArraySlide

    stored, shown = scanned_rgba((200, 30, 30))
    Image.fromarray(stored).save(tmp_path / "export.png")
    with Image.open(tmp_path / "export.png") as image:
        handed = ArraySlide(image).read_region((0, 0), 0, (WIDTH, HEIGHT))
    np.testing.assert_array_equal(handed, shown)
    with open_slide(tmp_path / "export.png") as slide:
        np.testing.assert_array_equal(slide.read_region((0, 0), 0, (WIDTH, HEIGHT)), handed)
