"""A slide held in memory: a plain image, or pixels a caller already has, behind the `Slide` interface."""

from __future__ import annotations

import numpy as np

from attnmap.errors import InputError
from attnmap.wsi.pixels import as_rgb8, pil_rgb8
from attnmap.wsi.slide_base import Slide, checked_mpp


class ArraySlide(Slide):
    """A single-level slide held in memory (plain PNG/JPEG/TIFF, or an array you already have).

    ``image``: (H, W), (H, W, 1..4) pixels in 8 or 16 bits (as `as_rgb8` reads a slide's: grey
    repeated, alpha over white, the high byte of 16 bits), a tensor of them, or a PIL image in any
    mode (shown as PIL shows it: a palette's colours, not its indices). Float pixels have no agreed
    scale and an empty image no place to draw: both are refused, as is an ``mpp`` that is not a
    positive number (it sizes every physical measure and the TIFF's resolution).
    """

    def __init__(self, image: np.ndarray, path: str = "<array>", mpp: float | None = None) -> None:
        from attnmap.render.arrays import as_array, is_pil_image

        image = pil_rgb8(image, path) if is_pil_image(image) else as_rgb8(as_array(image), path)
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise InputError(f"{path}: the image is empty ({image.shape[1]}×{image.shape[0]} px)")
        mpp = checked_mpp(mpp, f"{path}: mpp")
        self.path = path
        self._image = np.ascontiguousarray(image)
        self.level_dimensions = ((int(image.shape[1]), int(image.shape[0])),)
        self.level_downsamples = (1.0,)
        self.mpp = mpp

    def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        return self._image[y : y + height, x : x + width]
