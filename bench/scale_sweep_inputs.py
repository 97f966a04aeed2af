"""Big inputs for `scale_sweep.py`, written cheaply: slides of up to 10¹⁰ pixels that take megabytes.

Why pre-encoded tiles: a 100k² slide is 30 GB of RGB; nearly all of it is glass, so every blank
tile (and every tile wholly inside a blob) is one zlib stream computed once and handed to tifffile
as encoded bytes; only tiles on a blob's edge are drawn and compressed. Tissue is a few pink
ellipses whose centres are fractions of the slide and whose radii are fractions of its shorter
side, so their exact area (π·a·b) is known at any size and level: the census compares the tissue
and patch counts attnmap finds with it.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

WHITE = (245, 245, 245)
PINK = (215, 120, 170)
BLOBS = ((0.25, 0.3, 0.12, 0.09), (0.7, 0.35, 0.1, 0.13), (0.45, 0.75, 0.14, 0.1))
"""(centre x, centre y as fractions of width, height; radii as fractions of the shorter side)."""


def ellipses(width: int, height: int) -> list[tuple[float, float, float, float]]:
    """Level-0 (cx, cy, rx, ry) of the blobs of a ``width``×``height`` slide."""
    side = min(width, height)
    return [(fx * width, fy * height, ax * side, ay * side) for fx, fy, ax, ay in BLOBS]


def tissue_area(width: int, height: int) -> float:
    """Exact level-0 tissue area of the slide: the blobs' π·a·b."""
    return sum(math.pi * rx * ry for _, _, rx, ry in ellipses(width, height))


def draw(x0: int, y0: int, w: int, h: int, blobs, downsample: float, channels: int = 3) -> np.ndarray:
    """Pixels [x0, x0+w) × [y0, y0+h) of a level of ``downsample`` (uint8, ``channels`` samples)."""
    ys = (np.arange(y0, y0 + h, dtype=np.float64)[:, None] + 0.5) * downsample
    xs = (np.arange(x0, x0 + w, dtype=np.float64)[None, :] + 0.5) * downsample
    inside = np.zeros((h, w), dtype=bool)
    for cx, cy, rx, ry in blobs:
        inside |= ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1.0
    out = np.empty((h, w, channels), dtype=np.uint8)
    out[:] = WHITE[:channels]
    out[inside] = PINK[:channels]
    return out


