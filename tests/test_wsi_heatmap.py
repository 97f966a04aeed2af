"""Heatmap renderer: CLAM conformance on the fixtures, and every option against a whole-canvas oracle.

The oracle below is a direct, canvas-at-once reading of the spec ("Heatmap drawing" steps 1–12);
it is itself checked against CLAM's own output, then the windowed renderer must equal it exactly
for each option (small windows, so window seams are exercised).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib
import numpy as np
import pytest
from PIL import Image
from scipy.stats import percentileofscore, rankdata

from attnmap.errors import InputError
from attnmap.wsi import (
    HeatmapRenderer,
    HeatmapStyle,
    open_slide,
    percentiles_against,
    render_heatmap,
    segment_tissue,
)
from attnmap.wsi.heatmap.scores import ColorTable

FIXTURES = Path(__file__).parent / "fixtures" / "heatmap"


@pytest.fixture(scope="module")
def clam():
    return dict(np.load(FIXTURES / "clam_heatmap_public_inputs.npz"))


@pytest.fixture(scope="module")
def slide():
    with open_slide(FIXTURES / "clam_synth_slide.tif") as handle:
        yield handle


@pytest.fixture(scope="module")
def tissue(slide):
    return segment_tissue(slide, level=2, sthresh=15, mthresh=11, close=2, a_t=1, a_h=1, max_n_holes=2)


def oracle(slide, coords, scores, patch_size, vis_level, tissue, cmap="jet", alpha=0.4, percentiles=True,
           reference=None, overlap=0.0, blur=False, binarize=False, threshold=None, blank=False, roi=None,
           downscale=1):
    """The spec's heatmap, computed on the whole canvas in float64 with plain loops."""
    scores = np.asarray(scores, dtype=np.float64).ravel().copy()
    coords = np.asarray(coords, dtype=np.int64)
    ds = slide.level_downsamples[vis_level]
    scale = np.array([1 / ds, 1 / ds])
    thr = (1.0 / len(scores) if threshold is None or threshold < 0 else threshold) if binarize else 0.0
    if roi is not None:
        tl, br = np.array(roi[0]), np.array(roi[1])
        keep = np.all(coords >= tl, axis=1) & np.all(coords <= br, axis=1)
        scores, coords = scores[keep], coords[keep] - tl
        w, h = (br * scale).astype(int) - (tl * scale).astype(int)
    else:
        tl = np.array([0, 0])
        w, h = slide.level_dimensions[vis_level]
    ps = np.ceil(np.array([patch_size, patch_size]) * scale).astype(int)
    coords = np.ceil(coords * scale).astype(int)
    if reference is not None:
        scores = np.array([percentileofscore(reference, s) for s in scores])
    elif percentiles:
        scores = rankdata(scores, "average") / len(scores) * 100
    scores /= 100
    overlay, counter = np.zeros((h, w)), np.zeros((h, w), dtype=np.uint16)
    for (x, y), s in zip(coords, scores, strict=True):
        overlay[y : y + ps[1], x : x + ps[0]] += (1.0 if binarize else s) if s >= thr else 0.0
        counter[y : y + ps[1], x : x + ps[0]] += 1
    hit = counter > 0
    overlay[hit] = np.around(overlay[hit] / counter[hit]) if binarize else overlay[hit] / counter[hit]
    kernel = tuple((ps * (1 - overlap)).astype(int) * 2 + 1)
    if blur:
        overlay = cv2.GaussianBlur(overlay, kernel, 0)
    mask = np.zeros((h, w), dtype=np.uint8)
    if tissue is not None:
        offset = tuple((tl * scale * -1).astype(np.int32))
        scaled = [(np.array(p.outer * scale, dtype=np.int32),
                   [np.array(q * scale, dtype=np.int32) for q in p.holes]) for p in tissue.contours]
        for outer, holes in sorted(scaled, key=lambda c: cv2.contourArea(c[0]), reverse=True):
            cv2.drawContours(mask, [outer], -1, 1, thickness=-1, offset=offset)
            if holes:
                cv2.drawContours(mask, holes, -1, 0, thickness=-1, offset=offset)
    base = np.full((h, w, 3), 255, np.uint8) if blank else slide.read_region(tuple(tl), vis_level, (w, h))
    img = base.copy()
    table = matplotlib.colormaps[cmap]
    for (x, y), s in zip(coords, scores, strict=True):
        if s >= thr:
            block = img[y : y + ps[1], x : x + ps[0]]
            colour = (table(overlay[y : y + ps[1], x : x + ps[0]]) * 255)[:, :, :3].astype(np.uint8)
            region = mask[y : y + ps[1], x : x + ps[0]].astype(bool) if tissue is not None else slice(None)
            block[region] = colour[region]
    if blur:
        img = cv2.GaussianBlur(img, kernel, 0)
    if alpha < 1:
        img = cv2.addWeighted(img, alpha, base, 1 - alpha, 0)
    if downscale > 1:
        img = np.asarray(Image.fromarray(img).resize((int(w / downscale), int(h / downscale)), Image.BICUBIC))
    return img


