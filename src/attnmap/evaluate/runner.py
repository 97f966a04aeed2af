"""`evaluate_methods`: every protocol for every method on one labelled set, plus a random baseline.

For each method the runner asks `attnmap.explain` for two sets of maps: for the predicted class
(perturbation "predicted") and for the labelled class (perturbation "target", segmentation and
pointing game). Where the prediction is right the two are the same maps, computed once.
A "random" row — seeded uniform patch maps — is always added so every number has a floor.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from attnmap.errors import AttnmapError, InputError
from attnmap.evaluate.maps import maps_to_pixels
from attnmap.evaluate.masks import binary_masks, informative_images
from attnmap.evaluate.perturbation import (
    STEPS,
    model_device,
    perturbation_auc,
    perturbation_hits,
    perturbation_x,
)
from attnmap.evaluate.pointing import pointable_images, pointing_hits
from attnmap.evaluate.random_baseline import random_patch_maps
from attnmap.evaluate.segmentation import segmentation_scores

RANDOM = "random"

# metric -> whether higher is better; all metrics are percentages
METRICS: dict[str, bool] = {
    "neg_pred_auc": True,
    "pos_pred_auc": False,
    "neg_target_auc": True,
    "pos_target_auc": False,
    "pixel_acc": True,
    "miou": True,
    "map": True,
    "pointing": True,
}

MapFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""A custom map source: ``fn(images, classes, masks) -> (B, gh, gw) or (B, H, W) maps``."""


class LabelledImages(Protocol):
    """What the runner needs from a data set (`attnmap.data.shapes.ShapesDataset` has it)."""

    images: torch.Tensor  # (N, 3, H, W) normalised model inputs
    labels: torch.Tensor  # (N,) long
    masks: torch.Tensor  # (N, H, W) bool


@dataclass
class EvaluationResult:
    """Rows (one per method, then "random"), perturbation curves, and the settings used."""

    rows: list[dict[str, object]]
    curves: dict[str, dict[str, np.ndarray]]
    x: np.ndarray
    settings: dict[str, object] = field(default_factory=dict)

    def row(self, method: str) -> dict[str, object]:
        for row in self.rows:
            if row["method"] == method:
                return row
        raise KeyError(method)

    def beats_random(self, method: str) -> dict[str, bool]:
        """Per metric, whether ``method`` is strictly better than the random baseline."""
        ours, floor = self.row(method), self.row(RANDOM)
        return {
            name: (ours[name] > floor[name]) if higher else (ours[name] < floor[name])
            for name, higher in METRICS.items()
        }


# Bytes a dataset image costs while a method is scored, per pixel: the image as uint8 (3) and as the
# model's float32 input (12), its mask (1), the method's pixel maps for the predicted and the
# labelled class (float64, 16), the random baseline's upsampled maps (8), and a perturbed copy of
# the input per image batch (12, counted for every image to stay on the safe side).
BYTES_PER_PIXEL = 3 + 12 + 1 + 16 + 8 + 12


