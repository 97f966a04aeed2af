"""Planted-answer geometry sweep: every slide output must land on the lesion's level-0 pixels.

A tiny pyramidal slide carries a blue lesion at known level-0 coordinates; the answer is planted in
the model, not in the expectation: a TorchScript patch encoder whose first feature detects the
lesion colour, and a CLAM head whose attention reads that feature alone. The pipeline then runs
with the geometry a user may choose (non-square slides, sizes off the patch grid, pyramids ÷2, ÷4,
÷3, patch level, step, overlap, vis and TIFF levels, ROI, blur, downscale) and each output (heatmap
PNG, pyramidal TIFF levels, top-patch crops, QuPath GeoJSON, the viewer's Deep Zoom tiles) must put
its mass and peak within one patch of the lesion.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

LESION_RGB = (40, 50, 190)


@dataclass(frozen=True)
class Case:
    """One slide geometry and the pipeline options run on it."""

    name: str
    size: tuple[int, int]  # level-0 width, height
    factor: int  # downsample between pyramid levels
    levels: int
    mpp: float
    tissue: tuple[tuple[int, int, int, int], ...]  # level-0 x0, y0, x1, y1 of each tissue piece
    lesion: tuple[int, int, int, int]  # level-0 x0, y0, x1, y1
    patch_size: int  # at the patch level
    patch_level: int = 0
    step: int | None = None
    vis_level: int = 1
    tiff_level: int = 0
    overlap: float = 0.0
    seg_level: int = 0
    padding: bool = True
    layout: str = "pages"  # pages: OpenSlide's page pyramid | subifd: tiffslide's | png: a plain image
    legend: bool = False  # title and colour bar around the heatmap PNG
    roi_pad: int | None = None  # heatmap.roi: the lesion's box grown by this many level-0 px (7 and 5 more)
    downscale: float = 1.0
    contour_check: str = "four_pt"

    def file(self) -> str:
        return f"{self.name}.png" if self.layout == "png" else f"{self.name}.tif"

    def roi(self) -> list[list[int]] | None:
        if self.roi_pad is None:
            return None
        x0, y0, x1, y1 = self.lesion
        width, height = self.size
        pad = self.roi_pad
        return [[max(0, x0 - pad - 7), max(0, y0 - pad - 5)], [min(width, x1 + pad), min(height, y1 + pad)]]

    def patch0(self) -> float:
        """The patch side in level-0 pixels (the tolerance of every check)."""
        return self.patch_size * self.factor**self.patch_level


CASES = [
    Case("nonsquare_div2", (720, 466), 2, 3, 0.5, ((80, 60, 640, 420),), (400, 230, 470, 290), 48,
         legend=True, roi_pad=100, downscale=1.5),
    Case("div4_corner_level1", (650, 410), 4, 3, 0.25, ((300, 150, 650, 410),), (590, 360, 650, 410), 16,
         patch_level=1, vis_level=1, tiff_level=1, legend=True),
    Case("div3_second_piece_step", (700, 515), 3, 3, 0.25,
         ((40, 40, 400, 470), (520, 300, 640, 420)), (548, 330, 608, 390), 12,
         patch_level=1, step=6, vis_level=1),
    Case("div2_overlap_border_left", (610, 390), 2, 3, 0.5, ((0, 40, 380, 360),), (0, 150, 50, 230), 40,
         overlap=0.5, vis_level=0),
    Case("div3_patch_level2_seg_level2", (1000, 731), 3, 3, 0.5, ((100, 90, 900, 650),), (610, 100, 680, 160),
         6, patch_level=2, seg_level=2, vis_level=2, tiff_level=1),
    Case("div4_top_left_no_padding", (530, 470), 4, 2, 0.25, ((0, 0, 300, 260),), (0, 0, 45, 50), 40,
         seg_level=1, padding=False, tiff_level=1, contour_check="four_pt_hard"),
    Case("subifd_div3_level1", (640, 500), 3, 3, 0.5, ((60, 50, 600, 450),), (300, 260, 370, 330), 16,
         patch_level=1, seg_level=1, vis_level=1, tiff_level=1, layout="subifd", overlap=0.25, legend=True,
         roi_pad=60, contour_check="center"),
    Case("plain_png_bottom_edge", (500, 333), 1, 1, 1.0, ((50, 20, 470, 333),), (200, 290, 260, 333), 32,
         vis_level=0, layout="png", contour_check="basic"),
]


def _downscale(image: np.ndarray, factor: int) -> np.ndarray:
    import cv2

    height, width = image.shape[0] // factor, image.shape[1] // factor
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def write_lesion_slide(path: Path, case: Case) -> np.ndarray:
    """A pyramidal TIFF (each level a top-level page, reduced ones subfiletype 1); returns level 0."""
    import tifffile

    width, height = case.size
    rng = np.random.default_rng(0)
    image = np.full((height, width, 3), 245, dtype=np.uint8)
    for x0, y0, x1, y1 in case.tissue:
        noise = rng.normal(0, 10, size=(y1 - y0, x1 - x0, 1))
        image[y0:y1, x0:x1] = np.clip(np.array([214, 120, 170]) + noise, 0, 255).astype(np.uint8)
    x0, y0, x1, y1 = case.lesion
    image[y0:y1, x0:x1] = LESION_RGB
    resolution = 1e4 / case.mpp
    if case.layout == "png":
        from PIL import Image

        Image.fromarray(image).save(path)
        return image
    with tifffile.TiffWriter(path) as tif:
        level = image
        for index in range(case.levels):
            scale = case.factor**index
            subifds = {"subifds": case.levels - 1} if case.layout == "subifd" and index == 0 else {}
            tif.write(level, tile=(64, 64), photometric="rgb", compression="zlib",
                      subfiletype=0 if index == 0 else 1,
                      resolution=(resolution / scale, resolution / scale), resolutionunit="CENTIMETER",
                      **subifds)
            level = _downscale(level, case.factor)
    return image


def write_lesion_encoder(path: Path) -> str:
    """TorchScript encoder: feature 0 = mean of relu(blue − red − 1.5) on ImageNet-normalised pixels
    (about 1.8 on the lesion colour, 0 on pink tissue and white glass); the others are colour means."""
    import warnings

    import torch

    class LesionDetector(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            lesion = torch.relu(images[:, 2] - images[:, 0] - 1.5).mean(dim=(1, 2))
            means = images.mean(dim=(2, 3))
            return torch.cat([lesion[:, None], means, torch.zeros_like(means), means[:, :1] * 0], dim=1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        # traced, as write_tiny_encoder's: no script compiler
        torch.jit.trace(LesionDetector().eval(), torch.zeros(1, 3, 32, 32)).save(str(path))
    return f"torchscript:{path}"


def write_lesion_clam(path: Path) -> Path:
    """A CLAM_SB whose raw attention is 10·tanh(feature 0)·sigmoid(10): it attends to the lesion only."""
    import torch

    from attnmap.mil import CLAM_SB

    model = CLAM_SB(embed_dim=8, n_classes=2)
    state = {name: torch.zeros_like(value) for name, value in model.state_dict().items()}
    state["attention_net.0.weight"][0, 0] = 1.0
    state["attention_net.3.attention_a.0.weight"][0, 0] = 1.0
    state["attention_net.3.attention_b.0.bias"][:] = 10.0
    state["attention_net.3.attention_c.weight"][0, 0] = 10.0
    state["classifiers.weight"][1, 0] = 1.0
    torch.save(state, path)
    return path


def lesion_mask(image: np.ndarray) -> np.ndarray:
    """Pixels of the lesion colour (blue well above red), at any level."""
    image = image.astype(np.int64)
    return (image[..., 2] - image[..., 0] > 80) & (image[..., 2] > 120)


def assert_on_lesion(weights: np.ndarray, scale: tuple[float, float], origin: tuple[float, float],
                     case: Case, what: str, slack: float = 0.05, margin: float | None = None) -> None:
    """``weights`` (H, W) of a picture whose pixel (i, j) lies at level-0 origin + (j, i) × scale:
    its peak lies within, and all but ``slack`` of its mass within ``margin`` (default: one patch) of,
    the lesion."""
    weights = np.asarray(weights, dtype=np.float64)
    assert weights.sum() > 0, f"{what}: nothing drawn"
    ys, xs = np.indices(weights.shape)
    cx = origin[0] + (xs + 0.5) * scale[0]
    cy = origin[1] + (ys + 0.5) * scale[1]
    margin = (case.patch0() if margin is None else margin) + max(scale)
    x0, y0, x1, y1 = case.lesion
    near = (cx >= x0 - margin) & (cx <= x1 + margin) & (cy >= y0 - margin) & (cy <= y1 + margin)
    outside = weights[~near].sum() / weights.sum()
    far = (weights > 0) & ~near
    where = f"x {cx[far].min():.0f}..{cx[far].max():.0f}, y {cy[far].min():.0f}..{cy[far].max():.0f}" \
        if far.any() else ""
    assert outside <= slack, (
        f"{what}: {outside:.1%} of the mass lies over {margin:.0f} px from the lesion {case.lesion} ({where})"
    )
    peak = weights >= weights.max() * 0.98
    px, py = cx[peak].mean(), cy[peak].mean()
    assert x0 - margin <= px <= x1 + margin and y0 - margin <= py <= y1 + margin, (
        f"{what}: peak at level-0 ({px:.0f}, {py:.0f}), lesion {case.lesion}, tolerance {margin:.0f}"
    )


def grey_value(rgb: np.ndarray) -> np.ndarray:
    """The value a ``gray`` colour map drew (0..1); the canvas is black."""
    return rgb[..., :3].astype(np.float64).mean(axis=-1) / 255.0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each case's slide and `wsi run` output folder (run once per module)."""
    import torch

    from attnmap.wsi.pipeline.config import config_from_dict
    from attnmap.wsi.pipeline.run import run_slide
    from attnmap.wsi.pipeline.slide_list import read_slide_list

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("align")
    encoder = write_lesion_encoder(root / "encoder.pt")
    write_lesion_clam(root / "clam.pt")
    done = {}
    try:
        for case in CASES:
            folder = root / case.name
            (folder / "slides").mkdir(parents=True)
            image = write_lesion_slide(folder / "slides" / case.file(), case)
            (folder / "slides.csv").write_text(f"slide_id,label\n{case.name},1\n")
            raw = {
                "slides": {"csv": str(folder / "slides.csv"), "data_dir": str(folder / "slides"),
                           "extension": Path(case.file()).suffix},
                "segmentation": {"level": case.seg_level, "sthresh": 8, "mthresh": 7, "close": 0, "a_t": 0.01,
                                 "a_h": 0.01},
                "patching": {"patch_size": case.patch_size, "level": case.patch_level, "step": case.step,
                             "padding": case.padding, "contour_check": case.contour_check},
                "features": {"encoder": encoder, "input_size": 16, "batch_size": 256},
                "model": {"checkpoint": str(root / "clam.pt"), "class_names": ["normal", "tumour"]},
                "heatmap": {"vis_level": case.vis_level, "alpha": 1.0, "cmap": "gray", "scale": "minmax",
                            "blank_canvas": True, "canvas_color": [0, 0, 0], "legend": case.legend,
                            "tiff": True, "tiff_level": case.tiff_level, "overlap": case.overlap,
                            "roi": case.roi(), "downscale": case.downscale},
                "sampling": {"top_k": 3, "bottom_k": 0},
                "export": {"geojson": True},
                "run": {"output_dir": str(folder / "out"), "device": "cpu"},
            }
            config = config_from_dict(raw)
            entry = read_slide_list(config)[0]
            run_slide(entry, config)
            done[case.name] = (case, image, folder / "out", config, entry)
    finally:
        torch.set_num_threads(threads)
    return done