def test_renderer_stages_match_clam(slide, tissue, clam):
    renderer = HeatmapRenderer(slide, clam["coords_block"], clam["scores_block"], HeatmapStyle(vis_level=2),
                               tissue=tissue)
    layers = renderer.layers(0, 0, 1024, 1024)
    np.testing.assert_array_equal(layers.overlay.astype(np.float32), clam["blockmap_overlay_avg"])
    np.testing.assert_array_equal(layers.overlay.astype(np.float32), clam["blockmap_overlay_final"])
    np.testing.assert_array_equal(layers.colored, clam["blockmap_img_preblend"])
    np.testing.assert_array_equal(slide.read_region((0, 0), 2, (1024, 1024)), clam["orig_l2"])


def test_render_heatmap_reproduces_clam_png(slide, tissue, clam):
    reference = np.asarray(Image.open(FIXTURES / "clam_heatmap_blockmap.png").convert("RGB")).astype(int)
    image = render_heatmap(slide, clam["coords_block"], clam["scores_block"],
                           HeatmapStyle(vis_level=2, cmap="jet", alpha=0.4), patch_size=256, tissue=tissue,
                           block=300)
    assert image.shape == reference.shape and image.dtype == np.uint8
    within = np.all(np.abs(image.astype(int) - reference) <= 1, axis=2).mean()
    assert within >= 0.999
    expected = oracle(slide, clam["coords_block"], clam["scores_block"], 256, 2, tissue)
    assert np.all(np.abs(expected.astype(int) - reference) <= 1, axis=2).mean() >= 0.999


OPTIONS = {
    "overlap_blur": dict(overlap=0.5, blur=True),
    "blur": dict(blur=True),
    "binarize": dict(binarize=True, threshold=0.6),
    "binarize_auto": dict(binarize=True),
    "blank_canvas": dict(blank_canvas=True),
    "no_tissue": dict(tissue=None),
    "roi": dict(roi=((700, 900), (3300, 3100))),
    "raw_scores": dict(percentiles=False),
    "downscale": dict(downscale=3),
    "alpha_one_coolwarm": dict(alpha=1.0, cmap="coolwarm"),
}


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_options_match_spec_oracle(slide, tissue, clam, name):
    options = dict(OPTIONS[name])
    use_tissue = options.pop("tissue", tissue)
    rng = np.random.default_rng(3)
    coords = clam["coords_fp"]
    scores = rng.normal(size=len(coords))
    if name == "raw_scores":
        scores = rng.uniform(-20, 100, size=len(coords))
    block = 400 if options.get("blur") else 200  # blur windows carry a 2-radius halo: keep them fewer
    image = render_heatmap(slide, coords, scores, HeatmapStyle(vis_level=2, **options), patch_size=256,
                           tissue=use_tissue, block=block)
    expected = oracle(slide, coords, scores, 256, 2, use_tissue, cmap=options.get("cmap", "jet"),
                      alpha=options.get("alpha", 0.4), percentiles=options.get("percentiles", True),
                      overlap=options.get("overlap", 0.0), blur=options.get("blur", False),
                      binarize=options.get("binarize", False), threshold=options.get("threshold"),
                      blank=options.get("blank_canvas", False), roi=options.get("roi"),
                      downscale=options.get("downscale", 1))
    np.testing.assert_array_equal(image, expected)


