"""Colour maps by name (any matplotlib colour map)."""

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
            f"unknown colour map {name!r}; use a matplotlib name such as 'jet', 'viridis', 'coolwarm'"
        ) from None


def apply_colormap(values: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Map values in [0, 1] to RGB uint8 with the 256-entry table of ``cmap``.

    Values are quantised as uint8(255 · v) before the lookup, as OpenCV's applyColorMap does,
    so "jet" here equals ``cv2.applyColorMap(np.uint8(255 * v), COLORMAP_JET)`` (in RGB order)
    up to the table's own rounding.
    """
    table = (get_cmap(cmap)(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0).astype(np.uint8)
    index = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    return table[(index * 255.0).astype(np.uint8)]
