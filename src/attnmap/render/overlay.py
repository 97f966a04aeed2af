"""Colour overlays of a heatmap on an image."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from attnmap.errors import InputError
from attnmap.render.colormap import apply_colormap
from attnmap.render.normalize import normalize
from attnmap.render.upsample import upsample

OverlayStyle = Literal["blend", "add"]


def to_uint8_rgb(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """An (H, W, 3) uint8 copy of an RGB image given as uint8, or float in [0, 1], or (3, H, W)."""
    array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise InputError(f"expected an RGB image (H, W, 3), got shape {array.shape}")
    array = array[..., :3] if array.shape[-1] != 1 else np.repeat(array, 3, axis=-1)
    if array.dtype == np.uint8:
        return array.copy()
    if np.issubdtype(array.dtype, np.floating):
        return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def overlay(
    image: np.ndarray | torch.Tensor,
    heatmap: np.ndarray | torch.Tensor,
    cmap: str = "jet",
    alpha: float = 0.5,
    style: OverlayStyle = "blend",
    normalize_mode: str = "minmax",
) -> np.ndarray:
    """Draw ``heatmap`` over ``image`` and return an (H, W, 3) RGB uint8 array.

    ``heatmap`` may be on the patch grid: it is upsampled (bilinear) to the image size, then
    normalised with ``normalize_mode`` (use "none" for a map already in [0, 1]).

    - ``style="blend"``: alpha · colour + (1 − alpha) · image.
    - ``style="add"``: colour + image, divided by the maximum (the ``show_cam_on_image`` look of
      Transformer-Explainability and pytorch-grad-cam); ``alpha`` is not used.
    """
    if style not in ("blend", "add"):
        raise InputError(f"unknown overlay style {style!r}; choose 'blend' or 'add'")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must lie in [0, 1], got {alpha}")
    rgb = to_uint8_rgb(image)
    heat = heatmap.detach().cpu().double().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(
        heatmap, dtype=np.float64
    )
    if heat.ndim == 3 and heat.shape[0] == 1:
        heat = heat[0]
    if heat.ndim != 2:
        raise InputError(f"heatmap must be 2-D (h, w), got shape {heat.shape}")
    if heat.shape != rgb.shape[:2]:
        heat = upsample(heat, rgb.shape[:2])
    heat = normalize(heat, normalize_mode)
    colour = apply_colormap(heat, cmap).astype(np.float32) / 255.0
    base = rgb.astype(np.float32) / 255.0
    if style == "add":
        out = colour + base
        out = out / out.max()
    else:
        out = alpha * colour + (1.0 - alpha) * base
    return (np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)