def test_overlapping_grid_with_reference_percentiles(slide, tissue, clam):
    from attnmap.wsi import patch_grid

    coords = patch_grid(slide, tissue, patch_size=256, step=128, contour_check="four_pt_hard",
                        center_shift=0.5)
    rng = np.random.default_rng(5)
    scores, reference = rng.normal(size=len(coords)), rng.normal(size=len(clam["scores_block"]))
    image = render_heatmap(slide, coords, scores, HeatmapStyle(vis_level=2, overlap=0.5, blur=True),
                           tissue=tissue, reference_scores=reference, block=400)
    expected = oracle(slide, coords, scores, 256, 2, tissue, overlap=0.5, blur=True, reference=reference)
    np.testing.assert_array_equal(image, expected)


def test_percentiles_against_matches_scipy():
    rng = np.random.default_rng(0)
    reference = np.round(rng.normal(size=200), 1)
    scores = np.concatenate([np.round(rng.normal(size=50), 1), [reference.min() - 1, reference.max() + 1]])
    expected = [percentileofscore(reference, s) for s in scores]
    np.testing.assert_allclose(percentiles_against(scores, reference), expected, rtol=0, atol=1e-12)


def test_color_table_matches_matplotlib():
    values = np.concatenate([np.random.default_rng(1).uniform(-0.2, 1.2, 5000), [0.0, 1.0, 0.5, -1e-9]])
    for name in ("jet", "coolwarm", "viridis"):
        expected = (matplotlib.colormaps[name](values) * 255)[:, :3].astype(np.uint8)
        np.testing.assert_array_equal(ColorTable(name)(values), expected)


def test_color_table_of_an_opencv_map_is_opencvs_in_any_case_of_the_prefix():
    """Every drawing helper reads ``opencv:`` in any case, so the slide heatmap's table does too."""
    from attnmap.render.colormap import apply_colormap

    values = np.random.default_rng(2).uniform(0.0, 1.0, 5000)
    expected = apply_colormap(values, "opencv:jet")
    for name in ("opencv:jet", "OpenCV:jet"):
        np.testing.assert_array_equal(ColorTable(name)(values), expected)


def test_bad_inputs_name_the_problem(slide, clam):
    coords, scores = clam["coords_block"], clam["scores_block"]
    with pytest.raises(InputError, match="56 scores for 55 coords"):
        render_heatmap(slide, coords[:55], scores)
    with pytest.raises(InputError, match="outside the slide"):
        render_heatmap(slide, np.vstack([coords, [[5000, 10]]]), np.append(scores, 0.1))
    with pytest.raises(InputError, match="level 7 does not exist"):
        render_heatmap(slide, coords, scores, HeatmapStyle(vis_level=7))
    with pytest.raises(InputError, match="smaller than one pixel"):
        render_heatmap(slide, coords, scores, HeatmapStyle(vis_level=2), patch_size=2)
    with pytest.raises(InputError, match="unknown colour map"):
        render_heatmap(slide, coords, scores, HeatmapStyle(cmap="no-such-map"))
    with pytest.raises(InputError, match="write_heatmap_tiff"):
        render_heatmap(slide, coords, scores, HeatmapStyle(vis_level=0), max_pixels=4096 * 4095)
    with pytest.raises(InputError, match="NaN"):
        render_heatmap(slide, coords, np.full(len(coords), np.nan))


