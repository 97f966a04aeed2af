"""What users hand the drawing and slide API as arrays, as numpy: tensors and PIL images included.

Why one place: maps come straight out of a model (tensors on a GPU, with ``requires_grad``, in
bfloat16, which numpy has no type for), images come from PIL in modes whose array is not RGB (a
palette's array is its indices, 16-bit grey runs to 65535). Each entry point once called
``np.asarray`` itself, and those inputs became tracebacks or silently wrong pictures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from attnmap.errors import InputError

HALF_DTYPES = (torch.bfloat16, torch.float16)

ArrayInput = np.ndarray | torch.Tensor | Sequence[Any]
"""Numbers as users hand them (scores, coordinates): an array, a tensor (any device and dtype,
``requires_grad`` included) or a (nested) list; read with `as_array`."""


def as_array(value: Any) -> np.ndarray:
    """``value`` as a numpy array: a tensor detached and brought to the CPU, half precision widened
    to float32 (bfloat16 has no numpy type); anything else through `numpy.asarray`."""
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        return (tensor.float() if tensor.dtype in HALF_DTYPES else tensor).numpy()
    return np.asarray(value)


def high_byte(pixels: np.ndarray) -> np.ndarray:
    """16-bit pixels as 8-bit ones, by their high byte: as slide readers and viewers show them. The
    one rule for 16-bit scans, PNGs and TIFFs, under a heatmap or read as a slide."""
    return (np.asarray(pixels, dtype=np.uint16) >> 8).astype(np.uint8)


def is_pil_image(value: object) -> bool:
    """Whether ``value`` is a PIL image (without importing PIL for a caller that never used it)."""
    module = type(value).__module__
    return module.startswith("PIL.") and hasattr(value, "mode") and hasattr(value, "convert")


def pil_pixels(image: Any) -> np.ndarray:
    """A PIL image's pixels as (H, W, 3) uint8 RGB, or (H, W) uint16 for 16-bit and 32-bit grey.

    Palette, CMYK, YCbCr, LAB, HSV and 1-bit images are converted to RGB (their arrays are not
    RGB); RGBA and LA drop alpha; 16-bit grey (``I;16*``) and 32-bit integer grey (``I``) come back
    as numbers for the caller to scale, since ``convert("RGB")`` clips them to white.
    """
    mode = image.mode
    if mode.startswith("I;16"):
        return np.asarray(image).astype(np.uint16)
    if mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise InputError(f"a 32-bit PIL image (mode I) holds values {values.min()}..{values.max()}, "
                             "outside 0..65535; pass an 8- or 16-bit image")
        return values.astype(np.uint16)
    if mode == "F":
        raise InputError("a floating-point PIL image (mode F) has no agreed scale; pass it as a numpy "
                         "array in [0, 1], or as an 8-bit image")
    return np.asarray(image.convert("RGB"))