@pytest.fixture(params=[case.name for case in CASES])
def run(request, runs):
    return runs[request.param]


def _heat_dir(out: Path, case: Case) -> Path:
    return out / "heatmaps" / case.name


def _blockmap(out: Path, case: Case) -> dict:
    """The run's blockmap: coords, scores and the level-0 patch size it records."""
    import h5py

    from attnmap.wsi.pipeline.stage_files import load_blockmap

    path = _heat_dir(out, case) / f"{case.name}_blockmap.h5"
    with h5py.File(path, "r") as handle:
        patch_size = int(handle.attrs["patch_size"])
    return {**load_blockmap(path), "patch_size": patch_size}


def test_planted_model_scores_the_lesion_patches_highest(run):
    case, image, out, _, _ = run
    blockmap = _blockmap(out, case)
    coords, scores = blockmap["coords"], blockmap["scores"]
    assert blockmap["patch_size"] == case.patch0()
    side = int(case.patch0())
    lesion = lesion_mask(image)
    share = np.array([lesion[y : y + side, x : x + side].mean() for x, y in coords.tolist()])
    assert share.max() > 0.2, "no patch covers the lesion"
    best = int(np.argmax(scores))
    assert share[best] > 0, f"top-scoring patch at {coords[best].tolist()} holds no lesion pixel"
    assert np.all(scores[share == 0] < scores.max() * 0.05)


