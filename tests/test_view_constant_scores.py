"""A map whose scores are all equal: the viewer colours it as the renderer does (one rule)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attnmap.render.colormap import apply_colormap
from attnmap.render.normalize import normalize
from attnmap.render.scale import ScoreScale, choose_scale
from attnmap.view.deepzoom import TileRegion
from attnmap.view.layers import HeatmapLayer
from attnmap.view.score_files import read_score_sets
from attnmap.wsi.heatmap.scores import to_percentiles
from attnmap.wsi.pipeline.legend import display_scores
from attnmap.wsi.scores_io import save_scores_h5

COORDS = np.array([[x, y] for y in (0, 64) for x in (0, 64, 128)], dtype=np.int64)


def tile_colours(path: Path) -> np.ndarray:
    """The distinct RGB colours of the viewer's tile over all patches (level 0, one pixel per px)."""
    (score_set,) = read_score_sets(path, patch_size=64).values()
    rgba = HeatmapLayer(score_set).rgba(TileRegion((0, 0), (192, 128), (192, 128), 1.0))
    return np.unique(rgba[rgba[..., 3] == 255][:, :3], axis=0)


@pytest.mark.parametrize("value", [0.0, 0.37, -2.5, 1e6])
def test_a_constant_map_is_drawn_in_the_renderers_colour(tmp_path: Path, value: float):
    path = save_scores_h5(tmp_path / "constant_blockmap.h5", COORDS, np.full((len(COORDS), 1), value))
    (score_set,) = read_score_sets(path, patch_size=64).values()
    cmap = score_set.scale.cmap
    rendered = apply_colormap(normalize(np.full(len(COORDS), value), "minmax"), cmap)  # render/normalize
    expected = np.unique(rendered, axis=0)
    assert len(expected) == 1
    np.testing.assert_array_equal(tile_colours(path), expected)
    # `wsi run`'s PNG draws 100 × unit / 100 through the same scale: the same bottom colour
    drawn, _, _, _ = display_scores(np.full(len(COORDS), value), None, "robust", False, cmap)
    assert np.all(drawn == 0.0)


def test_ties_are_ranked_as_clams_percentiles():
    scores = np.array([0.2, 0.5, 0.5, 0.5, 0.9, 0.2, 0.7])
    ranks = choose_scale(scores, kind="percentile")
    np.testing.assert_allclose(ranks.unit(scores), to_percentiles(scores) / 100, rtol=0, atol=1e-12)
    constant = np.full(6, 3.0)
    np.testing.assert_allclose(choose_scale(constant, kind="percentile").unit(constant),
                               to_percentiles(constant) / 100, rtol=0, atol=1e-12)
    assert ScoreScale("diverging", 0.0, 0.0, "RdBu_r").unit(np.zeros(3)).tolist() == [0.5] * 3
