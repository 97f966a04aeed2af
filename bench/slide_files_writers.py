"""How `bench/slide_files_sweep.py` writes its slide files: the picture every readable case holds
and the writers (tifffile, PIL, raw bytes) that store it the ways scanners, converters and users do.

One picture underlies them: a white slide with a textured pink tissue ellipse, a blue square planted
inside it and a green square in the bottom-right corner (for reads at the edge). Levels are that
picture halved by area averaging (or resized to the sizes a case says).
"""

from __future__ import annotations

import os
from collections.abc import Callable
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
                    **(per_cm(mpp, level, max(levels, key=width_of)) if mpp else {}),
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
                    **(per_cm(mpp, level, max(levels, key=width_of)) if mpp else {}),
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


def aperio(compression: str = "jpeg", mpp: bool = True) -> Callable:
    """An Aperio SVS: level 0, a stripped thumbnail, the reduced levels, a label and a macro
    (``mpp`` False: descriptions without MPP, as some exports write them)."""
    import tifffile

    def write(path: Path) -> None:
        if not mpp:  # the same file, written again without MPP in its descriptions
            aperio(compression)(path)
            with tifffile.TiffFile(path) as tif:
                pages = [(page.asarray(), page) for page in tif.pages]
            with tifffile.TiffWriter(path) as out:
                for data, page in pages:
                    out.write(
                        data,
                        photometric="rgb",
                        metadata=None,
                        subfiletype=int(page.subfiletype),
                        description=page.description.replace("|MPP = 0.2520", ""),
                        compression=compression if page.is_tiled else "lzw",
                        **({"tile": (256, 256)} if page.is_tiled else {"rowsperstrip": 16}),
                    )
            return
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
