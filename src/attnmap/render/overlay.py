"""Colour overlays of a heatmap on an image."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from PIL import Image

from attnmap.errors import InputError
from attnmap.render.arrays import as_array, high_byte, is_pil_image, pil_pixels
from attnmap.render.colormap import apply_colormap
from attnmap.render.normalize import NormalizeMode, normalize
from attnmap.render.upsample import upsample

if TYPE_CHECKING:  # matplotlib is imported when a colour map is drawn, not with the package
    from matplotlib.colors import Colormap

OverlayStyle = Literal["blend", "add"]


def to_uint8_rgb(image: np.ndarray | torch.Tensor | Image.Image) -> np.ndarray:
    """An (H, W, 3) uint8 copy of an RGB image given as uint8, or float in [0, 1], or (3, H, W);
    grey (H, W) or with alpha (H, W, 2) is repeated, RGBA's alpha dropped.

    Integers are read on 0..255, 16-bit unsigned ones (and 16-bit PIL grey) on their own range
    0..65535; a PIL image in any mode is shown as PIL shows it (a palette's colours, not its indices).
    """
    array = pil_pixels(image) if is_pil_image(image) else as_array(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise InputError(f"expected an RGB image (H, W, 3), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"image is empty, shape {array.shape}")
    array = array[..., :3] if array.shape[-1] > 2 else np.repeat(array[..., :1], 3, axis=-1)  # grey (+ alpha)
    if array.dtype == np.uint8:
        return array.copy()
    if array.dtype == np.uint16:  # 16-bit scans and PNGs: their full range, as viewers show them
        return high_byte(array)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InputError(f"image must hold real numbers, got {array.dtype}")
    if not np.isfinite(array).all():
        raise InputError("image contains NaN or infinite values")
    if np.issubdtype(array.dtype, np.floating):
        low, high = float(array.min()), float(array.max())
        if low < -1e-3 or high > 1.0 + 1e-3:  # 0..255 floats would all be painted white
            raise InputError(
                f"a float image must lie in [0, 1], got values {low:.3g} to {high:.3g}; "
                "divide by 255 or pass uint8"
            )
        return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:  # clipping would paint them black and white
        raise InputError(
            f"an integer image must lie in 0..255 (or be uint16), got values {low} to {high}"
        )
    return array.astype(np.uint8)


def overlay(
    image: np.ndarray | torch.Tensor | Image.Image,
    heatmap: np.ndarray | torch.Tensor,
    cmap: str | Colormap = "jet",
    alpha: float = 0.5,
    style: OverlayStyle = "blend",
    normalize_mode: NormalizeMode = "minmax",
) -> np.ndarray:
    """Draw ``heatmap`` over ``image`` and return an (H, W, 3) RGB uint8 array.

    ``heatmap`` ((h, w), (1, h, w) or (1, 1, h, w); array or tensor) may be on the patch grid: it is
    upsampled (bilinear) to the image size, then normalised with ``normalize_mode`` (use "none" for
    a map already in [0, 1], "signed" with a diverging ``cmap`` for signed relevance; see
    `normalize`). ``image``: see `to_uint8_rgb`.

    - ``style="blend"``: alpha · colour + (1 − alpha) · image.
    - ``style="add"``: colour + image, divided by the maximum (the ``show_cam_on_image`` look of
      Transformer-Explainability and pytorch-grad-cam); ``alpha`` is not used.
    """
    if style not in ("blend", "add"):
        raise InputError(f"unknown overlay style {style!r}; choose 'blend' or 'add'")
    alpha = _alpha(alpha)
    rgb = to_uint8_rgb(image)
    heat = as_array(heatmap)
    if heat.dtype == np.bool_ or not np.issubdtype(heat.dtype, np.number) or np.iscomplexobj(heat):
        raise InputError(f"heatmap must hold real numbers, got {heat.dtype}")
    heat = heat.astype(np.float64)
    while heat.ndim > 2 and heat.shape[0] == 1:  # (1, h, w) and (1, 1, h, w): one map
        heat = heat[0]
    if heat.ndim != 2:
        raise InputError(f"heatmap must be 2-D (h, w), got shape {heat.shape}")
    if heat.size == 0:
        raise InputError(f"heatmap is empty, shape {heat.shape}")
    if heat.shape != rgb.shape[:2]:
        heat = upsample(heat, rgb.shape[:2])
    heat = normalize(heat, normalize_mode)
    colour = apply_colormap(heat, cmap).astype(np.float32) / 255.0
    base = rgb.astype(np.float32) / 255.0
    if style == "add":
        out = colour + base
        out = out / max(float(out.max()), 1e-12)  # a black image under a black colour stays black
    else:
        out = alpha * colour + (1.0 - alpha) * base
    return (np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def _alpha(alpha: object) -> float:
    """``alpha`` as a float in [0, 1] (a number, numpy or 0-d tensor), else `InputError`."""
    if isinstance(alpha, torch.Tensor) and alpha.numel() == 1:
        alpha = alpha.item()
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise InputError(f"alpha must be a number in [0, 1], got {type(alpha).__name__}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"alpha must lie in [0, 1], got {alpha}")
    return float(alpha)
