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
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"image is empty, shape {array.shape}")
    array = array[..., :3] if array.shape[-1] != 1 else np.repeat(array, 3, axis=-1)
    if array.dtype == np.uint8:
        return array.copy()
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
    alpha = _alpha(alpha)
    rgb = to_uint8_rgb(image)
    heat = heatmap.detach().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap)
    if heat.dtype == np.bool_ or not np.issubdtype(heat.dtype, np.number) or np.iscomplexobj(heat):
        raise InputError(f"heatmap must hold real numbers, got {heat.dtype}")
    heat = heat.astype(np.float64)
    if heat.ndim == 3 and heat.shape[0] == 1:
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
