"""Slide heatmaps against annotated lesions: patch-level AUC and FROC-style lesion detection.

Why both: patch AUC says whether the scores rank lesion patches above the rest (threshold-free, per
slide); FROC says what a pathologist scanning the top of the heatmap would find: how many lesions
are hit at a given number of false alarms per slide (CAMELYON16's measure, read off the curve by
linear interpolation as its evaluation script does, with detections taken as the local maxima of
the patch scores). Ground truth comes from `attnmap.wsi.annotations`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnmap.errors import InputError
from attnmap.evaluate.inputs import as_array, check_finite
from attnmap.evaluate.mil_localisation import attention_localisation, patch_labels_from_mask
from attnmap.wsi.annotations import Region, regions_mask

FROC_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


@dataclass
class SlideScores:
    """One slide's per-patch scores with its annotated regions (empty for a negative slide)."""

    coords: np.ndarray
    scores: np.ndarray
    patch_size: float
    regions: list[Region]


def random_baseline(
    slides: list[SlideScores], seeds: list[int], rates: tuple[float, ...] = FROC_RATES
) -> dict:
    """`froc` of seeded uniform random patch scores on the same slides and lesions (slide i's scores
    drawn with ``seeds[i]``): the floor a score set must beat, high where lesions cover much of the
    slides, since any detection there hits one."""
    if len(seeds) != len(slides):
        raise InputError(f"one seed per slide: {len(seeds)} seeds for {len(slides)} slides")
    drawn = [
        SlideScores(slide.coords, np.random.default_rng(seed).random(len(as_array(slide.scores).reshape(-1))),
                    slide.patch_size, slide.regions)
        for slide, seed in zip(slides, seeds, strict=True)
    ]
    return froc(drawn, rates)


def patch_auc(slide: SlideScores, min_fraction: float = 0.5, mask_downsample: float | None = None) -> dict:
    """`attention_localisation` with patch labels from the annotations (footprint ≥ ``min_fraction``)."""
    coords, _ = _checked(slide)
    if not len(coords):
        raise InputError("a slide without patches has no patch AUC")
    downsample = mask_downsample or max(1.0, slide.patch_size / 8.0)
    extent = (int(coords[:, 0].max() + slide.patch_size) + 1, int(coords[:, 1].max() + slide.patch_size) + 1)
    mask = regions_mask(slide.regions, extent, downsample)
    labels = patch_labels_from_mask(coords, slide.patch_size, mask, downsample, min_fraction)
    return attention_localisation(slide.scores, labels)


def detections(slide: SlideScores, radius: float | None = None, max_detections: int = 100) -> np.ndarray:
    """(K, 3) [x, y, score] local maxima: greedy non-maximum suppression over patch centres.

    ``radius`` (level 0, default two patch sizes) is the distance within which a higher-scored
    patch suppresses a lower one; neighbours tied at a local maximum are all kept (keeping one of
    them would make the detections depend on the order the patches are listed in). Scores must be
    finite, one per patch (a NaN would be kept as a detection ranked nowhere, and FROC would
    silently drop it).
    """
    coords, scores = _checked(slide)
    centres = coords + slide.patch_size / 2.0
    radius = 2.0 * slide.patch_size if radius is None else float(radius)
    kept: list[int] = []
    for index in np.argsort(-scores, kind="stable"):
        if len(kept) >= max_detections:
            break
        if kept:
            near = np.hypot(*(centres[kept] - centres[index]).T) < radius
            if np.any(near & (scores[kept] > scores[index])):
                continue
        kept.append(int(index))
    return np.column_stack([centres[kept], scores[kept]]) if kept else np.zeros((0, 3))


def _along(path_fp: np.ndarray, path_sensitivity: np.ndarray, rate: float) -> float:
    """Sensitivity on the FROC path (false positives non-decreasing, points in threshold order)
    at ``rate``: linear between the last point at or below it and the next one."""
    last = int(np.searchsorted(path_fp, rate, side="right")) - 1
    if last == len(path_fp) - 1:
        return float(path_sensitivity[-1])
    (x0, x1), (y0, y1) = path_fp[last:last + 2], path_sensitivity[last:last + 2]
    return float(y0 + (y1 - y0) * (rate - x0) / (x1 - x0))


def _checked(slide: SlideScores) -> tuple[np.ndarray, np.ndarray]:
    """A slide's (N, 2) coordinates and (N,) scores, finite and one score per patch."""
    coords = as_array(slide.coords)
    scores = as_array(slide.scores).reshape(-1)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != scores.size:
        raise InputError(
            f"a slide needs (N, 2) coordinates and one score per patch, got {coords.shape} and {scores.size}"
        )
    check_finite(coords, "patch coordinates")
    check_finite(scores, "patch scores")
    return coords, scores


def froc(
    slides: list[SlideScores], rates: tuple[float, ...] = FROC_RATES, radius: float | None = None
) -> dict:
    """Lesion sensitivity at each average number of false positives per slide, and their mean.

    A detection inside a lesion (a non-exclusion region) hits it (each lesion counts once, at its
    highest detection); one inside an exclusion region is ignored; any other is a false positive.
    Lowering the threshold through every detection score traces the FROC curve from (0, 0); the
    sensitivity at a rate is read off that curve by linear interpolation between its points, and
    is the curve's last sensitivity beyond its last point, as CAMELYON16's evaluation script does
    (``np.interp`` over the curve; that script also drops its lowest threshold's point, which is
    not followed here). The ``curve`` returned starts at the highest threshold, without (0, 0).
    """
    if not slides:
        raise InputError("FROC needs at least one slide")
    if not rates or not all(np.isfinite(rate) and rate > 0 for rate in rates):
        raise InputError(f"FROC rates must be positive numbers of false positives per slide, got {rates}")
    hits: list[tuple[float, int, int]] = []  # (score, slide, lesion) first hit per lesion
    false_scores: list[float] = []
    n_lesions = 0
    for s, slide in enumerate(slides):
        lesions = [r for r in slide.regions if not r.exclusion]
        exclusions = [r for r in slide.regions if r.exclusion]
        found = detections(slide, radius)
        best: dict[int, float] = {}
        for x, y, score in found:
            point = np.array([[x, y]])
            inside = [i for i, lesion in enumerate(lesions) if lesion.contains(point)[0]]
            if inside:
                for i in inside:
                    best[i] = max(best.get(i, -np.inf), score)
            elif not any(e.contains(point)[0] for e in exclusions):
                false_scores.append(float(score))
        hits += [(score, s, i) for i, score in best.items()]
        n_lesions += len(lesions)
    if n_lesions == 0:
        raise InputError("FROC needs at least one annotated lesion")
    thresholds = np.unique(np.r_[[h[0] for h in hits], false_scores])[::-1]
    false_sorted = np.sort(false_scores)
    hit_sorted = np.sort([h[0] for h in hits])
    sensitivity = np.array([(hit_sorted >= t).sum() / n_lesions for t in thresholds])
    mean_fp = np.array([(false_sorted >= t).sum() / len(slides) for t in thresholds])
    path_fp, path_sensitivity = np.r_[0.0, mean_fp], np.r_[0.0, sensitivity]
    at_rates = {rate: _along(path_fp, path_sensitivity, float(rate)) for rate in rates}
    return {
        "sensitivity_at": at_rates,
        "froc_score": float(np.mean(list(at_rates.values()))),
        "n_lesions": n_lesions,
        "n_slides": len(slides),
        "curve": {"mean_false_positives": mean_fp.tolist(), "sensitivity": sensitivity.tolist()},
    }
