"""Normalisation of score maps to [0, 1]."""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
import torch
from scipy.stats import rankdata

from attnmap.errors import InputError

NormalizeMode = Literal["minmax", "percentile", "none"]
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def normalize(scores: ArrayT, mode: NormalizeMode = "minmax") -> ArrayT:
    """Normalise one map (any shape) to [0, 1].

    - ``"minmax"``: (x - min) / (max - min); a constant map gives zeros, never NaN.
    - ``"percentile"``: rank / N with ties given their average rank (CLAM's heatmap convention),
      so the largest value maps to 1 and values are spread uniformly however skewed the scores.
    - ``"none"``: returned unchanged (as float).

    A torch tensor comes back as a tensor on its device, an array as an array.
    NaN or infinite scores raise `InputError`: they would silently paint a wrong map.
    """
    if mode not in ("minmax", "percentile", "none"):
        raise InputError(f"unknown normalisation {mode!r}; choose 'minmax', 'percentile' or 'none'")
    is_tensor = isinstance(scores, torch.Tensor)
    if is_tensor:
        values = scores.detach()
        if values.dtype == torch.bool or values.is_complex():
            raise InputError(f"a map must hold real numbers, got {values.dtype}")
        if not torch.isfinite(values).all():
            raise InputError("cannot normalise a map that contains NaN or infinite values")
        values = values if values.is_floating_point() else values.double()
    else:
        values = np.asarray(scores)
        if values.dtype == np.bool_ or not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
            raise InputError(f"a map must hold real numbers, got {values.dtype}")
        if not np.isfinite(values).all():
            raise InputError("cannot normalise a map that contains NaN or infinite values")
        values = values if np.issubdtype(values.dtype, np.floating) else values.astype(np.float64)
    count = values.numel() if is_tensor else values.size
    if mode == "none" or count == 0:
        return values
    if mode == "minmax":
        low, high = values.min(), values.max()
        span = high - low
        if span <= 0:
            return values * 0
        return (values - low) / span
    flat = values.flatten().cpu().numpy() if is_tensor else values.ravel()
    ranks = rankdata(flat, method="average").reshape(values.shape) / flat.size
    if is_tensor:
        return torch.as_tensor(ranks, dtype=values.dtype, device=values.device)
    return ranks.astype(values.dtype, copy=False)
