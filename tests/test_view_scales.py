"""The colour scale the viewer gives each score set: the one its legend states and its tiles use."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from attnmap.mil.explain import METHODS
from attnmap.view.score_files import read_score_sets


def _mil_scores_file(path: Path, rng: np.random.Generator) -> Path:
    """A scores file laid out as `mil attention --method all` writes it, every relevance score
    positive (a slide whose every patch speaks for the class: it happens, and sign is still the
    point of these methods)."""
    coords = np.stack(np.meshgrid(np.arange(0, 512, 64), np.arange(0, 256, 64)), -1).reshape(-1, 2)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("coords", data=coords)
        handle.attrs["patch_size"] = 64
        handle.create_dataset("attention_scores", data=rng.normal(2.0, 0.1, (len(coords), 1)))
        for method in METHODS:
            handle.create_dataset(f"scores_{method}", data=rng.uniform(0.01, 0.02, len(coords)))
    return path


@pytest.mark.parametrize("method", [m for m in METHODS if m != "attention"])
def test_every_mil_relevance_method_is_drawn_signed_even_when_all_its_scores_are_positive(tmp_path, method):
    """`gradient_x_input` and `integrated_gradients` (the names `mil attention` writes) were not
    known as signed: all-positive scores were drawn on jet between their percentiles, the least
    positive patch in the colour of "nothing here", against the docs' "signed scores on a diverging
    map centred on 0"."""
    sets = read_score_sets(_mil_scores_file(tmp_path / "bag_attention.h5", np.random.default_rng(0)))
    assert sets[method].scale.kind == "diverging"
    assert sets[method].scale.low == -sets[method].scale.high
    assert sets["attention"].scale.kind == "robust"  # raw attention: zero means nothing
