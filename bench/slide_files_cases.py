"""The slide files of `bench/slide_files_sweep.py`: each written the way a scanner, converter or user
writes it (tifffile, PIL, numpy), with what a reader must give back: the level images, the pixel
size, where the tissue is.

One picture underlies every readable case: a white slide with a textured pink tissue ellipse, a
blue square planted inside it and a green square in the bottom-right corner (for reads at the edge).
Levels are that picture halved by area averaging (or resized to the sizes a case says).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

SIZE = (1200, 900)  # level-0 (width, height)
MPP = 0.25
BLUE = (40, 60, 200)
GREEN = (40, 180, 60)
MARK = (400, 300, 32)  # blue square: level-0 x, y, side
JPEG_TOL = 6.0  # mean absolute difference allowed for lossy tiles
ALPHA_FILL = (200, 50, 50)  # what some writers leave under alpha 0


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


# --------------------------------------------------------------------------------------- pictures
def picture(
    size: tuple[int, int] = SIZE, seed: int = 0, tissue: str = "ellipse"
) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8, tissue bool) at level 0."""
    width, height = size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    if tissue == "ellipse":
        mask = ((xx - 0.45 * width) / (0.3 * width)) ** 2 + ((yy - 0.45 * height) / (0.3 * height)) ** 2 <= 1
    elif tissue == "all":
        mask = np.ones((height, width), bool)
    else:
        mask = np.zeros((height, width), bool)
    image = np.full((height, width, 3), 245, np.uint8)
    colour = np.array([214, 120, 170.0]) + rng.normal(0, 14, (height, width, 1))
    colour[rng.random((height, width)) < 0.02] = (90, 40, 120)
    image[mask] = np.clip(colour[mask], 0, 255).astype(np.uint8)
    x, y, side = MARK
    if x + side <= width and y + side <= height:
        image[y : y + side, x : x + side] = BLUE
    corner = min(24, width // 4, height // 4)
    image[height - corner :, width - corner :] = GREEN
    return image, mask


def halve(image: np.ndarray, n_levels: int) -> list[np.ndarray]:
    levels = [image]
    while len(levels) < n_levels:
        prev = levels[-1]
        levels.append(
            cv2.resize(prev, (prev.shape[1] // 2, prev.shape[0] // 2), interpolation=cv2.INTER_AREA)
        )
    return levels


def resized(image: np.ndarray, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    return [
        image
        if (w, h) == (image.shape[1], image.shape[0])
        else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        for w, h in sizes
    ]


BASE, TISSUE = picture()
LEVELS = halve(BASE, 3)


def width_of(level: np.ndarray) -> int:
    return (
        level.shape[2]
        if level.ndim == 3 and level.shape[0] in (3, 4) and level.shape[2] > 4
        else level.shape[1]
    )


def per_cm(mpp: float, level: np.ndarray, level0: np.ndarray) -> dict:
    scale = width_of(level0) / width_of(level)
    return {"resolution": (1e4 / (mpp * scale), 1e4 / (mpp * scale)), "resolutionunit": "CENTIMETER"}


# --------------------------------------------------------------------------------------- writers
def pages(
    levels: list[np.ndarray] = LEVELS,
    *,
    subfiletype: bool = True,
    mpp: float | None = MPP,
    order: list[int] | None = None,
    bigtiff: bool = False,
    byteorder: str = "<",
    tile: tuple[int, int] | None = (256, 256),
    tiles: list | None = None,
    **kwargs,
) -> Callable:
    """Levels as top-level pages (what OpenSlide's generic TIFF reads), reduced ones subfiletype 1."""
    import tifffile

    def write(path: Path) -> None:
        with tifffile.TiffWriter(path, bigtiff=bigtiff, byteorder=byteorder) as tif:
            for index in order or range(len(levels)):
                level = levels[index]
                args = dict(kwargs)
                args.setdefault(
                    "photometric", "rgb" if level.ndim == 3 and level.shape[2] in (3, 4) else None
                )
                the_tile = tiles[index] if tiles else tile
                tif.write(
                    level,
                    tile=the_tile,
                    subfiletype=1 if (index and subfiletype) else 0,
                    metadata=None,
                    **(per_cm(mpp, level, levels[0]) if mpp else {}),
                    **args,
                )

    return write


def subifds(levels: list[np.ndarray] = LEVELS, mpp: float | None = MPP, **kwargs) -> Callable:
    """Levels as SubIFDs of the first page (bfconvert, QuPath, OME writers)."""
    import tifffile

    def write(path: Path) -> None:
        args = {"photometric": "rgb", **kwargs}
        with tifffile.TiffWriter(path) as tif:
            for index, level in enumerate(levels):
                tif.write(
                    level,
                    tile=(256, 256),
                    metadata=None,
                    subifds=len(levels) - 1 if index == 0 else None,
                    subfiletype=1 if index else 0,
                    **(per_cm(mpp, level, levels[0]) if mpp else {}),
                    **args,
                )

    return write


def ome(
    size_x: float | None, unit: str | None, levels: list[np.ndarray] = LEVELS, planar: bool = False
) -> Callable:
    """An OME-TIFF pyramid (SubIFDs) with its pixel size in the OME-XML only."""
    import tifffile

    def write(path: Path) -> None:
        metadata: dict = {"axes": "CYX" if planar else "YXS"}
        if size_x is not None:
            metadata.update(PhysicalSizeX=size_x, PhysicalSizeY=size_x)
            if unit is not None:
                metadata.update(PhysicalSizeXUnit=unit, PhysicalSizeYUnit=unit)
        with tifffile.TiffWriter(path, ome=True) as tif:
            for index, level in enumerate(levels):
                data = np.moveaxis(level, 2, 0) if planar else level
                tif.write(
                    data,
                    tile=(256, 256),
                    photometric="rgb",
                    compression="zlib",
                    planarconfig="separate" if planar else "contig",
                    subifds=len(levels) - 1 if index == 0 else None,
                    subfiletype=1 if index else 0,
                    metadata=metadata if index == 0 else None,
                )

    return write


APERIO = (
    "Aperio Image Library v12.0.15\r\n1200x900 [0,0 1200x900] (256x256) {c} Q=90|AppMag = 40|"
    "StripeWidth = 2040|ScanScope ID = SS1234|Filename = 12345|Date = 11/30/26|Time = 10:00:00|"
    "MPP = 0.2520|Left = 25.0|Top = 18.0"
)


def aperio(compression: str = "jpeg") -> Callable:
    """An Aperio SVS: level 0, a stripped thumbnail, the reduced levels, a label and a macro."""
    import tifffile

    def write(path: Path) -> None:
        thumb = cv2.resize(BASE, (240, 180), interpolation=cv2.INTER_AREA)
        label = np.full((80, 100, 3), 255, np.uint8)
        label[20:60, 10:90] = 0
        macro = np.full((100, 300, 3), 200, np.uint8)
        desc = APERIO.format(c="JPEG/RGB" if compression == "jpeg" else "LZW")
        with tifffile.TiffWriter(path) as tif:
            tif.write(
                LEVELS[0],
                tile=(256, 256),
                photometric="rgb",
                compression=compression,
                description=desc,
                metadata=None,
            )
            tif.write(
                thumb,
                photometric="rgb",
                compression="jpeg",
                description="Aperio Image Library v12.0.15\r\n"
                "1200x900 -> 240x180 - |AppMag = 40|MPP = 0.2520",
                metadata=None,
                rowsperstrip=16,
            )
            for level in LEVELS[1:]:
                tif.write(
                    level,
                    tile=(256, 256),
                    photometric="rgb",
                    compression=compression,
                    subfiletype=0,
                    description="Aperio Image Library v12.0.15\r\n1200x900 -> "
                    f"{level.shape[1]}x{level.shape[0]} - |AppMag = 40|MPP = 0.2520",
                    metadata=None,
                )
            tif.write(
                label,
                photometric="rgb",
                compression="lzw",
                subfiletype=1,
                description="Aperio Image Library v12.0.15\r\nlabel 100x80",
                metadata=None,
            )
            tif.write(
                macro,
                photometric="rgb",
                compression="jpeg",
                subfiletype=9,
                description="Aperio Image Library v12.0.15\r\nmacro 300x100",
                metadata=None,
            )

    return write


def pil_save(image: np.ndarray, mode: str | None = None, format: str = "PNG", **kwargs) -> Callable:
    from PIL import Image

    def write(path: Path) -> None:
        picture = Image.fromarray(image)
        (picture.convert(mode) if mode else picture).save(path, format=format, **kwargs)

    return write


def raw(data: bytes) -> Callable:
    return lambda path: path.write_bytes(data)


def truncated(writer: Callable, keep: float) -> Callable:
    def write(path: Path) -> None:
        writer(path)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])

    return write


def folder(path: Path) -> None:
    path.mkdir()
    (path / "readme.txt").write_text("not a slide")


def symlink_to(writer: Callable) -> Callable:
    def write(path: Path) -> None:
        target = path.with_name("target_" + path.name)
        writer(target)
        os.symlink(target.name, path)

    return write


def unreadable(writer: Callable) -> Callable:
    def write(path: Path) -> None:
        writer(path)
        path.chmod(0)

    return write


def rgba(fill: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(stored RGBA, what a reader must show: transparent as white, tissue) for a scan whose area
    outside a rounded rectangle was never scanned (alpha 0, ``fill`` stored under it)."""
    height, width = BASE.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width]
    scanned = ((xx - 0.45 * width) / (0.42 * width)) ** 4 + ((yy - 0.45 * height) / (0.42 * height)) ** 4 <= 1
    stored = np.dstack([BASE, np.where(scanned, 255, 0).astype(np.uint8)])
    stored[~scanned, :3] = fill
    shown = BASE.copy()
    shown[~scanned] = 255
    return stored, shown, TISSUE & scanned


def planar_pages(levels: list[np.ndarray]) -> Callable:
    return pages(
        [np.moveaxis(level, 2, 0) for level in levels],
        planarconfig="separate",
        photometric="rgb",
        compression="zlib",
    )


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
        Case("OME-TIFF µm", "ome_um.ome.tif", ome(0.25, "µm"), exact),
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
    out += pixel_cases() + odd_files()
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


def palette() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices, the colours they show, a TIFF colormap) of the base picture on an adaptive palette."""
    from PIL import Image

    quantised = Image.fromarray(BASE).quantize(256, dither=Image.Dither.NONE)
    index = np.asarray(quantised)
    colours = np.zeros((256, 3), np.uint16)
    used = np.asarray(quantised.getpalette(), np.uint16).reshape(-1, 3)[:256]
    colours[: len(used)] = used
    return index, colours[index].astype(np.uint8), (colours.T * 257).astype(np.uint16)


def write_palette_png(path: Path) -> None:
    from PIL import Image

    Image.fromarray(BASE).quantize(256, dither=Image.Dither.NONE).save(path, format="PNG")


def exact_of() -> Expect:
    return Expect(LEVELS)


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
