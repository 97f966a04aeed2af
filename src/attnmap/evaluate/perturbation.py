"""The perturbation test: remove the pixels a map ranks highest (or lowest) and watch accuracy.

Protocol (Chefer et al. 2021, as written in the spec): the map is upsampled to pixels and min–max
normalised; at each step k = 10%, 20%, …, 90% the top-k% pixels (positive test) or bottom-k% pixels
(negative test) of the *normalised model input* are set to zero, and the model's top-1 accuracy is
recorded against the predicted class (the clean prediction) or the true label. x = 0 is the
unperturbed accuracy. Step k removes floor(k × pixels) pixels with k as written (70% of 90 pixels is
63, not the 62 of binary 0.7 × 90). AUC = trapezoid(accuracy in [0, 1], x = [0, 0.1, …, 0.9]) × 100,
so a curve that stays at 100% gives 90. Positive test: lower is better; negative: higher is better.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from attnmap.errors import InputError
from attnmap.evaluate.inputs import as_array, as_tensor, check_finite, check_not_empty, share_of

STEPS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def perturbation_x(steps: Sequence[float] = STEPS) -> np.ndarray:
    """The x-axis of the curve: 0 (clean) followed by the removed fractions."""
    return np.array([0.0, *steps], dtype=np.float64)


def perturbation_curve(
    model: nn.Module,
    images: torch.Tensor,
    pixel_maps: torch.Tensor,
    classes: torch.Tensor,
    positive: bool,
    steps: Sequence[float] = STEPS,
    batch_size: int = 100,
) -> np.ndarray:
    """Fraction of images still classified as ``classes`` at x = 0 and after each removal step.

    ``images`` (B, C, H, W) are normalised model inputs, ``pixel_maps`` (B, H, W) their relevance,
    ``classes`` (B,) the class each image must keep (predicted or true). ``positive`` removes the
    most relevant pixels first. Ties in a map are broken by pixel index (stable sort), so the
    result is deterministic; a map's scale and offset do not matter. Tensors or arrays; maps with
    NaN or infinite values are refused. Returns accuracies, one per x of `perturbation_x`.
    """
    images, pixel_maps, classes = _as_tensors(images, pixel_maps, classes)
    _check_inputs(images, pixel_maps, classes, steps)
    correct = perturbation_hits(model, images, pixel_maps, classes, positive, steps, batch_size)
    return correct.mean(axis=0)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a model without parameters)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def model_logits(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The ViT's class logits (timm or Hugging Face, eval mode); other modules are called as they are."""
    from attnmap.errors import UnsupportedModelError
    from attnmap.vit.original import class_logits

    try:
        logits = class_logits(model, images)
    except UnsupportedModelError:  # not a ViT attnmap reads: a plain classifier module
        return model(images)
    if logits is None:
        raise InputError("perturbation needs a classifier; the model's output is not class logits")
    return logits


def perturbation_hits(
    model: nn.Module,
    images: torch.Tensor,
    pixel_maps: torch.Tensor,
    classes: torch.Tensor,
    positive: bool,
    steps: Sequence[float] = STEPS,
    batch_size: int = 100,
) -> np.ndarray:
    """Per image and x: 1.0 where the perturbed image is still classified as its class, (B, 1+len(steps))."""
    images, pixel_maps, classes = _as_tensors(images, pixel_maps, classes)
    _check_inputs(images, pixel_maps, classes, steps)
    n_images, _, height, width = images.shape
    n_pixels = height * width
    hits = np.zeros((n_images, 1 + len(steps)), dtype=np.float64)
    device = model_device(model)  # images may stay on the CPU: each batch goes to the model
    with torch.no_grad():
        for first in range(0, n_images, batch_size):
            batch = slice(first, first + batch_size)
            clean = images[batch].to(device)
            scores = pixel_maps[batch].reshape(len(clean), -1).to(clean.device)
            order = torch.sort(scores, dim=1, descending=positive, stable=True).indices
            # rank[b, p] = position of pixel p in the removal order
            rank = torch.empty_like(order)
            rank.scatter_(1, order, torch.arange(n_pixels, device=order.device).expand_as(order))
            target = classes[batch].to(clean.device)
            hits[batch, 0] = (model_logits(model, clean).argmax(-1) == target).double().cpu().numpy()
            for column, fraction in enumerate(steps, start=1):
                removed = (rank < share_of(fraction, n_pixels)).reshape(len(clean), 1, height, width)
                perturbed = clean.masked_fill(removed, 0.0)
                still = model_logits(model, perturbed).argmax(-1) == target
                hits[batch, column] = still.double().cpu().numpy()
    return hits


def perturbation_auc(accuracies: np.ndarray, steps: Sequence[float] = STEPS) -> float:
    """Area under the accuracy curve: trapezoid over x = [0, *steps], times 100.

    Accuracies outside [0, 1] (a percentage passed by mistake) or NaN are refused."""
    x = perturbation_x(steps)
    accuracies = as_array(accuracies)
    if accuracies.shape != x.shape:
        raise InputError(
            f"expected {len(x)} accuracies (x = 0 and {len(steps)} steps), got {accuracies.shape}"
        )
    if not np.all((accuracies >= 0) & (accuracies <= 1)):
        raise InputError(f"accuracies must be fractions in [0, 1], got {accuracies.tolist()}")
    return float(np.sum((accuracies[1:] + accuracies[:-1]) * np.diff(x)) / 2 * 100)


def _as_tensors(images: object, pixel_maps: object, classes: object) -> tuple[torch.Tensor, ...]:
    return as_tensor(images, "images"), as_tensor(pixel_maps, "pixel maps"), as_tensor(classes, "classes")


def _check_inputs(
    images: torch.Tensor, pixel_maps: torch.Tensor, classes: torch.Tensor, steps: Sequence[float]
) -> None:
    if images.ndim != 4:
        raise InputError(f"images must be (B, C, H, W), got {tuple(images.shape)}")
    expected = (images.shape[0], *images.shape[2:])
    if tuple(pixel_maps.shape) != expected:
        raise InputError(f"pixel maps must be (B, H, W) = {expected}, got {tuple(pixel_maps.shape)}")
    if tuple(classes.shape) != (images.shape[0],):
        raise InputError(f"classes must be ({images.shape[0]},), got {tuple(classes.shape)}")
    check_not_empty(tuple(images.shape), "images")
    check_finite(pixel_maps, "pixel maps")
    increasing = all(b > a for a, b in zip(steps[:-1], steps[1:], strict=True))
    if not steps or any(not 0 < s < 1 for s in steps) or not increasing:
        raise InputError(f"steps must be strictly increasing fractions in (0, 1), got {list(steps)}")
    n_pixels = images.shape[-2] * images.shape[-1]
    removed = [share_of(fraction, n_pixels) for fraction in steps]
    if removed[0] == 0 or len(set(removed)) != len(removed):
        raise InputError(
            f"{images.shape[-2]}x{images.shape[-1]} images are too small for steps {list(steps)}: "
            f"they remove {removed} pixels, and each step must remove more than the one before"
        )
