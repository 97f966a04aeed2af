"""Colour maps by name: any matplotlib colour map, or OpenCV's tables as ``"opencv:NAME"``."""

from __future__ import annotations

import numpy as np

from attnmap.errors import InputError


def _opencv_code(name: str) -> int:
    """OpenCV's ``COLORMAP_*`` constant for ``"opencv:NAME"`` (prefix in any case), or `InputError`."""
    import cv2

    code = getattr(cv2, f"COLORMAP_{name.split(':', 1)[1].strip().upper()}", None)
    if not isinstance(code, int) or not name.split(":", 1)[1].strip():
        raise InputError(f"unknown OpenCV colour map {name!r}; e.g. 'opencv:jet', 'opencv:turbo'")
    return code


def is_opencv(name: object) -> bool:
    """``name`` names an OpenCV colour map (``opencv:NAME``, prefix in any case)."""
    return isinstance(name, str) and name.lower().startswith("opencv:")


def get_cmap(name: object):
    """Return the matplotlib colour map called ``name``, or raise `InputError` naming it.

    ``"opencv:NAME"`` gives OpenCV's 256-colour table as a matplotlib map (for colour bars), and a
    matplotlib ``Colormap`` object is returned as it is, so every drawing helper takes the same names.
    """
    import matplotlib
    from matplotlib.colors import Colormap, ListedColormap

    if isinstance(name, Colormap):
        return name
    if not isinstance(name, str):
        raise InputError(f"colour map must be a name such as 'jet', got {type(name).__name__}")
    if is_opencv(name):
        table = apply_colormap(np.arange(256) / 255.0 + 1e-9, name)  # + 1e-9: exact uint8(255 v)
        return ListedColormap(table / 255.0, name=name)
    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise InputError(
            f"unknown colour map {name!r}; use a matplotlib name such as 'jet', 'viridis', "
            "'coolwarm', or an OpenCV one as 'opencv:jet'"
        ) from None


def apply_colormap(values: np.ndarray, cmap: object = "jet") -> np.ndarray:
    """Map values in [0, 1] to (..., 3) RGB uint8.

    A matplotlib name gives ``uint8(cmap(v) · 255)`` (truncated), CLAM's heatmap convention.
    ``"opencv:NAME"`` gives ``cv2.applyColorMap(uint8(255 · v), COLORMAP_NAME)`` in RGB order: the
    look of Transformer-Explainability's and pytorch-grad-cam's ``show_cam_on_image``.
    Values outside [0, 1] are clipped; NaN raises `InputError` (matplotlib would draw it in its
    transparent "bad" colour, OpenCV as whatever its cast gives: neither is a value).
    """
    from attnmap.render.arrays import as_array

    array = as_array(values)
    if np.iscomplexobj(array) or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise InputError(f"colour map values must be real numbers, got {array.dtype}")
    array = array.astype(np.float64)
    if np.isnan(array).any():
        count = int(np.isnan(array).sum())
        raise InputError(f"cannot colour {count} NaN value(s): NaN has no place on a colour map")
    clipped = np.clip(array, 0.0, 1.0)
    if is_opencv(cmap):
        import cv2

        code = _opencv_code(cmap)
        flat = np.uint8(255 * clipped).reshape(-1, 1)
        return cv2.applyColorMap(flat, code)[:, 0, ::-1].reshape(*clipped.shape, 3).copy()
    return (get_cmap(cmap)(clipped)[..., :3] * 255.0).astype(np.uint8)
