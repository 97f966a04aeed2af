"""One map of `attnmap explain` drawn as a picture: on the model's view of the image or on the
original image, over the pixels the model's patches cover (see `attnmap.vit.original`)."""

from __future__ import annotations

import math

import numpy as np
from torch import nn

from attnmap.render import overlay
from attnmap.render.scale import ScoreScale, choose_scale, is_signed
from attnmap.vit.original import crop_box, on_input_pixels, seen_pixels

MAX_ENLARGED_SIDE = 4096
"""Longest side a small original is enlarged to: a 9×20000-pixel strip is not drawn 64 pixels high."""


def enlarge_small(
    original: np.ndarray, box: tuple[float, float, float, float], view_shape: tuple[int, ...]
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """``original`` enlarged, when its crop ``box`` (x0, y0, x1, y1) is under half the model's view
    (``view_shape``: a 10-pixel icon under a 64-pixel input), by the largest whole factor that keeps
    the crop within the view, each pixel a block; ``box`` moved with it. At its own size the patch
    map was squeezed into a few pixels and the crop's one-pixel frame covered its edge patches."""
    x0, y0, x1, y1 = box
    factor = math.floor(min(view_shape[:2]) / max(min(x1 - x0, y1 - y0), 1.0))
    factor = min(factor, MAX_ENLARGED_SIDE // max(original.shape[:2]))
    if factor < 2:
        return original, box
    original = np.repeat(np.repeat(original, factor, axis=0), factor, axis=1)
    return original, (x0 * factor, y0 * factor, x1 * factor, y1 * factor)


def draw_map(
    model: nn.Module, view: np.ndarray, original: np.ndarray | None, heat: np.ndarray, method: str,
    cmap: str | None, alpha: float, box: tuple[float, float, float, float] | None = None,
) -> tuple[np.ndarray, ScoreScale]:
    """The overlay of one map (on the model's view, or on ``original`` within the crop: ``box``, by
    default traced through the model's preprocessing) and its scale. The map covers the pixels the
    model saw: a model that does not pad drops those past its last whole patch, and that strip is left
    uncoloured (on the original, the box is cut to the part seen).

    Unsigned maps: min-max over the map (as before), jet unless ``cmap``. Signed maps: diverging
    colour map centred on zero, clipped at the 99th percentile of |score|.
    """
    from attnmap.render import placement

    height, width = view.shape[:2]
    seen_h, seen_w = seen_pixels(model, (height, width))  # less than the view: the rest stays uncoloured
    heat = on_input_pixels(model, heat, (height, width))
    if heat.shape == (height, width):  # a pixel map: of the part seen only
        heat = heat[:seen_h, :seen_w]
    kind = "diverging" if is_signed(heat, method) else "minmax"
    scale = choose_scale(heat, method, kind, cmap)
    values, mode = (scale.unit(heat), "none") if kind == "diverging" else (heat, "minmax")
    if original is None:
        drawn = overlay(view[:seen_h, :seen_w], values, cmap=scale.cmap, alpha=alpha, normalize_mode=mode)
        if (seen_h, seen_w) == (height, width):
            return drawn, scale
        picture = view.copy()
        picture[:seen_h, :seen_w] = drawn
        return picture, scale
    if box is None:
        box = crop_box(model, (original.shape[1], original.shape[0]))
    x0, y0, x1, y1 = box
    box = (x0, y0, x0 + (x1 - x0) * seen_w / width, y0 + (y1 - y0) * seen_h / height)  # the part seen
    drawn = placement.overlay_in_box(original, values, box, cmap=scale.cmap, alpha=alpha, normalize_mode=mode)
    return drawn, scale
