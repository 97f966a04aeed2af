"""Ground-truth object masks, checked before any localisation metric reads them.

A metric that silently casts a soft or 0/255 mask to bool, or scores an image whose mask is empty
(nothing to find) or full (nothing to miss), returns a number that means nothing; these checks turn
such input into a one-line `InputError` instead.
"""

from __future__ import annotations

import torch

from attnmap.errors import InputError


def binary_masks(masks: torch.Tensor) -> torch.Tensor:
    """``masks`` as bool; only bool tensors or tensors holding nothing but 0 and 1 are accepted."""
    if masks.dtype == torch.bool:
        return masks
    if masks.is_floating_point() and not torch.isfinite(masks).all():
        raise InputError("object masks contain NaN or infinite values")
    if not ((masks == 0) | (masks == 1)).all():
        values = torch.unique(masks.detach().cpu())
        shown = ", ".join(f"{float(v):g}" for v in values[:5]) + (", ..." if len(values) > 5 else "")
        raise InputError(f"object masks must be binary (bool or 0/1), got values {shown}")
    return masks.bool()


def informative_images(masks: torch.Tensor) -> torch.Tensor:
    """(B,) bool: images whose mask has both object and background pixels (a localisation can miss)."""
    flat = masks.reshape(len(masks), -1)
    return flat.any(dim=1) & ~flat.all(dim=1)