def test_heatmap_png_lies_on_the_lesion(run):
    """The PNG's own record (text chunks heatmap_box, heatmap_level0_box) maps its pixels to the slide,
    whatever the level, ROI, downscale and legend."""
    from PIL import Image

    from attnmap.io_utils import read_png_text
    from attnmap.wsi.slide import open_slide

    case, _, out, _, _ = run
    path = _heat_dir(out, case) / f"{case.name}_heatmap.png"
    png, text = np.asarray(Image.open(path)), read_png_text(path)
    bx, by, bw, bh = (int(v) for v in text["heatmap_box"].split())
    x0, y0, x1, y1 = (float(v) for v in text["heatmap_level0_box"].split())
    with open_slide(out.parent / "slides" / case.file()) as slide:
        scale = slide.level_scale_xy(case.vis_level)
        if case.roi() is None and case.downscale == 1:
            assert (bw, bh) == slide.level_dimensions[case.vis_level]
            assert (x0, y0, x1, y1) == (0, 0, *slide.dimensions)
    assert (bx, by) != (0, 0) if case.legend else (bx, by, bw, bh) == (0, 0, png.shape[1], png.shape[0])
    if case.roi() is not None:
        (rx0, ry0), (rx1, ry1) = case.roi()
        assert (x0, y0) == (rx0, ry0) and abs(x1 - rx1) <= scale[0] and abs(y1 - ry1) <= scale[1]
    picture = png[by : by + bh, bx : bx + bw]
    assert picture.shape[:2] == (bh, bw)
    values = grey_value(picture)
    if case.downscale != 1:
        values[values < 0.15] = 0  # bicubic ringing on black
    assert_on_lesion(values, ((x1 - x0) / bw, (y1 - y0) / bh), (x0, y0), case, f"{case.name} heatmap PNG")


