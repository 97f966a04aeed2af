"""A map drawn over the part of a larger picture it describes (e.g. the model's crop of a photo)."""

from __future__ import annotations

import numpy as np

from attnmap.errors import InputError
from attnmap.render.overlay import overlay, to_uint8_rgb


def overlay_in_box(
    image: np.ndarray,
    heatmap: np.ndarray,
    box: tuple[float, float, float, float],
    cmap: str = "jet",
    alpha: float = 0.5,
    normalize_mode: str = "minmax",
) -> np.ndarray:
    """``image`` with ``heatmap`` blended over ``box`` (x0, y0, x1, y1) in image pixels, untouched elsewhere.

    The map is upsampled to the box's size (bilinear) and normalised as `overlay` does; parts of the
    box outside the image are cut; a thin grey frame marks the box so the covered area is visible.
    """
    rgb = to_uint8_rgb(image)
    height, width = rgb.shape[:2]
    try:
        corners = [float(v) for v in box]
    except (TypeError, ValueError):
        corners = []
    if len(corners) != 4 or not np.isfinite(corners).all():
        raise InputError(f"box must be four finite numbers (x0, y0, x1, y1), got {box!r}")
    x0, y0, x1, y1 = (int(round(v)) for v in corners)
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"box must have x1 > x0 and y1 > y0, got {box}")
    heat = np.asarray(heatmap, dtype=np.float64)
    if heat.ndim != 2:
        raise InputError(f"heatmap must be 2-D (h, w), got shape {heat.shape}")
    base = np.zeros((y1 - y0, x1 - x0, 3), dtype=np.uint8)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 <= cx0 or cy1 <= cy0:
        raise InputError(f"box {box} lies outside the {width}×{height} image")
    base[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = rgb[cy0:cy1, cx0:cx1]
    drawn = overlay(base, heat, cmap=cmap, alpha=alpha, normalize_mode=normalize_mode)
    out = rgb.copy()
    out[cy0:cy1, cx0:cx1] = drawn[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    frame = (128, 128, 128)
    out[cy0:cy1, [cx0, cx1 - 1]] = frame
    out[[cy0, cy1 - 1], cx0:cx1] = frame
    return out


def shrink_with_box(
    image: np.ndarray, box: tuple[float, float, float, float], longest: int
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """``image`` resized (area-averaged) so that its longer side is ``longest`` pixels, and ``box``
    (x0, y0, x1, y1) moved with it; both as they were when the image is no larger."""
    height, width = image.shape[:2]
    factor = longest / max(height, width)
    if factor >= 1:
        return image, box
    from PIL import Image

    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    small = np.asarray(Image.fromarray(to_uint8_rgb(image)).resize(size, Image.Resampling.BOX))
    scale_x, scale_y = size[0] / width, size[1] / height
    x0, y0, x1, y1 = box
    return small, (x0 * scale_x, y0 * scale_y, x1 * scale_x, y1 * scale_y)
