"""`attnmap wsi geojson` given something other than a scores file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cli_runner import run_cli as cli

from attnmap.wsi.scores_io import save_scores_h5


def test_a_folder_is_named_as_a_folder_with_the_scores_file_to_give(tmp_path: Path, capsys) -> None:
    """`wsi geojson RUN_FOLDER` said "scores file not found: RUN_FOLDER" of a folder that is there."""
    blockmap = tmp_path / "run" / "heatmaps" / "s1" / "s1_blockmap.h5"
    blockmap.parent.mkdir(parents=True)
    save_scores_h5(blockmap, np.array([[0, 0], [64, 0]]), np.array([0.2, 0.8]))
    for given in (tmp_path / "run", blockmap.parent):
        code, _, err = cli(capsys, "wsi", "geojson", given, "-o", tmp_path / "s1.geojson")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert f"{given} is a folder: give one slide's scores file" in err and f"e.g. {blockmap}" in err
        assert "not found" not in err and not (tmp_path / "s1.geojson").exists()
    code, _, err = cli(capsys, "wsi", "geojson", blockmap, "-o", tmp_path / "s1.geojson")
    assert code == 0 and (tmp_path / "s1.geojson").is_file(), err


def test_tissue_of_a_scores_file_outside_a_run_says_what_it_looked_for(tmp_path: Path, capsys) -> None:
    """`--tissue` of a scores file kept outside a run folder said "not found: <root>/tissue/x.json":
    three folders up from it, a path that says nothing of what was looked for or how to give it."""
    loose = tmp_path / "x_blockmap.h5"
    save_scores_h5(loose, np.array([[0, 0], [64, 0]]), np.array([0.2, 0.8]))
    code, _, err = cli(capsys, "wsi", "geojson", loose, "--tissue", "-o", tmp_path / "x.geojson")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"{loose} is not in one" in err and "heatmaps/x/" in err and "--tissue-file" in err
    assert str(tmp_path.parent.parent / "tissue") not in err and not (tmp_path / "x.geojson").exists()


def test_tissue_missing_from_a_run_says_where_it_looked_relative_to_the_scores(
    tmp_path: Path, capsys
) -> None:
    blockmap = tmp_path / "run" / "heatmaps" / "s1" / "s1_blockmap.h5"
    blockmap.parent.mkdir(parents=True)
    save_scores_h5(blockmap, np.array([[0, 0], [64, 0]]), np.array([0.2, 0.8]))
    code, _, err = cli(capsys, "wsi", "geojson", blockmap, "--tissue", "-o", tmp_path / "s1.geojson")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    expected = tmp_path / "run" / "tissue" / "s1.json"
    assert f"tissue contours not found: {expected}" in err and f"from {blockmap}" in err
    assert "--tissue-file" in err
