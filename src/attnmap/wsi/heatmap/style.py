"""`HeatmapStyle`: how a slide heatmap is drawn, in one frozen value.

Why one object: the same drawing options (CLAM's visHeatmap arguments) are taken by
`render_heatmap`, `HeatmapRenderer`, `write_heatmap_tiff`, the `wsi run` configuration and the
``attnmap wsi heatmap`` command. Declared once here, with their defaults, ranges and help text,
the others take a ``style`` and the configuration and the CLI options are built from these fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar

from annotated_types import Ge, Interval

from attnmap.validation import STRICT, Check, check_fields

Byte = Annotated[int, Interval(ge=0, le=255)]
Point = tuple[int, int]


def check_colormap(name: str) -> str:
    """``name`` if it is a matplotlib colour map or an OpenCV one (``opencv:jet``); else `InputError`."""
    from attnmap.render.colormap import get_cmap

    get_cmap(name)  # raises for a name it does not know, matplotlib or OpenCV
    return name


@dataclass(frozen=True)
class HeatmapStyle:
    """The drawing options of a slide heatmap (CLAM's visHeatmap), checked when built.

    Scores become percentiles / 100 (or raw / 100), patches are averaged where they overlap,
    coloured with ``cmap`` on tissue and blended with ``alpha`` over the slide.
    """

    __pydantic_config__: ClassVar[dict] = STRICT

    vis_level: Annotated[int, Ge(-1)] = field(
        default=-1, metadata={"help": "Slide level to draw at (-1: best level for downsample 32)."}
    )
    cmap: Annotated[str, Check(check_colormap)] = field(
        default="jet", metadata={"help": "Matplotlib colour map, or opencv:NAME."}
    )
    alpha: Annotated[float, Interval(ge=0, le=1)] = field(
        default=0.4, metadata={"help": "Opacity of the colours over the slide."}
    )
    percentiles: bool = field(
        default=True,
        metadata={"help": "Scale clam: colour by percentile rank of the scores (off: raw score / 100); "
                  "the robust and minmax scales ignore it.", "off": "raw"},
    )
    blur: bool = field(default=False, metadata={"help": "Gaussian blur of the overlay (kernel: 2 patches)."})
    binarize: bool = field(
        default=False, metadata={"help": "Draw patches at or above --threshold in the top colour only."}
    )
    threshold: float | None = field(
        default=None,
        metadata={"help": "With --binarize: the value a patch needs, on the drawn scale: percentile / 100 "
                  "(0..1) with scale clam and percentiles, raw score / 100 (may exceed 1) with them off, "
                  "0..1 on the robust and minmax scales (unset or < 0: 1 / number of patches)."},
    )
    blank_canvas: bool = field(
        default=False, metadata={"help": "Draw on the canvas colour instead of the slide."}
    )
    canvas_color: tuple[Byte, Byte, Byte] = field(
        default=(255, 255, 255), metadata={"help": "RGB of the blank canvas.", "metavar": "R G B"}
    )
    use_tissue_mask: bool = field(
        default=True, metadata={"help": "Colour tissue pixels only (when a tissue segmentation is given)."}
    )
    overlap: Annotated[float, Interval(ge=0, lt=1)] = field(
        default=0.0, metadata={"help": "Overlap of the scores' patch grid (sets the blur kernel)."}
    )
    roi: tuple[Point, Point] | None = field(
        default=None,
        metadata={"help": "Level-0 region to draw: top-left, bottom-right corner.", "metavar": "X0 Y0 X1 Y1"},
    )
    downscale: Annotated[float, Ge(1)] = field(
        default=1.0, metadata={"help": "Shrink the finished image by this factor (bicubic)."}
    )

    def __post_init__(self) -> None:
        from attnmap.errors import InputError

        check_fields(self)
        roi = self.roi
        if roi is not None and (roi[1][0] <= roi[0][0] or roi[1][1] <= roi[0][1]):
            raise InputError(f"roi must be ((x0, y0), (x1, y1)) with x1 > x0 and y1 > y0, got {roi}")
        if not self.binarize and self.threshold is not None and self.threshold >= 0:
            # CLAM ignores it then; a user who set it expects a cut-off, so never drop it silently
            raise InputError(
                f"threshold {self.threshold:g} acts only with binarize (patches at or above it drawn in the "
                "top colour): turn binarize on, or leave threshold unset"
            )
