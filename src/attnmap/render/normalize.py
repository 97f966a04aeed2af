"""Normalisation of score maps to [0, 1]."""

from __future__ import annotations

from typing import Literal, TypeVar

import numpy as np
import torch
from scipy.stats import rankdata

from attnmap.errors import InputError
from attnmap.render.arrays import as_array

NormalizeMode = Literal["minmax", "percentile", "signed", "none"]
MODES: tuple[str, ...] = ("minmax", "percentile", "signed", "none")
ROUND_OFF = 8
"""A map whose range is within this many float steps of its magnitude is constant: an upsampled
constant map differs from itself by round-off only, and stretching that to [0, 1] paints noise."""
ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


def normalize(scores: ArrayT, mode: NormalizeMode = "minmax") -> ArrayT:
    """Normalise one map (any shape) to [0, 1].

    - ``"minmax"``: (x - min) / (max - min); a constant map (up to round-off) gives zeros, never
      NaN or noise. On a signed map (LRP, gradient × input) zero lands at -min / (max - min), a
      colour of the map's middle, and the most negative value at 0: signed maps read as "more or
      less relevant", not "for or against". Use ``"signed"`` for that.
    - ``"percentile"``: rank / N with ties given their average rank (CLAM's heatmap convention),
      so the largest value maps to 1 and values are spread uniformly however skewed the scores.
    - ``"signed"``: x / (2 max|x|) + 0.5, so zero is 0.5 and the sign is kept: evidence for a
      class above 0.5, against it below (draw it with a diverging map such as "coolwarm"); an
      all-zero map gives 0.5 everywhere.
    - ``"none"``: returned unchanged (as float).

    A torch tensor comes back as a tensor on its device, an array as an array.
    NaN or infinite scores raise `InputError`: they would silently paint a wrong map.
    """
    if mode not in MODES:
        raise InputError(f"unknown normalisation {mode!r}; choose 'minmax', 'percentile', 'signed' or 'none'")
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
    info = torch.finfo(values.dtype) if is_tensor else np.finfo(values.dtype)
    eps, largest = float(info.eps), float(info.max)
    if mode == "signed":
        peak = float(abs(values).max())
        if peak == 0:
            return values * 0 + 0.5
        # 2·peak beyond the dtype (a float16 map past 32752) was inf: every value came out 0.5
        return values / (2 * peak) + 0.5 if 2 * peak <= largest else values / peak / 2 + 0.5
    if mode == "minmax":
        low, high = float(values.min()), float(values.max())
        if high - low <= ROUND_OFF * eps * max(abs(low), abs(high)):
            return values * 0
        if high - low > largest:  # max - min overflows the dtype (NaN in float16): on values / peak
            peak = max(abs(low), abs(high))
            return (values / peak - low / peak) / (high / peak - low / peak)
        low_, high_ = values.min(), values.max()
        return (values - low_) / (high_ - low_)
    flat = as_array(values).ravel()  # a half-precision tensor is ranked in float32
    ranks = rankdata(flat, method="average").reshape(values.shape) / flat.size
    if is_tensor:
        return torch.as_tensor(ranks, dtype=values.dtype, device=values.device)
    return ranks.astype(values.dtype, copy=False)
