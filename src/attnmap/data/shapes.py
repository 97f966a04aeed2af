"""Synthetic "shapes" images with a known answer: one target shape among clutter, plus its mask.

Real benchmarks (ImageNet, ImageNet-segmentation) cannot be downloaded here, yet users need proof
that a relevance map points at the evidence. This generator makes images whose class is decided
by exactly one object — the target shape — drawn on a textured background with small distractors
(dots and short strokes) that carry no class information. The target's pixel mask is the ground
truth for the segmentation test and the pointing game.

Every sample is drawn from its own RNG seeded by ``(seed, index)``, so sample ``i`` is the same
whatever ``n`` is and however the set is sliced or batched.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from attnmap.errors import InputError

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross", "star")
"""Class names, in label order."""

# Normalisation the bundled model was trained with (timm's "inception" convention: x/255*2-1).
SHAPES_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
SHAPES_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)

_MIN_SIZE = 32

# polygon start angle (image coordinates, y down) that draws each shape upright
_UPRIGHT: dict[str, float] = {
    "circle": 0.0,
    "square": np.pi / 4,
    "triangle": -np.pi / 2,
    "cross": 0.0,
    "star": -np.pi / 2,
}


def make_shapes(
    n: int,
    size: int = 64,
    seed: int = 0,
    classes: Sequence[str] = SHAPE_CLASSES,
    start: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate ``n`` seeded images with one target shape each.

    Returns ``images`` uint8 (n, size, size, 3), ``labels`` int64 (n,) — the index of the target's
    shape in ``classes`` — and ``masks`` bool (n, size, size), True on the target's pixels.
    Sample ``k`` (k = start .. start+n-1) depends only on ``(seed, k, size, classes)``.
    """
    classes = _check_classes(classes)
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise InputError(f"n must be a non-negative integer, got {n!r}")
    if not isinstance(size, (int, np.integer)) or size < _MIN_SIZE:
        raise InputError(f"size must be an integer of at least {_MIN_SIZE} pixels, got {size!r}")
    if start < 0:
        raise InputError(f"start must be non-negative, got {start}")
    images = np.empty((n, size, size, 3), dtype=np.uint8)
    labels = np.empty(n, dtype=np.int64)
    masks = np.empty((n, size, size), dtype=bool)
    for row in range(n):
        images[row], labels[row], masks[row] = make_shape_sample(start + row, size, seed, classes)
    return images, labels, masks


def make_shape_sample(
    index: int, size: int = 64, seed: int = 0, classes: Sequence[str] = SHAPE_CLASSES
) -> tuple[np.ndarray, int, np.ndarray]:
    """One sample (image uint8 (size,size,3), label, mask bool (size,size)) from RNG ``(seed, index)``."""
    classes = _check_classes(classes)
    rng = np.random.default_rng([int(seed), int(index)])
    label = int(rng.integers(len(classes)))
    base_colour = rng.uniform(60, 195, size=3)
    image = _texture(rng, size, base_colour)
    _draw_clutter(rng, image, size)
    mask = _target_mask(rng, classes[label], size)
    image[mask] = _contrasting_colour(rng, base_colour)
    return image.round().clip(0, 255).astype(np.uint8), label, mask


class ShapesDataset(Dataset):
    """A torch Dataset over `make_shapes` samples, normalised for a model.

    Items are ``(image float32 (3,H,W) normalised with mean/std — by default the bundled model's
    SHAPES_MEAN/STD —, label, mask bool (H,W))``. The whole set is generated once on construction
    (it is small), so iteration is cheap; ``images``, ``labels`` and ``masks`` hold it all.
    """

    def __init__(
        self,
        n: int,
        size: int = 64,
        seed: int = 0,
        classes: Sequence[str] = SHAPE_CLASSES,
        start: int = 0,
        mean: Sequence[float] = SHAPES_MEAN,
        std: Sequence[float] = SHAPES_STD,
    ) -> None:
        self.classes = tuple(_check_classes(classes))
        self.images_uint8, labels, masks = make_shapes(n, size, seed, self.classes, start)
        self.images = to_model_input(self.images_uint8, mean, std)
        self.labels = torch.from_numpy(labels)
        self.masks = torch.from_numpy(masks)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int, torch.Tensor]:
        return self.images[item], int(self.labels[item]), self.masks[item]