def available_memory() -> int | None:
    """Bytes the system can still give this process (Linux ``MemAvailable``); None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(n_images: int, height: int, width: int) -> None:
    """`InputError` when ``n_images`` images of ``height`` × ``width`` and their maps would not fit
    in the memory available now: the run would be killed (no message) after minutes of work."""
    needed = n_images * height * width * BYTES_PER_PIXEL
    available = available_memory()
    if available is not None and needed > available:
        fits = max(1, available // (height * width * BYTES_PER_PIXEL))
        raise InputError(
            f"{n_images} images of {height}x{width} and their maps need about {needed / 2**30:.1f} GiB, "
            f"{available / 2**30:.1f} GiB are available: use at most --n {fits}"
        )


def evaluate_methods(
    model: nn.Module,
    dataset: LabelledImages,
    methods: Sequence[str],
    *,
    custom_maps: Mapping[str, MapFunction] | None = None,
    batch_size: int = 50,
    seed: int = 0,
    steps: Sequence[float] = STEPS,
    pointing_tolerance: int = 4,
    progress: bool = True,
    before_work: Callable[[], None] | None = None,
) -> EvaluationResult:
    """Run the perturbation, segmentation and pointing tests for each method and the random baseline.

    ``methods`` are names registered with `attnmap.explain`; ``custom_maps`` adds named map
    functions (e.g. an oracle built from the masks). A method that raises an attnmap error (for
    instance one that does not support this model) gets a row of NaNs with the error as its note.
    ``before_work`` is called once the inputs are accepted, before the methods run (the command
    deletes an earlier evaluation's files there, so a refused one leaves them).
    """
    from attnmap.model_state import eval_mode

    with eval_mode(model):  # eval semantics throughout; the model's own flags restored afterwards
        return _evaluate(
            model, dataset, methods, custom_maps, batch_size, seed, steps, pointing_tolerance, progress,
            before_work,
        )


def _evaluate(
    model: nn.Module,
    dataset: LabelledImages,
    methods: Sequence[str],
    custom_maps: Mapping[str, MapFunction] | None,
    batch_size: int,
    seed: int,
    steps: Sequence[float],
    pointing_tolerance: int,
    progress: bool,
    before_work: Callable[[], None] | None = None,
) -> EvaluationResult:
    images, labels, masks = _check_dataset(dataset)
    if pointing_tolerance < 0:
        raise InputError(f"pointing tolerance must be >= 0 pixels, got {pointing_tolerance}")
    pointable = pointable_images(masks, pointing_tolerance)
    if not pointable.any():
        raise InputError(f"no image's mask, grown by the {pointing_tolerance} px pointing tolerance, "
                         "leaves background: every pointing would hit")
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    classes = getattr(dataset, "classes", None)  # the data's classes, not only those drawn
    n_labels = max(len(classes) if classes is not None else 0, int(labels.max()) + 1)
    predicted = _predict(model, images, batch_size, n_labels, classes is not None)
    grid = _patch_grid(model, images)
    given = [*methods, *(custom_maps or {})]
    repeated = sorted({name for name in given if given.count(name) > 1})
    if repeated:  # a second source of one name would silently replace the first's row
        raise InputError(f"method name(s) given more than once: {', '.join(repeated)}")
    sources: dict[str, MapFunction] = {name: _explain_source(model, name) for name in methods}
    sources.update(custom_maps or {})
    if RANDOM in sources:
        raise InputError(f"{RANDOM!r} is reserved for the random baseline row")
    random_maps = random_patch_maps(len(images), grid, seed)
    if before_work is not None:
        before_work()

    rows: list[dict[str, object]] = []
    curves: dict[str, dict[str, np.ndarray]] = {}
    names = [*sources, RANDOM]
    for name in tqdm(names, desc="evaluate methods", disable=not progress, unit="method"):
        started = time.perf_counter()
        source = sources.get(name)
        if source is None:
            pred_maps = target_maps = maps_to_pixels(random_maps, tuple(images.shape[-2:]))
        else:
            try:
                pred_maps, target_maps = _maps_for(source, images, predicted, labels, masks, batch_size)
            except (AttnmapError, NotImplementedError) as error:
                rows.append({"method": name, **dict.fromkeys(METRICS, float("nan")), "note": str(error)})
                continue
        flat = _constant_maps(pred_maps) | _constant_maps(target_maps)
        if flat.all():
            note = "every map is constant (e.g. all zero): nothing to rank or point at"
            rows.append({"method": name, **dict.fromkeys(METRICS, float("nan")), "note": note})
            continue
        row, method_curves = _score(model, images, labels, masks, predicted, pred_maps, target_maps,
                                    steps, batch_size, pointing_tolerance, pointable)
        note = (f"{int(flat.sum())} of {len(flat)} maps constant: removed in pixel order, never a "
                "pointing hit" if flat.any() else "")
        row = {"method": name, **row, "seconds": round(time.perf_counter() - started, 2), "note": note}
        rows.append(row)
        curves[name] = method_curves
    settings = {
        "n_images": len(images),
        "clean_accuracy": float((predicted == labels).double().mean()) * 100,
        "steps": list(steps),
        "pointing_tolerance_px": pointing_tolerance,
        "n_localisation_images": int(informative_images(masks).sum()),
        "n_pointing_images": int(pointable.sum()),
        "seed": seed,
        "batch_size": batch_size,
    }
    return EvaluationResult(rows, curves, perturbation_x(steps), settings)


def _score(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    predicted: torch.Tensor,
    pred_maps: torch.Tensor,
    target_maps: torch.Tensor,
    steps: Sequence[float],
    batch_size: int,
    pointing_tolerance: int,
    pointable: torch.Tensor,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    row: dict[str, float] = {}
    method_curves: dict[str, np.ndarray] = {}
    # Where the prediction is right, the target-class map and class are the predicted ones, so
    # their hits are the same: only the misclassified images are perturbed again.
    wrong = torch.nonzero(predicted != labels).flatten()
    for test, positive in (("neg", False), ("pos", True)):
        pred_hits = perturbation_hits(model, images, pred_maps, predicted, positive, steps, batch_size)
        target_hits = pred_hits.copy()
        if len(wrong):
            target_hits[wrong.numpy()] = perturbation_hits(
                model, images[wrong], target_maps[wrong], labels[wrong], positive, steps, batch_size
            )
        for class_mode, hits in (("pred", pred_hits), ("target", target_hits)):
            curve = hits.mean(axis=0)
            method_curves[f"{test}_{class_mode}"] = curve
            row[f"{test}_{class_mode}_auc"] = perturbation_auc(curve, steps)
    segmentation = segmentation_scores(target_maps, masks)
    row.update({key: value * 100 for key, value in segmentation.items()})
    # only images where a map can miss and hit: the game is undecidable on empty or (grown) full masks
    hits = pointing_hits(target_maps[pointable], masks[pointable], pointing_tolerance)
    row["pointing"] = float(hits.mean()) * 100
    return {name: row[name] for name in METRICS}, method_curves


def _constant_maps(pixel_maps: torch.Tensor) -> torch.Tensor:
    """(B,) bool: maps with a single value, which rank no pixel above another."""
    flat = pixel_maps.reshape(len(pixel_maps), -1)
    return flat.max(dim=1).values == flat.min(dim=1).values


def _maps_for(
    source: MapFunction,
    images: torch.Tensor,
    predicted: torch.Tensor,
    labels: torch.Tensor,
    masks: torch.Tensor,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel maps for the predicted class and for the labelled class (shared where they agree)."""
    size = tuple(images.shape[-2:])
    pred_maps = _run_source(source, images, predicted, masks, batch_size, size)
    target_maps = pred_maps.clone()
    wrong = torch.nonzero(predicted != labels).flatten()
    if len(wrong):
        target_maps[wrong] = _run_source(source, images[wrong], labels[wrong], masks[wrong], batch_size, size)
    return pred_maps, target_maps


def _run_source(
    source: MapFunction,
    images: torch.Tensor,
    classes: torch.Tensor,
    masks: torch.Tensor,
    batch_size: int,
    size: tuple[int, int],
) -> torch.Tensor:
    chunks = []
    for first in range(0, len(images), batch_size):
        batch = slice(first, first + batch_size)
        maps = source(images[batch], classes[batch], masks[batch])
        if maps.ndim != 3 or maps.shape[0] != len(images[batch]):
            raise InputError(
                f"a map source returned shape {tuple(maps.shape)} for {len(images[batch])} images"
            )
        chunks.append(maps_to_pixels(maps, size))
    return torch.cat(chunks)


def _explain_source(model: nn.Module, method: str) -> MapFunction:
    from attnmap.vit.explain import explain

    def source(images: torch.Tensor, classes: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        device = model_device(model)  # maps come back to the CPU, where the data and metrics live
        return explain(model, images.to(device), method, target=classes.to(device)).detach().cpu()

    return source


def _predict(
    model: nn.Module, images: torch.Tensor, batch_size: int, n_labels: int, declared: bool
) -> torch.Tensor:
    """Each image's predicted class. A model with fewer classes than the data's ``n_labels``, or
    another number than the data declares (``declared``: its ``classes``), is refused after the
    first batch: its target-class maps, accuracy and perturbation hits would be silently meaningless
    (a 1000-class ImageNet head on the 5 shapes scored 0% accuracy)."""
    from attnmap.evaluate.perturbation import model_logits

    predicted = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model_logits(model, images[start : start + batch_size].to(model_device(model))).cpu()
            n_classes = int(logits.shape[-1])
            if n_labels > n_classes or (declared and n_labels != n_classes):
                raise InputError(
                    f"the model has {n_classes} classes but the data has {n_labels}: evaluate a model "
                    "trained on these classes"
                )
            predicted.append(logits.argmax(-1))
    return torch.cat(predicted)


def _patch_grid(model: nn.Module, images: torch.Tensor) -> tuple[int, int]:
    from attnmap.errors import UnsupportedModelError
    from attnmap.vit.adapters import adapter_for

    try:  # the ViT's own token grid for this input size (timm, Hugging Face)
        return tuple(int(side) for side in adapter_for(model).grid_size(*images.shape[-2:]))
    except UnsupportedModelError:
        pass
    patch_embed = getattr(model, "patch_embed", None)
    grid = getattr(patch_embed, "grid_size", None)
    if grid is not None and patch_embed.img_size is not None and tuple(patch_embed.img_size) == tuple(
        images.shape[-2:]
    ):
        return int(grid[0]), int(grid[1])
    patch = getattr(patch_embed, "patch_size", (16, 16))
    return images.shape[-2] // patch[0], images.shape[-1] // patch[1]


def _check_dataset(dataset: LabelledImages) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    try:
        images, labels, masks = dataset.images, dataset.labels, dataset.masks
    except AttributeError as error:
        raise InputError(f"the data set needs images, labels and masks tensors: {error}") from None
    if images.ndim != 4 or labels.shape != (len(images),) or masks.shape != (len(images), *images.shape[-2:]):
        raise InputError(
            f"inconsistent data set: images {tuple(images.shape)}, labels {tuple(labels.shape)}, "
            f"masks {tuple(masks.shape)}"
        )
    if len(images) == 0:
        raise InputError("the data set is empty")
    if int(labels.min()) < 0:
        raise InputError(f"the data set has a negative label ({int(labels.min())})")
    masks = binary_masks(masks)
    if not informative_images(masks).any():
        raise InputError("no image's mask has both object and background pixels: nothing to localise")
    return images, labels.long(), masks
