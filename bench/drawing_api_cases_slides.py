"""The cases of `drawing_api_sweep.py` for `ArraySlide`, `segment_tissue`, `patch_grid`,
`heatmap_center_shift` and the percentile helpers, on the sweep's small slide."""

from __future__ import annotations

import numpy as np
import torch
from drawing_api_cases_wsi import COLS, ROWS, P, slide, slide_pixels
from drawing_api_sweep import Case, refuse


def percentile_cases() -> list[Case]:
    from scipy.stats import percentileofscore

    from attnmap.wsi import percentiles_against, to_percentiles

    def equals(expected):
        return lambda r: (
            None if np.allclose(np.asarray(r, float), expected, equal_nan=True) else f"got {np.asarray(r)}"
        )

    def nan_not_max(result: object) -> str | None:
        got = np.asarray(result, float)
        return "NaN ranked as the top percentile" if not np.isfinite(got[1]) or got[1] >= got.max() else None

    return [
        Case(
            "to_percentiles",
            "three scores",
            lambda _: to_percentiles([3.0, 1.0, 2.0]),
            equals([100, 100 / 3, 200 / 3]),
        ),
        Case("to_percentiles", "ties", lambda _: to_percentiles([1.0, 1.0]), equals([75.0, 75.0])),
        Case(
            "to_percentiles",
            "NaN score",
            lambda _: to_percentiles([1.0, np.nan, 2.0]),
            nan_not_max,
            ("error",),
        ),
        Case(
            "to_percentiles",
            "torch requires_grad",
            lambda _: to_percentiles(torch.tensor([3.0, 1.0], requires_grad=True)),
            equals([100.0, 50.0]),
        ),
        Case("to_percentiles", "empty", lambda _: to_percentiles([]), equals(np.zeros(0)), ("ok", "error")),
        Case(
            "percentiles_against",
            "within reference",
            lambda _: percentiles_against([2.0, 0.5], [1.0, 2.0, 2.0, 3.0]),
            equals([percentileofscore([1.0, 2.0, 2.0, 3.0], v, "rank") for v in (2.0, 0.5)]),
        ),
        Case(
            "percentiles_against",
            "NaN score",
            lambda _: percentiles_against([1.0, np.nan], [1.0, 2.0]),
            nan_not_max,
            ("error",),
        ),
        Case(
            "percentiles_against",
            "empty reference",
            lambda _: percentiles_against([1.0], []),
            refuse,
            ("error",),
        ),
    ]


