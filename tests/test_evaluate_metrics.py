"""Evaluation metrics held to their definitions on the inputs `bench/metrics_sweep.py` found them
wrong on: ties, constant maps, non-finite values, arrays, counts of a fraction, the pointing disc."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnmap.errors import InputError
from attnmap.evaluate.lesions import SlideScores, detections, froc, patch_auc
from attnmap.evaluate.maps import maps_to_pixels
from attnmap.evaluate.mil_localisation import attention_localisation, patch_mask_fractions
from attnmap.evaluate.patch_flipping import flipping_auc, patch_flipping
from attnmap.evaluate.perturbation import perturbation_auc, perturbation_curve, perturbation_hits
from attnmap.evaluate.pointing import pointing_hits
from attnmap.evaluate.segmentation import average_precision, segmentation_scores
from attnmap.wsi.annotations import Region

pytestmark = pytest.mark.usefixtures("single_thread")


def test_top_k_precision_does_not_depend_on_the_order_of_tied_patches() -> None:
    labels = np.array([1, 0, 0, 1, 0, 0, 1, 0], bool)
    scores = np.array([2, 1, 1, 1, 1, 0, 0, 0], float)  # k = 3: one sure place, two among four ties
    result = attention_localisation(scores, labels)
    assert result["top_k_precision"] == pytest.approx((1 + 2 * 1 / 4) / 3)
    order = np.array([0, 3, 1, 2, 4, 5, 6, 7])  # the tied positive listed first
    shuffled = attention_localisation(scores[order], labels[order])
    assert shuffled["top_k_precision"] == result["top_k_precision"]


def test_localisation_takes_grad_tracking_scores_and_refuses_a_fractional_k() -> None:
    labels = np.array([True, False, True, False])
    scores = torch.tensor([0.9, 0.1, 0.8, 0.2], requires_grad=True)
    assert attention_localisation(scores, labels)["auc"] == 1.0
    with pytest.raises(InputError, match="whole number"):
        attention_localisation(scores, labels, top_k=1.5)


@pytest.mark.parametrize("scores, labels, problem", [
    ([np.nan, 0.2, 0.3], [1, 0, 1], "NaN"),
    ([np.inf, 0.2, 0.3], [1, 0, 1], "NaN or infinite"),
    ([0.1, 0.2, 0.3], [255, 0, 255], "0/1"),
    ([0.1, 0.2, 0.3], [0.5, 0, 1], "0/1"),
])
def test_average_precision_refuses_what_has_no_ranking_or_no_labels(scores, labels, problem) -> None:
    with pytest.raises(InputError, match=problem):
        average_precision(np.array(scores), np.array(labels))


def test_a_constant_map_has_no_foreground_whatever_its_mean_rounds_to() -> None:
    masks = torch.zeros(1, 12, 12, dtype=torch.bool)
    masks[0, 2:4, 2:5] = True
    # the float64 mean of 144 copies of 0.1 is a step below 0.1: every pixel was "above the mean"
    scores = segmentation_scores(torch.full((1, 12, 12), 0.1, dtype=torch.float64), masks)
    assert scores["pixel_acc"] == pytest.approx(1 - 6 / 144)
    assert scores == segmentation_scores(np.zeros((1, 12, 12)), masks.numpy())  # arrays taken
    with pytest.raises(InputError, match="NaN"):
        segmentation_scores(torch.full((1, 12, 12), torch.nan), masks)


def test_pointing_tolerance_is_a_euclidean_disc() -> None:
    masks = torch.zeros(1, 12, 12, dtype=torch.bool)
    masks[0, 5, 5] = True
    peak = torch.zeros(1, 12, 12)
    peak[0, 6, 7] = 1.0  # √5 ≈ 2.24 px from the mask: OpenCV's 5×5 ellipse reached it
    assert not pointing_hits(peak, masks, tolerance=2)[0]
    assert pointing_hits(peak.numpy(), masks.numpy(), tolerance=3)[0]  # arrays taken
    with pytest.raises(InputError, match="whole number"):
        pointing_hits(peak, masks, tolerance=2.5)
    peak[0, 0, 0] = torch.nan  # argmax would have taken the NaN as the peak
    with pytest.raises(InputError, match="NaN"):
        pointing_hits(peak, masks, tolerance=2)


class _CountsZeros(torch.nn.Module):
    """Class 0 while more than 27.5 of the pixels of an all-ones image are left."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        kept = images.reshape(len(images), -1).sum(dim=1)
        return torch.stack([kept - 27.5, torch.zeros_like(kept)], dim=1)


def test_perturbation_removes_the_share_as_written() -> None:
    images = torch.ones(1, 1, 9, 10, dtype=torch.float64)
    maps = torch.arange(90, dtype=torch.float64).reshape(1, 9, 10)
    hits = perturbation_hits(_CountsZeros(), images, maps, torch.tensor([0]), positive=True)
    # 70% of 90 pixels is 63 (27 left, class 1); binary 0.7 × 90 = 62.99… removed 62
    assert hits[0].tolist() == [1.0] * 7 + [0.0] * 3
    curve = perturbation_curve(_CountsZeros(), images.numpy(), maps.numpy(), np.array([0]), positive=True)
    assert curve.tolist() == hits[0].tolist()  # arrays taken
    maps[0, 0, 0] = torch.nan
    with pytest.raises(InputError, match="NaN"):
        perturbation_hits(_CountsZeros(), images, maps, torch.tensor([0]), positive=True)
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        perturbation_auc(np.r_[100.0, np.ones(9)])


