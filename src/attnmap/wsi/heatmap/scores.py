"""Score preparation for heatmaps: percentiles, reference percentiles, threshold, colour lookup.

Why separate: these are the numeric rules that make our heatmaps match CLAM's pixel for pixel
(spec "Heatmap drawing", steps 3, 4 and 9); they are pure functions on arrays, tested alone.
"""

from __future__ import annotations

import cv2
import numpy as np

from attnmap.errors import InputError
from attnmap.render.arrays import ArrayInput, as_array
from attnmap.render.colormap import get_cmap, is_opencv


def finite_or_infinite(scores: object, what: str = "scores") -> np.ndarray:
    """``scores`` (array, tensor or list) as a flat float64 array; `InputError` for NaN.

    Why: a NaN has no rank; SciPy ranks every score NaN then, and a sorted search puts it above
    the largest, so it would be drawn and sampled as the hottest patch. Infinities rank fine.
    """
    values = as_array(scores)
    if np.iscomplexobj(values) or not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_):
        raise InputError(f"{what} must be real numbers, got {values.dtype}")
    values = values.astype(np.float64).ravel()
    if np.isnan(values).any():
        raise InputError(f"{what} contain {int(np.isnan(values).sum())} NaN value(s)")
    return values


def to_percentiles(scores: ArrayInput) -> np.ndarray:
    """Rank (ties averaged) / N × 100, in float64; NaN scores raise `InputError`."""
    from scipy.stats import rankdata

    scores = finite_or_infinite(scores)
    if scores.size == 0:
        return scores.copy()
    return rankdata(scores, method="average") / len(scores) * 100


def percentiles_against(scores: ArrayInput, reference: ArrayInput) -> np.ndarray:
    """Percentile of each score within ``reference`` (SciPy's percentileofscore, kind "rank").

    This is how CLAM puts overlapping-patch scores on the scale of the blockmap scores.
    NaN (in either) raises `InputError`: a sorted search would rank it above every reference.
    """
    reference = np.sort(finite_or_infinite(reference, "reference_scores"))
    if reference.size == 0:
        raise InputError("reference_scores is empty: need at least one reference score")
    scores = finite_or_infinite(scores)
    left = np.searchsorted(reference, scores, side="left")
    right = np.searchsorted(reference, scores, side="right")
    return (left + right + (left < right)) * (50.0 / reference.size)


def prepare_values(
    scores: np.ndarray,
    percentiles: bool,
    reference_scores: np.ndarray | None,
) -> np.ndarray:
    """The values the renderer averages and colours: (percentile or raw score) / 100.

    CLAM divides by 100 in every case, so raw scores (percentiles=False, no reference) are drawn
    as score / 100; pass percentiles for scores on an arbitrary scale.
    """
    scores = finite_or_infinite(scores)
    if reference_scores is not None:
        values = percentiles_against(scores, reference_scores)
    elif percentiles:
        values = to_percentiles(scores)
    else:
        values = scores.copy()
    return values / 100


class BlankHeatmapWarning(UserWarning):
    """A binarized heatmap in which no patch reaches the threshold: it shows no patch at all."""


def draw_threshold(n_scores: int, binarize: bool, threshold: float | None) -> float:
    """Minimum value a patch needs to be drawn: 0, or for binarize the threshold (1/N if < 0 or None).

    The threshold is on the drawn scale (`prepare_values`): percentile / 100, or raw score / 100.
    """
    if not binarize:
        return 0.0
    if threshold is None or threshold < 0:
        return 1.0 / n_scores if n_scores else 0.0
    return float(threshold)


def warn_if_none_drawn(values: np.ndarray, threshold: float, source: str) -> None:
    """Warn (`BlankHeatmapWarning`) when no value reaches a binarize ``threshold``.

    Why: such a map is drawn without a single patch, which reads as "no evidence anywhere" although
    it only says the threshold is above every value (e.g. 0.5 on raw scores / 100 that top at 0.01).
    """
    if values.size and not (values >= threshold).any():
        import warnings

        warnings.warn(
            f"{source}: no patch reaches the binarize threshold {threshold:g} (the drawn values range "
            f"{values.min():.4g}..{values.max():.4g}), so the heatmap shows no patch",
            BlankHeatmapWarning,
            stacklevel=2,  # one place for the PNG and the TIFF: said once per slide
        )


class ColorTable:
    """A colour map as a uint8 lookup table indexed exactly as ``apply_colormap(values, cmap)`` is.

    ``truncate(cmap(v) × 255)`` per pixel via matplotlib is slow on gigapixel canvases; the table
    gives the same bytes: index = trunc(v × N) (v = 1 → N − 1), under/over colours outside [0, 1].
    An OpenCV map (``opencv:NAME``) is indexed as OpenCV is, by uint8(255 v) of v clipped to [0, 1].
    """

    def __init__(self, cmap: str) -> None:
        if is_opencv(cmap):
            from attnmap.render.colormap import apply_colormap

            ramp = apply_colormap(np.arange(256) / 255.0 + 1e-9, cmap)  # + 1e-9: exact uint8(255 v)
            self.size, self.scale = 256, 255.0
            self.table = np.concatenate([ramp, ramp[-1:], ramp[:1]], axis=0)
            return
        colormap = get_cmap(cmap)
        self.size = int(colormap.N)
        self.scale = float(self.size)
        rows = np.concatenate(
            [colormap(np.arange(self.size)), [colormap.get_over()], [colormap.get_under()]], axis=0
        )
        self.table = (rows * 255)[:, :3].astype(np.uint8)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        scaled = np.asarray(values, dtype=np.float64) * self.scale
        if scaled.size and scaled.min() >= 0 and scaled.max() <= self.scale:  # the usual case, fast
            np.minimum(scaled, self.size - 1, out=scaled)
            if self.size == 256 and scaled.ndim == 2:  # OpenCV's lookup is much faster than a gather
                index = scaled.astype(np.uint8)
                return cv2.LUT(cv2.merge([index, index, index]), self.table[:256].reshape(1, 256, 3))
            return self.table[scaled.astype(np.intp)]
        under, over = scaled < 0, scaled > self.scale
        index = np.clip(scaled, 0, self.size - 1).astype(np.int64)
        index[over] = self.size
        index[under] = self.size + 1
        return self.table[index]
