"""The slide files of `bench/slide_files_sweep.py` (written by `bench/slide_files_writers.py`), each
with what a reader must give back: the level images, the pixel size, where the tissue is; or None
for a file that must be refused in one line naming it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from slide_files_writers import (
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


@dataclass
class Case:
    name: str
    filename: str
    write: Callable[[Path], object]  # writes the file at the path given (may write more beside it)
    expect: Expect | None  # None: must be a one-line error naming the file
    cli: bool = True
    skip: str = ""  # why the case cannot run here (e.g. root reads any file)


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
            Expect(LEVELS),  # Slide.mpp is one number: x,
        ),
    ]
    from slide_files_pixel_cases import more_layouts, pixel_cases  # they build on Case and Expect

    out += pixel_cases() + more_layouts() + odd_files()
    return out


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
