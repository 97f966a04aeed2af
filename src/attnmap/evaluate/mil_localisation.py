"""How well MIL attention finds the region that makes a slide positive.

A MIL model is trained on slide labels only; if its attention is a faithful heatmap, the patches it
attends to most should be the ones inside the annotated (or, for synthetic slides, generated) tumour.
`patch_labels_from_mask` turns a ground-truth mask into per-patch labels (exact area fraction of each
patch footprint, so patches need not align with the mask grid), and `attention_localisation` scores
attention against them with threshold-free ranking measures: ROC AUC, average precision, and
precision among the top-k patches.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

from attnmap.errors import InputError
from attnmap.evaluate.inputs import as_array, binary_labels, check_finite, whole_number


def _integral_at(integral: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Area integral of the mask over [0, x) × [0, y) (mask-pixel units, fractional x/y allowed).

    The integral of a piecewise-constant image is bilinear inside each cell, so bilinear
    interpolation of the summed-area table is exact.
    """
    h, w = integral.shape[0] - 1, integral.shape[1] - 1
    x = np.clip(x, 0.0, w)
    y = np.clip(y, 0.0, h)
    x0 = np.minimum(np.floor(x).astype(np.int64), max(w - 1, 0))
    y0 = np.minimum(np.floor(y).astype(np.int64), max(h - 1, 0))
    fx, fy = x - x0, y - y0
    top = integral[y0, x0] * (1 - fx) + integral[y0, x0 + 1] * fx
    bottom = integral[y0 + 1, x0] * (1 - fx) + integral[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def patch_means(coords: np.ndarray, patch_size: float, values: np.ndarray, downsample: float) -> np.ndarray:
    """Mean of a 2-D value map over each square level-0 patch footprint (exact area weighting).

    ``coords`` are level-0 top-left [x, y] (N×2, CLAM's h5 ``coords``), ``patch_size`` the footprint
    side in level-0 pixels, ``values`` a map covering the slide at ``downsample``. Parts of a
    footprint beyond the map count as 0.
    """
    coords = as_array(coords)
    values = np.asarray(values)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InputError(f"coords must be an N×2 array of level-0 [x, y], got shape {coords.shape}")
    check_finite(coords, "patch coordinates")
    if values.ndim != 2 or values.size == 0:
        raise InputError(f"the mask / value map must be a non-empty 2-D array, got shape {values.shape}")
    if not patch_size > 0 or not downsample > 0:
        raise InputError(f"patch_size and the downsample must be positive, got {patch_size}, {downsample}")
    integral = np.zeros((values.shape[0] + 1, values.shape[1] + 1), np.float64)
    integral[1:, 1:] = np.cumsum(np.cumsum(values, axis=0, dtype=np.float64), axis=1)
    x0, y0 = coords[:, 0] / downsample, coords[:, 1] / downsample
    side = patch_size / downsample
    x1, y1 = x0 + side, y0 + side
    area = (
        _integral_at(integral, x1, y1)
        - _integral_at(integral, x0, y1)
        - _integral_at(integral, x1, y0)
        + _integral_at(integral, x0, y0)
    )
    return area / (side * side)


def patch_mask_fractions(
    coords: np.ndarray, patch_size: float, mask: np.ndarray, mask_downsample: float
) -> np.ndarray:
    """Fraction (0–1) of each square level-0 patch footprint covered by the mask (non-zero pixels)."""
    mask = np.asarray(mask)
    return np.clip(patch_means(coords, patch_size, mask != 0, mask_downsample), 0.0, 1.0)


def patch_labels_from_mask(
    coords: np.ndarray, patch_size: float, mask: np.ndarray, mask_downsample: float, min_fraction: float = 0.5
) -> np.ndarray:
    """Boolean label per patch: True when at least ``min_fraction`` of its footprint is in the mask."""
    if not 0.0 < min_fraction <= 1.0:
        raise InputError(f"min_fraction must be in (0, 1], got {min_fraction}")
    fractions = patch_mask_fractions(coords, patch_size, mask, mask_downsample)
    return fractions >= min_fraction - 1e-12


def _average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Step-wise average precision, tied scores forming one threshold (as scikit-learn does)."""
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_tie = np.r_[np.nonzero(np.diff(sorted_scores))[0], len(scores) - 1]
    true_positives = np.cumsum(sorted_labels)[last_of_tie]
    precision = true_positives / (last_of_tie + 1)
    recall = true_positives / labels.sum()
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def attention_localisation(
    scores: np.ndarray, patch_labels: np.ndarray, top_k: int | None = None
) -> dict[str, float]:
    """Rank-based agreement of per-patch scores with per-patch ground-truth labels.

    Returns ``auc`` (ROC AUC, ties counted half), ``average_precision``, ``top_k_precision`` (share of
    positives among the ``top_k`` highest-scored patches; by default k = number of positives, i.e.
    R-precision) and the counts. Raw (pre-softmax) and softmaxed attention give the same result,
    since every measure depends only on the ranking. Patches tied with the k-th score share the
    places left among the top k (the expected precision when ties are broken at random), so no
    measure depends on the order the patches are listed in. Scores and labels may be arrays or
    tensors (grad-tracking ones too); NaN or infinite scores, labels other than 0/1, a set
    without positive or negative patches and a ``top_k`` that is not a whole number in
    [1, N] are refused.
    """
    scores = as_array(scores).reshape(-1)
    labels = as_array(patch_labels, dtype=None).reshape(-1)
    if scores.shape != labels.shape:
        raise InputError(
            f"scores ({scores.size}) and patch_labels ({labels.size}) must have one value per patch"
        )
    check_finite(scores, "scores")
    labels = binary_labels(labels, "patch_labels")
    n_positive = int(labels.sum())
    n_negative = labels.size - n_positive
    if n_positive == 0 or n_negative == 0:
        raise InputError(
            "localisation needs positive and negative patches, "
            f"got {n_positive} positive, {n_negative} negative"
        )
    k = n_positive if top_k is None else whole_number(top_k, "top_k")
    if not 1 <= k <= labels.size:
        raise InputError(f"top_k must be between 1 and the number of patches ({labels.size}), got {top_k}")
    ranks = rankdata(scores)
    auc = (ranks[labels].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative)
    return {
        "auc": float(auc),
        "average_precision": _average_precision(scores, labels),
        "top_k_precision": _top_k_precision(scores, labels, k),
        "top_k": float(k),
        "n_patches": float(labels.size),
        "n_positive": float(n_positive),
    }


def _top_k_precision(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Positives among the k highest scores; the patches tied with the k-th score fill the places
    left in proportion to the positives among them (the mean over every order of the ties)."""
    cutoff = np.partition(scores, scores.size - k)[scores.size - k]  # the k-th highest score
    above, tied = scores > cutoff, scores == cutoff
    places_left = k - int(above.sum())
    expected = labels[above].sum() + places_left * labels[tied].sum() / tied.sum()
    return float(expected / k)
