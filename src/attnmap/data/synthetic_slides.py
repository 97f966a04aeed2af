"""Synthetic H&E-like whole-slide images whose tumour regions are known exactly.

Real slides never come with pixel-exact tumour outlines, so attention-MIL localisation cannot be
checked on them without an annotation effort. These slides can: pink "tissue" blobs with sparse
purple nuclei on a white background, and (for positive slides) "tumour" regions inside the tissue
that are more purple with dense, large, dark nuclei, plus "lymphoid aggregates" on every slide
(dense small dark-blue nuclei) as look-alike distractors. The generator keeps the tissue and tumour masks
(at a fixed downsample) in a ``<slide>.masks.npz`` next to the slide, so attention scores can be
scored against them (`attnmap.evaluate.mil_localisation`).

Slides are pyramidal tiled TIFFs (levels as separate pages, reduced levels with ``subfiletype=1``,
resolution tags in pixels per centimetre) that OpenSlide opens with every level and its mpp.
Everything is derived from one seed, so a slide is reproducible pixel for pixel.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import tifffile

from attnmap.errors import InputError
from attnmap.provenance import provenance

MASK_DOWNSAMPLE = 16
"""Downsample (relative to level 0) of the stored tissue and tumour masks."""

_BACKGROUND_RGB = (243, 241, 244)
_STROMA_RGB = (236, 168, 204)
_STROMA_NUCLEUS_RGB = (118, 62, 150)
_TUMOUR_RGB = (196, 128, 196)
_TUMOUR_NUCLEUS_RGB = (58, 22, 96)
_LYMPHOCYTE_RGB = (34, 26, 104)


@dataclass(frozen=True)
class SyntheticSlide:
    """A written synthetic slide and its ground truth (masks at ``mask_downsample`` of level 0)."""

    path: Path
    mask_path: Path
    tissue_mask: np.ndarray
    tumour_mask: np.ndarray
    lymphoid_mask: np.ndarray
    mask_downsample: int
    label: int
    mpp: float


def mask_path_for(slide_path: str | Path) -> Path:
    """Where `make_slide` puts the masks of a slide: ``<stem>.masks.npz`` beside it."""
    slide_path = Path(slide_path)
    return slide_path.with_name(slide_path.stem + ".masks.npz")


def load_masks(slide_path: str | Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(tissue_mask, tumour_mask, mask_downsample) stored next to a synthetic slide."""
    path = mask_path_for(slide_path)
    if not path.is_file():
        raise FileNotFoundError(f"no ground-truth masks for {slide_path}: expected {path}")
    with np.load(path) as data:
        return data["tissue"].astype(bool), data["tumour"].astype(bool), int(data["downsample"])


def load_mask(slide_path: str | Path, name: str) -> np.ndarray:
    """One stored mask of a synthetic slide ("tissue", "tumour" or "lymphoid") as bool."""
    path = mask_path_for(slide_path)
    if not path.is_file():
        raise FileNotFoundError(f"no ground-truth masks for {slide_path}: expected {path}")
    with np.load(path) as data:
        if name not in ("tissue", "tumour", "lymphoid") or name not in data:
            raise InputError(f"{path} has no mask {name!r}; masks: tissue, tumour, lymphoid")
        return data[name].astype(bool)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """White noise blurred to blobs of about ``sigma`` pixels, rescaled to unit standard deviation."""
    noise = cv2.GaussianBlur(rng.standard_normal(shape).astype(np.float32), (0, 0), sigma)
    return noise / max(float(noise.std()), 1e-6)


