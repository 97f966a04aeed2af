"""Independent definitions the metrics sweep holds attnmap's evaluation against.

Nothing here calls `attnmap.evaluate`: each metric is written out the slow, obvious way from its
published definition (or computed by scikit-learn), so a disagreement points at the library.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score


def auc_ref(scores, labels) -> float:
    """ROC AUC as the Mann-Whitney probability P(score_pos > score_neg), ties counted half;
    cross-checked against scikit-learn."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    pos, neg = scores[labels], scores[~labels]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    value = float(greater / (pos.size * neg.size))
    assert abs(value - roc_auc_score(labels, scores)) < 1e-12
    return value


def ap_ref(scores, labels) -> float:
    """Average precision Σ (Rₙ − Rₙ₋₁) Pₙ over distinct thresholds (scikit-learn); NaN without
    a positive label."""
    labels = np.asarray(labels).astype(bool).ravel()
    if not labels.any():
        return float("nan")
    return float(average_precision_score(labels, np.asarray(scores, dtype=np.float64).ravel()))


def top_k_precision_ref(scores, labels, k: int) -> float:
    """Expected share of positives among the k highest scores when ties are broken at random (the
    only reading that does not depend on the order the patches are listed in)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    cutoff = np.sort(scores)[::-1][k - 1]
    above = scores > cutoff
    tied = scores == cutoff
    taken_from_ties = k - above.sum()
    expected = labels[above].sum() + taken_from_ties * labels[tied].sum() / tied.sum()
    return float(expected / k)


def disc_dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Every pixel within Euclidean distance ``radius`` of a mask pixel (brute force)."""
    height, width = mask.shape
    ys, xs = np.nonzero(mask)
    yy, xx = np.mgrid[0:height, 0:width]
    grown = np.zeros_like(mask, dtype=bool)
    for y, x in zip(ys, xs, strict=True):
        grown |= (yy - y) ** 2 + (xx - x) ** 2 <= radius * radius
    return grown


def pointing_ref(maps, masks, tolerance: int) -> np.ndarray:
    """Per image: the first (row-major) maximum pixel lies within ``tolerance`` px of the mask;
    a constant map has no peak and misses."""
    maps = np.asarray(torch.as_tensor(maps).double())
    masks = np.asarray(torch.as_tensor(masks)).astype(bool)
    hits = []
    for one, mask in zip(maps, masks, strict=True):
        if one.max() == one.min():
            hits.append(False)
            continue
        row, col = np.unravel_index(int(np.argmax(one)), one.shape)
        hits.append(bool(disc_dilate(mask, tolerance)[row, col]))
    return np.array(hits)


def removed_count(fraction: float, n: int) -> int:
    """floor(fraction × n) with the fraction as written (0.7, not the binary 0.69999...)."""
    return int(Fraction(repr(float(fraction))) * n)


def perturbation_ref(
    weights: np.ndarray, images: np.ndarray, maps: np.ndarray, classes: np.ndarray, positive: bool, steps
) -> np.ndarray:
    """Accuracy curve of a linear classifier logits = W·x, removing pixels one image at a time,
    ordered by score (descending for positive, ascending otherwise), ties by pixel index."""
    n, channels, height, width = images.shape
    curve = np.zeros(1 + len(steps))
    for b in range(n):
        flat = maps[b].reshape(-1).astype(np.float64)
        keyed = sorted(range(flat.size), key=lambda p: ((-flat[p] if positive else flat[p]), p))
        for column, fraction in enumerate((0.0, *steps)):
            image = images[b].astype(np.float64).copy().reshape(channels, -1)
            gone = keyed[: removed_count(fraction, flat.size)] if fraction else []
            image[:, gone] = 0.0
            logits = weights @ image.reshape(-1)
            curve[column] += float(np.argmax(logits) == classes[b]) / n
    return curve


def trapezoid_ref(x, y) -> float:
    """Trapezoid area Σ (x_{i+1} − x_i)(y_i + y_{i+1}) / 2."""
    return float(sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1)))


