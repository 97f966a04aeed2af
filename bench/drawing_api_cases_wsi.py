"""The cases of `drawing_api_sweep.py` for `attnmap.wsi`'s drawing and file API, on a small
`ArraySlide` with a pink tissue blob and a 32-px patch grid; a hot patch is planted in the scores
and must come out hottest where it was planted (decoded from jet colours at alpha 1)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from drawing_api_cases_render import block_argmax, decode_jet, jet_lut
from drawing_api_sweep import Case, refuse

W, H, P = 320, 224, 32
COLS, ROWS = W // P, H // P
HOT_RC = (4, 7)  # (row, col) of the planted patch
RNG = np.random.default_rng(1)


def slide_pixels() -> np.ndarray:
    image = np.full((H, W, 3), 240, np.uint8)
    yy, xx = np.mgrid[0:H, 0:W]
    blob = ((xx - 150) / 110.0) ** 2 + ((yy - 110) / 80.0) ** 2 < 1
    image[blob] = (200, 110, 170)
    return image


def grid_coords() -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(0, W, P), np.arange(0, H, P), indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], 1).astype(np.int64)


COORDS = grid_coords()
SCORES = RNG.uniform(0, 0.5, len(COORDS))
HOT = int(np.flatnonzero((COORDS[:, 0] == HOT_RC[1] * P) & (COORDS[:, 1] == HOT_RC[0] * P))[0])
SCORES[HOT] = 1.0


def slide(image: np.ndarray | None = None, **kwargs):
    from attnmap.wsi import ArraySlide

    return ArraySlide(slide_pixels() if image is None else image, **kwargs)


def style(**kwargs):
    from attnmap.wsi import HeatmapStyle

    return HeatmapStyle(**{"vis_level": 0, "alpha": 1.0, "blank_canvas": True, **kwargs})


def a_file(path: Path) -> Path:
    path.write_text("x")
    return path


def hot_at(rc: tuple[int, int] = HOT_RC, size: tuple[int, int] = (H, W)):
    def check(result: object) -> str | None:
        image = np.asarray(result)
        if image.shape != (*size, 3):
            return f"shape {image.shape}, expected {(*size, 3)}"
        found = block_argmax(decode_jet(image), (size[0] // P, size[1] // P))
        return None if found == rc else f"hottest patch {found}, planted {rc}"

    return check


def render(coords=COORDS, scores=SCORES, **options):
    from attnmap.wsi import render_heatmap

    drawing = style(**options.pop("style", {}))
    return lambda _: render_heatmap(
        slide(), coords, scores, drawing, patch_size=options.pop("patch_size", P), **options
    )


def heatmap_cases() -> list[Case]:
    from scipy.stats import rankdata

    from attnmap.wsi import HeatmapRenderer, HeatmapStyle

    swapped = SCORES.copy()
    swapped[[HOT, 0]] = swapped[[0, HOT]]
    duplicate = np.r_[COORDS, COORDS[HOT : HOT + 1]]
    duplicate_scores = np.r_[SCORES, 0.0]
    ranks = rankdata(duplicate_scores) / len(duplicate_scores)
    want_dup = (ranks[HOT] + ranks[-1]) / 2  # CLAM averages overlapping patches

    def averaged(result: object) -> str | None:
        r, c = HOT_RC
        value = float(np.median(decode_jet(np.asarray(result)[r * P : (r + 1) * P, c * P : (c + 1) * P])))
        return (
            None if abs(value - want_dup) < 2.5 / 255 else f"duplicate drawn {value:.3f}, mean {want_dup:.3f}"
        )

    def single(result: object) -> str | None:
        image = np.asarray(result)
        top = jet_lut()[-1]
        inside = (image[P : 2 * P, P : 2 * P] == top).all()
        outside = (image[3 * P :, 3 * P :] == 255).all()
        return None if inside and outside else "the one patch not drawn in the top colour alone"

    def whole(result: object) -> str | None:
        return (
            None
            if (np.asarray(result) == jet_lut()[-1]).all()
            else "a patch covering the slide not drawn whole"
        )

    def unchanged(result: object) -> str | None:
        return None if (np.asarray(result) == 255).all() else "colour drawn without patches"

    tissue_holder: dict = {}

    def with_tissue(_):
        from attnmap.wsi import render_heatmap, segment_tissue

        s = slide()
        tissue_holder["tissue"] = segment_tissue(s, 0, a_t=0.01)
        return render_heatmap(
            s, COORDS, SCORES, style(blank_canvas=False), patch_size=P, tissue=tissue_holder["tissue"]
        )

    def glass_kept(result: object) -> str | None:
        image, pixels = np.asarray(result), slide_pixels()
        glass = (pixels == 240).all(-1)
        glass[:8], glass[-8:], glass[:, :8], glass[:, -8:] = False, False, False, False
        changed = (image[glass] != pixels[glass]).any(-1).mean()
        return None if changed < 0.02 else f"{changed:.0%} of glass coloured"

    def window(_):
        renderer = HeatmapRenderer(slide(), COORDS, SCORES, style(), patch_size=P)
        return renderer.render_window(0, 0, W, H)

    tensor_scores = torch.tensor(SCORES, dtype=torch.float32, requires_grad=True)
    return [
        Case("render_heatmap", "planted hot patch", render(), hot_at()),
        Case("render_heatmap", "hot patch moved to (0, 0)", render(scores=swapped), hot_at((0, 0))),
        Case(
            "render_heatmap",
            "scores float32 (N, 1)",
            render(scores=SCORES.astype(np.float32)[:, None]),
            hot_at(),
        ),
        Case("render_heatmap", "scores torch requires_grad", render(scores=tensor_scores), hot_at()),
        Case(
            "render_heatmap",
            "coords torch int32",
            render(coords=torch.tensor(COORDS, dtype=torch.int32)),
            hot_at(),
        ),
        Case("render_heatmap", "scores a list", render(scores=SCORES.tolist()), hot_at()),
        Case("render_heatmap", "signed (LRP) scores", render(scores=SCORES - 0.7), hot_at()),
        Case(
            "render_heatmap",
            "NaN score",
            render(scores=np.where(np.arange(len(SCORES)) == 3, np.nan, SCORES)),
            refuse,
            ("error",),
        ),
        Case(
            "render_heatmap",
            "+inf at the hot patch",
            render(scores=np.where(SCORES == 1, np.inf, SCORES)),
            hot_at(),
            ("ok", "error"),
        ),
        Case("render_heatmap", "fewer scores than coords", render(scores=SCORES[:-1]), refuse, ("error",)),
        Case(
            "render_heatmap", "more scores than coords", render(scores=np.r_[SCORES, 0.1]), refuse, ("error",)
        ),
        Case(
            "render_heatmap", "coords outside the slide", render(coords=COORDS + [W, 0]), refuse, ("error",)
        ),
        Case("render_heatmap", "negative coords", render(coords=COORDS - [P, 0]), refuse, ("error",)),
        Case(
            "render_heatmap", "coords (N, 3)", render(coords=np.c_[COORDS, COORDS[:, :1]]), refuse, ("error",)
        ),
        Case(
            "render_heatmap",
            "duplicate coords averaged",
            render(coords=duplicate, scores=duplicate_scores),
            averaged,
        ),
        Case("render_heatmap", "float coords (whole numbers)", render(coords=COORDS.astype(float)), hot_at()),
        Case("render_heatmap", "patch_size 0", render(patch_size=0), refuse, ("error",)),
        Case("render_heatmap", "patch_size -32", render(patch_size=-32), refuse, ("error",)),
        Case(
            "render_heatmap",
            "patch larger than the slide",
            render(COORDS[:1], SCORES[:1], patch_size=4 * W),
            whole,
        ),
        Case(
            "render_heatmap", "vis level the slide lacks", render(style={"vis_level": 3}), refuse, ("error",)
        ),
        Case(
            "render_heatmap",
            "empty score set",
            render(np.zeros((0, 2), np.int64), np.zeros(0)),
            unchanged,
            ("ok", "error"),
        ),
        Case("render_heatmap", "single patch", render(COORDS[1:2] * 0 + P, SCORES[:1]), single),
        Case("render_heatmap", "tissue mask", with_tissue, glass_kept),
        Case("render_heatmap", "max_pixels below canvas", render(max_pixels=100), refuse, ("error",)),
        Case(
            "render_heatmap",
            "downscale past one pixel",
            render(style={"downscale": 1000.0}),
            refuse,
            ("error",),
        ),
        Case(
            "render_heatmap",
            "reference scores with NaN",
            render(reference_scores=np.array([0.1, np.nan])),
            refuse,
            ("error",),
        ),
        Case(
            "render_heatmap",
            "percentiles off, raw scores",
            render(scores=SCORES * 100, style={"percentiles": False}),
            hot_at(),
        ),
        Case("HeatmapRenderer", "render_window", window, hot_at()),
        Case("HeatmapStyle", "alpha 1.5", lambda _: HeatmapStyle(alpha=1.5), refuse, ("error",)),
        Case(
            "HeatmapStyle",
            "alpha numpy float32",
            lambda _: HeatmapStyle(alpha=np.float32(0.5)),
            lambda s: None if s.alpha == 0.5 else "alpha changed",
            ("ok", "error"),
        ),
        Case("HeatmapStyle", "unknown colour map", lambda _: HeatmapStyle(cmap="jett"), refuse, ("error",)),
        Case("HeatmapStyle", "vis_level -2", lambda _: HeatmapStyle(vis_level=-2), refuse, ("error",)),
        Case(
            "HeatmapStyle",
            "threshold without binarize",
            lambda _: HeatmapStyle(threshold=0.5),
            refuse,
            ("error",),
        ),
        Case(
            "HeatmapStyle",
            "roi reversed",
            lambda _: HeatmapStyle(roi=((50, 50), (10, 10))),
            refuse,
            ("error",),
        ),
        Case(
            "HeatmapStyle",
            "canvas colour 300",
            lambda _: HeatmapStyle(canvas_color=(300, 0, 0)),
            refuse,
            ("error",),
        ),
        Case("HeatmapStyle", "downscale 0.5", lambda _: HeatmapStyle(downscale=0.5), refuse, ("error",)),
    ]


def tiff_cases() -> list[Case]:
    import tifffile

    from attnmap.wsi import write_heatmap_tiff, write_pyramid_tiff

    def page0_hot(path: object) -> str | None:
        with tifffile.TiffFile(path) as tif:
            return hot_at()(tif.pages[0].asarray())

    def tiff(target, s=None, **options):
        return lambda f: write_heatmap_tiff(
            target(f), s or slide(), COORDS, SCORES, style(), patch_size=P, progress=False, **options
        )

    def tiles(width: int, height: int, tile: int):
        def make():
            for _ in range(-(-height // tile) * -(-width // tile)):
                yield np.full((tile, tile, 3), 90, np.uint8)

        return make

    def grey(path: object) -> str | None:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0].asarray()
        return (
            None if page.shape == (100, 70, 3) and abs(int(page.mean()) - 90) <= 2 else f"page {page.shape}"
        )

    return [
        Case("write_heatmap_tiff", "page 0 hot where planted", tiff(lambda f: f / "h.tif"), page0_hot),
        Case(
            "write_heatmap_tiff",
            "folder missing",
            tiff(lambda f: f / "new" / "h.tif"),
            page0_hot,
            ("ok", "error"),
        ),
        Case("write_heatmap_tiff", "path is a folder", tiff(lambda f: f), refuse, ("error",)),
        Case("write_heatmap_tiff", "odd name", tiff(lambda f: f / "slide #1 (ä) heat.tiff"), page0_hot),
        Case(
            "write_heatmap_tiff",
            "tile 100 (not x16)",
            tiff(lambda f: f / "h.tif", tile=100),
            page0_hot,
            ("ok", "error"),
        ),
        Case("write_heatmap_tiff", "quality 0", tiff(lambda f: f / "h.tif", quality=0), refuse, ("error",)),
        Case(
            "write_heatmap_tiff",
            "NaN score",
            lambda f: write_heatmap_tiff(
                f / "h.tif",
                slide(),
                COORDS,
                np.where(SCORES == 1, np.nan, SCORES),
                style(),
                patch_size=P,
                progress=False,
            ),
            refuse,
            ("error",),
        ),
        Case(
            "write_pyramid_tiff",
            "one page of tiles",
            lambda f: write_pyramid_tiff(f / "p.tif", [((70, 100), tiles(70, 100, 64))], tile=64),
            grey,
        ),
        Case(
            "write_pyramid_tiff",
            "no pages",
            lambda f: write_pyramid_tiff(f / "p.tif", []),
            refuse,
            ("error",),
        ),
        Case(
            "write_pyramid_tiff",
            "path is a folder",
            lambda f: write_pyramid_tiff(f, [((70, 100), tiles(70, 100, 64))], tile=64),
            refuse,
            ("error",),
        ),
        Case(
            "write_pyramid_tiff",
            "mpp negative",
            lambda f: write_pyramid_tiff(f / "p.tif", [((70, 100), tiles(70, 100, 64))], mpp=-0.5, tile=64),
            refuse,
            ("error",),
        ),
    ]


def wsi_cases(_: Path) -> list[Case]:
    from drawing_api_cases_files import features_cases, scores_io_cases
    from drawing_api_cases_slides import percentile_cases, slide_cases

    return [
        *slide_cases(),
        *heatmap_cases(),
        *tiff_cases(),
        *percentile_cases(),
        *scores_io_cases(),
        *features_cases(),
    ]
