"""The cases of `drawing_api_sweep.py` for `attnmap.render`: normalize, upsample, overlay, save_grid,
apply_colormap. Every expectation is computed here with numpy / matplotlib / PIL, not attnmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from drawing_api_sweep import Case, refuse

RNG = np.random.default_rng(0)
GRID = RNG.uniform(0.0, 0.5, (7, 5))  # a non-square patch grid, hot patch planted at (4, 1)
HOT = (4, 1)
GRID[HOT] = 1.0


def jet_lut() -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps["jet"](np.arange(256) / 255.0)[:, :3] * 255).astype(np.uint8)


def decode_jet(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel value in [0, 1] of an image drawn with jet at alpha 1 (nearest table colour)."""
    lut = jet_lut().astype(np.int32)
    flat = np.asarray(rgb, np.int32).reshape(-1, 3)
    index = np.argmin(((flat[:, None, :] - lut[None]) ** 2).sum(-1), axis=1)
    return (index / 255.0).reshape(rgb.shape[:2])


def block_argmax(values: np.ndarray, grid: tuple[int, int]) -> tuple[int, int]:
    """The grid cell whose block of ``values`` has the largest mean."""
    rows, cols = grid
    h, w = values.shape[-2:]
    means = np.array(
        [
            [
                np.nanmean(values[r * h // rows : (r + 1) * h // rows, c * w // cols : (c + 1) * w // cols])
                for c in range(cols)
            ]
            for r in range(rows)
        ]
    )
    return tuple(int(v) for v in np.unravel_index(np.nanargmax(means), means.shape))


def a_file(path: Path) -> Path:
    path.write_text("x")
    return path


def as_np(value: object) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    return np.asarray(value)


def minmax_expected(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    span = x.max() - x.min()
    return np.zeros_like(x) if span == 0 else (x - x.min()) / span


def close_to(expected: np.ndarray, tolerance: float = 1e-6, kind: type | None = None):
    def check(result: object) -> str | None:
        if kind is not None and not isinstance(result, kind):
            return f"returned {type(result).__name__}, not {kind.__name__}"
        got = as_np(result).astype(np.float64)
        if got.shape != expected.shape:
            return f"shape {got.shape}, expected {expected.shape}"
        error = float(np.nanmax(np.abs(got - expected))) if got.size else 0.0
        if not np.array_equal(np.isnan(got), np.isnan(expected)) or error > tolerance:
            return f"values differ by {error:.3g}"
        return None

    return check


def normalize_cases() -> list[Case]:
    from attnmap import normalize

    x = GRID.copy()
    t = torch.tensor(x, dtype=torch.float32, requires_grad=True)
    wide = torch.tensor(np.ascontiguousarray(x.T)).t()  # non-contiguous view of x
    signed = np.array([[-3.0, 0.0], [1.0, 0.5]])
    cases = [
        Case(
            "normalize",
            "numpy float64 (H, W)",
            lambda _: normalize(x),
            close_to(minmax_expected(x), kind=np.ndarray),
        ),
        Case(
            "normalize",
            "torch requires_grad",
            lambda _: normalize(t),
            close_to(minmax_expected(x), 1e-6, torch.Tensor),
        ),
        Case(
            "normalize", "torch non-contiguous", lambda _: normalize(wide), close_to(minmax_expected(x), 1e-6)
        ),
        Case(
            "normalize",
            "torch float16",
            lambda _: normalize(torch.tensor(x).half()),
            close_to(minmax_expected(x), 2e-3),
        ),
        Case(
            "normalize",
            "torch bfloat16",
            lambda _: normalize(torch.tensor(x).bfloat16()),
            close_to(minmax_expected(x), 2e-2),
        ),
        Case(
            "normalize",
            "numpy int",
            lambda _: normalize(np.arange(6).reshape(2, 3)),
            close_to(np.arange(6).reshape(2, 3) / 5.0),
        ),
        Case("normalize", "numpy bool", lambda _: normalize(np.eye(3, dtype=bool)), refuse, ("error", "ok")),
        Case(
            "normalize",
            "(B, h, w) batch",
            lambda _: normalize(np.stack([x, 2 * x])),
            close_to(minmax_expected(np.stack([x, 2 * x]))),
        ),
        Case("normalize", "1x1 map", lambda _: normalize(np.ones((1, 1))), close_to(np.zeros((1, 1)))),
        Case(
            "normalize", "constant map", lambda _: normalize(np.full((3, 3), 7.0)), close_to(np.zeros((3, 3)))
        ),
        Case("normalize", "NaN entry", lambda _: normalize(np.array([[1.0, np.nan]])), refuse, ("error",)),
        Case("normalize", "+inf entry", lambda _: normalize(np.array([[1.0, np.inf]])), refuse, ("error",)),
        Case(
            "normalize",
            "-inf entry torch",
            lambda _: normalize(torch.tensor([[1.0, -np.inf]])),
            refuse,
            ("error",),
        ),
        Case("normalize", "all negative", lambda _: normalize(-x), close_to(minmax_expected(-x))),
        Case(
            "normalize",
            "percentile with ties",
            lambda _: normalize(np.array([1.0, 1.0, 3.0]), "percentile"),
            close_to(np.array([1.5, 1.5, 3.0]) / 3),
        ),
        Case("normalize", "unknown mode", lambda _: normalize(x, "zscore"), refuse, ("error",)),
        Case("normalize", "empty map", lambda _: normalize(np.zeros((0, 3))), close_to(np.zeros((0, 3)))),
    ]

    def signed_minmax_documented(result: object) -> str | None:
        problem = close_to(minmax_expected(signed))(result)
        if problem:
            return problem
        doc = (normalize.__doc__ or "").lower()
        if "signed" not in doc:
            return (
                "zero of a signed map lands at -min/(max-min) (a mid colour) and the docstring says nothing"
            )
        return None

    def signed_mode(result: object) -> str | None:
        got = as_np(result)
        want = signed / (2 * np.abs(signed).max()) + 0.5  # zero at 0.5, the largest |x| at 0 or 1
        return close_to(want)(got)

    cases += [
        Case("normalize", "signed relevance, minmax", lambda _: normalize(signed), signed_minmax_documented),
        Case(
            "normalize",
            "signed relevance, zero-centred mode",
            lambda _: normalize(signed, "signed"),
            signed_mode,
        ),
    ]
    return cases


def upsample_cases() -> list[Case]:
    from attnmap import upsample

    def keeps_argmax(grid: tuple[int, int], hot: tuple[int, int], batch_index: int | None = None):
        def check(result: object) -> str | None:
            got = as_np(result).astype(np.float64)
            plane = got if batch_index is None else got.reshape(-1, *got.shape[-2:])[batch_index]
            while plane.ndim > 2:
                plane = plane[0]
            found = block_argmax(plane, grid)
            return None if found == hot else f"hottest block {found}, planted {hot}"

        return check

    x = GRID.copy()
    tx = torch.tensor(x)
    other = np.rot90(x, 2).copy()  # hot patch at (2, 3)
    big = np.zeros((64, 64))
    big[44:48, 12:16] = 1.0  # a hot spot between the point samples of a 16× shrink: cell (2, 0)
    return [
        Case("upsample", "numpy (H, W) x10", lambda _: upsample(x, (70, 50)), keeps_argmax((7, 5), HOT)),
        Case("upsample", "(1, H, W)", lambda _: upsample(x[None], (70, 50)), keeps_argmax((7, 5), HOT)),
        Case(
            "upsample",
            "(B, h, w) two maps, second",
            lambda _: upsample(np.stack([x, other]), (70, 50)),
            keeps_argmax((7, 5), (2, 3), 1),
        ),
        Case(
            "upsample",
            "(B, 1, h, w)",
            lambda _: upsample(np.stack([x, other])[:, None], (70, 50)),
            lambda r: (
                f"shape {tuple(r.shape)}"
                if tuple(r.shape) != (2, 1, 70, 50)
                else keeps_argmax((7, 5), (2, 3), 1)(r)
            ),
            ("ok", "error"),  # tests/test_render.py pins the refusal
        ),
        Case(
            "upsample",
            "torch requires_grad",
            lambda _: upsample(tx.clone().requires_grad_(), 35),
            keeps_argmax((7, 5), HOT),
        ),
        Case(
            "upsample",
            "torch non-contiguous",
            lambda _: upsample(torch.tensor(x.T.copy()).t(), (14, 10)),
            keeps_argmax((7, 5), HOT),
        ),
        Case("upsample", "torch float16", lambda _: upsample(tx.half(), (70, 50)), keeps_argmax((7, 5), HOT)),
        Case(
            "upsample",
            "torch bfloat16",
            lambda _: upsample(tx.bfloat16(), (70, 50)),
            keeps_argmax((7, 5), HOT),
        ),
        Case(
            "upsample",
            "bfloat16 bicubic",
            lambda _: upsample(tx.bfloat16(), (70, 50), "bicubic"),
            keeps_argmax((7, 5), HOT),
        ),
        Case(
            "upsample",
            "numpy int",
            lambda _: upsample((x * 100).astype(np.int64), (70, 50)),
            keeps_argmax((7, 5), HOT),
        ),
        Case(
            "upsample",
            "numpy bool",
            lambda _: upsample(x > 0.9, (70, 50)),
            keeps_argmax((7, 5), HOT),
            ("ok", "error"),
        ),
        Case(
            "upsample",
            "1x1 map",
            lambda _: upsample(np.full((1, 1), 3.0), (4, 6)),
            close_to(np.full((4, 6), 3.0)),
        ),
        Case(
            "upsample",
            "huge ratio 2x2 -> 2000x3000",
            lambda _: upsample(np.eye(2), (2000, 3000)),
            keeps_argmax((2, 2), (0, 0)),
        ),
        Case(
            "upsample",
            "shrink 64 -> 4 (hot spot)",
            lambda _: upsample(big, (4, 4)),
            keeps_argmax((4, 4), (2, 0)),
        ),
        Case(
            "upsample",
            "NaN entry",
            lambda _: upsample(np.array([[0.0, np.nan], [1.0, 0.0]]), 8),
            lambda r: (
                None
                if np.isnan(as_np(r)[0, 7]) and abs(as_np(r)[7, 0] - 1) < 1e-9
                else "NaN not kept where it was, or spread over finite cells"
            ),
            ("ok", "error"),
        ),
        Case("upsample", "size 0", lambda _: upsample(x, 0), refuse, ("error",)),
        Case("upsample", "size float", lambda _: upsample(x, (7.5, 5)), refuse, ("error",)),
        Case(
            "upsample",
            "(B, 3, h, w) colour",
            lambda _: upsample(np.zeros((2, 3, 7, 5)), 14),
            refuse,
            ("error",),
        ),
        Case("upsample", "unknown mode", lambda _: upsample(x, 14, "area"), refuse, ("error",)),
    ]


def colormap_cases() -> list[Case]:
    import matplotlib

    from attnmap.render import apply_colormap

    values = np.linspace(0, 1, 11)
    want = (matplotlib.colormaps["viridis"](values)[:, :3] * 255).astype(np.uint8)
    top = (np.asarray(matplotlib.colormaps["jet"](1.0)[:3]) * 255).astype(np.uint8)

    def nan_not_top(result: object) -> str | None:
        got = np.asarray(result)
        return "NaN drawn as the maximum colour" if (got[1] == top).all() else None

    def equals(expected: np.ndarray):
        return lambda r: None if np.array_equal(np.asarray(r), expected) else "colours differ"

    grad = torch.tensor(values, requires_grad=True)
    return [
        Case("apply_colormap", "viridis numpy", lambda _: apply_colormap(values, "viridis"), equals(want)),
        Case(
            "apply_colormap", "torch requires_grad", lambda _: apply_colormap(grad, "viridis"), equals(want)
        ),
        Case(
            "apply_colormap",
            "torch bfloat16",
            lambda _: apply_colormap(torch.tensor([0.0, 1.0]).bfloat16(), "viridis"),
            equals(want[[0, -1]]),
        ),
        Case(
            "apply_colormap",
            "outside [0, 1] clipped",
            lambda _: apply_colormap(np.array([-1.0, 2.0]), "viridis"),
            equals(want[[0, -1]]),
        ),
        Case(
            "apply_colormap",
            "NaN",
            lambda _: apply_colormap(np.array([0.5, np.nan]), "jet"),
            nan_not_top,
            ("error", "ok"),
        ),
        Case(
            "apply_colormap",
            "NaN opencv",
            lambda _: apply_colormap(np.array([0.5, np.nan]), "opencv:jet"),
            nan_not_top,
            ("error", "ok"),
        ),
        Case(
            "apply_colormap", "unknown name", lambda _: apply_colormap(values, "virdis"), refuse, ("error",)
        ),
        Case("apply_colormap", "not a name (int)", lambda _: apply_colormap(values, 3), refuse, ("error",)),
    ]


def render_cases() -> list[Case]:
    from drawing_api_cases_overlay import grid_cases, image_cases, overlay_cases

    return [
        *normalize_cases(),
        *upsample_cases(),
        *image_cases(),
        *overlay_cases(),
        *colormap_cases(),
        *grid_cases(),
    ]
