"""The slide files of `bench/slide_files_sweep.py` (written by `bench/slide_files_writers.py`), each
with what a reader must give back: the level images, the pixel size, where the tissue is; or None
for a file that must be refused in one line naming it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from slide_files_writers import (
    ALPHA_FILL,
    BASE,
    JPEG_TOL,
    LEVELS,
    MPP,
    TISSUE,
    aperio,
    folder,
    halve,
    ome,
    pages,
    palette,
    picture,
    pil_save,
    planar_pages,
    raw,
    resized,
    rgba,
    subifds,
    symlink_to,
    truncated,
    unreadable,
    write_palette_png,
)


@dataclass
class Expect:
    """What a reader must give back (None for a file that must be refused)."""

    levels: list[np.ndarray]  # RGB uint8, largest first
    mpp: float | None = MPP
    tissue: np.ndarray | None = None  # level-0 bool; None: the base ellipse; all False: no tissue
    tol: float = 0.0  # mean absolute difference allowed per level
    note: str = ""


@dataclass
class Case:
    name: str
    filename: str
    write: Callable[[Path], object]  # writes the file at the path given (may write more beside it)
    expect: Expect | None  # None: must be a one-line error naming the file
    cli: bool = True
    skip: str = ""  # why the case cannot run here (e.g. root reads any file)
    tags: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------- the cases
def cases() -> list[Case]:
    """Every file of the sweep, with what it must read as."""
    jpeg = Expect(LEVELS, tol=JPEG_TOL)
    exact = Expect(LEVELS)
    zlib = {"compression": "zlib"}
    out: list[Case] = [
        # pyramids as top-level pages (OpenSlide's generic TIFF)
        Case("pages jpeg (rgb)", "pages_jpeg.tif", pages(compression="jpeg"), jpeg),
        Case(
            "pages jpeg ycbcr 2x2",
            "pages_ycbcr.tif",
            pages(
                [cv2.cvtColor(level, cv2.COLOR_RGB2YCrCb)[:, :, [0, 2, 1]] for level in LEVELS],
                compression="jpeg",
                photometric="ycbcr",
                subsampling=(2, 2),
            ),
            jpeg,
        ),
        Case("pages deflate", "pages_zlib.tif", pages(**zlib), exact),
        Case("pages lzw + predictor", "pages_lzw.tif", pages(compression="lzw", predictor=True), exact),
        Case("pages zstd", "pages_zstd.tif", pages(compression="zstd"), exact),
        Case(
            "pages webp (libvips)",
            "pages_webp.tif",
            pages(compression="webp", compressionargs={"lossless": True}),
            exact,
        ),
        Case(
            "pages jpeg2000",
            "pages_j2k.tif",
            pages(compression="jpeg2000", compressionargs={"level": 0}),
            exact,
        ),
        Case("pages uncompressed", "pages_raw.tif", pages(), exact),
        Case(
            "pages uncompressed, tiles 512/256/128",
            "pages_raw_tiles.tif",
            pages(tiles=[(512, 512), (256, 256), (128, 128)]),
            exact,
        ),
        Case("pages tiles 128", "pages_t128.tif", pages(tile=(128, 128), **zlib), exact),
        Case("pages tiles 512", "pages_t512.tif", pages(tile=(512, 512), **zlib), exact),
        Case("pages without subfiletype", "pages_nosft.tif", pages(subfiletype=False, **zlib), exact),
        Case("pages smallest first", "pages_order.tif", pages(order=[2, 1, 0], **zlib), exact),
        Case("pages stripped", "pages_strips.tif", pages(tile=None, rowsperstrip=64, **zlib), exact),
        Case(
            "level 0 stripped, levels tiled",
            "pages_mixed_layout.tif",
            pages(tiles=[None, (256, 256), (256, 256)], **zlib),
            exact,
        ),
        Case("pages BigTIFF", "pages_big.tif", pages(bigtiff=True, compression="jpeg"), jpeg),
        Case("pages big-endian", "pages_be.tif", pages(byteorder=">", **zlib), exact),
        Case("pages planar RGB", "pages_planar.tif", planar_pages(LEVELS), exact),
        Case(
            "non-integer downsamples",
            "pages_odd_ds.tif",
            pages(resized(BASE, [(1200, 900), (500, 375), (173, 130)]), **zlib),
            Expect(resized(BASE, [(1200, 900), (500, 375), (173, 130)])),
        ),
        Case(
            "odd level sizes (1201x901)",
            "pages_odd.tif",
            pages(halve(picture((1201, 901))[0], 3), **zlib),
            Expect(halve(picture((1201, 901))[0], 3), tissue=picture((1201, 901))[1]),
        ),
        # SubIFD pyramids
        Case("subifds deflate", "subifd_zlib.tif", subifds(compression="zlib"), exact),
        Case(
            "subifds smallest first",
            "subifd_order.tif",
            subifds(LEVELS[::-1], compression="zlib"),
            Expect(LEVELS),
        ),
        Case("subifds jpeg", "subifd_jpeg.tif", subifds(compression="jpeg"), jpeg),
        Case(
            "subifds without resolution",
            "subifd_nompp.tif",
            subifds(mpp=None, compression="zlib"),
            Expect(LEVELS, mpp=None),
        ),
        # vendor / OME
        Case(
            "Aperio SVS (thumbnail, label, macro)",
            "aperio.svs",
            aperio(),
            Expect(LEVELS, 0.252, tol=JPEG_TOL),
        ),
        Case("Aperio SVS lzw", "aperio_lzw.svs", aperio("lzw"), Expect(LEVELS, 0.252)),
        Case("Aperio layout named .tif", "aperio.tif", aperio(), Expect(LEVELS, 0.252, tol=JPEG_TOL)),
        Case("Aperio SVS without MPP", "aperio_nompp.svs", aperio("lzw", mpp=False), Expect(LEVELS, None)),
        Case("OME-TIFF µm", "ome_um.ome.tif", ome(0.25, "µm"), exact),
        Case("OME-TIFF 'um'", "ome_ascii_um.ome.tif", ome(0.25, "um"), exact),
        Case("OME-TIFF nm", "ome_nm.ome.tif", ome(250.0, "nm"), exact),
        Case("OME-TIFF mm", "ome_mm.ome.tif", ome(0.00025, "mm"), exact),
        Case("OME-TIFF default unit", "ome_nounit.ome.tif", ome(0.25, None), exact),
        Case("OME-TIFF no pixel size", "ome_nosize.ome.tif", ome(None, None), Expect(LEVELS, mpp=None)),
        Case("OME-TIFF planar (CYX)", "ome_planar.ome.tif", ome(0.25, "µm", planar=True), exact),
        Case("OME-TIFF one level", "ome_flat.ome.tif", ome(0.25, "µm", LEVELS[:1]), Expect(LEVELS[:1])),
        # pixel size from resolution tags
        Case(
            "resolution per inch",
            "res_inch.tif",
            pages(mpp=None, resolution=(101600, 101600), resolutionunit="INCH", **zlib),
            exact,
        ),
        Case(
            "resolution 72 dpi",
            "res_72dpi.tif",
            pages(mpp=None, resolution=(72, 72), resolutionunit="INCH", **zlib),
            Expect(LEVELS, mpp=None),
        ),
        Case(
            "resolution without unit",
            "res_nounit.tif",
            pages(mpp=None, resolution=(40000, 40000), resolutionunit="NONE", **zlib),
            Expect(LEVELS, mpp=None),
        ),
        Case("no resolution", "res_none.tif", pages(mpp=None, **zlib), Expect(LEVELS, mpp=None)),
        Case(
            "anisotropic resolution",
            "res_aniso.tif",
            pages(mpp=None, resolution=(40000, 20000), resolutionunit="CENTIMETER", **zlib),
            Expect(LEVELS, note="x"),
        ),
    ]
    out += pixel_cases() + more_layouts() + odd_files()
    return out


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


def mixed_compression() -> Callable:
    import tifffile

    def write(path: Path) -> None:
        with tifffile.TiffWriter(path) as tif:
            for index, level in enumerate(LEVELS):
                tif.write(
                    level,
                    tile=(256, 256),
                    photometric="rgb",
                    subfiletype=int(index > 0),
                    metadata=None,
                    compression="jpeg" if index == 0 else "zlib",
                    resolution=(1e4 / (MPP * 2**index),) * 2,
                    resolutionunit="CENTIMETER",
                )

    return write


def big_subifds() -> Callable:
    import tifffile

    def write(path: Path) -> None:
        with tifffile.TiffWriter(path, bigtiff=True) as tif:
            for index, level in enumerate(LEVELS):
                tif.write(
                    level,
                    tile=(256, 256),
                    photometric="rgb",
                    compression="zlib",
                    metadata=None,
                    subifds=2 if index == 0 else None,
                    subfiletype=int(index > 0),
                    resolution=(1e4 / (MPP * 2**index),) * 2,
                    resolutionunit="CENTIMETER",
                )

    return write


def odd_files() -> list[Case]:
    zlib = {"compression": "zlib"}
    png = pil_save(BASE)
    stored, shown, scanned_tissue = rgba((0, 0, 0))
    return [
        Case("PNG as a slide", "slide.png", png, Expect([BASE], mpp=None)),
        Case(
            "PNG RGBA transparent",
            "rgba.png",
            pil_save(stored),
            Expect([shown], mpp=None, tissue=scanned_tissue),
        ),
        Case(
            "PNG 16-bit grey",
            "grey16.png",
            pil_save(cv2.cvtColor(BASE, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257),
            Expect(
                [np.dstack([cv2.cvtColor(BASE, cv2.COLOR_RGB2GRAY)] * 3)],
                mpp=None,
                tissue=np.zeros_like(TISSUE),
            ),
        ),
        Case("PNG palette", "palette.png", write_palette_png, Expect([palette()[1]], mpp=None, tol=1.0)),
        Case(
            "JPEG as a slide",
            "slide.jpg",
            pil_save(BASE, format="JPEG", quality=95),
            Expect([BASE], mpp=None, tol=JPEG_TOL),
        ),
        Case("PNG named .svs", "png.svs", png, None),
        Case("TIFF pyramid named .svs", "generic.svs", pages(**zlib), Expect(LEVELS)),
        Case("TIFF pyramid named .ndpi", "generic.ndpi", pages(**zlib), Expect(LEVELS)),
        Case("TIFF pyramid without suffix", "noext", pages(**zlib), Expect(LEVELS)),
        Case(
            "single-level TIFF, stripped",
            "flat.tif",
            pages(LEVELS[:1], tile=None, **zlib),
            Expect(LEVELS[:1]),
        ),
        Case("truncated pyramid (60 %)", "cut.tif", truncated(pages(compression="jpeg"), 0.6), None),
        Case("truncated Aperio (95 %)", "cut.svs", truncated(aperio(), 0.95), None),
        Case("zero bytes", "empty.svs", raw(b""), None),
        Case("text named .svs", "notes.svs", raw(b"scanner export failed\n"), None),
        Case("HTML page named .tiff", "login.tiff", raw(b"<!DOCTYPE html><html>Sign in</html>"), None),
        Case("random bytes .tif", "noise.tif", raw(np.random.default_rng(1).bytes(5000)), None),
        Case("TIFF header only", "header.tif", raw(b"II*\x00\x08\x00\x00\x00"), None),
        Case("folder named x.tiff", "folder.tiff", folder, None),
        Case("symlink to a pyramid", "link.tif", symlink_to(pages(**zlib)), Expect(LEVELS)),
        Case(
            "unreadable permissions",
            "locked.tif",
            unreadable(pages(**zlib)),
            None,
            skip="running as root: every file is readable" if os.geteuid() == 0 else "",
        ),
        Case("name with spaces and unicode", "biopsy 1 – Färbung (HE).tif", pages(**zlib), Expect(LEVELS)),
        Case("name with dots", "case.2026.11.30.tif", pages(**zlib), Expect(LEVELS)),
        Case("upper-case suffix .TIF", "UPPER.TIF", pages(**zlib), Expect(LEVELS)),
        Case("RGBA PNG named .tif", "png_rgba.tif", pil_save(stored), None),
    ]
