"""The pointing game: does a map's single most relevant pixel land on the object?

A hit when the argmax pixel of the upsampled map lies inside the target mask dilated by
``tolerance`` pixels (Zhang et al.'s game uses a tolerance so that a peak on the object's edge
counts). Ties in the map go to the first pixel in row-major order, so results are deterministic.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from attnmap.errors import InputError


def pointing_hits(pixel_maps: torch.Tensor, masks: torch.Tensor, tolerance: int = 4) -> np.ndarray:
    """Per image: True when the map's maximum lies within ``tolerance`` px of the mask."""
    if pixel_maps.shape != masks.shape or pixel_maps.ndim != 3:
        raise InputError(
            f"maps and masks must both be (B, H, W); got {tuple(pixel_maps.shape)} and {tuple(masks.shape)}"
        )
    if tolerance < 0:
        raise InputError(f"pointing tolerance must be >= 0 pixels, got {tolerance}")
    n_images, _, width = pixel_maps.shape
    peaks = pixel_maps.detach().reshape(n_images, -1).argmax(dim=1).cpu().numpy()
    rows, cols = np.divmod(peaks, width)
    hits = np.zeros(n_images, dtype=bool)
    for index, mask in enumerate(masks.bool().cpu().numpy()):
        grown = dilate(mask, tolerance)
        hits[index] = grown[rows[index], cols[index]]
    return hits


def pointing_accuracy(pixel_maps: torch.Tensor, masks: torch.Tensor, tolerance: int = 4) -> float:
    """Fraction of images whose map peak hits the (dilated) mask."""
    return float(pointing_hits(pixel_maps, masks, tolerance).mean())


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow a bool mask by a disc of ``radius`` pixels."""
    if radius == 0:
        return mask.copy()
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask.astype(np.uint8), disc).astype(bool)
