"""Synthetic slides whose tumour is told from normal tissue only by small structures inside a patch.

`attnmap.data.synthetic_slides` is too easy for judging explanations: its tumour is darker and more
purple than everything but the lymphoid aggregates, so "mean darkness of the patch" already finds
it. Here every tissue population shares the same cytoplasm and nucleus colours, and tumour has the
same amount of nuclear stain per area as normal tissue: normal nuclei are small filled ellipses,
tumour replaces half of them by *rings* (hollow nuclei/small glands, a few cells wide) drawn with
the same amount of ink. Two decoys share colour and are darker than both: lymphoid-like aggregates
(dense small filled nuclei) and tissue folds (a dark, purple-tinted band). Cellularity varies
smoothly over the tissue so that darkness is noisy everywhere. A model can only find tumour by
the shape of the structures, and because every ring is drawn from a known mask, the answer is known
at two scales: tumour regions (patch level, stored like the easy slides at downsample 16) and the
ring pixels themselves (pixel level, ``structures`` mask at full resolution).

`render_hard_image` returns the image and masks in memory (for training patches);
`make_hard_slide` writes a pyramidal TIFF (lossless, so the rings survive) with masks beside it.
Everything derives from one seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from attnmap.data.synthetic_slides import (
    MASK_DOWNSAMPLE,
    _pyramid,
    _region_field,
    _smooth_noise,
    _tissue_field,
    mask_path_for,
    write_pyramidal_tiff,
)
from attnmap.errors import InputError
from attnmap.provenance import provenance

HARD_PATCH_SIZE = 64
"""Level-0 patch side the hard slides are designed for: a tumour patch holds a few rings."""

_BACKGROUND_RGB = np.array((243, 241, 244), np.float32)
_CYTOPLASM_RGB = np.array((232, 170, 206), np.float32)
_NUCLEUS_RGB = np.array((92, 48, 128), np.float32)
_FOLD_RGB = np.array((170, 96, 160), np.float32)
_INK_PER_PIXEL = 0.11
"""Expected fraction of nuclear ink in normal tissue and in tumour alike (before cellularity noise)."""


@dataclass(frozen=True)
class HardImage:
    """One rendered hard slide in memory: RGB (H, W, 3) and full-resolution masks."""

    image: np.ndarray
    tissue: np.ndarray
    tumour: np.ndarray
    decoy: np.ndarray
    structures: np.ndarray


@dataclass(frozen=True)
class HardSlide:
    """A written hard slide: paths, masks at ``mask_downsample`` and the full-resolution ring mask."""

    path: Path
    mask_path: Path
    tissue_mask: np.ndarray
    tumour_mask: np.ndarray
    decoy_mask: np.ndarray
    structures: np.ndarray
    mask_downsample: int
    label: int
    mpp: float


def _stamp(
    rng: np.random.Generator,
    ink: np.ndarray,
    region: np.ndarray,
    density: np.ndarray,
    radius: tuple[int, int],
) -> None:
    """Filled elliptic nuclei at ``density`` (per pixel, a map) inside ``region``, into ``ink``."""
    h, w = region.shape
    count = int(rng.poisson(float(density.max()) * h * w))
    ys, xs = rng.integers(0, h, count), rng.integers(0, w, count)
    keep = region[ys, xs] & (rng.random(count) < density[ys, xs] / max(float(density.max()), 1e-12))
    ys, xs = ys[keep], xs[keep]
    axes_a = rng.integers(radius[0], radius[1] + 1, len(xs))
    axes_b = np.maximum(1, np.rint(axes_a * rng.uniform(0.65, 1.0, len(xs)))).astype(int)
    angles = rng.integers(0, 180, len(xs))
    shades = rng.integers(190, 241, len(xs))
    for x, y, a, b, angle, shade in zip(xs, ys, axes_a, axes_b, angles, shades, strict=True):
        cv2.ellipse(ink, (int(x), int(y)), (int(a), int(b)), int(angle), 0, 360, int(shade), -1, cv2.LINE_8)


def _rings(
    rng: np.random.Generator, ink: np.ndarray, structures: np.ndarray, region: np.ndarray, per_pixel: float
) -> None:
    """Hollow rings (outer radius 5–7 px, wall 2 px) inside ``region``: into ``ink`` and ``structures``."""
    h, w = region.shape
    count = int(rng.poisson(per_pixel * h * w))
    ys, xs = rng.integers(0, h, count), rng.integers(0, w, count)
    keep = region[ys, xs]
    for x, y in zip(xs[keep], ys[keep], strict=True):
        radius = int(rng.integers(5, 8))
        aspect = rng.uniform(0.75, 1.0)
        axes = (radius, max(3, int(round(radius * aspect))))
        angle = int(rng.integers(0, 180))
        shade = int(rng.integers(190, 241))
        cv2.ellipse(ink, (int(x), int(y)), axes, angle, 0, 360, shade, 2, cv2.LINE_8)
        cv2.ellipse(structures, (int(x), int(y)), axes, angle, 0, 360, 1, 2, cv2.LINE_8)


def _fold_band(rng: np.random.Generator, shape: tuple[int, int], tissue: np.ndarray) -> np.ndarray:
    """A curved band 16–32 px wide across the tissue (bool), or all-False if it misses the tissue."""
    h, w = shape
    t = np.linspace(0.0, 1.0, 24)
    start, end = rng.uniform(0.1, 0.9, 2) * (w, h), rng.uniform(0.1, 0.9, 2) * (w, h)
    bend = rng.normal(0.0, 0.15, 2) * (w, h)
    points = start[None] * (1 - t[:, None]) + end[None] * t[:, None] + bend[None] * np.sin(np.pi * t)[:, None]
    band = np.zeros(shape, np.uint8)
    cv2.polylines(band, [np.rint(points).astype(np.int32)], False, 1, int(rng.integers(16, 33)))
    return band.astype(bool) & tissue


def render_hard_image(
    seed: int,
    size: tuple[int, int] = (1024, 1024),
    tumour: bool = True,
    n_tumour_regions: int | None = None,
    n_decoys: int | None = None,
) -> HardImage:
    """Render one hard slide in memory (``size`` = (width, height)); deterministic in ``seed``."""
    width, height = (int(v) for v in size)
    if width < 256 or height < 256 or width % MASK_DOWNSAMPLE or height % MASK_DOWNSAMPLE:
        raise InputError(
            f"slide size must be at least 256x256 and a multiple of {MASK_DOWNSAMPLE}, got {size}"
        )
    rng = np.random.default_rng(seed)
    grid = (height // MASK_DOWNSAMPLE, width // MASK_DOWNSAMPLE)
    tissue_field = _tissue_field(rng, grid)
    tissue = cv2.resize(tissue_field, (width, height), interpolation=cv2.INTER_LINEAR) > 0
    inner = tissue_field > 0.08

    def upsample(field: np.ndarray) -> np.ndarray:
        return (cv2.resize(field, (width, height), interpolation=cv2.INTER_LINEAR) > 0) & tissue

    tumour_region = np.zeros_like(tissue)
    if tumour:
        regions = int(rng.integers(1, 3)) if n_tumour_regions is None else n_tumour_regions
        tumour_region = upsample(_region_field(rng, grid, inner, regions, (0.08, 0.14), 0.4))
    decoys = int(rng.integers(1, 3)) if n_decoys is None else n_decoys
    lymphoid = np.zeros_like(tissue)
    if decoys:
        lymphoid = upsample(_region_field(rng, grid, inner, decoys, (0.05, 0.09), 0.2)) & ~tumour_region
    fold = _fold_band(rng, (height, width), tissue) if rng.random() < 0.8 else np.zeros_like(tissue)
    fold &= ~tumour_region  # a fold over tumour would make tumour darker on average: keep them apart

    cellularity = np.clip(1.0 + 0.3 * cv2.resize(_smooth_noise(rng, grid, 3.0), (width, height)), 0.5, 1.5)
    ink = np.zeros((height, width), np.uint8)
    structures = np.zeros((height, width), np.uint8)
    filled_area = np.pi * 3.5 * 3.5 * 0.82  # mean ellipse area for radii 3–4, aspect 0.65–1
    ring_area = 2 * np.pi * 6.0 * 0.87 * 2.0  # ring wall area for radii 5–7, aspect 0.75–1, wall 2
    normal = tissue & ~tumour_region & ~lymphoid
    _stamp(rng, ink, normal, cellularity * (_INK_PER_PIXEL / filled_area), (3, 4))
    if tumour_region.any():  # half of the ink as rings, half as the usual nuclei: same darkness
        _stamp(rng, ink, tumour_region, cellularity * (0.5 * _INK_PER_PIXEL / filled_area), (3, 4))
        _rings(rng, ink, structures, tumour_region, 0.5 * _INK_PER_PIXEL / ring_area)
    if lymphoid.any():
        _stamp(rng, ink, lymphoid, cellularity * (0.28 / (np.pi * 2.5 * 2.5 * 0.82)), (2, 3))

    shade = cv2.resize(_smooth_noise(rng, (height // 8, width // 8), 6.0), (width, height))
    base = np.where(tissue[..., None], _CYTOPLASM_RGB, _BACKGROUND_RGB).astype(np.float32)
    base += (9.0 * shade * tissue)[..., None] + rng.normal(0.0, 3.0, (height, width, 1)).astype(np.float32)
    if fold.any():
        soft = cv2.GaussianBlur(fold.astype(np.float32), (0, 0), 3.0)[..., None]
        base = base * (1 - 0.7 * soft) + _FOLD_RGB * (0.7 * soft)
    alpha = (cv2.GaussianBlur(ink, (3, 3), 0).astype(np.float32) / 255.0)[..., None]
    image = np.clip(base * (1 - alpha) + _NUCLEUS_RGB * alpha, 0, 255).astype(np.uint8)
    decoy = lymphoid | fold
    return HardImage(image, tissue, tumour_region, decoy & ~tumour_region, structures.astype(bool))


def downsample_mask(full: np.ndarray, factor: int = MASK_DOWNSAMPLE) -> np.ndarray:
    """A full-resolution bool mask at 1/``factor``: a pixel is set when half its block is."""
    h, w = full.shape
    small = cv2.resize(full.astype(np.uint8) * 255, (w // factor, h // factor), interpolation=cv2.INTER_AREA)
    return small >= 128


def make_hard_slide(
    path: str | Path,
    seed: int,
    size: tuple[int, int] = (1024, 1024),
    tumour: bool = True,
    mpp: float = 0.5,
    n_levels: int = 3,
) -> HardSlide:
    """Write one hard slide as a lossless pyramidal TIFF plus ``<stem>.masks.npz``; deterministic.

    The npz holds ``tissue``, ``tumour``, ``lymphoid`` (all decoys: aggregates and folds) at
    `MASK_DOWNSAMPLE`, as for the easy slides, and ``structures``: the ring pixels at full resolution.
    """
    if mpp <= 0:
        raise InputError(f"mpp must be positive, got {mpp}")
    rendered = render_hard_image(seed, size, tumour)
    if tumour and not rendered.structures.any():
        raise RuntimeError(f"seed {seed} gave a tumour slide without tumour structures; use another seed")
    path = Path(path)
    record = provenance(
        method="hard_synthetic_slide",
        parameters={"seed": seed, "size": list(size), "tumour": tumour, "mpp": mpp, "n_levels": n_levels},
        generator="attnmap.data.hard_slides.make_hard_slide",
    )
    write_pyramidal_tiff(path, _pyramid(rendered.image, n_levels), mpp, json.dumps(record), "zlib")
    masks = {
        name: downsample_mask(getattr(rendered, attr))
        for name, attr in (("tissue", "tissue"), ("tumour", "tumour"), ("lymphoid", "decoy"))
    }
    np.savez_compressed(
        mask_path_for(path),
        **masks,
        structures=rendered.structures,
        downsample=MASK_DOWNSAMPLE,
        mpp=mpp,
        provenance=json.dumps(record),
    )
    return HardSlide(
        path,
        mask_path_for(path),
        masks["tissue"],
        masks["tumour"],
        masks["lymphoid"],
        rendered.structures,
        MASK_DOWNSAMPLE,
        int(tumour),
        mpp,
    )


def load_structures(slide_path: str | Path) -> np.ndarray:
    """The full-resolution tumour-structure (ring) mask stored beside a hard slide."""
    path = mask_path_for(slide_path)
    if not path.is_file():
        raise FileNotFoundError(f"no ground-truth masks for {slide_path}: expected {path}")
    with np.load(path) as data:
        if "structures" not in data:
            raise InputError(f"{path} has no pixel-level 'structures' mask: not a hard synthetic slide")
        return data["structures"].astype(bool)


def tissue_grid(
    tissue: np.ndarray, patch_size: int = HARD_PATCH_SIZE, min_fraction: float = 0.5
) -> np.ndarray:
    """Level-0 [x, y] corners (N, 2) of the non-overlapping patches at least ``min_fraction`` tissue."""
    h, w = tissue.shape
    rows, cols = h // patch_size, w // patch_size
    blocks = tissue[: rows * patch_size, : cols * patch_size].reshape(rows, patch_size, cols, patch_size)
    fraction = blocks.mean(axis=(1, 3))
    ys, xs = np.nonzero(fraction >= min_fraction)
    return np.stack([xs * patch_size, ys * patch_size], 1).astype(np.int64)


def crop(image: np.ndarray, coords: np.ndarray, patch_size: int = HARD_PATCH_SIZE) -> np.ndarray:
    """Patches (N, p, p, ...) of ``image`` at level-0 corners ``coords`` [x, y]."""
    return np.stack([image[y : y + patch_size, x : x + patch_size] for x, y in np.asarray(coords)])


def patch_fraction(mask: np.ndarray, coords: np.ndarray, patch_size: int = HARD_PATCH_SIZE) -> np.ndarray:
    """Fraction of each patch covered by a full-resolution bool mask."""
    return crop(mask, coords, patch_size).reshape(len(coords), -1).mean(axis=1)


def naive_scores(patches: np.ndarray) -> dict[str, np.ndarray]:
    """Trivial per-patch scores every AUC must be compared with: mean darkness and mean colour.

    ``darkness`` = 255 − mean RGB; ``purple`` = mean(B) − mean(G) (how much haematoxylin-like
    colour); ``red``/``green``/``blue`` = the channel means (any colour cue at all).
    """
    means = patches.reshape(len(patches), -1, 3).astype(np.float64).mean(axis=1)
    return {
        "darkness": 255.0 - means.mean(axis=1),
        "purple": means[:, 2] - means[:, 1],
        "red": means[:, 0],
        "green": means[:, 1],
        "blue": means[:, 2],
    }
