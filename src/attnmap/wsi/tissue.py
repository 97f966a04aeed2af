"""Tissue segmentation: saturation threshold → contours with holes, at level 0 (CLAM's rule).

Why CLAM's rule exactly: users compare our patches and heatmaps with what CLAM gave them, and the
tissue contours decide which patches exist at all. The steps (spec "Tissue segmentation"): HSV
saturation, median blur, binary or Otsu threshold, optional closing, two-level contour hierarchy,
area filters in units of a 512² level-0 patch, holes capped by count and area. A colourless
(greyscale) slide, whose saturation is flat, is thresholded on darkness instead
(`attnmap.wsi.tissue_channel`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from attnmap.errors import InputError
from attnmap.wsi.parameters import DEFAULTS, MAX_KERNEL, PRESETS
from attnmap.wsi.setting_names import setting
from attnmap.wsi.slide import Slide
from attnmap.wsi.tissue_channel import channel_image, check_channel, resolve_channel

REFERENCE_PATCH_SIZE = 512
CLIP_MARGIN = 4
MAX_SEGMENTATION_PIXELS = 1 << 30
"""The largest level segmented when the caller names it (read whole: 7 GiB through OpenSlide's RGBA
and the RGB copy, more while thresholding); a larger one named is refused, as its level 0 of 100k px
a side would need tens of GiB, which ends in the kernel killing the process rather than in an error."""
MAX_WHOLE_PIXELS = 1 << 27
"""The largest level read whole when segment_tissue chooses it (about 7 bytes a pixel while read:
under a GiB). A larger one (a slide without a pyramid) is read block by block, shrunk by a whole
factor to about `SEGMENTATION_DOWNSAMPLE` (`segmentation_factor`): the overview CLAM segments on a
pyramidal copy of the same slide, for the memory of that overview and one block."""
SEGMENTATION_DOWNSAMPLE = 64
"""The downsample tissue is found at unless the caller names a level (CLAM's choice)."""
MIN_OVERVIEW_SIDE = 512
"""The shorter side a shrunk overview keeps at least: a 200k × 2k strip at downsample 64 would be
31 px tall, every piece of tissue on it a few pixels, which the median blur and area filter drop."""

PYRAMID_HINT = "convert it to a tiled pyramidal TIFF (e.g. vips tiffsave SLIDE OUT.tif --tile --pyramid)"


@dataclass
class TissuePolygon:
    """One tissue region: the outer boundary and its holes, level-0 (x, y) int32 points (N, 2)."""

    outer: np.ndarray
    holes: list[np.ndarray] = field(default_factory=list)


@dataclass
class Tissue:
    """Tissue contours found on a slide, plus the slide geometry needed to rasterise them anywhere."""

    contours: list[TissuePolygon]
    level_dimensions: tuple[tuple[int, int], ...]
    level_scales: tuple[tuple[float, float], ...]
    seg_level: int
    parameters: dict[str, float | int | bool]

    def mask(self, level: int = 0) -> np.ndarray:
        """Boolean tissue mask at ``level`` (holes removed), the size of that level."""
        if not 0 <= level < len(self.level_dimensions):
            raise InputError(
                f"level {level} does not exist: the slide has {len(self.level_dimensions)} level(s)"
            )
        scale_x, scale_y = self.level_scales[level]
        width, height = self.level_dimensions[level]
        return rasterize_tissue(self.contours, (1.0 / scale_x, 1.0 / scale_y), (0, 0), (width, height),
                                bounds=(0, 0, width, height))

    @property
    def seg_factor(self) -> int:
        """The whole factor the segmentation level was shrunk by before thresholding (1: read as is)."""
        return int(self.parameters.get("seg_factor", 1))

    def seg_mask(self) -> np.ndarray:
        """Boolean tissue mask the size of the image thresholded: the segmentation level, shrunk by
        `seg_factor` (a level-sized mask of a slide without a pyramid would be gigabytes)."""
        from attnmap.wsi.reduced import reduced_size

        scale_x, scale_y = self.level_scales[self.seg_level]
        width, height = reduced_size(self.level_dimensions[self.seg_level], self.seg_factor)
        scale = (1.0 / (scale_x * self.seg_factor), 1.0 / (scale_y * self.seg_factor))
        return rasterize_tissue(self.contours, scale, (0, 0), (width, height), bounds=(0, 0, width, height))

    def fraction(self, level: int | None = None) -> float:
        """Share of the slide covered by tissue (measured on the image thresholded by default)."""
        return float((self.seg_mask() if level is None else self.mask(level)).mean())


def scale_points(points: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Multiply (x, y) points by a per-axis scale and truncate to int32, as CLAM rescales contours."""
    return np.array(np.asarray(points) * np.asarray(scale, dtype=np.float64), dtype=np.int32)


class ScaledTissue:
    """Tissue polygons scaled once to a canvas (sorted by area, with bounding boxes) for windowed fills.

    Polygons are filled in descending area order and each one's holes cleared right after it
    (CLAM's order), so a window of a large mask equals the same window rasterised alone: this is
    what lets heatmap tiles be rendered independently. OpenCV's fill clips edges at the image
    border slightly differently from an unclipped fill, so a window is rasterised with a margin,
    except where it meets ``bounds`` (x0, y0, x1, y1), the full canvas whose border the reference
    rasterisation clipped at.
    """

    def __init__(self, contours: list[TissuePolygon], scale: tuple[float, float]) -> None:
        scaled = [
            (scale_points(polygon.outer, scale).reshape(-1, 1, 2),
             [scale_points(h, scale).reshape(-1, 1, 2) for h in polygon.holes])
            for polygon in contours
        ]
        scaled.sort(key=lambda item: cv2.contourArea(item[0]), reverse=True)
        self.polygons = [(outer, holes, cv2.boundingRect(outer)) for outer, holes in scaled]

    def window(
        self, origin: tuple[int, int], size: tuple[int, int], bounds: tuple[int, int, int, int] | None = None
    ) -> np.ndarray:
        """Boolean mask of the (width, height) window at ``origin`` (scaled pixels)."""
        width, height = int(size[0]), int(size[1])
        x0, y0 = int(origin[0]), int(origin[1])
        if bounds is not None and width > 0 and height > 0:
            left = min(CLIP_MARGIN, max(0, x0 - bounds[0]))
            top = min(CLIP_MARGIN, max(0, y0 - bounds[1]))
            right = min(CLIP_MARGIN, max(0, bounds[2] - x0 - width))
            bottom = min(CLIP_MARGIN, max(0, bounds[3] - y0 - height))
            padded = self.window((x0 - left, y0 - top), (width + left + right, height + top + bottom))
            return padded[top : top + height, left : left + width]
        mask = np.zeros((height, width), dtype=np.uint8)
        offset = (-x0, -y0)
        for outer, holes, (x, y, w, h) in self.polygons:
            if x + w <= x0 or y + h <= y0 or x >= x0 + width or y >= y0 + height or not width or not height:
                continue
            cv2.drawContours(mask, [outer], -1, 1, thickness=-1, offset=offset)
            if holes:
                cv2.drawContours(mask, holes, -1, 0, thickness=-1, offset=offset)
        return mask.astype(bool)


def rasterize_tissue(
    contours: list[TissuePolygon],
    scale: tuple[float, float],
    origin: tuple[int, int],
    size: tuple[int, int],
    bounds: tuple[int, int, int, int] | None = None,
) -> np.ndarray:
    """Fill tissue polygons scaled by ``scale`` into a (height, width) window at ``origin``.

    See `ScaledTissue` for the fill order and the ``bounds`` margin rule; build one of those
    instead when rasterising many windows of the same canvas.
    """
    return ScaledTissue(contours, scale).window(origin, size, bounds)


def resolve_parameters(preset: str | None, given: dict[str, float | int | bool | None]) -> dict:
    """The segmentation parameters: ``given`` (None: unset) over the preset's over `DEFAULTS`.

    A value given explicitly that disagrees with the preset is an `InputError`: a silent win for
    either would segment differently from what the user wrote.
    """
    chosen = {key: value for key, value in given.items() if value is not None}
    if "channel" in chosen:
        check_channel(chosen["channel"])
    negative = [f"{key}={value!r}" for key, value in chosen.items()
                if key != "use_otsu" and isinstance(value, (int, float)) and value < 0]
    if negative:  # a negative area keeps every speck, a negative threshold finds nothing: never meant
        raise InputError(f"segmentation parameters must not be negative, got {', '.join(negative)}")
    if chosen.get("use_otsu") and "sthresh" in chosen:  # as threshold without binarize: never dropped
        raise InputError(
            f"segmentation sthresh={chosen['sthresh']!r} acts only without use_otsu (Otsu's threshold "
            "replaces it): drop sthresh, or turn use_otsu off"
        )
    if preset is None:
        return {**DEFAULTS, **chosen}
    if preset not in PRESETS:
        raise InputError(f"unknown segmentation preset {preset!r}; choose one of {sorted(PRESETS)}")
    conflicts = [f"{key}={value!r} (preset: {PRESETS[preset][key]!r})" for key, value in chosen.items()
                 if key in PRESETS[preset] and value != PRESETS[preset][key]]
    if conflicts:
        raise InputError(f"segmentation preset {preset!r} disagrees with the value(s) given: "
                         f"{', '.join(conflicts)}; drop the preset or those values")
    return {**DEFAULTS, **PRESETS[preset], **chosen}


def threshold_channel(
    rgb: np.ndarray, sthresh: int, mthresh: int, close: int, use_otsu: bool, channel: str = "saturation"
) -> np.ndarray:
    """Binary tissue image (uint8 0/255) from an RGB image: its median-blurred ``channel``
    (`attnmap.wsi.tissue_channel.channel_image`), thresholded."""
    if mthresh < 1 or mthresh % 2 == 0 or mthresh > MAX_KERNEL:
        raise InputError(
            f"mthresh (median blur kernel) must be an odd positive integer up to {MAX_KERNEL}, got {mthresh}"
        )
    if not 0 <= close <= MAX_KERNEL:
        raise InputError(f"close (closing kernel) must be between 0 and {MAX_KERNEL}, got {close}")
    blurred = channel_image(rgb, channel, int(mthresh))
    flags = cv2.THRESH_BINARY + (cv2.THRESH_OTSU if use_otsu else 0)
    _, binary = cv2.threshold(blurred, 0 if use_otsu else int(sthresh), 255, flags)
    if close > 0:
        binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, np.ones((int(close), int(close)), np.uint8))
    return binary


def filter_contours(
    binary: np.ndarray, min_tissue_area: float, min_hole_area: float, max_n_holes: int
) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """Outer contours with their kept holes, at the binary image's resolution.

    Tissue is kept when its area minus its holes' area exceeds ``min_tissue_area``; of its holes
    the ``max_n_holes`` largest are considered and those larger than ``min_hole_area`` kept.
    """
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if hierarchy is None:
        return []
    parents = hierarchy[0][:, 3]
    kept: list[tuple[np.ndarray, list[np.ndarray]]] = []
    for index in np.flatnonzero(parents == -1):
        holes = [contours[h] for h in np.flatnonzero(parents == index)]
        area = cv2.contourArea(contours[index]) - float(np.sum([cv2.contourArea(h) for h in holes]))
        if area == 0 or not min_tissue_area < area:
            continue
        largest = sorted(holes, key=cv2.contourArea, reverse=True)[:max_n_holes]
        kept.append((contours[index], [h for h in largest if cv2.contourArea(h) > min_hole_area]))
    return kept


def check_segmentation_size(slide: Slide, level: int | None) -> None:
    """`InputError` when a named ``level`` is too large to read whole (`MAX_SEGMENTATION_PIXELS`),
    naming a coarser level of the slide or, when it has none, leaving the level to segment_tissue,
    which shrinks a level it chooses as it reads (``level`` None: never refused)."""
    if level is None:
        return
    width, height = slide.level_dimensions[level]
    if width * height <= MAX_SEGMENTATION_PIXELS:
        return
    key = setting("segmentation.level")
    coarser = list(range(level + 1, slide.level_count))
    hint = (f"set {key} to a coarser one ({', '.join(map(str, coarser))})" if coarser
            else f"leave {key} unset: the level is then read shrunk, block by block")
    raise InputError(
        f"{key}: level {level} of {slide.path} is {width}×{height} px, more than the "
        f"{MAX_SEGMENTATION_PIXELS} read whole to find tissue; {hint}"
    )


def chosen_segmentation(slide: Slide) -> tuple[int, int]:
    """(level, whole shrink factor) segment_tissue reads when the caller names no level: the best
    level for `SEGMENTATION_DOWNSAMPLE`, shrunk by `segmentation_factor` (1: read whole)."""
    level = slide.get_best_level_for_downsample(SEGMENTATION_DOWNSAMPLE)
    return level, segmentation_factor(slide, level)


def segmentation_factor(slide: Slide, level: int) -> int:
    """The whole factor segment_tissue shrinks its chosen ``level`` by: 1 up to `MAX_WHOLE_PIXELS`,
    else the one that brings the level to about `SEGMENTATION_DOWNSAMPLE`, but keeping the
    overview's shorter side at `MIN_OVERVIEW_SIDE` at least (doubled while the overview would
    still exceed `MAX_WHOLE_PIXELS`)."""
    width, height = slide.level_dimensions[level]
    if width * height <= MAX_WHOLE_PIXELS:
        return 1
    toward = int(SEGMENTATION_DOWNSAMPLE // float(slide.level_downsamples[level]))
    factor = max(2, min(toward, min(width, height) // MIN_OVERVIEW_SIDE))
    while math.ceil(width / factor) * math.ceil(height / factor) > MAX_WHOLE_PIXELS:
        factor *= 2
    return factor


def segment_tissue(
    slide: Slide,
    level: int | None = None,
    sthresh: int | None = None,
    mthresh: int | None = None,
    close: int | None = None,
    use_otsu: bool | None = None,
    a_t: float | None = None,
    a_h: float | None = None,
    max_n_holes: int | None = None,
    preset: str | None = None,
    progress: bool = True,
    channel: str | None = None,
) -> Tissue:
    """Find tissue on ``slide`` at ``level`` (default: best level for downsample 64, as CLAM).

    ``channel`` is the image thresholded by ``sthresh``: "saturation" (CLAM's) or "darkness" (below
    the glass, for greyscale scans); unset, saturation, or darkness with a one-line warning on a
    colourless slide (`attnmap.wsi.tissue_channel`).
    ``a_t`` / ``a_h`` are minimum tissue / hole areas in units of a 512×512 level-0 patch;
    Unset parameters (None) come from ``preset`` ("tcga", "bwh_biopsy", "bwh_resection": CLAM's
    presets) or else `DEFAULTS`; a given value that disagrees with the preset is an `InputError`.
    Returns level-0 polygons; the whole segmentation level is read once (it is small by choice),
    except a chosen level over `MAX_WHOLE_PIXELS` (a slide without a pyramid), read block by block
    and shrunk to about downsample 64 (`segmentation_factor`; ``progress``: a bar over its blocks).
    """
    params = resolve_parameters(
        preset,
        {"channel": channel, "sthresh": sthresh, "mthresh": mthresh, "close": close, "use_otsu": use_otsu,
         "a_t": a_t, "a_h": a_h, "max_n_holes": max_n_holes},
    )
    if level is None:
        seg_level, factor = chosen_segmentation(slide)
    else:  # a level named is read whole
        seg_level, factor = slide.check_level(level, setting("segmentation.level")), 1
        check_segmentation_size(slide, seg_level)
    scale_x, scale_y = (scale * factor for scale in slide.level_scale_xy(seg_level))
    if factor == 1:
        rgb = slide.read_region((0, 0), seg_level, slide.level_dimensions[seg_level])
    else:
        from attnmap.wsi.reduced import read_reduced

        rgb = read_reduced(slide, seg_level, factor, progress)
    params["channel"] = resolve_channel(rgb, channel, str(getattr(slide, "path", "the slide")))
    binary = threshold_channel(rgb, int(params["sthresh"]), int(params["mthresh"]), int(params["close"]),
                               bool(params["use_otsu"]), str(params["channel"]))
    unit_area = int(REFERENCE_PATCH_SIZE**2 / (scale_x * scale_y))
    found = filter_contours(binary, params["a_t"] * unit_area, params["a_h"] * unit_area,
                            int(params["max_n_holes"]))
    to_level0 = (scale_x, scale_y)
    polygons = [
        TissuePolygon(scale_points(outer, to_level0).reshape(-1, 2),
                      [scale_points(h, to_level0).reshape(-1, 2) for h in holes])
        for outer, holes in found
    ]
    level_scales = tuple(slide.level_scale_xy(i) for i in range(slide.level_count))
    parameters = {**params, "seg_level": seg_level, **({"seg_factor": factor} if factor > 1 else {})}
    return Tissue(polygons, slide.level_dimensions, level_scales, seg_level, parameters)
