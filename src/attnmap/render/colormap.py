"""Colour maps by name: any matplotlib colour map, or OpenCV's tables as ``"opencv:NAME"``."""

from __future__ import annotations

import numpy as np

from attnmap.errors import InputError


def get_cmap(name: str):
    """Return the matplotlib colour map called ``name``, or raise `InputError` naming it."""
    import matplotlib

    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise InputError(
            f"unknown colour map {name!r}; use a matplotlib name such as 'jet', 'viridis', "
            "'coolwarm', or an OpenCV one as 'opencv:jet'"
        ) from None


def apply_colormap(values: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Map values in [0, 1] to (..., 3) RGB uint8.

    A matplotlib name gives ``uint8(cmap(v) · 255)`` (truncated), CLAM's heatmap convention.
    ``"opencv:NAME"`` gives ``cv2.applyColorMap(uint8(255 · v), COLORMAP_NAME)`` in RGB order: the
    look of Transformer-Explainability's and pytorch-grad-cam's ``show_cam_on_image``.
    """
    clipped = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    if cmap.startswith("opencv:"):
        import cv2

        code = getattr(cv2, f"COLORMAP_{cmap.split(':', 1)[1].upper()}", None)
        if code is None:
            raise InputError(f"unknown OpenCV colour map {cmap!r}; e.g. 'opencv:jet', 'opencv:turbo'")
        flat = np.uint8(255 * clipped).reshape(-1, 1)
        return cv2.applyColorMap(flat, code)[:, 0, ::-1].reshape(*clipped.shape, 3).copy()
    return (get_cmap(cmap)(clipped)[..., :3] * 255.0).astype(np.uint8)
