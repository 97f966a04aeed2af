"""Relevance maps brought to pixels the way every evaluation protocol expects them."""

from __future__ import annotations

import torch

from attnmap.errors import InputError
from attnmap.evaluate.inputs import as_tensor
from attnmap.render import normalize, upsample


def maps_to_pixels(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, gh, gw) patch maps or (B, H, W) pixel maps → (B, H, W) float64, each min–max normalised.

    Patch maps are upsampled bilinearly (align_corners=False, the protocol's convention); maps
    already at pixel size are only normalised. A constant map (up to round-off) becomes all zeros.
    Tensors or arrays; any finite values (a map spanning ±1e308, whose range overflows, is scaled
    by a power of two first, which changes no ranking and no normalised value).
    """
    maps = as_tensor(maps, "relevance maps")
    if maps.ndim != 3:
        raise InputError(f"maps must be (B, gh, gw) or (B, H, W), got shape {tuple(maps.shape)}")
    if maps.numel() == 0:
        raise InputError(f"no relevance maps to score: got shape {tuple(maps.shape)}")
    if not torch.isfinite(maps).all():
        raise InputError("relevance maps contain NaN or infinite values")
    maps = maps.double()
    # max - min of a map near the float64 limit is inf; a power-of-two scale is exact otherwise
    largest = maps.abs().reshape(len(maps), -1).amax(dim=1).clamp(min=torch.finfo(torch.float64).tiny)
    maps = torch.ldexp(maps, -torch.frexp(largest).exponent.reshape(-1, 1, 1))
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = upsample(maps, tuple(size), mode="bilinear")
    # one map at a time, by the drawing's rule: a constant map upsampled differs from itself by
    # round-off only, which a bare min-max stretched over [0, 1]
    return torch.stack([normalize(one, "minmax") for one in maps])