def test_a_roi_outside_the_slide_is_refused() -> None:
    """It drew a canvas of out-of-slide black the size of the ROI, without a word."""
    from attnmap.wsi import ArraySlide

    slide = ArraySlide(np.full((100, 120, 3), 200, np.uint8))
    coords, scores = np.array([[0, 0], [32, 32]]), np.array([0.2, 0.8])
    with pytest.raises(InputError, match=r"roi \[\[500, 500\], \[600, 600\]\] lies outside the slide"):
        render_heatmap(slide, coords, scores, HeatmapStyle(roi=((500, 500), (600, 600))), patch_size=32)
    partly = render_heatmap(slide, coords, scores, HeatmapStyle(roi=((60, 50), (200, 200))), patch_size=32)
    assert partly.shape[:2] == (150, 140)  # a ROI reaching past the edge is drawn as before


# ----------------------------------------------------------------------------- binarize threshold
def test_a_threshold_without_binarize_is_refused_not_ignored() -> None:
    with pytest.raises(InputError, match=r"threshold 0\.5 acts only with binarize"):
        HeatmapStyle(threshold=0.5)
    with pytest.raises(InputError, match=r"threshold 0 acts only with binarize"):
        HeatmapStyle(threshold=0.0)
    assert HeatmapStyle(threshold=-1).threshold == -1  # CLAM's default: unset
    assert HeatmapStyle(binarize=True, threshold=0.5).threshold == 0.5
    from attnmap.wsi.pipeline.config import config_from_dict

    with pytest.raises(InputError, match=r"^heatmap: threshold 0\.3 acts only with binarize"):
        config_from_dict({"heatmap": {"threshold": 0.3}})


def test_a_binarized_map_reaching_no_patch_is_reported(slide, tissue, clam):
    from attnmap.wsi.heatmap.scores import BlankHeatmapWarning

    coords, scores = clam["coords_block"], clam["scores_block"]
    raw = np.linspace(0.0, 2.0, len(scores))  # drawn as raw / 100: 0 .. 0.02
    style = HeatmapStyle(vis_level=2, binarize=True, threshold=0.5, percentiles=False)
    with pytest.warns(BlankHeatmapWarning) as caught:
        render_heatmap(slide, coords, raw, style, tissue=tissue)
    message = str(caught[0].message)
    assert "clam_synth_slide.tif" in message and "threshold 0.5" in message and "0..0.02" in message
    assert "\n" not in message
    import warnings

    with warnings.catch_warnings():  # a threshold some patch reaches draws them, without a word
        warnings.simplefilter("error", BlankHeatmapWarning)
        render_heatmap(slide, coords, raw, HeatmapStyle(vis_level=2, binarize=True, threshold=0.01,
                                                        percentiles=False), tissue=tissue)


def test_cli_threshold_help_states_its_scale_and_refuses_it_without_binarize(slide, clam, tmp_path, capsys):
    from cli_runner import run_cli

    from attnmap.wsi.scores_io import save_scores_h5

    code, out, _ = run_cli(capsys, "wsi", "heatmap", "--help")
    assert code == 0 and "raw score / 100" in " ".join(out.split())
    scores_h5 = save_scores_h5(tmp_path / "s_blockmap.h5", clam["coords_block"], clam["scores_block"])
    common = ["wsi", "heatmap", slide.path, "--scores", scores_h5, "--patch-size", "256", "--vis-level", "2",
              "-o", tmp_path / "out"]
    code, _, err = run_cli(capsys, *common, "--threshold", "0.5")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "acts only with binarize" in err
    code, _, err = run_cli(capsys, *common, "--threshold", "-1")
    assert code == 0, err
    from attnmap.wsi.heatmap.scores import BlankHeatmapWarning

    with pytest.warns(BlankHeatmapWarning, match=r"no patch reaches the binarize threshold 1\.5") as caught:
        code, _, err = run_cli(capsys, *common, "--binarize", "--threshold", "1.5", "--scale", "clam",
                               "--raw")
    assert code == 0, err
    assert len(caught) == 1  # the PNG's renderer says it, once
