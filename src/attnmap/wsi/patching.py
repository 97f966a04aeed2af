"""Patch grid over tissue: level-0 top-left corners of the patches to extract, in CLAM's order.

Why CLAM's order and tests: features, scores and h5 files are matched to patches by row, so a
user mixing our grid with CLAM outputs needs the same rows. Per tissue polygon: a grid over its
level-0 bounding box (x-major: for each x every y), a contour check on the patch, then a rejection
when the patch centre lies strictly inside one of the polygon's holes.
"""

from __future__ import annotations

import cv2
import numpy as np
from tqdm import tqdm

from attnmap.errors import InputError
from attnmap.wsi.parameters import CONTOUR_CHECKS
from attnmap.wsi.setting_names import setting
from attnmap.wsi.slide import Slide
from attnmap.wsi.tissue import Tissue


def heatmap_center_shift(overlap: float) -> float:
    """CLAM's centre shift for heatmap-time grids: tighter checks for denser (overlapping) grids.

    ``overlap`` is the fraction of a patch its neighbours share, in [0, 1) (as `HeatmapStyle`'s);
    anything else (NaN, 1 or more, negative) is an `InputError`, not the shift of a nearby range.
    """
    number = isinstance(overlap, (int, float, np.integer, np.floating)) and not isinstance(overlap, bool)
    if not number or not 0.0 <= float(overlap) < 1.0:
        raise InputError(f"overlap must be a number in [0, 1), got {overlap!r}")
    if overlap < 0.25:
        return 0.375
    if overlap < 0.95:
        return 0.5
    return 0.625


def grid_scale(downsample: float) -> float:
    """Level-0 pixels per level pixel for the patch grid.

    A whole number when the downsample is one up to the rounding of the level's size (4.0002,
    15.998): CLAM's grid where CLAM's ``int(downsample)`` gets it (above the integer; below it,
    CLAM's 15 would overlap the patches). Else the downsample itself: truncating a level at 2.5
    or 1.5 stepped 2 or 1 level-0 pixels per level pixel, so the patches read at that level
    overlapped by a fifth or a third, and the heatmap's squares did not fit the grid.
    """
    whole = round(downsample)
    return float(whole) if whole >= 1 and abs(downsample - whole) <= 0.01 * whole else float(downsample)


