"""The named values the slide functions accept: segmentation defaults and presets, the kernel bound,
tissue channels, patch contour checks and encoder precisions.

Why a module of their own: the `wsi run` configuration's types and the command line's options are
built from these tables, and ``attnmap wsi run --help`` must not import what the functions using
them need (OpenCV, NumPy, torch: seconds). It imports nothing; `attnmap.wsi.tissue`,
`attnmap.wsi.tissue_channel`, `attnmap.wsi.patching` and `attnmap.wsi.features` use (and export)
the values defined here.
"""

from __future__ import annotations

# The largest median-blur (mthresh) and closing (close) kernel, in pixels of the segmentation level.
# Why a bound: OpenCV's median blur asserts on some larger kernels, and a closing kernel of 10⁹ px
# asked for an exabyte array, both after the slide was opened; 255 px at the usual downsample 64
# already spans 16k level-0 pixels.
MAX_KERNEL = 255

DEFAULTS: dict[str, float | int | bool] = {
    "sthresh": 8, "mthresh": 7, "close": 4, "use_otsu": False, "a_t": 100, "a_h": 16, "max_n_holes": 8,
}
"""CLAM's segmentation parameters, used for any a preset or the caller leaves unset. The channel
is not among them: unset, it depends on the slide (saturation, or darkness on a colourless one:
`attnmap.wsi.tissue_channel.resolve_channel`)."""

PRESETS: dict[str, dict[str, float | int | bool]] = {
    "tcga": {"sthresh": 8, "mthresh": 7, "close": 4, "a_t": 16, "a_h": 4, "max_n_holes": 8},
    "bwh_biopsy": {"sthresh": 15, "mthresh": 11, "close": 2, "a_t": 1, "a_h": 1, "max_n_holes": 2},
    "bwh_resection": {"sthresh": 15, "mthresh": 11, "close": 4, "a_t": 100, "a_h": 16, "max_n_holes": 8},
}

CHANNELS = ("saturation", "darkness")
"""The channels ``segment_tissue(channel=...)`` accepts; "saturation" is CLAM's and the default."""

CONTOUR_CHECKS = ("four_pt", "four_pt_hard", "center", "basic")
"""The contour checks ``patch_grid(contour_check=...)`` accepts (CLAM's)."""

PRECISION_NAMES = ("float32", "bfloat16", "float16")
"""The encoder's compute precisions by torch dtype name (`attnmap.wsi.features.PRECISIONS`)."""