def test_heatmap_tiff_lies_on_the_lesion_at_every_level(run):
    from attnmap.wsi.slide import open_slide

    case, _, out, _, _ = run
    with open_slide(out.parent / "slides" / case.file()) as slide:
        base = slide.level_dimensions[case.tiff_level]
        size0 = slide.dimensions
        mpp0 = slide.mpp
    with open_slide(_heat_dir(out, case) / f"{case.name}_heatmap.tif") as tiff:
        assert tiff.dimensions == base
        assert tiff.reader == "OpenSlide"
        assert tiff.mpp == (None if mpp0 is None else pytest.approx(mpp0 * size0[0] / base[0], rel=0.02))
        for level in range(tiff.level_count):
            width, height = tiff.level_dimensions[level]
            if min(width, height) * case.factor**case.tiff_level * 1.0 < 8:
                continue
            pixels = tiff.read_region((0, 0), level, (width, height))
            scale = (size0[0] / width, size0[1] / height)
            if case.patch0() / max(scale) < 2:  # patches under two pixels: nothing to place
                continue
            values = grey_value(pixels)
            values[values < 0.15] = 0  # JPEG ringing on black
            assert_on_lesion(values, scale, (0, 0), case, f"{case.name} TIFF level {level}")


def test_top_patches_are_crops_of_the_lesion(run):
    from PIL import Image

    from attnmap.wsi.slide import open_slide

    case, _, out, _, _ = run
    crops = sorted((_heat_dir(out, case) / "topk_high_attention").glob("*.png"))
    assert len(crops) == 3
    with open_slide(out.parent / "slides" / case.file()) as slide:
        for crop in crops:
            x, y = (int(v) for v in re.search(r"_x_(\d+)_y_(\d+)_", crop.name).groups())
            pixels = np.asarray(Image.open(crop).convert("RGB"))
            expected = slide.read_region((x, y), case.patch_level, (case.patch_size, case.patch_size))
            np.testing.assert_array_equal(pixels, expected)
            if crop.name.startswith("0_"):  # the top patch (lower ranks may tie at zero)
                assert lesion_mask(pixels).any(), f"{crop.name} shows no lesion pixel"


def test_geojson_detections_map_back_onto_the_lesion(run):
    case, _, out, _, _ = run
    collection = json.loads((_heat_dir(out, case) / f"{case.name}_scores.geojson").read_text())
    detections = [f for f in collection["features"] if f["properties"]["objectType"] == "detection"]
    ranked = sorted(detections, key=lambda f: f["properties"]["measurements"]["attention rank"]
                    if "attention rank" in f["properties"]["measurements"] else
                    min(v for k, v in f["properties"]["measurements"].items() if k.endswith(" rank")))
    ring = np.asarray(ranked[0]["geometry"]["coordinates"][0], dtype=np.float64)
    (x0, y0), (x1, y1) = ring.min(axis=0), ring.max(axis=0)
    assert x1 - x0 == pytest.approx(case.patch0()) and y1 - y0 == pytest.approx(case.patch0())
    lx0, ly0, lx1, ly1 = case.lesion
    assert x0 < lx1 and x1 > lx0 and y0 < ly1 and y1 > ly0, (
        f"top detection {[x0, y0, x1, y1]} misses the lesion {case.lesion}"
    )
    tissue = [f for f in collection["features"] if f["properties"]["objectType"] == "annotation"]
    assert len(tissue) == len(case.tissue), "one tissue annotation per tissue piece"
    tolerance = 4 * case.factor**case.seg_level + 2  # the median blur and the segmentation level's pixels
    for feature in tissue:
        outer = np.asarray(feature["geometry"]["coordinates"][0], dtype=np.float64)
        box = [*outer.min(axis=0), *outer.max(axis=0)]
        assert any(np.allclose(box, piece, atol=tolerance) for piece in case.tissue), (
            f"tissue annotation {box} matches none of the pieces {case.tissue}"
        )