def to_model_input(
    images_uint8: np.ndarray, mean: Sequence[float] = SHAPES_MEAN, std: Sequence[float] = SHAPES_STD
) -> torch.Tensor:
    """uint8 (n,H,W,3) → float32 (n,3,H,W): scaled to [0, 1], then (x - mean) / std per channel."""
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise InputError(f"mean and std need three values with std > 0, got {tuple(mean)}, {tuple(std)}")
    pixels = torch.from_numpy(np.ascontiguousarray(images_uint8)).permute(0, 3, 1, 2).float() / 255.0
    mean_t = torch.tensor(tuple(mean), dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(tuple(std), dtype=torch.float32).view(1, 3, 1, 1)
    return ((pixels - mean_t) / std_t).contiguous()


def _check_classes(classes: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(classes)
    unknown = [name for name in chosen if name not in SHAPE_CLASSES]
    if unknown or len(chosen) < 2 or len(set(chosen)) != len(chosen):
        raise InputError(
            f"classes must be at least two distinct names from {', '.join(SHAPE_CLASSES)}; got {list(chosen)}"
        )
    return chosen


def _texture(rng: np.random.Generator, size: int, base_colour: np.ndarray) -> np.ndarray:
    """Smooth coloured noise plus oriented stripes: a background with structure but no shapes."""
    coarse = rng.normal(0.0, 1.0, size=(size // 8, size // 8, 3)).astype(np.float32)
    blobs = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(5, 14)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + rng.uniform(0, 6.3))
    grain = rng.normal(0.0, 1.0, size=(size, size, 3))
    image = (
        base_colour[None, None, :]
        + rng.uniform(6, 16) * blobs
        + rng.uniform(4, 14) * stripes[:, :, None]
        + rng.uniform(2, 7) * grain
    )
    return image.astype(np.float64)


def _draw_clutter(rng: np.random.Generator, image: np.ndarray, size: int) -> None:
    """Small dots and thin short strokes: too small and simple to look like any target shape."""
    for _ in range(int(rng.integers(4, 10))):
        colour = tuple(float(c) for c in rng.uniform(0, 255, size=3))
        x, y = (int(v) for v in rng.integers(0, size, size=2))
        if rng.random() < 0.5:
            cv2.circle(image, (x, y), int(rng.integers(1, 3)), colour, thickness=-1)
        else:
            length = rng.uniform(4, size / 7)
            angle = rng.uniform(0, 2 * np.pi)
            end = (int(round(x + length * np.cos(angle))), int(round(y + length * np.sin(angle))))
            cv2.line(image, (x, y), end, colour, thickness=1)


def _contrasting_colour(rng: np.random.Generator, base_colour: np.ndarray) -> np.ndarray:
    """A tinted colour clearly lighter or darker than the background (by 70–150 grey levels per channel)."""
    lighter = base_colour.mean() < 127.5 if rng.random() < 0.8 else base_colour.mean() >= 127.5
    offset = rng.uniform(70, 150, size=3)
    return np.clip(base_colour + (offset if lighter else -offset), 0, 255)


def _target_mask(rng: np.random.Generator, shape: str, size: int) -> np.ndarray:
    """Filled target of the given shape: random radius (13–22% of the side), position and a tilt.

    Shapes are drawn upright (square and cross axis-aligned, triangle and star with a vertex up)
    give or take 20°, so that a square and a circle differ clearly at this small scale.
    """
    radius = rng.uniform(0.13, 0.22) * size
    margin = radius * 1.15 + 2
    cx, cy = rng.uniform(margin, size - margin, size=2)
    rotation = _UPRIGHT[shape] + np.deg2rad(rng.uniform(-20, 20))
    canvas = np.zeros((size, size), dtype=np.uint8)
    if shape == "circle":
        _fill(canvas, _polygon(cx, cy, radius, 48, rotation))
    elif shape == "square":
        _fill(canvas, _polygon(cx, cy, radius, 4, rotation))
    elif shape == "triangle":
        _fill(canvas, _polygon(cx, cy, radius * 1.1, 3, rotation))
    elif shape == "star":
        outer = _polygon(cx, cy, radius * 1.15, 5, rotation)
        inner = _polygon(cx, cy, radius * 0.45, 5, rotation + np.pi / 5)
        points = np.empty((10, 2))
        points[0::2], points[1::2] = outer, inner
        _fill(canvas, points)
    elif shape == "cross":
        arm = radius * 0.36
        bar = np.array([[-radius, -arm], [radius, -arm], [radius, arm], [-radius, arm]])
        for turn in (rotation, rotation + np.pi / 2):
            rot = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
            _fill(canvas, bar @ rot.T + np.array([cx, cy]))
    else:  # pragma: no cover - guarded by _check_classes
        raise InputError(f"unknown shape {shape!r}")
    return canvas.astype(bool)


def _polygon(cx: float, cy: float, radius: float, corners: int, rotation: float) -> np.ndarray:
    angles = rotation + np.arange(corners) * 2 * np.pi / corners
    return np.stack([cx + radius * np.cos(angles), cy + radius * np.sin(angles)], axis=1)


def _fill(canvas: np.ndarray, points: np.ndarray) -> None:
    # Sub-pixel coordinates (shift=4) keep small rotated shapes symmetric.
    fixed = np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(canvas, [fixed], 1, lineType=cv2.LINE_8, shift=4)