def _blob_field(
    rng: np.random.Generator, shape: tuple[int, int], centres: np.ndarray, radii: np.ndarray
) -> np.ndarray:
    """Sum of rotated anisotropic Gaussian bumps (value 1 at each centre) on a (h, w) grid."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    field = np.zeros(shape, np.float32)
    for (cy, cx), radius in zip(centres, radii, strict=True):
        angle = rng.uniform(0, np.pi)
        aspect = rng.uniform(0.55, 1.0)
        dy, dx = yy - cy, xx - cx
        u = dx * np.cos(angle) + dy * np.sin(angle)
        v = (-dx * np.sin(angle) + dy * np.cos(angle)) / aspect
        field += np.exp(-(u * u + v * v) / (2 * radius * radius))
    return field


def _tissue_field(rng: np.random.Generator, grid: tuple[int, int]) -> np.ndarray:
    """Low-resolution field whose positive part is tissue: a few lumpy blobs kept off the border."""
    h, w = grid
    n_blobs = int(rng.integers(2, 5))
    centres = np.stack([rng.uniform(0.25, 0.75, n_blobs) * h, rng.uniform(0.25, 0.75, n_blobs) * w], 1)
    radii = rng.uniform(0.12, 0.2, n_blobs) * min(h, w)
    field = _blob_field(rng, grid, centres, radii) + 0.18 * _smooth_noise(rng, grid, min(h, w) / 24)
    border = np.minimum.outer(
        np.minimum(np.arange(h), np.arange(h)[::-1]), np.minimum(np.arange(w), np.arange(w)[::-1])
    )
    field *= np.clip(border / (0.06 * min(h, w)), 0, 1).astype(np.float32)
    return field - 0.45


def _region_field(
    rng: np.random.Generator,
    grid: tuple[int, int],
    tissue_low: np.ndarray,
    n_regions: int,
    radius_range: tuple[float, float],
    min_depth: float,
) -> np.ndarray:
    """Low-resolution field whose positive part is ``n_regions`` lumpy blobs inside the tissue.

    Centres lie at least ``min_depth`` × (deepest distance to the tissue edge) inside the tissue;
    radii are ``radius_range`` × the short side of the grid, capped to stay mostly inside.
    """
    inside = cv2.distanceTransform(tissue_low.astype(np.uint8), cv2.DIST_L2, 5)
    candidates = np.argwhere(inside >= min_depth * float(inside.max()))
    picks = candidates[rng.choice(len(candidates), size=n_regions, replace=len(candidates) < n_regions)]
    radii = np.minimum(rng.uniform(*radius_range, n_regions) * min(grid), 0.6 * inside[tuple(picks.T)])
    field = _blob_field(rng, grid, picks.astype(np.float32), np.maximum(radii, 2.0))
    field += 0.12 * _smooth_noise(rng, grid, min(grid) / 40)
    return np.where(tissue_low, field - 0.5, -1.0).astype(np.float32)


def _draw_nuclei(
    rng: np.random.Generator,
    alpha: np.ndarray,
    kind: np.ndarray,
    region: np.ndarray,
    population: int,
    per_pixel: float,
    radius: tuple[int, int],
    strength: int,
) -> None:
    """Stamp random elliptic nuclei centred in ``region`` into ``alpha`` (darkness) and ``kind``."""
    h, w = region.shape
    count = int(rng.poisson(per_pixel * h * w))
    ys = rng.integers(0, h, count)
    xs = rng.integers(0, w, count)
    keep = region[ys, xs]
    ys, xs = ys[keep], xs[keep]
    axes_a = rng.integers(radius[0], radius[1] + 1, len(xs))
    axes_b = np.maximum(1, (axes_a * rng.uniform(0.6, 1.0, len(xs))).astype(int))
    angles = rng.integers(0, 180, len(xs))
    shades = rng.integers(int(0.75 * strength), strength + 1, len(xs))
    for x, y, a, b, angle, shade in zip(xs, ys, axes_a, axes_b, angles, shades, strict=True):
        centre, axes = (int(x), int(y)), (int(a), int(b))
        cv2.ellipse(alpha, centre, axes, int(angle), 0, 360, int(shade), -1, cv2.LINE_8)
        cv2.ellipse(kind, centre, axes, int(angle), 0, 360, population, -1, cv2.LINE_8)


def _render(
    rng: np.random.Generator, tissue: np.ndarray, tumour: np.ndarray, lymphoid: np.ndarray
) -> np.ndarray:
    """RGB uint8 level-0 image from full-resolution tissue, tumour and lymphoid-aggregate masks.

    Written for speed on 16-megapixel images: integer arithmetic in place, one blend (OpenCV) of
    the background/cytoplasm image with a nucleus-colour image through the nuclei's alpha map.
    """
    h, w = tissue.shape
    low = (max(h // 8, 1), max(w // 8, 1))
    shade = cv2.resize(_smooth_noise(rng, low, 6.0), (w, h), interpolation=cv2.INTER_LINEAR)
    grain_tile = rng.normal(0.0, 4.0, (256, 256)).astype(np.float32)
    offset = np.tile(grain_tile, (h // 256 + 1, w // 256 + 1))[:h, :w]
    shade *= 9.0
    np.multiply(shade, tissue, out=shade)
    offset += shade
    kind = tissue.astype(np.uint8)
    kind[tumour] = 2
    cytoplasm = np.array([_BACKGROUND_RGB, _STROMA_RGB, _TUMOUR_RGB], np.int16)
    image16 = cytoplasm[kind]
    image16 += np.rint(offset).astype(np.int16)[..., None]
    np.clip(image16, 0, 255, out=image16)
    image = image16.astype(np.uint8)
    del image16

    # (region, nuclei per pixel, radius range, darkness) per population; colours in nucleus_rgb
    populations = (
        (tissue & ~tumour & ~lymphoid, 1 / 700, (2, 4), 200),
        (lymphoid, 1 / 16, (2, 3), 245),
        (tumour, 1 / 110, (4, 7), 235),
    )
    nucleus_rgb = np.array(
        [_STROMA_NUCLEUS_RGB, _STROMA_NUCLEUS_RGB, _LYMPHOCYTE_RGB, _TUMOUR_NUCLEUS_RGB], np.uint8
    )
    darkness = np.zeros((h, w), np.uint8)
    population_of = np.zeros((h, w), np.uint8)
    for index, (region, density, radius, strength) in enumerate(populations, start=1):
        if region.any():
            _draw_nuclei(rng, darkness, population_of, region, index, density, radius, strength)
    alpha = cv2.GaussianBlur(darkness, (3, 3), 0).astype(np.float32)
    alpha *= 1.0 / 255.0
    nuclei = nucleus_rgb[cv2.dilate(population_of, np.ones((3, 3), np.uint8))]
    return cv2.blendLinear(image, nuclei, 1.0 - alpha, alpha)


def _pyramid(image: np.ndarray, n_levels: int) -> list[np.ndarray]:
    """Levels at downsample 1, 2, 4, ... (area averaging), stopping before a side drops under 256."""
    levels = [image]
    while len(levels) < n_levels and min(levels[-1].shape[:2]) >= 512:
        prev = levels[-1]
        levels.append(
            cv2.resize(prev, (prev.shape[1] // 2, prev.shape[0] // 2), interpolation=cv2.INTER_AREA)
        )
    return levels


def write_pyramidal_tiff(
    path: str | Path, levels: list[np.ndarray], mpp: float, description: str, compression: str = "jpeg"
) -> None:
    """Tiled pyramidal TIFF that OpenSlide reads as a generic tiled TIFF with all levels and mpp.

    Each level is its own top-level page; reduced levels carry ``subfiletype=1``. The resolution tags
    are pixels per centimetre (OpenSlide turns them into ``openslide.mpp-x/y``).
    """
    if compression not in ("jpeg", "zlib"):
        raise InputError(f"compression must be 'jpeg' or 'zlib', got {compression!r}")
    compression_args = {"level": 90} if compression == "jpeg" else {"level": 6}
    with tifffile.TiffWriter(path) as tif:
        for index, level in enumerate(levels):
            per_cm = 1e4 / (mpp * 2**index)
            tif.write(
                level,
                photometric="rgb",
                tile=(256, 256),
                compression=compression,
                compressionargs=compression_args,
                subfiletype=1 if index else 0,
                resolution=(per_cm, per_cm),
                resolutionunit="CENTIMETER",
                description=description if index == 0 else None,
                metadata=None,
            )


def make_slide(
    path: str | Path,
    seed: int,
    size: tuple[int, int] = (4096, 4096),
    tumour: bool = True,
    mpp: float = 0.5,
    n_tumour_regions: int | None = None,
    n_lymphoid_aggregates: int | None = None,
    n_levels: int = 4,
    compression: str = "jpeg",
) -> SyntheticSlide:
    """Write one synthetic slide (``size`` = (width, height) at level 0) and its masks; deterministic.

    With ``tumour=True`` the slide gets ``n_tumour_regions`` (default 1–3, from the seed) tumour
    regions inside the tissue: purple, with dense large dark nuclei. Every slide, positive or not,
    also gets ``n_lymphoid_aggregates`` (default 1–3) distractors: small pink regions packed with
    small dark-blue nuclei, dark like tumour but not tumour, so that "attend to dark patches" is
    not enough to localise it. Masks are stored at downsample `MASK_DOWNSAMPLE` in
    ``<stem>.masks.npz``; a mask pixel is set when at least half of its level-0 pixels are.
    """
    width, height = (int(v) for v in size)
    if width < 512 or height < 512 or width % MASK_DOWNSAMPLE or height % MASK_DOWNSAMPLE:
        raise InputError(
            f"slide size must be at least 512x512 and a multiple of {MASK_DOWNSAMPLE}, got {size}"
        )
    if mpp <= 0:
        raise InputError(f"mpp must be positive, got {mpp}")
    if n_tumour_regions is not None and n_tumour_regions < 1:
        raise InputError(f"n_tumour_regions must be at least 1, got {n_tumour_regions}")
    if n_lymphoid_aggregates is not None and n_lymphoid_aggregates < 0:
        raise InputError(f"n_lymphoid_aggregates must be at least 0, got {n_lymphoid_aggregates}")
    if compression not in ("jpeg", "zlib"):
        raise InputError(f"compression must be 'jpeg' or 'zlib', got {compression!r}")
    path = Path(path)
    rng = np.random.default_rng(seed)
    grid = (height // MASK_DOWNSAMPLE, width // MASK_DOWNSAMPLE)

    tissue_field = _tissue_field(rng, grid)
    tissue_full = cv2.resize(tissue_field, (width, height), interpolation=cv2.INTER_LINEAR) > 0
    inner = tissue_field > 0.08

    def upsample(field: np.ndarray) -> np.ndarray:
        return (cv2.resize(field, (width, height), interpolation=cv2.INTER_LINEAR) > 0) & tissue_full

    tumour_full = np.zeros_like(tissue_full)
    if tumour:
        regions = int(rng.integers(1, 4)) if n_tumour_regions is None else n_tumour_regions
        tumour_full = upsample(_region_field(rng, grid, inner, regions, (0.05, 0.09), 0.5))
    lymphoid_full = np.zeros_like(tissue_full)
    n_lymphoid = int(rng.integers(1, 4)) if n_lymphoid_aggregates is None else n_lymphoid_aggregates
    if n_lymphoid:
        lymphoid_full = (
            upsample(_region_field(rng, grid, inner, n_lymphoid, (0.045, 0.075), 0.2)) & ~tumour_full
        )

    def to_mask(full: np.ndarray) -> np.ndarray:
        small = cv2.resize(full.astype(np.uint8) * 255, (grid[1], grid[0]), interpolation=cv2.INTER_AREA)
        return small >= 128

    tissue_mask, tumour_mask, lymphoid_mask = (
        to_mask(tissue_full),
        to_mask(tumour_full),
        to_mask(lymphoid_full),
    )
    if tumour and not tumour_mask.any():  # never seen; a positive label without tumour would be a lie
        raise RuntimeError(f"seed {seed} gave a tumour slide without tumour pixels; use another seed")
    image = _render(rng, tissue_full, tumour_full, lymphoid_full)
    record = provenance(
        method="synthetic_slide",
        parameters={
            "seed": seed,
            "size": [width, height],
            "tumour": tumour,
            "mpp": mpp,
            "n_levels": n_levels,
            "n_tumour_regions": n_tumour_regions,
            "n_lymphoid_aggregates": n_lymphoid_aggregates,
            "compression": compression,
        },
        generator="attnmap.data.synthetic_slides.make_slide",
    )
    write_pyramidal_tiff(path, _pyramid(image, n_levels), mpp, json.dumps(record), compression)
    mask_path = mask_path_for(path)
    np.savez_compressed(
        mask_path,
        tissue=tissue_mask,
        tumour=tumour_mask,
        lymphoid=lymphoid_mask,
        downsample=MASK_DOWNSAMPLE,
        mpp=mpp,
        provenance=json.dumps(record),
    )
    return SyntheticSlide(
        path, mask_path, tissue_mask, tumour_mask, lymphoid_mask, MASK_DOWNSAMPLE, int(tumour), mpp
    )


def make_cohort(
    out_dir: str | Path,
    n_slides: int,
    seed: int,
    size: tuple[int, int] = (4096, 4096),
    tumour_fraction: float = 0.5,
    **slide_options: object,
) -> Path:
    """Write ``n_slides`` slides (``round(tumour_fraction·n)`` with tumour) and ``cohort.csv``.

    The CSV has columns slide_id, label, case_id (one case per slide); slide ``<slide_id>.tif`` and
    its masks sit in ``out_dir``. Labels are shuffled deterministically from ``seed``, and each
    slide's own seed comes from (seed, index), so cohorts with different seeds do not share slides.
    """
    if n_slides < 1:
        raise InputError(f"n_slides must be at least 1, got {n_slides}")
    if not 0.0 <= tumour_fraction <= 1.0:
        raise InputError(f"tumour_fraction must be in [0, 1], got {tumour_fraction}")
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_positive = int(round(tumour_fraction * n_slides))
    labels = np.random.default_rng([seed, 0]).permutation([1] * n_positive + [0] * (n_slides - n_positive))
    rows = []
    for index, label in enumerate(tqdm(labels, desc="synthetic slides", leave=False)):
        slide_id = f"synth_{seed}_{index:03d}"
        slide_seed = int(np.random.SeedSequence([seed, index + 1]).generate_state(1)[0])
        make_slide(out_dir / f"{slide_id}.tif", slide_seed, size=size, tumour=bool(label), **slide_options)
        rows.append({"slide_id": slide_id, "label": int(label), "case_id": f"case_{seed}_{index:03d}"})
    csv_path = out_dir / "cohort.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["slide_id", "label", "case_id"])
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def tumour_outline(mask: np.ndarray, mask_downsample: int, min_area: float = 0.0) -> list[np.ndarray]:
    """Outer contours of a binary mask as OpenCV (N, 1, 2) int32 arrays in level-0 coordinates.

    For drawing the true tumour boundary over a heatmap; ``min_area`` (in mask pixels) drops specks.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"mask must be 2-D, got shape {mask.shape}")
    if mask_downsample <= 0:
        raise InputError(f"mask_downsample must be positive, got {mask_downsample}")
    contours, _ = cv2.findContours((mask > 0).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    scale = float(mask_downsample)
    return [
        np.round(contour.astype(np.float64) * scale + (scale - 1) / 2).astype(np.int32)
        for contour in contours
        if cv2.contourArea(contour) >= min_area
    ]