def test_maps_near_the_float64_limit_normalise_without_overflow() -> None:
    maps = np.array([[[-1e308, 0.0], [1e308, 0.0]]])
    assert maps_to_pixels(maps, (2, 2)).tolist() == [[[0.0, 0.5], [1.0, 0.5]]]


def test_patch_flipping_counts_a_half_patch_up_and_flipping_auc_checks_its_curve() -> None:
    from attnmap.mil import ABMIL

    torch.manual_seed(0)
    model = ABMIL(embed_dim=4, hidden_dim=4, attention_dim=2).double().eval()
    features = torch.randn(10, 4, dtype=torch.float64)
    result = patch_flipping(model, features, np.arange(10.0), fractions=(0.0, 0.05, 0.5))
    assert result.removed.tolist() == [0, 1, 5]  # numpy's half-to-even made 0.05 × 10 remove 0
    bad_curves = (([0.0, 0.5], [1.0]), ([0.0, 0.5], [1.0, np.nan]), ([0.5, 0.0], [1.0, 0.5]))
    for fractions, probabilities in bad_curves:
        with pytest.raises(InputError):
            flipping_auc(fractions, probabilities)


def test_froc_and_footprints_refuse_non_finite_or_misaligned_patches() -> None:
    coords = np.array([[0.0, 0.0], [32.0, 0.0], [64.0, 0.0]])
    lesion = Region(outer=np.array([[0.0, 0.0], [20.0, 0.0], [20.0, 20.0], [0.0, 20.0]]), label="Tumor")
    with pytest.raises(InputError, match="NaN"):
        froc([SlideScores(coords, np.array([np.nan, 0.5, 0.2]), 16.0, [lesion])])
    with pytest.raises(InputError, match="one score per patch"):
        froc([SlideScores(coords, np.array([0.5, 0.2]), 16.0, [lesion])])
    with pytest.raises(InputError, match="without patches"):
        patch_auc(SlideScores(np.zeros((0, 2)), np.zeros(0), 16.0, [lesion]))
    with pytest.raises(InputError, match="NaN"):
        patch_mask_fractions(np.array([[np.nan, 0.0]]), 8.0, np.ones((4, 4)), 4.0)


def test_tied_neighbours_are_both_local_maxima_whatever_their_order() -> None:
    coords = np.array([[0.0, 0.0], [16.0, 0.0], [160.0, 160.0]])
    lesion = Region(outer=np.array([[14.0, -2.0], [34.0, -2.0], [34.0, 18.0], [14.0, 18.0]]), label="Tumor")
    scores = np.array([0.9, 0.9, 0.2])
    found = detections(SlideScores(coords, scores, 16.0, [lesion]))
    assert sorted(map(tuple, found[:, :2].tolist())) == [(8.0, 8.0), (24.0, 8.0), (168.0, 168.0)]
    forward = froc([SlideScores(coords, scores, 16.0, [lesion])])["froc_score"]
    backward = froc([SlideScores(coords[::-1].copy(), scores[::-1].copy(), 16.0, [lesion])])["froc_score"]
    # the lesion is found together with 1 false positive (its tied neighbour), listed first or last:
    # the curve rises from (0, 0) to (1, 1), so sensitivity 1/4, 1/2, then 1 at rates 1, 2, 4, 8
    assert forward == backward == pytest.approx((0.25 + 0.5 + 4) / 6)


def test_a_slides_random_floor_does_not_depend_on_its_place_in_the_cohort() -> None:
    from pathlib import Path

    from attnmap.evaluate.slides import evaluate_bags
    from attnmap.mil import ABMIL
    from attnmap.mil.bags import Bag

    torch.manual_seed(0)
    model = ABMIL(embed_dim=4, hidden_dim=4, attention_dim=2).double().eval()
    bags = [Bag(f"s{i}", torch.randn(12, 4, dtype=torch.float64), None, Path(f"s{i}.h5")) for i in range(2)]
    cohort = evaluate_bags(model, bags, ["attention"])
    alone = evaluate_bags(model, bags[1:], ["attention"])
    assert alone.results["s1"]["attention"].auc_random == cohort.results["s1"]["attention"].auc_random


def test_froc_reads_sensitivity_off_the_curve_by_interpolation() -> None:
    coords = np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0], [300.0, 0.0], [400.0, 0.0]])
    square = np.array([[-2.0, -2.0], [18.0, -2.0], [18.0, 18.0], [-2.0, 18.0]])
    lesions = [Region(outer=square + [x, 0.0], label="Tumor") for x in (0.0, 300.0)]
    # lesion 1 at 0.9, one false positive at 0.8, then lesion 2 tied with two false positives at 0.6:
    # the curve runs (0, 0), (0, 1/2), (1, 1/2), (3, 1); at 2 false positives it reads 3/4
    scores = np.array([0.9, 0.8, 0.6, 0.6, 0.6])
    result = froc([SlideScores(coords, scores, 16.0, lesions)], radius=1e-6)
    expected = {0.25: 0.5, 0.5: 0.5, 1.0: 0.5, 2.0: 0.75, 4.0: 1.0, 8.0: 1.0}
    assert result["sensitivity_at"] == pytest.approx(expected)