def test_viewer_tiles_align_with_the_slide_tiles(run):
    import io

    from PIL import Image

    from attnmap.render.scale import colour_table
    from attnmap.view.app import ViewerContent
    from attnmap.view.sources import discover

    case, _, out, _, _ = run
    content = ViewerContent(discover(out))
    try:
        tiles = content.slide_tiles(0)
        grid = tiles.grid if hasattr(tiles, "grid") else None
        from attnmap.view.deepzoom import DeepZoomGrid

        grid = grid or DeepZoomGrid(tiles.slide.dimensions)
        score_set = next(iter(content.slides[0].score_sets.values()))
        table = colour_table(score_set.scale.cmap).astype(np.int64)
        codes = table @ np.array([65536, 256, 1])
        order = np.argsort(codes, kind="stable")
        for level in range(grid.level_count):
            downsample = 2 ** (grid.level_count - level - 1)
            if case.patch0() / downsample < 4 or downsample > 8:
                continue
            width, height = grid.level_dimensions[level]
            lesion = np.zeros((height, width), dtype=bool)
            heat = np.zeros((height, width), dtype=np.float64)
            cols, rows = grid.level_tiles[level]
            for row in range(rows):
                for col in range(cols):
                    region = grid.region(level, col, row)
                    x0 = col * grid.tile_size - (grid.overlap if col else 0)
                    y0 = row * grid.tile_size - (grid.overlap if row else 0)
                    body, _ = content.get(f"tiles/0/slide_files/{level}/{col}_{row}.jpeg")
                    slide_tile = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
                    assert slide_tile.shape[1::-1] == region.pixels
                    h, w = slide_tile.shape[:2]
                    lesion[y0 : y0 + h, x0 : x0 + w] |= lesion_mask(slide_tile)
                    body, _ = content.get(f"tiles/0/heat-0_files/{level}/{col}_{row}.png")
                    rgba = np.asarray(Image.open(io.BytesIO(body)).convert("RGBA"))
                    if rgba.shape[:2] == (1, 1):
                        continue  # the empty tile: no patch there
                    assert rgba.shape[1::-1] == region.pixels
                    colours = rgba[..., :3].astype(np.int64) @ [65536, 256, 1]
                    found = order[np.searchsorted(codes[order], colours).clip(0, len(codes) - 1)]
                    assert np.all((codes[found] == colours)[rgba[..., 3] > 0])  # PNG: exact table colours
                    value = found / (len(table) - 1) * (rgba[..., 3] > 0)
                    heat[y0 : y0 + h, x0 : x0 + w] = np.maximum(heat[y0 : y0 + h, x0 : x0 + w], value)
            scale = (downsample, downsample)
            assert_on_lesion(lesion, scale, (0, 0), case, f"{case.name} viewer slide tiles, level {level}",
                             slack=0.0)
            assert_on_lesion(heat * (heat > 0.5), scale, (0, 0), case,
                             f"{case.name} viewer heatmap tiles, level {level}")
        thumb, _ = content.get("thumbs/0/0/1.jpeg")  # the gallery's top patch
        assert lesion_mask(np.asarray(Image.open(io.BytesIO(thumb)).convert("RGB"))).mean() > 0.02
    finally:
        content.close()


# --------------------------------------------------------------------- drawing options, library calls
STYLES = [
    {"vis_level": 0},
    {"vis_level": 2},
    {"vis_level": 1, "blur": True},
    {"vis_level": 0, "downscale": 2.5},
    {"vis_level": 1, "binarize": True, "threshold": 0.5},
]


