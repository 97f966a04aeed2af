"""The pixel-layout cases of `bench/slide_files_sweep.py` (see `bench/slide_files_cases.py`): RGBA,
grey, 16-bit, palette, CMYK, CIELab, YCbCr, float and odd sizes, rarer sample layouts and page
orders, each with what a reader must give back (None: refused in one line naming the file).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from slide_files_cases import Case, Expect
from slide_files_writers import (
    ALPHA_FILL,
    BASE,
    JPEG_TOL,
    LEVELS,
    MPP,
    TISSUE,
    big_subifds,
    halve,
    mixed_compression,
    pages,
    palette,
    picture,
    pil_save,
    rgba,
    subifds,
)


def pixel_cases() -> list[Case]:
    zlib = {"compression": "zlib"}
    grey = cv2.cvtColor(BASE, cv2.COLOR_RGB2GRAY)
    grey_levels = halve(grey, 3)
    grey_tissue = np.zeros_like(TISSUE)  # grey has no saturation: CLAM's thresholds find no tissue
    stored, shown, scanned_tissue = rgba((0, 0, 0))
    stored_fill, _, _ = rgba(ALPHA_FILL)
    index, palette_rgb, colormap = palette()
    cmyk = np.dstack([255 - BASE, np.zeros(BASE.shape[:2], np.uint8)])
    white, none = picture(tissue="none")
    full, everywhere = picture(tissue="all")
    tiny, _ = picture((48, 40), tissue="all")
    tiny_tissue = np.zeros((40, 48), bool)  # all tissue, but under a_t: none kept
    wide, wide_tissue = picture((4000, 150))
    tall, tall_tissue = picture((150, 3000))
    return [
        Case(
            "RGBA transparent outside scan (black under)",
            "rgba_black.tif",
            pages(halve(stored, 3), extrasamples=[2], **zlib),
            Expect(halve(shown, 3), tissue=scanned_tissue, tol=1.0),
        ),
        Case(
            "RGBA transparent, colour under alpha 0",
            "rgba_fill.tif",
            pages(halve(stored_fill, 3), extrasamples=[2], **zlib),
            Expect(halve(shown, 3), tissue=scanned_tissue, tol=1.0),
        ),
        Case(
            "RGBA transparent, subifds",
            "rgba_subifd.tif",
            subifds(halve(stored_fill, 3), extrasamples=[2], compression="zlib"),
            Expect(halve(shown, 3), tissue=scanned_tissue, tol=1.0),
        ),
        Case(
            "RGBA opaque",
            "rgba_opaque.tif",
            pages(
                halve(np.dstack([BASE, np.full(BASE.shape[:2], 255, np.uint8)]), 3), extrasamples=[2], **zlib
            ),
            Expect(LEVELS, tol=1.0),
        ),
        Case(
            "grey 8-bit",
            "grey8.tif",
            pages(grey_levels, photometric="minisblack", **zlib),
            Expect([np.dstack([g] * 3) for g in grey_levels], tissue=grey_tissue),
        ),
        Case(
            "grey 8-bit stripped",
            "grey8_strips.tif",
            pages(grey_levels[:1], tile=None, photometric="minisblack", **zlib),
            Expect([np.dstack([grey] * 3)], tissue=grey_tissue),
        ),
        Case(
            "RGB 16-bit",
            "rgb16.tif",
            pages([level.astype(np.uint16) * 257 for level in LEVELS], **zlib),
            exact_of(),
        ),
        Case(
            "grey 16-bit",
            "grey16.tif",
            pages([g.astype(np.uint16) * 257 for g in grey_levels], photometric="minisblack", **zlib),
            Expect([np.dstack([g] * 3) for g in grey_levels], tissue=grey_tissue),
        ),
        Case(
            "palette",
            "palette.tif",
            pages([index], photometric="palette", colormap=colormap, **zlib),
            Expect([palette_rgb], tol=1.0),
        ),
        Case(
            "palette stripped",
            "palette_strips.tif",
            pages([index], tile=None, rowsperstrip=32, photometric="palette", colormap=colormap, **zlib),
            Expect([palette_rgb], tol=1.0),
        ),
        Case("CMYK", "cmyk.tif", pages([cmyk], photometric="separated", **zlib), Expect([BASE], tol=1.0)),
        Case(
            "CMYK stripped",
            "cmyk_strips.tif",
            pages([cmyk], tile=None, rowsperstrip=32, photometric="separated", **zlib),
            Expect([BASE], tol=1.0),
        ),
        Case(
            "grey 16-bit subifds",
            "grey16_subifd.tif",
            subifds(
                [g.astype(np.uint16) * 257 for g in grey_levels], photometric="minisblack", compression="zlib"
            ),
            Expect([np.dstack([g] * 3) for g in grey_levels], tissue=grey_tissue),
        ),
        Case(
            "float32 RGB",
            "float.tif",
            pages([level.astype(np.float32) / 255 for level in LEVELS], **zlib),
            None,
        ),
        Case("all white", "white.tif", pages(halve(white, 3), **zlib), Expect(halve(white, 3), tissue=none)),
        Case(
            "all tissue", "full.tif", pages(halve(full, 3), **zlib), Expect(halve(full, 3), tissue=everywhere)
        ),
        Case(
            "tiny 48x40", "tiny.tif", pages([tiny], tile=(16, 16), **zlib), Expect([tiny], tissue=tiny_tissue)
        ),
        Case(
            "very wide 4000x150",
            "wide.tif",
            pages(halve(wide, 2), **zlib),
            Expect(halve(wide, 2), tissue=wide_tissue),
        ),
        Case(
            "very tall 150x3000",
            "tall.tif",
            pages(halve(tall, 2), **zlib),
            Expect(halve(tall, 2), tissue=tall_tissue),
        ),
    ]


def exact_of() -> Expect:
    return Expect(LEVELS)


def more_layouts() -> list[Case]:
    """Rarer sample layouts and page orders."""
    import tifffile

    zlib = {"compression": "zlib"}
    grey_levels = halve(cv2.cvtColor(BASE, cv2.COLOR_RGB2GRAY), 3)
    as_grey = [np.dstack([g] * 3) for g in grey_levels]
    no_tissue = np.zeros_like(TISSUE)
    extra = [np.dstack([level, np.full(level.shape[:2], 77, np.uint8)]) for level in LEVELS]
    stored, shown, scanned = rgba((0, 0, 0))
    premultiplied = stored.copy()  # associated alpha: colour already multiplied (0 where transparent)
    stored16 = stored.astype(np.uint16) * 257

    def label_first(path: Path) -> None:
        label = np.full((300, 280, 3), 250, np.uint8)
        label[100:200, 40:240] = 10
        with tifffile.TiffWriter(path) as tif:
            tif.write(
                label, photometric="rgb", compression="lzw", subfiletype=1, metadata=None, rowsperstrip=64
            )
        pages(**zlib)(path.with_suffix(".part"))
        with (
            tifffile.TiffFile(path.with_suffix(".part")) as part,
            tifffile.TiffWriter(path, append=True) as tif,
        ):
            for index, page in enumerate(part.pages):
                tif.write(
                    page.asarray(),
                    photometric="rgb",
                    tile=(256, 256),
                    subfiletype=int(index > 0),
                    resolution=(1e4 / (MPP * 2**index),) * 2,
                    resolutionunit="CENTIMETER",
                    metadata=None,
                    **zlib,
                )
        path.with_suffix(".part").unlink()

    def channel_pages(path: Path) -> None:
        with tifffile.TiffWriter(path) as tif:
            for channel in range(3):
                tif.write(LEVELS[0][..., channel], photometric="minisblack", tile=(256, 256), metadata=None)

    return [
        Case(
            "grey min-is-white",
            "white_grey.tif",
            pages([255 - g for g in grey_levels], photometric="miniswhite", **zlib),
            Expect(as_grey, tissue=no_tissue),
        ),
        Case(
            "grey min-is-white stripped",
            "white_strips.tif",
            pages([255 - grey_levels[0]], tile=None, rowsperstrip=32, photometric="miniswhite", **zlib),
            Expect(as_grey[:1], tissue=no_tissue),
        ),
        Case(
            "RGB + unspecified extra sample",
            "extra.tif",
            pages(extra, extrasamples=[0], **zlib),
            Expect(LEVELS),
        ),
        Case(
            "RGB + extra sample, stripped",
            "extra_strips.tif",
            pages(extra[:1], tile=None, rowsperstrip=32, extrasamples=[0], **zlib),
            Expect(LEVELS[:1]),
        ),
        Case(
            "RGBA associated alpha",
            "rgba_assoc.tif",
            pages(halve(premultiplied, 3), extrasamples=[1], **zlib),
            Expect(halve(shown, 3), tissue=scanned, tol=1.0),
        ),
        Case(
            "RGBA 16-bit",
            "rgba16.tif",
            pages(halve(stored16, 3), extrasamples=[2], **zlib),
            Expect(halve(shown, 3), tissue=scanned, tol=1.0),
        ),
        Case(
            "RGB 16-bit subifds",
            "rgb16_subifd.tif",
            subifds([level.astype(np.uint16) * 257 for level in LEVELS], compression="zlib"),
            Expect(LEVELS),
        ),
        Case(
            "bilevel 1-bit",
            "bilevel.tif",
            pages([grey_levels[0] > 128], photometric="minisblack", **zlib),
            Expect([np.dstack([(grey_levels[0] > 128).astype(np.uint8) * 255] * 3)], tissue=no_tissue),
        ),
        Case("label page first (Ventana-like)", "label_first.tif", label_first, Expect(LEVELS)),
        Case(
            "thumbnail page after a flat image",
            "thumb.tif",
            pages([LEVELS[0], LEVELS[2]], **zlib),
            Expect([LEVELS[0], LEVELS[2]]),
        ),
        Case("level 0 jpeg, levels zlib", "mixed.tif", mixed_compression(), Expect(LEVELS, tol=JPEG_TOL)),
        Case("BigTIFF subifds", "big_subifd.tif", big_subifds(), Expect(LEVELS)),
        Case(
            "JPEG stripped, one level",
            "jpeg_strips.tif",
            pages(LEVELS[:1], tile=None, rowsperstrip=64, compression="jpeg"),
            Expect(LEVELS[:1], tol=JPEG_TOL),
        ),
        Case("channels as pages (fluorescence)", "channels.tif", channel_pages, None),
        Case(
            "CIELab",
            "lab.tif",
            pages([cv2.cvtColor(BASE, cv2.COLOR_RGB2LAB)], photometric="cielab", **zlib),
            None,
        ),
        Case(
            "YCbCr uncompressed",
            "ycc_raw.tif",
            pages(
                [cv2.cvtColor(BASE, cv2.COLOR_RGB2YCrCb)[:, :, [0, 2, 1]]],
                photometric="ycbcr",
                subsampling=(1, 1),
            ),
            Expect([BASE], tol=1.0),
        ),
        Case(
            "YCbCr uncompressed, stripped",
            "ycc_raw_strips.tif",
            pages(
                [cv2.cvtColor(BASE, cv2.COLOR_RGB2YCrCb)[:, :, [0, 2, 1]]],
                tile=None,
                rowsperstrip=32,
                photometric="ycbcr",
                subsampling=(1, 1),
            ),
            None,  # tifffile hands YCbCr over unconverted: refused by name
        ),
        Case(
            "WebP image", "slide.webp", pil_save(BASE, format="WEBP", lossless=True), Expect([BASE], mpp=None)
        ),
        Case("BMP image", "slide.bmp", pil_save(BASE, format="BMP"), Expect([BASE], mpp=None)),
        Case(
            "PNG grey + alpha",
            "la.png",
            pil_save(stored, "LA"),
            Expect(
                [np.dstack([cv2.cvtColor(shown, cv2.COLOR_RGB2GRAY)] * 3)],
                mpp=None,
                tissue=no_tissue,
                tol=1.0,
            ),
        ),
    ]
