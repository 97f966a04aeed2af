"""Patch-grid maps to pixel maps."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from attnmap.errors import InputError
from attnmap.render.arrays import HALF_DTYPES

UpsampleMode = Literal["bilinear", "nearest", "bicubic"]


def upsample(
    maps: torch.Tensor | np.ndarray,
    size: int | tuple[int, int],
    mode: UpsampleMode = "bilinear",
) -> torch.Tensor | np.ndarray:
    """Resize maps from the patch grid to pixels.

    ``maps`` is (B, gh, gw) or (gh, gw) (a (B, 1, gh, gw) stack is refused: squeeze its channel);
    ``size`` is (H, W) or one int for a square. Bilinear uses ``align_corners=False`` — the convention of the
    Transformer-Explainability evaluation — so a map upsampled by the patch size keeps each patch's
    value at the patch centre. Shrinking (bilinear or bicubic) averages over each output pixel's
    footprint (``antialias``): point samples would drop a hot spot that falls between them.
    Returns the same type (tensor or array) and rank as the input; half-precision tensors are
    resized in float32 and returned in their own dtype.
    """
    if mode not in ("bilinear", "nearest", "bicubic"):
        raise InputError(f"unknown upsampling mode {mode!r}; choose bilinear, nearest or bicubic")
    is_array = not isinstance(maps, torch.Tensor)
    try:
        tensor = torch.as_tensor(maps)
    except (TypeError, ValueError, RuntimeError):  # an object array, a string, a list of tensors
        kind = f"a {maps.dtype} array" if isinstance(maps, np.ndarray) else type(maps).__name__
        raise InputError(f"maps must be a tensor or an array of real numbers, got {kind}") from None
    if tensor.ndim not in (2, 3):
        raise InputError(f"maps must be (B, gh, gw) or (gh, gw), got shape {tuple(tensor.shape)}")
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise InputError(f"maps must hold real numbers, got {tensor.dtype}")
    if tensor.shape[-1] == 0 or tensor.shape[-2] == 0:
        raise InputError(f"maps are empty, shape {tuple(tensor.shape)}")
    squeeze = tensor.ndim == 2
    if squeeze:
        tensor = tensor[None]
    dtype = tensor.dtype
    if not tensor.is_floating_point():
        tensor = tensor.double()
    elif dtype in HALF_DTYPES:  # the CPU kernels lack half precision for some modes
        tensor = tensor.float()
    out_size = _size(size)
    shrinking = out_size[0] < tensor.shape[-2] or out_size[1] < tensor.shape[-1]
    kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": shrinking}
    out = F.interpolate(tensor[:, None], size=out_size, mode=mode, **kwargs)[:, 0]
    if dtype in HALF_DTYPES:
        out = out.to(dtype)
    if squeeze:
        out = out[0]
    return out.cpu().numpy() if is_array else out


def _size(size: object) -> tuple[int, int]:
    """(H, W) from one positive int or a pair of them, else `InputError` naming what was given."""
    pair = (size, size) if isinstance(size, (int, np.integer)) else size
    try:
        height, width = pair  # type: ignore[misc]
        valid = all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in pair)
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise InputError(f"size must be a positive int or a pair (H, W) of them, got {size!r}")
    return int(height), int(width)