@pytest.mark.parametrize("options", STYLES, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_render_heatmap_options_keep_the_lesion_in_place(runs, options):
    from attnmap.wsi.heatmap.renderer import render_heatmap
    from attnmap.wsi.heatmap.style import HeatmapStyle
    from attnmap.wsi.pipeline.stage_files import load_tissue
    from attnmap.wsi.slide import open_slide

    for case, _, out, _, _ in runs.values():
        if options["vis_level"] >= case.levels:
            continue
        blockmap = _blockmap(out, case)
        tissue = load_tissue(out / "tissue" / f"{case.name}.json")
        style = HeatmapStyle(cmap="gray", alpha=1.0, blank_canvas=True, canvas_color=(0, 0, 0),
                             percentiles=False, **options)
        scores = blockmap["scores"] / blockmap["scores"].max() * 100
        with open_slide(out.parent / "slides" / case.file()) as slide:
            if case.patch0() < max(slide.level_scale_xy(style.vis_level)):
                continue
            image = render_heatmap(slide, blockmap["coords"], scores, style,
                                   patch_size=blockmap["patch_size"], tissue=tissue)
            width0, height0 = slide.dimensions
        scale = (width0 / image.shape[1], height0 / image.shape[0])
        assert_on_lesion(grey_value(image), scale, (0, 0), case, f"{case.name} {options}")


def test_roi_heatmap_is_offset_by_the_roi_corner(runs):
    from attnmap.wsi.heatmap.renderer import render_heatmap
    from attnmap.wsi.heatmap.style import HeatmapStyle
    from attnmap.wsi.slide import open_slide

    for case, _, out, _, _ in runs.values():
        blockmap = _blockmap(out, case)
        x0, y0, x1, y1 = case.lesion
        pad = int(case.patch0() * 2)
        corner = (max(0, x0 - pad - 7), max(0, y0 - pad - 5))
        roi = (corner, (min(case.size[0], x1 + pad), min(case.size[1], y1 + pad)))
        for level in range(min(2, case.levels)):
            style = HeatmapStyle(cmap="gray", alpha=1.0, blank_canvas=True, canvas_color=(0, 0, 0),
                                 percentiles=False, roi=roi, vis_level=level, use_tissue_mask=False)
            scores = blockmap["scores"] / blockmap["scores"].max() * 100
            with open_slide(out.parent / "slides" / case.file()) as slide:
                image = render_heatmap(slide, blockmap["coords"], scores, style,
                                       patch_size=blockmap["patch_size"])
                scale = slide.level_scale_xy(level)
            assert_on_lesion(grey_value(image), scale, corner, case, f"{case.name} roi level {level}")


def test_sizes_are_consistent(runs):
    """Sanity of the fixtures: each case's pyramid is what OpenSlide reads."""
    from attnmap.wsi.slide import open_slide

    for case, _, out, _, _ in runs.values():
        with open_slide(out.parent / "slides" / case.file()) as slide:
            reader = {"pages": "OpenSlide", "subifd": "tiffslide", "png": "in memory"}[case.layout]
            assert slide.reader == reader and slide.level_count == case.levels
            assert slide.mpp == (None if case.layout == "png" else pytest.approx(case.mpp))



def test_fine_maps_are_drawn_on_their_patch_pixels(runs):
    """Fine maps planted as each top patch's own lesion mask (read at the patch level, at the encoder's
    input size) must come back on the lesion's level-0 pixels where the fine TIFF and the viewer draw
    them (`FineRenderer` over a `HeatmapRenderer`, at full resolution and at half of it)."""
    import cv2

    from attnmap.wsi.heatmap.fine_render import FINE_CMAP, ArrayMaps, FineRenderer
    from attnmap.wsi.heatmap.renderer import HeatmapRenderer
    from attnmap.wsi.heatmap.scores import ColorTable
    from attnmap.wsi.heatmap.style import HeatmapStyle
    from attnmap.wsi.slide import open_slide

    table = ColorTable(FINE_CMAP).table[:256].astype(np.int64)
    codes = table @ np.array([65536, 256, 1])
    for case, _, out, _, _ in runs.values():
        blockmap = _blockmap(out, case)
        top = np.argsort(-blockmap["scores"], kind="stable")[:6]
        fine_coords = blockmap["coords"][top]
        with open_slide(out.parent / "slides" / case.file()) as slide:
            maps = []
            for x, y in fine_coords.tolist():
                patch = slide.read_region((x, y), case.patch_level, (case.patch_size, case.patch_size))
                maps.append(cv2.resize(lesion_mask(patch).astype(np.float32), (16, 16),
                                       interpolation=cv2.INTER_AREA))
            maps = ArrayMaps(np.stack(maps), scale=1.0)
            for downsample in (None, 2.0):
                base = HeatmapRenderer(slide, blockmap["coords"], blockmap["scores"],
                                       HeatmapStyle(vis_level=0), patch_size=blockmap["patch_size"],
                                       downsample=downsample)
                fine = FineRenderer(base, fine_coords, blockmap["patch_size"], maps)
                width, height = base.size
                value = np.zeros((height, width))
                for window, colour in fine.painter.paint(0, 0, width, height):
                    found = np.searchsorted(np.sort(codes), colour.astype(np.int64) @ [65536, 256, 1])
                    value[window] = np.argsort(codes)[found.clip(0, 255)] / 256.0  # index = trunc(256 v)
                lesion_drawn = np.clip(2 * value - 1, 0, None)  # 0.5 is zero relevance
                scale = base.scale_xy
                assert_on_lesion(lesion_drawn, scale, (0, 0), replace(case, patch_size=case.patch_size // 4),
                                 f"{case.name} fine maps at downsample {downsample or 1}", slack=0.02)


def test_cli_heatmap_of_features_and_model_lies_on_the_lesion(runs, tmp_path, capsys):
    """`attnmap wsi heatmap --features --model` takes the patch size the features were made with
    (level 1 of a ÷3 pyramid here) and draws the PNG and the TIFF at their levels on the lesion."""
    from cli_runner import run_cli
    from PIL import Image

    from attnmap.wsi.slide import open_slide

    case, _, out, config, _ = runs["div3_second_piece_step"]
    slide_path = out.parent / "slides" / case.file()
    features = out / "features" / "h5_files" / f"{case.name}.h5"
    code, _, err = run_cli(
        capsys, "wsi", "heatmap", slide_path, "--features", features, "--model", config.model.checkpoint,
        "-o", tmp_path, "--vis-level", "1", "--tiff", "--tiff-level", "1", "--cmap", "gray",
        "--alpha", "1", "--blank-canvas", "--canvas-color", "0", "0", "0", "--scale", "minmax",
        "--device", "cpu",
    )
    assert code == 0, err
    from attnmap.io_utils import read_png_text

    png = np.asarray(Image.open(tmp_path / f"{case.name}_heatmap.png"))
    text = read_png_text(tmp_path / f"{case.name}_heatmap.png")
    bx, by, bw, bh = (int(v) for v in text["heatmap_box"].split())
    assert by > 0 and text["heatmap_level0_box"] == f"0 0 {case.size[0]} {case.size[1]}"  # title above
    with open_slide(slide_path) as slide:
        assert (bw, bh) == slide.level_dimensions[1]
        assert_on_lesion(grey_value(png[by : by + bh, bx : bx + bw]), slide.level_scale_xy(1), (0, 0), case,
                         "wsi heatmap PNG")
        size0 = slide.dimensions
    with open_slide(tmp_path / f"{case.name}_heatmap.tif") as tiff:
        pixels = tiff.read_region((0, 0), 0, tiff.dimensions)
        values = grey_value(pixels)
        values[values < 0.15] = 0
        scale = (size0[0] / tiff.dimensions[0], size0[1] / tiff.dimensions[1])
        assert_on_lesion(values, scale, (0, 0), case, "wsi heatmap TIFF")


def test_roi_annotations_keep_the_patches_centred_on_them(runs, tmp_path):
    """A QuPath annotation around the lesion (level-0 polygon) keeps exactly the patches centred in it."""
    from attnmap.wsi.annotations import roi_filter

    for case, _, out, _, _ in runs.values():
        blockmap = _blockmap(out, case)
        x0, y0, x1, y1 = (v + d for v, d in zip(case.lesion, (-0.5, -0.5, 0.5, 0.5), strict=True))  # no ties
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
        folder = tmp_path / case.name
        folder.mkdir()
        (folder / f"{case.name}.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
             "properties": {"objectType": "annotation"}}]}))
        coords = blockmap["coords"]
        kept = roi_filter(coords, blockmap["patch_size"], folder, case.name)
        centres = coords + blockmap["patch_size"] / 2
        inside = (centres[:, 0] > x0) & (centres[:, 0] < x1) & (centres[:, 1] > y0) & (centres[:, 1] < y1)
        assert {tuple(c) for c in kept.tolist()} == {tuple(c) for c in coords[inside].tolist()}


