"""More cases of `drawing_api_sweep.py`: a two-level slide (vis levels, reduced TIFF pages), the
drawing options (roi, blur, binarize), windows of `HeatmapRenderer`, and odd shapes and sizes
that reach the render helpers."""

from __future__ import annotations

import numpy as np
import torch
from drawing_api_cases_render import GRID, HOT, block_argmax, close_to, decode_jet
from drawing_api_cases_wsi import COLS, COORDS, HOT_RC, ROWS, SCORES, H, P, W, slide, slide_pixels, style
from drawing_api_sweep import Case, refuse


def pyramid():
    """The sweep's slide with a second level at half size (a `Slide` subclass, as users write)."""
    import cv2

    from attnmap.wsi import Slide

    class TwoLevels(Slide):
        def __init__(self) -> None:
            self.path = "<two levels>"
            self.levels = [
                slide_pixels(),
                cv2.resize(slide_pixels(), (W // 2, H // 2), interpolation=cv2.INTER_AREA),
            ]
            self.level_dimensions = ((W, H), (W // 2, H // 2))
            self.level_downsamples = (1.0, 2.0)
            self.mpp = 0.5

        def _read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
            return self.levels[level][y : y + height, x : x + width]

    return TwoLevels()


def hot_cell(rows: int, cols: int, rc: tuple[int, int] = HOT_RC):
    def check(result: object) -> str | None:
        found = block_argmax(decode_jet(np.asarray(result)), (rows, cols))
        return None if found == rc else f"hottest patch {found}, planted {rc}"

    return check


def heatmap_option_cases() -> list[Case]:
    from attnmap.wsi import HeatmapRenderer, render_heatmap, write_heatmap_tiff

    def draw(s=None, coords=COORDS, scores=SCORES, patch_size=P, **options):
        return lambda _: render_heatmap(
            s or pyramid(), coords, scores, style(**options), patch_size=patch_size
        )

    def roi_check(result: object) -> str | None:
        image = np.asarray(result)  # roi (96, 64)..(288, 192): the hot patch (224, 128) at (128, 64) in it
        if image.shape != (128, 192, 3):
            return f"shape {image.shape}"
        found = block_argmax(decode_jet(image), (4, 6))
        return None if found == (2, 4) else f"hottest patch {found} in the roi, planted (2, 4)"

    def binarized(result: object) -> str | None:
        image = np.asarray(result)
        r, c = HOT_RC
        inside = decode_jet(image[r * P : (r + 1) * P, c * P : (c + 1) * P]).min()
        drawn = (image != 255).any(-1)  # the blank canvas shows where nothing was drawn
        alone = drawn.sum() == P * P
        return None if inside > 0.99 and alone else "top patch not drawn alone in the top colour"

    def blurred(_):  # colours blur into the canvas: the averaged, blurred values are what to judge
        flat = np.where(SCORES == 1.0, 1.0, 0.1)  # random neighbours could outweigh one patch once blurred
        renderer = HeatmapRenderer(pyramid(), COORDS, flat, style(blur=True), patch_size=P)
        return renderer.layers(0, 0, *renderer.size).overlay

    def values_hot(result: object) -> str | None:
        found = block_argmax(np.asarray(result), (ROWS, COLS))
        return None if found == HOT_RC else f"hottest patch {found}, planted {HOT_RC}"

    def reduced_page(_):
        renderer = HeatmapRenderer(pyramid(), COORDS, SCORES, style(), patch_size=P, downsample=4.0)
        return renderer.render_window(0, 0, *renderer.size)

    def pages(folder):
        import tifffile

        path = write_heatmap_tiff(
            folder / "h.tif", pyramid(), COORDS, SCORES, style(), patch_size=P, tile=64, progress=False
        )
        with tifffile.TiffFile(path) as tif:
            return [page.shape for page in tif.pages]

    nan_coords = COORDS.astype(float)
    nan_coords[3, 0] = np.nan
    one_px = np.full((1, 1, 3), 200, np.uint8)
    return [
        Case("render_heatmap", "vis level 1 of two", draw(vis_level=1), hot_cell(ROWS, COLS)),
        Case("render_heatmap", "vis level -1 (best for 32)", draw(vis_level=-1), hot_cell(ROWS, COLS)),
        Case(
            "render_heatmap",
            "patch below a pixel at level 1",
            draw(vis_level=1, patch_size=1),
            refuse,
            ("error",),
        ),
        Case("render_heatmap", "roi", draw(vis_level=0, roi=((96, 64), (288, 192))), roi_check),
        Case("render_heatmap", "blur", blurred, values_hot),
        Case(
            "render_heatmap", "binarize at 0.99", draw(vis_level=0, binarize=True, threshold=0.99), binarized
        ),
        Case("render_heatmap", "NaN coordinate", draw(coords=nan_coords), refuse, ("error",)),
        Case(
            "render_heatmap",
            "1 px slide, 1 px patch",
            draw(slide(one_px), COORDS[:1] * 0, SCORES[:1], 1),
            lambda r: None if np.asarray(r).shape == (1, 1, 3) else f"shape {np.asarray(r).shape}",
        ),
        Case(
            "HeatmapRenderer",
            "reduced page (downsample 4)",
            reduced_page,
            lambda r: None if np.asarray(r).shape == (H // 4, W // 4, 3) else f"shape {np.asarray(r).shape}",
        ),
        Case(
            "write_heatmap_tiff",
            "two-level slide pages",
            pages,
            lambda shapes: None if shapes[0] == (H, W, 3) and (H // 2, W // 2, 3) in shapes else f"{shapes}",
        ),
    ]


def shape_cases() -> list[Case]:
    from attnmap import normalize, overlay, save_grid, upsample
    from attnmap.render import apply_colormap
    from attnmap.render.scale import ScoreScale

    x = GRID.copy()

    def written(path: object) -> str | None:
        from PIL import Image

        with Image.open(path) as image:
            return None if image.size[0] > 10 else "tiny figure"

    image = np.full((70, 50, 3), 200, np.uint8)
    grey_alpha = np.dstack([image[..., 0], np.full((70, 50), 255, np.uint8)])
    return [
        Case(
            "upsample",
            "size numpy int64 pair",
            lambda _: upsample(x, (np.int64(14), np.int64(10))),
            lambda r: None if r.shape == (14, 10) else f"shape {r.shape}",
        ),
        Case(
            "upsample",
            "size torch.Size",
            lambda _: upsample(x, torch.Size([14, 10])),
            lambda r: None if r.shape == (14, 10) else f"shape {r.shape}",
        ),
        Case("upsample", "size bool", lambda _: upsample(x, True), refuse, ("error",)),
        Case(
            "normalize",
            "signed, int map",
            lambda _: normalize(np.array([-2, 0, 1]), "signed"),
            close_to(np.array([0.0, 0.5, 0.75])),
        ),
        Case(
            "normalize",
            "percentile, bfloat16 tensor",
            lambda _: normalize(torch.tensor(x).bfloat16(), "percentile"),
            lambda r: None if r.dtype == torch.bfloat16 and float(r.max()) == 1.0 else "not ranks",
        ),
        Case(
            "overlay image",
            "grey + alpha (H, W, 2)",
            lambda _: overlay(grey_alpha, x, alpha=0.0),
            lambda r: None if np.abs(np.asarray(r).astype(int) - 200).max() <= 1 else "grey not drawn",
        ),
        Case(
            "overlay map",
            "signed map, signed mode, coolwarm",
            lambda _: overlay(image, x - 0.6, cmap="coolwarm", alpha=1.0, normalize_mode="signed"),
            lambda r: (
                None if np.asarray(r)[45, 15, 0] > np.asarray(r)[45, 15, 2] else "positive patch not red"
            ),
        ),
        Case(
            "apply_colormap",
            "empty values",
            lambda _: apply_colormap(np.zeros(0), "jet"),
            lambda r: None if np.asarray(r).shape == (0, 3) else f"shape {np.asarray(r).shape}",
        ),
        Case(
            "save_grid",
            "colour bars in score units",
            lambda f: save_grid(
                [image, image], ["a", "b"], f / "g.png", scales=[ScoreScale("minmax", 0.0, 1.0, "jet"), None]
            ),
            written,
            ("ok", "error"),
        ),
        Case(
            "overlay map",
            "hot patch at image corner",
            lambda _: overlay(image, np.pad([[1.0]], ((0, 6), (0, 4))), alpha=1.0),
            hot_cell(7, 5, (0, 0)),
        ),
        Case(
            "overlay map",
            "planted (4, 1), bicubic-sized image",
            lambda _: overlay(np.full((71, 53, 3), 9, np.uint8), x, alpha=1.0),
            hot_cell(7, 5, HOT),
        ),
    ]


def more_cases() -> list[Case]:
    return [*heatmap_option_cases(), *shape_cases()]