def _classify(x0: float, y0: float, x1: float, y1: float, blobs) -> str:
    """"blank", "full" (wholly in one blob) or "edge" for a level-0 rectangle."""
    near = False
    for cx, cy, rx, ry in blobs:
        if x1 < cx - rx or x0 > cx + rx or y1 < cy - ry or y0 > cy + ry:
            continue
        corners = [((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0 for x in (x0, x1) for y in (y0, y1)]
        if all(corners):
            return "full"
        near = True
    return "edge" if near else "blank"


def _tiles(width: int, height: int, tile: int, blobs, downsample: float) -> Iterator[bytes]:
    """zlib-encoded tiles of a level (row-major, edge tiles padded), constant ones encoded once."""
    cache: dict[str, bytes] = {}
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            kind = _classify(left * downsample, top * downsample, (left + tile) * downsample,
                             (top + tile) * downsample, blobs)
            if kind == "edge":
                yield zlib.compress(draw(left, top, tile, tile, blobs, downsample).tobytes(), 1)
                continue
            if kind not in cache:
                colour = PINK if kind == "full" else WHITE
                cache[kind] = zlib.compress(np.tile(np.uint8(colour), (tile, tile, 1)).tobytes(), 1)
            yield cache[kind]


def write_tiled(path: Path, size: tuple[int, int], downsamples=(1.0,), tile: int = 1024) -> Path:
    """A tiled zlib RGB TIFF of level-0 ``size`` with one top-level page per downsample (a page
    pyramid as OpenSlide reads generic TIFFs), blobs drawn at every level."""
    import tifffile

    width0, height0 = size
    blobs = ellipses(width0, height0)
    with tifffile.TiffWriter(path, bigtiff=True) as writer:
        for index, downsample in enumerate(downsamples):
            width, height = max(1, round(width0 / downsample)), max(1, round(height0 / downsample))
            level_ds = width0 / width
            writer.write(
                _tiles(width, height, tile, blobs, level_ds), shape=(height, width, 3), dtype=np.uint8,
                tile=(tile, tile), compression="zlib", photometric="rgb",
                subfiletype=1 if index else 0, resolution=(40000.0, 40000.0), resolutionunit="CENTIMETER",
            )
    return path


def write_stripped(path: Path, size: tuple[int, int], rows: int = 64) -> Path:
    """A single-level zlib RGB TIFF in strips of ``rows`` rows (what many exporters write)."""
    import tifffile

    width, height = size
    blobs = ellipses(width, height)

    def strips() -> Iterator[bytes]:
        for top in range(0, height, rows):
            yield zlib.compress(draw(0, top, width, min(rows, height - top), blobs, 1.0).tobytes(), 1)

    tifffile.imwrite(path, strips(), shape=(height, width, 3), dtype=np.uint8, rowsperstrip=rows,
                     compression="zlib", photometric="rgb", bigtiff=True)
    return path


def write_grey16(path: Path, size: tuple[int, int], rows: int = 64) -> Path:
    """A 16-bit grey stripped TIFF (a microscope export) with the blobs darker than the glass."""
    import tifffile

    width, height = size
    blobs = ellipses(width, height)

    def strips() -> Iterator[bytes]:
        for top in range(0, height, rows):
            grey = draw(0, top, width, min(rows, height - top), blobs, 1.0, channels=1)[..., 0]
            yield zlib.compress((grey.astype(np.uint16) * 257).tobytes(), 1)

    tifffile.imwrite(path, strips(), shape=(height, width), dtype=np.uint16, rowsperstrip=rows,
                     compression="zlib", photometric="minisblack", bigtiff=True)
    return path


def write_png(path: Path, size: tuple[int, int], rows: int = 256) -> Path:
    """An RGB PNG written row band by row band (PIL would hold the whole image)."""
    width, height = size
    blobs = ellipses(width, height)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(1)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        for top in range(0, height, rows):
            band = draw(0, top, width, min(rows, height - top), blobs, 1.0)
            rows_bytes = band.reshape(band.shape[0], -1)
            lines = np.concatenate([np.zeros((band.shape[0], 1), np.uint8), rows_bytes], 1)
            data = packer.compress(lines.tobytes())
            if data:
                handle.write(chunk(b"IDAT", data))
        handle.write(chunk(b"IDAT", packer.flush()))
        handle.write(chunk(b"IEND", b""))
    return path


def write_jpeg(path: Path, size: tuple[int, int]) -> Path:
    """An RGB JPEG (PIL holds it whole while encoding: keep ``size`` to a few hundred Mpx)."""
    from PIL import Image

    width, height = size
    image = Image.fromarray(draw(0, 0, width, height, ellipses(width, height), 1.0))
    image.save(path, quality=85)
    return path


def write_bag(path: Path, n_patches: int, dim: int, patch: int, slide_size: tuple[int, int]) -> Path:
    """A CLAM features h5 of ``n_patches`` × ``dim`` float32 that takes kilobytes: the features are
    the dataset's fill value (unwritten chunks are not stored, reading gives the full array) except
    a seeded first chunk; coords on a ``patch`` grid over the slide."""
    import h5py

    columns = slide_size[0] // patch
    index = np.arange(n_patches, dtype=np.int64)
    coords = np.stack([(index % columns) * patch, (index // columns) * patch], axis=1)
    with h5py.File(path, "w") as handle:
        features = handle.create_dataset("features", (n_patches, dim), np.float32,
                                         chunks=(4096, dim), fillvalue=0.1)
        features[:4096] = np.random.default_rng(0).standard_normal((4096, dim)).astype(np.float32)
        handle.create_dataset("coords", data=coords)
    return path


def write_scores(path: Path, n_patches: int, patch: int, slide_size: tuple[int, int]) -> Path:
    """A _blockmap.h5 of ``n_patches`` seeded scores on a ``patch`` grid over the slide."""
    import h5py

    columns = slide_size[0] // patch
    index = np.arange(n_patches, dtype=np.int64)
    coords = np.stack([(index % columns) * patch, (index // columns) * patch], axis=1)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("attention_scores", data=np.random.default_rng(1).random((n_patches, 1)))
        handle.create_dataset("coords", data=coords)
        handle["coords"].attrs["patch_size"] = patch
        handle["coords"].attrs["patch_level"] = 0
    return path
