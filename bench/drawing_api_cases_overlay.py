"""The cases of `drawing_api_sweep.py` for `attnmap.overlay` (the image readers and the map) and
`attnmap.save_grid`; expectations from numpy / matplotlib / PIL, not attnmap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from drawing_api_cases_render import GRID, HOT, RNG, a_file, block_argmax, decode_jet
from drawing_api_sweep import Case, refuse


def image_cases() -> list[Case]:
    """overlay(image, map, alpha=0) is the image itself: the image readers checked by what they drew."""
    from PIL import Image

    from attnmap import overlay

    rgb = RNG.integers(0, 256, (28, 20, 3), dtype=np.uint8)
    grey = rgb[..., 0]

    def shows(expected: np.ndarray, tolerance: int = 1):
        def check(result: object) -> str | None:
            got = np.asarray(result)
            if got.shape != expected.shape or got.dtype != np.uint8:
                return f"shape {got.shape} {got.dtype}, expected {expected.shape} uint8"
            diff = int(np.abs(got.astype(int) - expected.astype(int)).max())
            return None if diff <= tolerance else f"image drawn {diff} levels off"

        return check

    def draw(image: object):
        return lambda _: overlay(image, GRID, alpha=0.0)

    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    wide = (grey.astype(np.uint16) << 8) | 0x80
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    normed = torch.tensor(((rgb / 255.0 - mean) / std).transpose(2, 0, 1), dtype=torch.float32)
    grey3 = np.repeat(grey[..., None], 3, -1)
    return [
        Case("overlay image", "PIL RGB", draw(Image.fromarray(rgb)), shows(rgb)),
        Case("overlay image", "PIL RGBA", draw(Image.fromarray(rgb).convert("RGBA")), shows(rgb)),
        Case("overlay image", "PIL L", draw(Image.fromarray(grey)), shows(grey3)),
        Case("overlay image", "PIL P (palette)", draw(palette), shows(np.asarray(palette.convert("RGB")))),
        Case("overlay image", "PIL I;16", draw(Image.fromarray(wide)), shows(grey3)),
        Case("overlay image", "numpy uint16 HWC", draw(np.repeat(wide[..., None], 3, -1)), shows(grey3)),
        Case("overlay image", "uint8 HWC", draw(rgb), shows(rgb)),
        Case("overlay image", "int64 HWC 0..255", draw(rgb.astype(np.int64)), shows(rgb)),
        Case("overlay image", "float HWC [0, 1]", draw(rgb / 255.0), shows(rgb)),
        Case(
            "overlay image", "float HWC [0, 255]", draw(rgb.astype(np.float64)), shows(rgb), ("ok", "error")
        ),
        Case(
            "overlay image",
            "CHW tensor [0, 1]",
            draw(torch.tensor(rgb.transpose(2, 0, 1) / 255.0)),
            shows(rgb),
        ),
        Case(
            "overlay image",
            "CHW tensor requires_grad",
            draw(torch.tensor(rgb.transpose(2, 0, 1) / 255.0, requires_grad=True)),
            shows(rgb),
        ),
        Case(
            "overlay image",
            "CHW bfloat16 tensor",
            draw(torch.tensor(rgb.transpose(2, 0, 1) / 255.0).bfloat16()),
            shows(rgb, 2),
        ),
        Case("overlay image", "ImageNet-normalised tensor", draw(normed), refuse, ("error",)),
        Case(
            "overlay image",
            "(1, 3, H, W) batch of one",
            draw(torch.tensor(rgb.transpose(2, 0, 1) / 255.0)[None]),
            shows(rgb),
            ("ok", "error"),
        ),
        Case("overlay image", "(2, 3, H, W) batch", draw(torch.zeros(2, 3, 28, 20)), refuse, ("error",)),
        Case("overlay image", "grey (H, W) float", draw(grey / 255.0), shows(grey3)),
        Case("overlay image", "empty image", draw(np.zeros((0, 4, 3), np.uint8)), refuse, ("error",)),
    ]


def overlay_cases() -> list[Case]:
    from attnmap import overlay

    image = np.full((70, 50, 3), 200, np.uint8)

    def hot_where_planted(grid=(7, 5), hot=HOT):
        def check(result: object) -> str | None:
            got = np.asarray(result)
            if got.shape != image.shape:
                return f"shape {got.shape}"
            found = block_argmax(decode_jet(got), grid)
            return None if found == hot else f"hottest block {found}, planted {hot}"

        return check

    def heat(value: object, **options):
        return lambda _: overlay(image, value, alpha=1.0, **options)

    tg = torch.tensor(GRID, dtype=torch.float32)
    nan_grid = GRID.copy()
    nan_grid[0, 0] = np.nan

    def nan_not_max(result: object) -> str | None:
        values = decode_jet(np.asarray(result))
        corner = values[:10, :10].mean()
        return "NaN drawn as the maximum" if corner > 0.9 else hot_where_planted()(result)

    signed = GRID - 0.6  # LRP-like: mostly negative, one positive patch
    return [
        Case("overlay map", "numpy (h, w) grid", heat(GRID), hot_where_planted()),
        Case("overlay map", "(1, h, w)", heat(GRID[None]), hot_where_planted()),
        Case("overlay map", "(1, 1, h, w)", heat(GRID[None, None]), hot_where_planted(), ("ok", "error")),
        Case("overlay map", "(B, h, w) B=2", heat(np.stack([GRID, GRID])), refuse, ("error",)),
        Case("overlay map", "torch requires_grad", heat(tg.clone().requires_grad_()), hot_where_planted()),
        Case(
            "overlay map", "torch non-contiguous", heat(torch.tensor(GRID.T.copy()).t()), hot_where_planted()
        ),
        Case("overlay map", "torch float16", heat(tg.half()), hot_where_planted()),
        Case("overlay map", "torch bfloat16", heat(tg.bfloat16()), hot_where_planted()),
        Case("overlay map", "numpy int", heat((GRID * 100).astype(np.int32)), hot_where_planted()),
        Case("overlay map", "numpy bool", heat(GRID > 0.9), hot_where_planted(), ("ok", "error")),
        Case("overlay map", "map at image size", heat(np.kron(GRID, np.ones((10, 10)))), hot_where_planted()),
        Case(
            "overlay map",
            "1x1 map",
            heat(np.ones((1, 1))),
            lambda r: None if np.asarray(r).shape == image.shape else "shape",
        ),
        Case("overlay map", "NaN entry", heat(nan_grid), nan_not_max, ("error", "ok")),
        Case(
            "overlay map",
            "NaN entry, normalize none",
            heat(nan_grid / 1.0, normalize_mode="none"),
            nan_not_max,
            ("error", "ok"),
        ),
        Case(
            "overlay map",
            "inf entry",
            heat(np.where(GRID == 1.0, np.inf, GRID)),
            hot_where_planted(),
            ("error", "ok"),
        ),
        Case("overlay map", "signed (LRP) map", heat(signed), hot_where_planted()),
        Case(
            "overlay map",
            "constant map",
            heat(np.full((7, 5), 2.0)),
            lambda r: None if decode_jet(np.asarray(r)).max() < 0.05 else "a constant map drawn hot",
        ),
        Case(
            "overlay map",
            "style add",
            heat(GRID, style="add"),
            lambda r: None if np.asarray(r).dtype == np.uint8 else "dtype",
        ),
        Case("overlay map", "unknown colour map", heat(GRID, cmap="jett"), refuse, ("error",)),
        Case("overlay map", "unknown opencv map", heat(GRID, cmap="opencv:nope"), refuse, ("error",)),
        Case("overlay map", "alpha 1.5", lambda _: overlay(image, GRID, alpha=1.5), refuse, ("error",)),
        Case("overlay map", "alpha -0.1", lambda _: overlay(image, GRID, alpha=-0.1), refuse, ("error",)),
        Case(
            "overlay map", "alpha NaN", lambda _: overlay(image, GRID, alpha=float("nan")), refuse, ("error",)
        ),
        Case("overlay map", "unknown style", heat(GRID, style="multiply"), refuse, ("error",)),
    ]


def grid_cases() -> list[Case]:
    from PIL import Image

    from attnmap import save_grid

    panel = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)

    def written(result: object) -> str | None:
        path = Path(result)
        if not path.is_file():
            return f"{path} not written"
        with Image.open(path) as image:
            image.load()
        return None

    palette = Image.fromarray(panel).convert("P")
    return [
        Case(
            "save_grid",
            "two panels, folder missing",
            lambda f: save_grid([panel, panel], ["a", "b"], f / "new" / "deeper" / "g.png"),
            written,
        ),
        Case("save_grid", "path is a folder", lambda f: save_grid([panel], None, f), refuse, ("error",)),
        Case("save_grid", "no suffix", lambda f: save_grid([panel], None, f / "grid"), refuse, ("error",)),
        Case(
            "save_grid",
            "parent is a file",
            lambda f: save_grid([panel], None, a_file(f / "x") / "g.png"),
            refuse,
            ("error",),
        ),
        Case(
            "save_grid",
            "titles mismatch",
            lambda f: save_grid([panel], ["a", "b"], f / "g.png"),
            refuse,
            ("error",),
        ),
        Case("save_grid", "no images", lambda f: save_grid([], None, f / "g.png"), refuse, ("error",)),
        Case(
            "save_grid",
            "CHW tensors, PIL, float",
            lambda f: save_grid(
                [torch.tensor(panel.transpose(2, 0, 1) / 255.0), Image.fromarray(panel), panel / 255.0],
                None,
                f / "g.png",
            ),
            written,
        ),
        Case("save_grid", "PIL P panel", lambda f: save_grid([palette], None, f / "g.png"), written),
        Case(
            "save_grid",
            "ncols 0",
            lambda f: save_grid([panel], None, f / "g.png", ncols=0),
            refuse,
            ("error",),
        ),
        Case(
            "save_grid", "odd file name", lambda f: save_grid([panel], ["ä"], f / "grid #1 (ä).png"), written
        ),
    ]