def test_the_slide_under_the_heatmap_is_in_place(runs, tmp_path):
    """With alpha 0 the heatmap is the slide alone: its lesion must sit on the lesion's pixels, in a
    PNG assembled from small windows and on every page of the TIFF (its reduced pages resize a level)."""
    from attnmap.wsi.heatmap.renderer import render_heatmap
    from attnmap.wsi.heatmap.style import HeatmapStyle
    from attnmap.wsi.heatmap.tiff import write_heatmap_tiff
    from attnmap.wsi.slide import open_slide

    for case, _, out, _, _ in runs.values():
        blockmap = _blockmap(out, case)
        with open_slide(out.parent / "slides" / case.file()) as slide:
            for level in range(slide.level_count):
                if case.lesion[2] - case.lesion[0] < 4 * max(slide.level_scale_xy(level)):
                    continue
                style = HeatmapStyle(vis_level=level, alpha=0.0)
                image = render_heatmap(slide, blockmap["coords"], blockmap["scores"], style,
                                       patch_size=blockmap["patch_size"], block=48)
                assert_on_lesion(lesion_mask(image), slide.level_scale_xy(level), (0, 0), case,
                                 f"{case.name} slide under the PNG, level {level}", slack=0.0, margin=0.0)
            write_heatmap_tiff(tmp_path / f"{case.name}.tif", slide, blockmap["coords"], blockmap["scores"],
                               HeatmapStyle(alpha=0.0), patch_size=blockmap["patch_size"], tile=64,
                               progress=False)
            size0 = slide.dimensions
        with open_slide(tmp_path / f"{case.name}.tif") as tiff:
            for level in range(tiff.level_count):
                width, height = tiff.level_dimensions[level]
                scale = (size0[0] / width, size0[1] / height)
                if case.lesion[2] - case.lesion[0] < 4 * max(scale):
                    continue
                pixels = tiff.read_region((0, 0), level, (width, height))
                assert_on_lesion(lesion_mask(pixels), scale, (0, 0), case,
                                 f"{case.name} slide under the TIFF, page {level}", slack=0.0, margin=0.0)


def test_a_blockmap_without_patch_size_gives_patches_of_the_grid_step(tmp_path):
    """CLAM's own _blockmap.h5 records no patch size. Two tissue pieces whose grids start at x = 40
    and 47: the guess was the smallest gap between distinct x over the slide (7 px), so GeoJSON
    detections and viewer squares were 7 px wide for 48-px patches; now the grid step, with a warning."""
    from attnmap.wsi.patching import patch_grid
    from attnmap.wsi.qupath import export_blockmap_geojson
    from attnmap.wsi.scores_io import save_scores_h5
    from attnmap.wsi.slide import open_slide
    from attnmap.wsi.tissue import segment_tissue

    case = Case("two_pieces", (600, 500), 2, 2, 0.5, ((40, 40, 400, 200), (47, 290, 420, 460)),
                (300, 100, 360, 160), 48)
    write_lesion_slide(tmp_path / case.file(), case)
    with open_slide(tmp_path / case.file()) as slide:
        tissue = segment_tissue(slide, level=0, sthresh=8, mthresh=7, close=0, a_t=0.01, a_h=0.01)
        coords = patch_grid(slide, tissue, patch_size=48, step=48, progress=False)
    assert len(tissue.contours) == 2 and {40, 47} <= set(coords[:, 0].tolist())
    scores = np.arange(len(coords), dtype=float)
    blockmap = save_scores_h5(tmp_path / "two_pieces_blockmap.h5", coords, scores)
    with pytest.warns(UserWarning, match="records no patch size: taken as its grid step, 48 level-0 px"):
        export_blockmap_geojson(blockmap, tmp_path / "two.geojson")
    features = json.loads((tmp_path / "two.geojson").read_text())["features"]
    sides = {tuple(np.ptp(np.asarray(f["geometry"]["coordinates"][0]), axis=0).tolist()) for f in features}
    assert sides == {(48, 48)}