def flipping_ref(model, features: torch.Tensor, scores: np.ndarray, target: int, fractions) -> dict:
    """Most/least-relevant-first curves by calling the model's forward on each reduced bag, with
    round-half-up counts of the fractions as written (at least one patch kept)."""
    n = features.shape[0]
    removed = [min(int(Fraction(repr(float(f))) * n + Fraction(1, 2)), n - 1) for f in fractions]
    out = {}
    for name, order in (
        ("most", sorted(range(n), key=lambda i: (-scores[i], i))),
        ("least", sorted(range(n), key=lambda i: (scores[i], i))),
    ):
        curve = []
        with torch.no_grad():
            for count in removed:
                keep = torch.tensor(sorted(order[count:]))
                output, _, _ = model.bag_forward(features[keep])
                curve.append(float(output.probs[0, target]))
        out[name] = np.array(curve)
        out[f"auc_{name}"] = trapezoid_ref(list(fractions), curve) / (fractions[-1] - fractions[0])
    out["removed"] = np.array(removed)
    return out


def point_in_polygon(point, ring) -> bool:
    """Even-odd ray casting."""
    x, y = point
    inside = False
    for (x1, y1), (x2, y2) in zip(ring, np.roll(ring, -1, axis=0), strict=True):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def froc_ref(slides: list[tuple], rates) -> dict:
    """CAMELYON16's FROC on given detections: slides are (points (K, 2), probabilities (K,),
    lesion rings[, exclusion rings]). A detection inside a lesion is a true positive for it (each
    lesion counted once, at its highest detection; further detections in it are neither), any
    other a false positive unless it lies in an exclusion region (ignored). The sensitivity at each
    rate is read off the curve by linear interpolation (the last point's beyond it); the score is
    their mean."""
    tp_scores, fp_scores, n_lesions = [], [], 0
    for points, probs, lesions, *rest in slides:
        exclusions = rest[0] if rest else []
        n_lesions += len(lesions)
        best = {}
        for point, prob in zip(points, probs, strict=True):
            inside = [i for i, ring in enumerate(lesions) if point_in_polygon(point, ring)]
            for i in inside:
                best[i] = max(best.get(i, -np.inf), prob)
            if not inside and not any(point_in_polygon(point, ring) for ring in exclusions):
                fp_scores.append(prob)
        tp_scores += list(best.values())
    # the curve, threshold by threshold from above every score: (mean false positives, sensitivity)
    path = [(0.0, 0.0)]
    for threshold in sorted(set(tp_scores) | set(fp_scores), reverse=True):
        path.append(
            (
                sum(s >= threshold for s in fp_scores) / len(slides),
                sum(s >= threshold for s in tp_scores) / n_lesions,
            )
        )
    at = {}
    for rate in rates:  # linear along the path (CAMELYON16's script: np.interp over it)
        at[rate] = path[-1][1]
        for (x0, y0), (x1, y1) in zip(path, path[1:], strict=False):
            if x0 <= rate < x1:
                at[rate] = y0 + (y1 - y0) * (rate - x0) / (x1 - x0)
    return {"sensitivity_at": at, "froc_score": float(np.mean(list(at.values())))}


def footprint_fraction(
    coords, patch_size: float, mask: np.ndarray, downsample: float, sub: int = 64
) -> np.ndarray:
    """Share of each patch footprint inside the mask by sampling a sub × sub grid of points."""
    out = []
    offsets = (np.arange(sub) + 0.5) / sub * patch_size
    for x, y in np.asarray(coords, dtype=np.float64):
        xs, ys = np.meshgrid(x + offsets, y + offsets)
        cols, rows = np.floor(xs / downsample).astype(int), np.floor(ys / downsample).astype(int)
        valid = (rows >= 0) & (cols >= 0) & (rows < mask.shape[0]) & (cols < mask.shape[1])
        values = np.zeros(xs.shape)
        values[valid] = mask[rows[valid], cols[valid]] != 0
        out.append(values.mean())
    return np.array(out)


def nms_ref(centres: np.ndarray, scores: np.ndarray, radius: float) -> set[tuple[float, float]]:
    """Local maxima: a patch is kept unless a kept patch with a strictly higher score lies closer
    than ``radius`` (tied neighbours do not suppress each other); the kept centres."""
    kept: list[int] = []
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        if not any(scores[j] > scores[i] and np.hypot(*(centres[j] - centres[i])) < radius for j in kept):
            kept.append(i)
    return {(float(centres[i][0]), float(centres[i][1])) for i in kept}
