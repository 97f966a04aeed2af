"""Patch labels from a ground-truth mask, and rank measures of attention against them."""

from __future__ import annotations

import numpy as np
import pytest

from attnmap.errors import InputError
from attnmap.evaluate.mil_localisation import (
    attention_localisation,
    patch_labels_from_mask,
    patch_mask_fractions,
    patch_means,
)


def _brute_force_fractions(
    coords: np.ndarray, patch_size: int, mask: np.ndarray, downsample: int
) -> np.ndarray:
    """Upsample the mask to level 0 and average each footprint pixel by pixel (footprints beyond = 0)."""
    full = np.kron(mask.astype(np.float64), np.ones((downsample, downsample)))
    padded = np.zeros((full.shape[0] + 2 * patch_size, full.shape[1] + 2 * patch_size))
    padded[patch_size : patch_size + full.shape[0], patch_size : patch_size + full.shape[1]] = full
    return np.array(
        [
            padded[y + patch_size : y + 2 * patch_size, x + patch_size : x + 2 * patch_size].mean()
            for x, y in coords
        ]
    )


def test_fractions_match_pixel_counting_for_unaligned_patches() -> None:
    rng = np.random.default_rng(0)
    mask = rng.random((20, 24)) > 0.6
    coords = np.stack([rng.integers(-30, 24 * 8, 60), rng.integers(-30, 20 * 8, 60)], 1)
    got = patch_mask_fractions(coords, 37, mask, 8)
    np.testing.assert_allclose(got, _brute_force_fractions(coords, 37, mask, 8), atol=1e-9)


def test_means_of_a_value_map_match_pixel_averaging() -> None:
    rng = np.random.default_rng(1)
    values = rng.normal(size=(12, 10))
    coords = np.stack([rng.integers(0, 10 * 4 - 9, 40), rng.integers(0, 12 * 4 - 9, 40)], 1)
    expected = _brute_force_fractions(coords, 9, values, 4)
    np.testing.assert_allclose(patch_means(coords, 9, values, 4), expected)


def test_labels_use_the_half_threshold() -> None:
    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True  # left half of a 128-px slide at downsample 16
    coords = np.array([[0, 0], [32, 0], [64, 0], [48, 0]])
    labels = patch_labels_from_mask(coords, 64, mask, 16)
    # footprints cover x in [0,64): 100 %, [32,96): 50 %, [64,128): 0 %, [48,112): 25 %
    assert labels.tolist() == [True, True, False, False]
    assert patch_labels_from_mask(coords, 64, mask, 16, min_fraction=0.6).tolist() == [
        True,
        False,
        False,
        False,
    ]


def test_perfect_and_reversed_rankings() -> None:
    labels = np.array([0, 0, 1, 0, 1, 1, 0], bool)
    perfect = attention_localisation(labels.astype(float) + 0.01 * np.arange(7), labels)
    assert perfect["auc"] == 1.0 and perfect["average_precision"] == 1.0 and perfect["top_k_precision"] == 1.0
    reversed_ = attention_localisation(-labels.astype(float), labels)
    assert reversed_["auc"] == 0.0 and reversed_["top_k_precision"] == 0.0
    assert attention_localisation(np.zeros(7), labels)["auc"] == 0.5


def test_matches_scikit_learn_with_ties() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    labels = rng.random(300) < 0.3
    scores = np.round(rng.normal(size=300) + labels, 1)  # rounding makes many ties
    result = attention_localisation(scores, labels, top_k=25)
    assert result["auc"] == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)
    assert result["average_precision"] == pytest.approx(
        metrics.average_precision_score(labels, scores), abs=1e-12
    )
    # the patches tied with the 25th score fill the places left in proportion to their positives
    cutoff = np.sort(scores)[::-1][24]
    above, tied = scores > cutoff, scores == cutoff
    expected = (labels[above].sum() + (25 - above.sum()) * labels[tied].mean()) / 25
    assert result["top_k_precision"] == pytest.approx(expected)
    assert result["n_positive"] == labels.sum()


def test_ranking_measures_ignore_monotone_transforms() -> None:
    rng = np.random.default_rng(5)
    labels = rng.random(100) < 0.4
    raw = rng.normal(size=100) + labels
    softmax = np.exp(raw) / np.exp(raw).sum()
    assert attention_localisation(raw, labels) == attention_localisation(softmax, labels)


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        (np.zeros(3), np.zeros(3, bool), "positive and negative"),
        (np.zeros(3), np.array([1, 0]), "one value per patch"),
        (np.array([0.0, np.nan]), np.array([1, 0]), "NaN"),
        (np.zeros(2), np.array([2, 0]), "boolean or 0/1"),
    ],
)
def test_bad_inputs_are_named(scores: np.ndarray, labels: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        attention_localisation(scores, labels)


def test_bad_geometry_is_named() -> None:
    with pytest.raises(InputError, match="N×2"):
        patch_mask_fractions(np.zeros(4), 16, np.ones((4, 4)), 4)
    with pytest.raises(InputError, match="top_k"):
        attention_localisation(np.arange(4.0), np.array([0, 1, 0, 1]), top_k=0)