def slide_cases() -> list[Case]:
    from PIL import Image

    from attnmap.wsi import ArraySlide, heatmap_center_shift, patch_grid, segment_tissue

    rgb = slide_pixels()

    def reads(expected: np.ndarray):
        def check(result: object) -> str | None:
            got = result.read_region((0, 0), 0, (expected.shape[1], expected.shape[0]))
            return None if np.array_equal(got, expected) else "pixels read back differ"

        return check

    grey3 = np.repeat(rgb[..., :1], 3, -1)
    palette = Image.fromarray(rgb).convert("P")

    def blob_found(tissue) -> str | None:
        mask = tissue.mask(0)
        return None if mask[110, 150] and not mask[5, 5] else "blob not found as tissue"

    def count(n: int):
        return lambda r: None if len(r) == n else f"{len(r)} patches, expected {n}"

    def on_blob(coords) -> str | None:
        coords = np.asarray(coords)
        covers_centre = (
            (coords[:, 0] <= 150)
            & (coords[:, 0] + P > 150)
            & (coords[:, 1] <= 110)
            & (coords[:, 1] + P > 110)
        ).any()
        far = (coords[:, 0] + P < 40) | (coords[:, 0] > 260) | (coords[:, 1] + P < 30) | (coords[:, 1] > 190)
        ok = covers_centre and not far.any()
        return None if ok else "grid misses the blob or covers glass"

    def tissue_grid(_):
        s = slide()
        return patch_grid(s, segment_tissue(s, 0, a_t=0.01), P, P, progress=False)

    return [
        Case("ArraySlide", "RGB uint8", lambda _: ArraySlide(rgb), reads(rgb)),
        Case(
            "ArraySlide",
            "RGBA",
            lambda _: ArraySlide(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])),
            reads(rgb),
        ),
        Case("ArraySlide", "grey (H, W)", lambda _: ArraySlide(rgb[..., 0]), reads(grey3)),
        Case("ArraySlide", "grey (H, W, 1)", lambda _: ArraySlide(rgb[..., :1]), reads(grey3)),
        Case("ArraySlide", "16-bit RGB", lambda _: ArraySlide(rgb.astype(np.uint16) * 257), reads(rgb)),
        Case("ArraySlide", "float [0, 1]", lambda _: ArraySlide(rgb / 255.0), reads(rgb), ("error", "ok")),
        Case(
            "ArraySlide",
            "float [0, 255]",
            lambda _: ArraySlide(rgb.astype(np.float32)),
            reads(rgb),
            ("error", "ok"),
        ),
        Case(
            "ArraySlide",
            "CHW array",
            lambda _: ArraySlide(rgb.transpose(2, 0, 1).copy()),
            reads(rgb),
            ("error", "ok"),
        ),
        Case(
            "ArraySlide",
            "PIL P image",
            lambda _: ArraySlide(palette),
            reads(np.asarray(palette.convert("RGB"))),
            ("ok", "error"),
        ),
        Case("ArraySlide", "non-contiguous view", lambda _: ArraySlide(rgb[::2, ::2]), reads(rgb[::2, ::2])),
        Case(
            "ArraySlide", "zero-size", lambda _: ArraySlide(np.zeros((0, 5, 3), np.uint8)), refuse, ("error",)
        ),
        Case("ArraySlide", "1 px", lambda _: ArraySlide(rgb[:1, :1]), reads(rgb[:1, :1])),
        Case("ArraySlide", "mpp negative", lambda _: ArraySlide(rgb, mpp=-0.25), refuse, ("error",)),
        Case("ArraySlide", "mpp NaN", lambda _: ArraySlide(rgb, mpp=float("nan")), refuse, ("error",)),
        Case("segment_tissue", "pink blob", lambda _: segment_tissue(slide(), 0, a_t=0.01), blob_found),
        Case(
            "segment_tissue",
            "all glass",
            lambda _: segment_tissue(slide(np.full((64, 64, 3), 240, np.uint8)), 0),
            lambda t: None if not t.contours else "tissue found on glass",
        ),
        Case(
            "segment_tissue",
            "1 px slide",
            lambda _: segment_tissue(slide(rgb[:1, :1]), 0),
            lambda t: None,
            ("ok", "error"),
        ),
        Case(
            "segment_tissue",
            "level the slide lacks",
            lambda _: segment_tissue(slide(), 2),
            refuse,
            ("error",),
        ),
        Case(
            "patch_grid",
            "whole slide, padding",
            lambda _: patch_grid(slide(), None, P, P, progress=False),
            count(COLS * ROWS),
        ),
        Case(
            "patch_grid",
            "whole slide, no padding, 100 px",
            lambda _: patch_grid(slide(), None, 100, 100, padding=False, progress=False),
            count(3 * 2),
        ),
        Case("patch_grid", "on tissue", tissue_grid, on_blob),
        Case("patch_grid", "patch_size 0", lambda _: patch_grid(slide(), None, 0, P), refuse, ("error",)),
        Case("patch_grid", "step 0", lambda _: patch_grid(slide(), None, P, 0), refuse, ("error",)),
        Case(
            "patch_grid",
            "patch larger than the slide, no padding",
            lambda _: patch_grid(slide(), None, 1000, 1000, padding=False, progress=False),
            count(0),
            ("ok", "error"),
        ),
        Case(
            "patch_grid",
            "level the slide lacks",
            lambda _: patch_grid(slide(), None, P, P, level=1),
            refuse,
            ("error",),
        ),
        Case(
            "patch_grid",
            "float patch_size 31.5",
            lambda _: patch_grid(slide(), None, 31.5, 31.5, progress=False),
            refuse,
            ("error",),
        ),
        Case(
            "patch_grid",
            "unknown contour_check",
            lambda _: patch_grid(slide(), None, P, P, contour_check="x"),
            refuse,
            ("error",),
        ),
        Case(
            "heatmap_center_shift",
            "overlap 0 / 0.5 / 0.95",
            lambda _: [heatmap_center_shift(v) for v in (0.0, 0.5, 0.95)],
            lambda r: None if r == [0.375, 0.5, 0.625] else f"got {r}",
        ),
        Case(
            "heatmap_center_shift", "overlap -0.5", lambda _: heatmap_center_shift(-0.5), refuse, ("error",)
        ),
        Case("heatmap_center_shift", "overlap 1.5", lambda _: heatmap_center_shift(1.5), refuse, ("error",)),
        Case(
            "heatmap_center_shift",
            "overlap NaN",
            lambda _: heatmap_center_shift(float("nan")),
            refuse,
            ("error",),
        ),
    ]
