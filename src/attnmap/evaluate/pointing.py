"""The pointing game: does a map's single most relevant pixel land on the object?

A hit when the argmax pixel of the upsampled map lies within ``tolerance`` pixels (Euclidean
distance between pixel centres) of a mask pixel, i.e. inside the mask grown by a disc of that radius
(Zhang et al.'s game uses a tolerance so that a peak on the object's edge counts). Ties in the map
go to the first pixel in row-major order, so results are deterministic. A constant map (all zero,
say) has no peak and scores a miss, not a hit at its first pixel. An image whose mask is empty
(nothing to point at) or, grown by the tolerance, fills the image (nothing to miss) is refused: its
score would not depend on the map. So are maps with NaN or infinite values (a NaN would be taken as
the peak) and a tolerance that is not a whole number.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from attnmap.errors import InputError
from attnmap.evaluate.inputs import as_tensor, check_finite, check_map_shapes, whole_number
from attnmap.evaluate.masks import binary_masks


def pointing_hits(pixel_maps: torch.Tensor, masks: torch.Tensor, tolerance: int = 4) -> np.ndarray:
    """Per image: True when the map's maximum lies within ``tolerance`` px of the mask (tensors or arrays)."""
    pixel_maps, masks = as_tensor(pixel_maps, "maps"), as_tensor(masks, "masks")
    check_map_shapes(pixel_maps, masks)
    tolerance = whole_number(tolerance, "the pointing tolerance")
    if tolerance < 0:
        raise InputError(f"pointing tolerance must be >= 0 pixels, got {tolerance}")
    check_finite(pixel_maps, "relevance maps")
    if pixel_maps.dtype == torch.bool:  # a thresholded map: torch has no argmax of bools
        pixel_maps = pixel_maps.to(torch.uint8)
    masks = binary_masks(masks)
    grown_masks = [dilate(mask, tolerance) for mask in masks.cpu().numpy()]
    degenerate = [index for index, (mask, grown) in enumerate(zip(masks, grown_masks, strict=True))
                  if not mask.any() or grown.all()]
    if degenerate:
        raise InputError(
            f"the pointing game cannot be missed or won on image(s) {_listed(degenerate)}: the mask is "
            f"empty, or fills the image once grown by the {tolerance} px tolerance"
        )
    n_images, _, width = pixel_maps.shape
    flat = pixel_maps.detach().reshape(n_images, -1)
    peaks = flat.argmax(dim=1).cpu().numpy()
    constant = (flat.max(dim=1).values == flat.min(dim=1).values).cpu().numpy()
    rows, cols = np.divmod(peaks, width)
    hits = np.zeros(n_images, dtype=bool)
    for index, grown in enumerate(grown_masks):
        hits[index] = grown[rows[index], cols[index]] and not constant[index]
    return hits


def pointable_images(masks: torch.Tensor, tolerance: int) -> torch.Tensor:
    """(B,) bool: images where the pointing game is decidable (mask not empty, not full once grown)."""
    masks = binary_masks(as_tensor(masks, "masks")).cpu().numpy()
    tolerance = whole_number(tolerance, "the pointing tolerance")
    return torch.tensor([bool(mask.any()) and not dilate(mask, tolerance).all() for mask in masks])


def _listed(indices: list[int], limit: int = 5) -> str:
    more = f" (+{len(indices) - limit} more)" if len(indices) > limit else ""
    return ", ".join(map(str, indices[:limit])) + more


def pointing_accuracy(pixel_maps: torch.Tensor, masks: torch.Tensor, tolerance: int = 4) -> float:
    """Fraction of images whose map peak hits the (dilated) mask."""
    return float(pointing_hits(pixel_maps, masks, tolerance).mean())


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Grow a bool mask by a disc of ``radius`` pixels: every pixel whose centre lies within
    Euclidean distance ``radius`` of a mask pixel's (OpenCV's ellipse kernel reaches further:
    at radius 2 it takes (1, 2) steps, √5 away)."""
    if radius == 0:
        return mask.copy()
    # beyond the image's diagonal a disc reaches every pixel from any mask pixel: the same result,
    # without a kernel of (2 radius + 1)² cells (a huge tolerance asked for terabytes)
    radius = min(int(radius), int(np.ceil(np.hypot(*mask.shape[:2]))))
    steps = np.arange(-radius, radius + 1)
    disc = (steps[:, None] ** 2 + steps[None, :] ** 2 <= radius * radius).astype(np.uint8)
    return cv2.dilate(mask.astype(np.uint8), disc).astype(bool)
