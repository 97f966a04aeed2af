"""Stored pixels to the RGB uint8 every reader returns: grey, 16-bit and alpha (`as_rgb8`), and
what a TIFF page's samples mean (`sample_converter`): palette indices, CMYK inks, min-is-white
grey, associated or unassociated alpha, extra samples that are not alpha.

Why: tiffslide and tifffile hand pixels over as stored, and OpenSlide (through libtiff's RGBA
reader) is the only reader here that applies the photometric interpretation. Read raw, a palette
TIFF is its indices drawn as grey, a CMYK one its inks drawn as inverted RGB, and an RGBA scan's
unscanned area whatever colour lies under alpha 0 (often read as tissue). `sample_converter` gives,
for a page, the function from stored samples to grey or RGB that `as_rgb8` takes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from attnmap.errors import InputError
from attnmap.render.arrays import high_byte
from attnmap.wsi.slide_files import quiet_tifffile

_MINISWHITE, _MINISBLACK, _RGB, _PALETTE, _SEPARATED, _YCBCR = 0, 1, 2, 3, 5, 6
_ASSOCIATED, _UNASSOCIATED = 1, 2  # ExtraSamples values that are alpha (0: of unspecified meaning)
_JPEG = (6, 7, 33003, 33005, 34892)  # compressions whose decoder returns RGB for YCbCr pages


def _full_scale(pixels: np.ndarray) -> int:
    return int(np.iinfo(pixels.dtype).max) if pixels.dtype.kind in "ui" else 1


def over_white(colour: np.ndarray, alpha: np.ndarray, associated: bool = False) -> np.ndarray:
    """``colour`` composited over white by ``alpha`` (same integer type; glass outside the scan is
    white, not black, and carries no tissue). ``associated``: colour already multiplied by alpha."""
    top = _full_scale(colour)
    if alpha.ndim == colour.ndim - 1:
        alpha = alpha[..., None]
    if bool((alpha == top).all()):
        return colour
    wide_colour, wide_alpha = colour.astype(np.float64), alpha.astype(np.float64)
    if associated:
        blended = wide_colour + (top - wide_alpha)
    else:
        blended = (wide_colour * wide_alpha + top * (top - wide_alpha)) / top
    return np.clip(np.rint(blended), 0, top).astype(colour.dtype)


def sample_converter(page, source: str) -> Callable[[np.ndarray], np.ndarray]:
    """The function from ``page``'s stored samples (height, width[, samples]) to grey or RGB.

    Raises `InputError` naming ``source`` for an interpretation with no agreed RGB here (CIELab,
    CMYK with other inks, uncompressed YCbCr, ...).
    """
    photometric = int(page.photometric)
    extras = tuple(int(value) for value in (page.extrasamples or ()))
    colour_samples = int(page.samplesperpixel) - len(extras)
    alpha = bool(extras) and extras[0] in (_ASSOCIATED, _UNASSOCIATED)
    associated = bool(extras) and extras[0] == _ASSOCIATED

    def split(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if pixels.ndim == 2 or not extras:
            return pixels, None
        colour = pixels[..., :colour_samples]
        return colour, (pixels[..., colour_samples] if alpha else None)

    def finish(colour: np.ndarray, opacity: np.ndarray | None) -> np.ndarray:
        return colour if opacity is None else over_white(colour, opacity, associated)

    if photometric == _PALETTE:
        colormap = np.asarray(page.colormap)
        table = (colormap >> 8 if colormap.max() > 255 else colormap).astype(np.uint8).T  # (entries, 3)

        def palette(pixels: np.ndarray) -> np.ndarray:
            indices = pixels[..., 0] if pixels.ndim == 3 else pixels
            return table[np.minimum(indices, len(table) - 1)]

        return palette
    if photometric == _SEPARATED:
        inkset = int(page.tags["InkSet"].value) if "InkSet" in page.tags else 1
        if inkset != 1 or colour_samples != 4:
            raise InputError(
                f"cannot read slide {source}: its pixels are {colour_samples} printing inks (InkSet "
                f"{inkset}), not CMYK; attnmap reads brightfield RGB slides"
            )

        def cmyk(pixels: np.ndarray) -> np.ndarray:
            colour, opacity = split(pixels)
            top = float(_full_scale(colour))
            inks = colour.astype(np.float64) / top
            rgb = (1.0 - inks[..., :3]) * (1.0 - inks[..., 3:4]) * top
            return finish(np.rint(rgb).astype(colour.dtype), opacity)

        return cmyk
    if photometric == _YCBCR and int(page.compression) not in _JPEG:
        raise InputError(
            f"cannot read slide {source}: its pixels are YCbCr stored without JPEG compression, which no "
            "reader here turns into RGB; convert it to an RGB or JPEG-compressed TIFF"
        )
    if photometric not in (_MINISWHITE, _MINISBLACK, _RGB, _YCBCR):
        raise InputError(
            f"cannot read slide {source}: its TIFF photometric interpretation is {page.photometric.name} "
            f"({photometric}), not grey, RGB, palette or CMYK; attnmap reads brightfield RGB slides"
        )

    def plain(pixels: np.ndarray) -> np.ndarray:
        colour, opacity = split(pixels)
        if photometric == _MINISWHITE and colour.dtype.kind == "u":
            colour = np.iinfo(colour.dtype).max - colour
        elif photometric == _MINISWHITE and colour.dtype == np.bool_:
            colour = ~colour
        return finish(colour, opacity)

    return plain


def series_converter(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """`sample_converter` of a TIFF's first series (what tiffslide reads), at its full resolution."""
    import tifffile

    with quiet_tifffile(), tifffile.TiffFile(path) as tif:
        return sample_converter(tif.series[0].levels[0].keyframe, str(path))


def as_rgb8(pixels: np.ndarray, source: str) -> np.ndarray:
    """(H, W, 3) uint8 from grey, grey+alpha, RGB or RGBA pixels in 8 or 16 bits.

    Why: slides and plain images come as 1, 2, 3 or 4 samples per pixel and in 16 bits too (the
    high byte is kept, as viewers show them); anything else (floats, 32-bit integers) has no
    agreed scale, so it is refused by name instead of drawn wrong. Alpha is composited over white:
    what lies outside a scanned area is glass, not black and not whatever colour sits under alpha 0
    (which segmentation would take for tissue).
    """
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"{source}: expected a grey, RGB or RGBA image, got pixels of shape {pixels.shape}")
    if pixels.dtype == np.uint16:
        pixels = high_byte(pixels)
    elif pixels.dtype == np.bool_:
        pixels = pixels.astype(np.uint8) * 255
    elif pixels.dtype != np.uint8:
        raise InputError(f"{source}: unsupported pixel type {pixels.dtype} (8- or 16-bit images only)")
    if pixels.shape[2] in (2, 4):
        pixels = over_white(pixels[:, :, :-1], pixels[:, :, -1])
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    return pixels


def pil_rgb8(image, source: str) -> np.ndarray:
    """A PIL image's pixels as a slide's (`as_rgb8`): transparency composited over white, 16-bit
    grey by its high byte, palettes and other modes as PIL shows them (`render.arrays.pil_pixels`).
    The one reading of a PIL image, whether opened from a PNG or JPEG or handed to `ArraySlide`."""
    from attnmap.render.arrays import pil_pixels

    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        return as_rgb8(np.asarray(image.convert("RGBA")), source)
    return as_rgb8(pil_pixels(image), source)
