"""Reading a TIFF photo for a model: the smallest sufficient level, a band of rows at a time, bombs refused.

Why not ``tifffile.imread``: a model sees a few hundred pixels a side, while a microscope or
scanner TIFF can be 8000² at 16 bits (384 MB) — decoded whole and converted, that alone is
gigabytes. Here the pyramid level closest above the needed size is chosen, and a strip/tile image
is decoded in bands that are converted to 8 bits and box-reduced (PIL ``reduce``, bands cut at
multiples of the factor so the result equals reducing the whole image) before the next band is
read. The pixel count is checked against PIL's decompression-bomb limit before anything is decoded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from attnmap.errors import InputError

_BAND_VALUES = 1 << 23  # ~8 M samples (16 MB at 16 bits) decoded at a time


def pixel_limit() -> int | None:
    """PIL's threshold for refusing an image as a decompression bomb (None: the check is off)."""
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit)


def read_tiff_rgb(
    path: Path, min_side: int | None, to_rgb: Callable[[np.ndarray, Path], np.ndarray]
) -> tuple[np.ndarray, int, int] | None:
    """((H, W, 3) uint8 of the TIFF's first image, reduced while its shorter side stays >= ``min_side``,
    its Orientation tag, 1 when absent, and how many images (pages, not pyramid levels) the file's
    first series holds: a stack's others are not read), stored as is: the caller turns it upright; None when
    tifffile cannot read the file (PIL then tries and reports). ``to_rgb`` converts a band of
    samples to uint8 RGB."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = _choose_page(tif, min_side)
            height, width = int(page.imagelength), int(page.imagewidth)
            limit = pixel_limit()
            if limit is not None and height * width > limit:
                raise InputError(
                    f"cannot read image {path}: {width}×{height} = {height * width} pixels exceeds "
                    f"the limit of {limit} (a decompression bomb?)"
                )
            factor = max(1, min(height, width) // min_side) if min_side else 1
            orientation = _orientation(tif.pages[0])
            pages = _images_in_first_series(tif)
            colours = _colours(page, path)
            if colours is False:
                return None
            if not _bandable(page):
                samples = page.asarray()
                if int(page.planarconfig) == 2 and samples.ndim == 3:  # (samples, H, W) as stored
                    samples = np.moveaxis(samples, 0, -1)
                return _reduce_rgb(to_rgb(colours(samples), path), factor), orientation, pages
            parts = [_reduce_rgb(to_rgb(colours(band), path), factor) for band in _bands(page, factor)]
            return np.concatenate(parts, axis=0), orientation, pages
    except InputError:
        raise
    except (ValueError, OSError, TypeError, IndexError, AttributeError, tifffile.TiffFileError):
        return None


_GREY_OR_RGB = (1, 2, 6)  # min-is-black, RGB, YCbCr (which the JPEG decoder returns as RGB)


def _colours(page: Any, path: Path) -> Callable[[np.ndarray], np.ndarray] | bool:
    """The function from the page's stored samples to grey or RGB: as stored for grey and RGB (an
    alpha then dropped, as for other image files); a palette's colours, CMYK's inks and min-is-white
    grey turned as the slides' reader turns them (`attnmap.wsi.pixels.sample_converter`: read raw,
    a palette TIFF was its indices drawn as grey, a CMYK one inverted colours). False for an
    interpretation that rule has no RGB for (CIELab, ...): PIL then tries the file."""
    if int(page.photometric) in _GREY_OR_RGB:
        return lambda samples: samples
    from attnmap.wsi.pixels import sample_converter

    try:
        return sample_converter(page, str(path))
    except InputError:
        return False


def _images_in_first_series(tif: Any) -> int:
    """How many full-resolution images the file's pages hold: a stack's pages (z, time, channels);
    reduced-resolution pages (NewSubfileType bit 0, pyramid levels) and SubIFD levels not counted."""
    if tif.series and len(tif.series[0].levels) > 1:
        return 1  # a pyramid: one image at several sizes (Aperio's levels carry no reduced-page flag)
    return max(1, sum(1 for page in tif.pages if not int(getattr(page, "subfiletype", 0)) & 1))


def _orientation(page: Any) -> int:
    """The page's TIFF Orientation (tag 274, the value EXIF copies), 1 when absent or not a number."""
    tag = page.tags.get(274)
    try:
        return 1 if tag is None else int(tag.value)
    except (TypeError, ValueError):
        return 1


def _choose_page(tif: Any, min_side: int | None) -> Any:
    """The first page of the smallest pyramid level whose shorter side is still >= ``min_side``."""
    levels = list(tif.series[0].levels) if tif.series else []
    pages = [level.pages[0] for level in levels if level.pages and level.pages[0] is not None]
    page = pages[0] if pages else tif.pages[0]
    for candidate in pages[1:]:
        if min_side is not None and min(candidate.imagelength, candidate.imagewidth) >= min_side:
            page = candidate
    return page


def _bandable(page: Any) -> bool:
    """Unsigned integer samples, one plane, no depth: decodable strip by strip (their range is the
    type's; floats and signed integers are shown on the data's range, known only once all is read)."""
    dtype = np.dtype(page.dtype)
    return (
        (np.issubdtype(dtype, np.unsignedinteger) or dtype == np.dtype(bool))
        and int(page.planarconfig) == 1
        and int(getattr(page, "imagedepth", 1)) == 1
    )


def _bands(page: Any, factor: int) -> Iterator[np.ndarray]:
    """(rows, W, samples) bands of the page, each a multiple of ``factor`` rows except the last."""
    height, width, samples = int(page.imagelength), int(page.imagewidth), int(page.samplesperpixel)
    segment_rows = max(
        1, min(height, int(page.tilelength) if page.is_tiled else int(page.rowsperstrip or height))
    )
    unit = int(np.lcm(factor, segment_rows))  # bands cut between segments and between reduced rows
    rows = min(height, unit * max(1, _BAND_VALUES // max(1, unit * width * samples)))
    buffer = np.zeros((rows, width, samples), dtype=page.dtype)
    band_start = 0
    for segment, indices, _ in page.segments(sort=True, maxworkers=1, buffersize=_BAND_VALUES):
        if segment is None:  # a missing strip or tile: TIFF says zeros
            continue
        y, x = int(indices[-3]), int(indices[-2])
        while y >= band_start + rows:
            yield buffer[: min(rows, height - band_start)]
            band_start += rows
            buffer = np.zeros_like(buffer)
        tile = np.asarray(segment).reshape(-1, segment.shape[-2], segment.shape[-1])
        tile = tile[: min(tile.shape[0], height - y), : min(tile.shape[1], width - x)]
        buffer[y - band_start : y - band_start + tile.shape[0], x : x + tile.shape[1]] = tile
    while band_start < height:
        yield buffer[: min(rows, height - band_start)]
        band_start += rows
        buffer = np.zeros_like(buffer)


def _reduce_rgb(rgb: np.ndarray, factor: int) -> np.ndarray:
    if factor < 2:
        return rgb
    return np.asarray(Image.fromarray(rgb).reduce(factor))
