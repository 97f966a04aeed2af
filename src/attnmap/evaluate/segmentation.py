"""The segmentation test: how well a relevance map, thresholded, outlines the labelled object.

Protocol (spec, after Chefer et al. 2021): the map is upsampled to pixels and min–max normalised,
then thresholded at its own mean (foreground = above the mean). Reported:
- pixel accuracy: correctly labelled pixels / all pixels, pooled over the whole set;
- mIoU: IoU of background and of foreground, each pooled (summed intersections over summed
  unions) over the set, then averaged over the two classes;
- mAP: average precision of the continuous map against the mask, per image, averaged over the
  images whose mask has both object and background (an empty mask has no AP, a full one a trivial 1).
"""

from __future__ import annotations

import numpy as np
import torch

from attnmap.errors import InputError
from attnmap.evaluate.inputs import as_array, as_tensor, binary_labels, check_finite, check_map_shapes
from attnmap.evaluate.masks import binary_masks, informative_images


def segmentation_scores(pixel_maps: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """Pixel accuracy, mIoU and mAP (all in [0, 1]) of normalised (B, H, W) maps against bool masks.

    Tensors or arrays. A constant map has no pixel above its mean, so no foreground (its mean,
    summed in floating point, may fall a step below the value and would have made every pixel
    foreground). Maps with NaN or infinite values are refused.
    """
    pixel_maps, masks = as_tensor(pixel_maps, "maps"), as_tensor(masks, "masks")
    check_map_shapes(pixel_maps, masks)
    check_finite(pixel_maps, "relevance maps")
    maps = pixel_maps.double().cpu()
    truth = binary_masks(masks).cpu()
    scored = informative_images(truth)
    if not scored.any():
        raise InputError("segmentation needs at least one mask with both object and background pixels")
    flat = maps.reshape(len(maps), -1)
    varies = (flat.amax(dim=1) > flat.amin(dim=1)).reshape(-1, 1, 1)
    predicted = (maps > maps.mean(dim=(1, 2), keepdim=True)) & varies
    pixel_accuracy = float((predicted == truth).double().mean())
    ious = []
    for fg_pred, fg_true in ((predicted, truth), (~predicted, ~truth)):
        intersection = (fg_pred & fg_true).sum().item()
        union = (fg_pred | fg_true).sum().item()
        ious.append(intersection / union if union else 1.0)
    precisions = [
        average_precision(score.numpy().ravel(), label.numpy().ravel())
        for score, label in zip(maps[scored], truth[scored], strict=True)
    ]
    return {
        "pixel_acc": pixel_accuracy,
        "miou": float(np.mean(ious)),
        "map": float(np.mean(precisions)),
    }


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """Average precision of ``scores`` ranking the True ``labels`` first: Σ (Rₙ − Rₙ₋₁) Pₙ.

    Thresholds are the distinct score values (tied pixels enter together), the step-wise
    definition without interpolation (scikit-learn's). NaN when there is no positive label; 1
    when every label is positive. Arrays or tensors; NaN or infinite scores and labels other
    than bool or 0/1 (a 0/255 or soft mask) are refused.
    """
    scores = as_array(scores).ravel()
    labels = binary_labels(labels).ravel()
    if scores.shape != labels.shape:
        raise InputError(f"scores and labels differ in size: {scores.size} vs {labels.size}")
    check_finite(scores, "scores")
    positives = int(labels.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    true_positives = np.cumsum(sorted_labels)
    # last index of each run of equal scores: where a threshold can sit
    ends = np.r_[np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1]
    tp = true_positives[ends]
    precision = tp / (ends + 1)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
