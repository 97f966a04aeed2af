"""EXIF orientation: a photo is explained and drawn the way it is meant to be seen.

Phones store pixels as the sensor read them and record the turn in the EXIF Orientation tag
(TIFF tag 274); every viewer, and ``PIL.ImageOps.exif_transpose``, shows the image turned. A map
computed on the stored pixels would describe a sideways picture and be drawn on it. The turn is
applied after the image has been decoded at reduced size, where it is cheap.
"""

from __future__ import annotations

import struct

from PIL import ExifTags, Image

# EXIF 2.3 Orientation values → the transpose that shows the image upright (values outside 2..8:
# none, as exif_transpose does)
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def exif_orientation(image: Image.Image) -> int:
    """The image's EXIF Orientation value (1 when absent or unreadable: a damaged EXIF block
    does not make the pixels unreadable)."""
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, SyntaxError, struct.error, KeyError, IndexError, TypeError):
        return 1
    try:
        return int(value)
    except (TypeError, ValueError):
        return 1


def upright(image: Image.Image, orientation: int) -> Image.Image:
    """``image`` turned and/or mirrored as EXIF ``orientation`` says (unchanged for 1 or unknown)."""
    method = _TRANSPOSE.get(int(orientation))
    return image if method is None else image.transpose(method)