def _check_points(corner: np.ndarray, patch_size: int, contour_check: str, center_shift: float) -> list:
    """Points that decide whether the patch at ``corner`` is on the contour."""
    if contour_check == "basic":
        return [(float(corner[0]), float(corner[1]))]
    center_x, center_y = int(corner[0]) + patch_size // 2, int(corner[1]) + patch_size // 2
    shift = int(patch_size // 2 * center_shift)
    if contour_check == "center" or shift <= 0:
        return [(float(center_x), float(center_y))]
    return [
        (float(center_x - shift), float(center_y - shift)),
        (float(center_x + shift), float(center_y + shift)),
        (float(center_x + shift), float(center_y - shift)),
        (float(center_x - shift), float(center_y + shift)),
    ]


def _on_contour(contour: np.ndarray, points: list, need_all: bool) -> bool:
    inside = (cv2.pointPolygonTest(contour, point, False) >= 0 for point in points)
    return all(inside) if need_all else any(inside)


def _in_hole(holes: list[np.ndarray], corner: np.ndarray, patch_size: int) -> bool:
    center = (float(corner[0] + patch_size / 2), float(corner[1] + patch_size / 2))
    return any(cv2.pointPolygonTest(hole, center, False) > 0 for hole in holes)


def _cv_points(points: np.ndarray) -> np.ndarray:
    return np.asarray(points).reshape(-1, 1, 2).astype(np.int32)


def _validate(slide: Slide, patch_size: int, step: int, level: int, contour_check: str, roi) -> None:
    slide.check_level(level, setting("patching.level"))
    for name, value in (("patch_size", patch_size), ("step", step)):
        whole = isinstance(value, (int, np.integer)) or (isinstance(value, (float, np.floating))
                                                         and float(value).is_integer())
        if isinstance(value, bool) or not whole:  # int() would cut 31.5 to 31 and grid other patches
            raise InputError(f"{name} must be a whole number of pixels, got {value!r}")
    if int(patch_size) < 1 or int(step) < 1:
        raise InputError(f"patch_size and step must be positive, got patch_size={patch_size}, step={step}")
    if contour_check not in CONTOUR_CHECKS:
        raise InputError(f"unknown contour_check {contour_check!r}; choose one of {CONTOUR_CHECKS}")
    if roi is not None:
        (x0, y0), (x1, y1) = roi
        if x1 <= x0 or y1 <= y0:
            raise InputError(f"roi must be ((x0, y0), (x1, y1)) with x1 > x0 and y1 > y0, got {roi}")


def patch_grid(
    slide: Slide,
    tissue: Tissue | None,
    patch_size: int = 256,
    step: int = 256,
    level: int = 0,
    contour_check: str = "four_pt",
    padding: bool = True,
    center_shift: float = 0.5,
    roi: tuple[tuple[int, int], tuple[int, int]] | None = None,
    progress: bool = True,
) -> np.ndarray:
    """(N, 2) int64 level-0 [x, y] corners of ``patch_size`` patches at ``level`` on the tissue.

    ``step`` is in ``level`` pixels. Without padding the grid stops where a patch would leave the
    slide. ``contour_check``: "four_pt" (any of four points at centre ± center_shift × half patch
    inside), "four_pt_hard" (all four), "center", "basic" (top-left corner). ``roi`` =
    ((x0, y0), (x1, y1)) at level 0 clips the grid. With ``tissue=None`` the whole slide is gridded.
    ``progress``: a bar over the tissue regions when there are at least 20 (the CLI's ``--quiet``
    turns it off).
    """
    _validate(slide, patch_size, step, level, contour_check, roi)
    scale_x, scale_y = (grid_scale(scale) for scale in slide.level_scale_xy(level))
    ref_w, ref_h = round(int(patch_size) * scale_x), round(int(patch_size) * scale_y)
    step_x, step_y = round(int(step) * scale_x), round(int(step) * scale_y)
    width0, height0 = slide.dimensions
    regions: list[tuple[np.ndarray | None, list[np.ndarray]]]
    if tissue is None:
        regions = [(None, [])]
    else:
        regions = [(_cv_points(p.outer), [_cv_points(h) for h in p.holes]) for p in tissue.contours]
    found: list[np.ndarray] = []
    bar = tqdm(regions, desc="patch grid", unit="region", disable=not progress or len(regions) < 20)
    for outer, holes in bar:
        if outer is None:
            start_x, start_y, w, h = 0, 0, width0, height0
        else:
            start_x, start_y, w, h = cv2.boundingRect(outer)
        if padding:
            stop_x, stop_y = start_x + w, start_y + h
        else:
            stop_x, stop_y = min(start_x + w, width0 - ref_w + 1), min(start_y + h, height0 - ref_h + 1)
        if roi is not None:
            (left, top), (right, bottom) = roi
            stop_x, stop_y = min(int(right), stop_x), min(int(bottom), stop_y)
            start_x, start_y = max(int(left), start_x), max(int(top), start_y)
            if stop_x - start_x <= 0 or stop_y - start_y <= 0:
                continue
        x_range, y_range = np.arange(start_x, stop_x, step_x), np.arange(start_y, stop_y, step_y)
        xs, ys = np.meshgrid(x_range, y_range, indexing="ij")
        candidates = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
        if outer is None:
            found.append(candidates)
            continue
        need_all = contour_check == "four_pt_hard"
        keep = [
            i for i, corner in enumerate(candidates)
            if _on_contour(outer, _check_points(corner, ref_w, contour_check, center_shift), need_all)
            and not _in_hole(holes, corner, ref_w)
        ]
        found.append(candidates[keep])
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(found, axis=0).astype(np.int64)
