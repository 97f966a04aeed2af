"""The numbers every metric is given, read one way: arrays or tensors, finite, counts as written.

A metric that takes a NaN as the highest score, a ``requires_grad`` tensor as an error, or
0.7 × 90 as 62 pixels publishes a number that is not its definition's; these helpers are where
the evaluation modules turn such input into a value or a one-line `InputError`.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch

from attnmap.errors import InputError
from attnmap.render.arrays import as_array as render_array


def as_tensor(values: object, what: str) -> torch.Tensor:
    """``values`` (tensor, array or nested list) as a detached tensor; other things refused."""
    if isinstance(values, torch.Tensor):
        return values.detach()
    try:
        return torch.as_tensor(np.asarray(values))
    except (TypeError, ValueError, RuntimeError) as error:
        kind = type(values).__name__
        raise InputError(f"{what} must be a tensor or an array of numbers, got {kind}") from error


def as_array(values: object, dtype: type | None = np.float64) -> np.ndarray:
    """``values`` (tensor, grad-tracking or on a GPU, or array-like) as a numpy array of ``dtype``
    (None: its own), by the drawing code's rule (`attnmap.render.arrays.as_array`)."""
    return np.asarray(render_array(values), dtype=dtype)


def check_map_shapes(pixel_maps: torch.Tensor, masks: torch.Tensor) -> None:
    """`InputError` unless maps and masks are both (B, H, W), of one shape, holding a pixel at least.

    Why the emptiness too: with no image (or images of no pixel) a metric has nothing to score;
    torch's reshape of the empty batch failed with its own message, deep inside the metric.
    """
    if pixel_maps.shape != masks.shape or pixel_maps.ndim != 3:
        raise InputError(
            f"maps and masks must both be (B, H, W); got {tuple(pixel_maps.shape)} and {tuple(masks.shape)}"
        )
    check_not_empty(tuple(pixel_maps.shape), "maps")


def check_not_empty(shape: tuple[int, ...], what: str) -> None:
    """`InputError` when a (B, ..., H, W) batch has no image or its images no pixel: a score of
    nothing (a mean over no image is NaN, not a number a table should print)."""
    if shape[0] == 0:
        raise InputError(f"{what}: no image to score, got shape {shape}")
    if 0 in shape[-2:]:
        raise InputError(f"{what}: images of no pixel, got shape {shape}")


def check_finite(values: np.ndarray | torch.Tensor, what: str) -> None:
    """`InputError` when ``values`` hold NaN or ±inf (a NaN sorts as the highest or lowest score), or
    are complex (no order to rank them by: torch's sort and argmax failed on them)."""
    complex_ = values.is_complex() if isinstance(values, torch.Tensor) else np.iscomplexobj(values)
    if complex_:
        raise InputError(f"{what} must be real numbers, got {values.dtype}")
    finite = torch.isfinite(values).all() if isinstance(values, torch.Tensor) else np.isfinite(values).all()
    if not bool(finite):
        raise InputError(f"{what} contain NaN or infinite values")


def binary_labels(labels: object, what: str = "labels") -> np.ndarray:
    """``labels`` as a bool array; only bool or 0/1 values are taken (a 0/255 or soft mask is refused)."""
    array = as_array(labels, dtype=None)
    if array.dtype == np.bool_:
        return array
    if not np.isin(array, (0, 1)).all():
        shown = ", ".join(f"{v:g}" for v in np.unique(array[~np.isin(array, (0, 1))])[:3])
        raise InputError(f"{what} must be boolean or 0/1, got values such as {shown}")
    return array.astype(bool)


def whole_number(value: object, what: str) -> int:
    """``value`` as an int when it is a whole number (2.0 is taken; 2.5, True and NaN are not)."""
    if isinstance(value, (bool, np.bool_)):
        raise InputError(f"{what} must be a whole number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as error:
        raise InputError(f"{what} must be a whole number, got {value!r}") from error
    if not math.isfinite(number) or number != int(number):
        raise InputError(f"{what} must be a whole number, got {value!r}")
    return int(number)


def share_of(fraction: float, count: int, half_up: bool = False) -> int:
    """``fraction`` × ``count`` with the fraction as written (0.7 is 7/10, not 0.6999…): floored,
    or rounded with halves up. Binary floating point made 0.7 × 90 = 62.99… → 62."""
    exact = Fraction(repr(float(fraction))) * count
    return int(exact + Fraction(1, 2)) if half_up else int(exact)