def test_exported_viewer_tiles_are_the_served_ones(runs, tmp_path):
    """`attnmap view --export` writes the tiles checked above: same bytes at each level/col/row."""
    from attnmap.cli.main import main
    from attnmap.view.app import ViewerContent
    from attnmap.view.sources import discover

    case, _, out, _, _ = runs["div4_top_left_no_padding"]
    main(["view", str(out), "--export", str(tmp_path / "site"), "--quiet"])
    content = ViewerContent(discover(out))
    try:
        tiles = sorted((tmp_path / "site" / "tiles" / "0").rglob("*_files/*/*.*"))
        heat = [t for t in tiles if t.parent.parent.name == "heat-0_files"]
        assert heat and len(heat) < len(tiles)
        for tile in tiles:
            url = tile.relative_to(tmp_path / "site").as_posix()
            assert content.get(url)[0] == tile.read_bytes(), url
    finally:
        content.close()


def test_fine_tiff_changes_exactly_the_fine_mapped_patches(runs, tmp_path):
    """End to end (`wsi run`, heatmap.fine with the bundled ViT patch encoder, patches at level 1 of a
    ÷3 pyramid, 50 % step): the fine TIFF's full-resolution page differs from the patch heatmap of
    the same scores inside the fine-mapped patches and nowhere else."""
    from dataclasses import replace as replaced

    import cv2
    import torch
    from synthetic_slide_files import write_clam_checkpoint

    from attnmap.wsi.heatmap.fine_store import FineMapFile
    from attnmap.wsi.heatmap.renderer import render_heatmap
    from attnmap.wsi.pipeline.config import config_from_dict
    from attnmap.wsi.pipeline.run import run_slide
    from attnmap.wsi.pipeline.slide_list import read_slide_list
    from attnmap.wsi.pipeline.stage_files import load_tissue
    from attnmap.wsi.slide import open_slide

    case, _, out, config, _ = runs["div3_second_piece_step"]
    slides = out.parent / "slides"
    write_clam_checkpoint(tmp_path / "clam64.pt", embed_dim=64)
    raw = config.to_dict()
    raw["features"] = {"encoder": "attnmap:patch-vit", "batch_size": 256}
    raw["model"] = {"checkpoint": str(tmp_path / "clam64.pt")}
    raw["heatmap"] = {"vis_level": 1, "legend": False, "tiff": True, "tiff_level": 1,
                      "fine": {"method": "lrp", "top_k": 5}}
    raw["export"], raw["sampling"] = {"geojson": False}, {"top_k": 0, "bottom_k": 0}
    raw["run"]["output_dir"] = str(tmp_path / "out")
    fine_config = config_from_dict(raw)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_slide(read_slide_list(fine_config)[0], fine_config)
    finally:
        torch.set_num_threads(threads)
    folder = tmp_path / "out" / "heatmaps" / case.name
    tissue = load_tissue(tmp_path / "out" / "tissue" / f"{case.name}.json")
    maps = folder / f"{case.name}_fine_maps.h5"
    with FineMapFile(maps) as store, open_slide(slides / case.file()) as slide:
        assert store.patch_size == case.patch0() and len(store) == 5
        style = replaced(fine_config.heatmap.style, vis_level=0)
        patches = render_heatmap(slide, store.coords, store.scores, style, patch_size=store.patch_size,
                                 tissue=tissue)
        inside = np.zeros(patches.shape[:2], dtype=bool)
        for x, y in store.fine_coords.tolist():
            inside[y : y + store.patch_size, x : x + store.patch_size] = True
    with open_slide(folder / f"{case.name}_heatmap_fine.tif") as tiff:
        page = tiff.read_region((0, 0), 0, tiff.dimensions)
    def smooth(image: np.ndarray) -> np.ndarray:  # JPEG noise averaged out
        return cv2.blur(image.astype(np.float32), (5, 5))

    changed = np.abs(smooth(page) - smooth(patches)).max(axis=-1) > 20
    near = cv2.dilate(inside.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    assert changed[inside].mean() > 0.9 and not changed[~near].any(), (
        f"fine maps drawn off their patches: {int(changed[~near].sum())} px changed beyond 4 px of them"
    )
