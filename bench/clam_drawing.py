"""How CLAM's scripts draw (masks, heatmaps, blending), re-created for `clam_scripts`' baseline.

Split from `clam_scripts` (one concept per module): the drawing steps of create_patches_fp.py and
create_heatmaps.py, each docstring naming the CLAM function whose behaviour it reproduces. Written
from facts read in CLAM's code; none of it is copied.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from PIL import Image


def rgb_region(slide: Any, location: tuple[int, int], level: int, size: tuple[int, int]) -> Image.Image:
    """``wsi.read_region(...).convert('RGB')``: the PIL image every CLAM reader starts from."""
    return Image.fromarray(np.asarray(slide.read_region(location, level, size))[..., :3]).convert("RGB")


def scaled_contours(contours: list[np.ndarray], scale: tuple[float, float]) -> list[np.ndarray]:
    """wsi_core/WholeSlideImage.py scaleContourDim: points × scale, truncated to int32."""
    return [np.array(points * np.array(scale), dtype=np.int32).reshape(-1, 1, 2) for points in contours]


def vis_wsi(slide: Any, tissue: Any, vis_level: int, line_thickness: int, number: bool) -> Image.Image:
    """wsi_core/WholeSlideImage.py visWSI: the whole level read, tissue contours drawn in green (one by
    one with their index at the centroid when ``number``), holes in blue."""
    sx, sy = slide.level_scale_xy(vis_level)
    scale = (1.0 / sx, 1.0 / sy)
    image = np.array(rgb_region(slide, (0, 0), vis_level, slide.level_dimensions[vis_level]))
    thickness = max(1, int(line_thickness * math.sqrt(scale[0] * scale[1])))
    outers = scaled_contours([polygon.outer for polygon in tissue.contours], scale)
    if number:
        for index, contour in enumerate(outers):
            moments = cv2.moments(contour)
            centre = (
                int(moments["m10"] / (moments["m00"] + 1e-9)),
                int(moments["m01"] / (moments["m00"] + 1e-9)),
            )
            cv2.drawContours(image, [contour], -1, (0, 255, 0), thickness, lineType=cv2.LINE_8)
            cv2.putText(image, str(index), centre, cv2.FONT_HERSHEY_SIMPLEX, 2, (255, 0, 0), 10)
    else:
        cv2.drawContours(image, outers, -1, (0, 255, 0), thickness, lineType=cv2.LINE_8)
    for polygon in tissue.contours:
        cv2.drawContours(image, scaled_contours(polygon.holes, scale), -1, (0, 0, 255), thickness)
    return Image.fromarray(image)


def tissue_mask(tissue: Any, size: tuple[int, int], scale: tuple[float, float]) -> np.ndarray:
    """wsi_core/WholeSlideImage.py get_seg_mask: each tissue contour filled (largest first), its holes
    cleared, on a canvas of ``size``."""
    mask = np.zeros((size[1], size[0]), dtype=np.uint8)
    outers = scaled_contours([polygon.outer for polygon in tissue.contours], scale)
    holes = [scaled_contours(polygon.holes, scale) for polygon in tissue.contours]
    pairs = sorted(zip(outers, holes, strict=True), key=lambda pair: cv2.contourArea(pair[0]), reverse=True)
    for index in range(len(pairs)):
        cv2.drawContours(mask, [outer for outer, _ in pairs], index, 1, -1)
        if pairs[index][1]:
            cv2.drawContours(mask, pairs[index][1], -1, 0, -1)
    return mask.astype(bool)


def vis_heatmap(
    slide: Any,
    tissue: Any,
    scores: np.ndarray,
    coords: np.ndarray,
    *,
    vis_level: int,
    patch_size: int,
    cmap: str,
    alpha: float,
    blur: bool,
    overlap: float,
    convert_to_percentiles: bool,
) -> Image.Image:
    """wsi_core/WholeSlideImage.py visHeatmap (via vis_utils/heatmap_utils.py drawHeatmap), no ROI,
    no binarising: scores (as percentile ranks if asked) / 100 summed patch by patch into a float
    canvas of the whole level with a hit counter, averaged, optionally blurred; the whole level
    read; each patch's block coloured through the matplotlib colour map and copied onto tissue
    pixels; optionally blurred; then blended with the slide re-read in 1024-pixel blocks."""
    import matplotlib.pyplot as plt
    from scipy.stats import rankdata

    if vis_level < 0:
        vis_level = slide.get_best_level_for_downsample(32)
    sx, sy = slide.level_scale_xy(vis_level)
    scale = (1.0 / sx, 1.0 / sy)
    width, height = slide.level_dimensions[vis_level]
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if convert_to_percentiles:
        scores = rankdata(scores, "average") / len(scores) * 100
    scores = scores / 100
    patch = np.ceil(np.array([patch_size, patch_size]) * np.array(scale)).astype(int)
    corners = np.ceil(np.asarray(coords) * np.array(scale)).astype(int)
    overlay = np.zeros((height, width), dtype=float)
    counter = np.zeros((height, width), dtype=np.uint16)
    for index in range(len(corners)):
        x, y = corners[index]
        score = scores[index] if scores[index] >= 0.0 else 0.0
        overlay[y : y + patch[1], x : x + patch[0]] += score
        counter[y : y + patch[1], x : x + patch[0]] += 1
    hit = counter != 0
    overlay[hit] = overlay[hit] / counter[hit]
    del counter
    kernel = tuple(int(k) for k in (patch * (1 - overlap)).astype(int) * 2 + 1)
    if blur:
        overlay = cv2.GaussianBlur(overlay, kernel, 0)
    mask = tissue_mask(tissue, (width, height), scale)
    image = np.array(rgb_region(slide, (0, 0), vis_level, (width, height)))
    colour_map = plt.get_cmap(cmap)
    for index in range(len(corners)):
        if scores[index] < 0.0:
            continue
        x, y = corners[index]
        window = (slice(y, y + patch[1]), slice(x, x + patch[0]))
        block = image[window].copy()
        coloured = (colour_map(overlay[window]) * 255)[:, :, :3].astype(np.uint8)
        inside = mask[window]
        block[inside] = coloured[inside]
        image[window] = block.copy()
    del overlay
    if blur:
        image = cv2.GaussianBlur(image, kernel, 0)
    if alpha < 1.0:
        image = block_blending(slide, image, vis_level, alpha)
    return Image.fromarray(image)


def block_blending(
    slide: Any, image: np.ndarray, vis_level: int, alpha: float, block: int = 1024
) -> np.ndarray:
    """wsi_core/WholeSlideImage.py block_blending: for each 1024² block of the canvas, read the slide
    there again and cv2.addWeighted the coloured block over it."""
    downsample = [int(value) for value in slide.level_scale_xy(vis_level)]
    height, width = image.shape[:2]
    bw, bh = min(block, width), min(block, height)
    full_w, full_h = slide.level_dimensions[0]
    for x0 in range(0, full_w, bw * downsample[0]):
        for y0 in range(0, full_h, bh * downsample[1]):
            xi, yi = x0 // downsample[0], y0 // downsample[1]
            xe, ye = min(width, xi + bw), min(height, yi + bh)
            if xe == xi or ye == yi:
                continue
            canvas = np.array(rgb_region(slide, (x0, y0), vis_level, (xe - xi, ye - yi)))
            image[yi:ye, xi:xe] = cv2.addWeighted(image[yi:ye, xi:xe], alpha, canvas, 1 - alpha, 0, canvas)
    return image
