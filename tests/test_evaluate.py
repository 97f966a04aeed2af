"""Evaluation protocols on hand-made cases, and the harness on the bundled model with oracle maps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attnmap.data.shapes import ShapesDataset
from attnmap.errors import InputError, UnsupportedModelError
from attnmap.evaluate.maps import maps_to_pixels
from attnmap.evaluate.perturbation import perturbation_auc, perturbation_curve, perturbation_x
from attnmap.evaluate.pointing import dilate, pointing_accuracy, pointing_hits
from attnmap.evaluate.random_baseline import random_patch_maps
from attnmap.evaluate.runner import RANDOM, evaluate_methods
from attnmap.evaluate.segmentation import average_precision, segmentation_scores


class BrightSpotModel(nn.Module):
    """Class 1 when the top-left 4x4 corner is bright, else class 0: a model with a known answer."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        corner = images[:, :, :4, :4].mean(dim=(1, 2, 3))
        return torch.stack([0.5 - corner, corner - 0.5], dim=1)


def corner_images(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.full((n, 3, 16, 16), 0.1)
    images[:, :, :4, :4] = 2.0
    mask = torch.zeros(n, 16, 16, dtype=torch.bool)
    mask[:, :4, :4] = True
    return images, mask


def test_auc_is_the_trapezoid_over_0_to_90_percent_times_100():
    np.testing.assert_allclose(perturbation_x(), [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    assert perturbation_auc(np.ones(10)) == pytest.approx(90.0)
    assert perturbation_auc(np.zeros(10)) == pytest.approx(0.0)
    curve = np.array([1.0] + [0.0] * 9)  # drops to zero after the first step
    assert perturbation_auc(curve) == pytest.approx(5.0)
    with pytest.raises(InputError):
        perturbation_auc(np.ones(9))


def test_positive_test_with_the_right_map_kills_the_class_and_negative_keeps_it():
    model = BrightSpotModel()
    images, mask = corner_images()
    classes = torch.ones(len(images), dtype=torch.long)
    oracle = maps_to_pixels(mask.double(), (16, 16))
    positive = perturbation_curve(model, images, oracle, classes, positive=True)
    negative = perturbation_curve(model, images, oracle, classes, positive=False)
    assert positive[0] == 1.0 and np.all(positive[1:] == 0.0)  # 10% = 25 px > the 16-px spot
    np.testing.assert_array_equal(negative, np.ones(10))  # the spot is removed only after 93.75%


def test_perturbation_zeroes_in_normalised_space_and_ties_break_by_pixel_index():
    seen = []

    class Recorder(nn.Module):
        def forward(self, images):
            seen.append(images.clone())
            return torch.zeros(len(images), 2)

    images = torch.ones(1, 3, 10, 10)
    flat = torch.zeros(1, 10, 10, dtype=torch.float64)  # all tied
    target = torch.zeros(1, dtype=torch.long)
    perturbation_curve(Recorder(), images, flat, target, positive=True, steps=(0.1,))
    perturbed = seen[1][0, 0]
    assert torch.equal(perturbed.flatten()[:10], torch.zeros(10))  # first 10 pixels in row-major order
    assert torch.equal(perturbed.flatten()[10:], torch.ones(90))


def test_maps_to_pixels_upsamples_patch_maps_and_normalises_each_map():
    maps = torch.tensor([[[0.0, 2.0], [4.0, 8.0]], [[3.0, 3.0], [3.0, 3.0]]])
    pixels = maps_to_pixels(maps, (8, 8))
    assert pixels.shape == (2, 8, 8) and pixels.dtype == torch.float64
    assert pixels[0].min() == 0 and pixels[0].max() == 1
    assert torch.equal(pixels[1], torch.zeros(8, 8))
    already = torch.rand(2, 8, 8)
    assert maps_to_pixels(already, (8, 8))[0].max() == pytest.approx(1.0)
    with pytest.raises(InputError):
        maps_to_pixels(torch.tensor([[[float("nan")]]]), (4, 4))


def test_a_constant_map_upsampled_stays_constant_not_round_off_stretched():
    """A constant 0.1 map upsampled to 70 x 50 differs from itself by round-off only; a bare
    min-max spread that over [0, 1] (3,149 of 3,500 pixels above 0.5)."""
    pixels = maps_to_pixels(torch.full((1, 7, 5), 0.1), (70, 50))
    assert torch.equal(pixels, torch.zeros(1, 70, 50))


def test_average_precision_matches_the_step_definition():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, 0, 1, 0, 0], dtype=bool)
    # thresholds: hit at rank 1 (P=1, R=.5) and at rank 3 (P=2/3, R=1)
    assert average_precision(scores, labels) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    tied = average_precision(np.zeros(4), np.array([1, 0, 0, 0], dtype=bool))
    assert tied == pytest.approx(0.25)  # all tied: one threshold, precision = prevalence
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 200).astype(float)
    labels = rng.random(200) < 0.3
    expected = sklearn_metrics.average_precision_score(labels, scores)
    assert average_precision(scores, labels) == pytest.approx(expected)


def test_segmentation_scores_of_a_perfect_and_of_an_inverted_map():
    _, mask = corner_images(3)
    perfect = segmentation_scores(mask.double(), mask)
    assert perfect == pytest.approx({"pixel_acc": 1.0, "miou": 1.0, "map": 1.0})
    inverted = segmentation_scores((~mask).double(), mask)
    assert inverted["pixel_acc"] == 0.0 and inverted["miou"] == 0.0
    assert inverted["map"] == pytest.approx(16 / 256)
    with pytest.raises(InputError):
        segmentation_scores(mask.double()[:, :8], mask)


def test_pointing_game_hits_inside_and_within_tolerance_only():
    mask = torch.zeros(3, 20, 20, dtype=torch.bool)
    mask[:, 5:10, 5:10] = True
    maps = torch.zeros(3, 20, 20)
    maps[0, 7, 7] = 1  # inside
    maps[1, 7, 12] = 1  # 3 px right of the mask
    maps[2, 18, 18] = 1  # far away
    np.testing.assert_array_equal(pointing_hits(maps, mask, tolerance=0), [True, False, False])
    np.testing.assert_array_equal(pointing_hits(maps, mask, tolerance=3), [True, True, False])
    assert pointing_accuracy(maps, mask, tolerance=3) == pytest.approx(2 / 3)
    assert dilate(np.zeros((5, 5), bool), 2).sum() == 0
    with pytest.raises(InputError):
        pointing_hits(maps, mask, tolerance=-1)


def test_random_maps_are_seeded_and_index_stable():
    a = random_patch_maps(5, (8, 8), seed=1)
    assert a.shape == (5, 8, 8) and a.min() >= 0 and a.max() < 1
    torch.testing.assert_close(random_patch_maps(3, (8, 8), seed=1), a[:3])
    assert not torch.equal(random_patch_maps(5, (8, 8), seed=2), a)


@pytest.fixture(scope="module")
def shapes_model_and_data():
    from attnmap.data.shapes_model import load_shapes_vit

    torch.manual_seed(0)
    return load_shapes_vit(), ShapesDataset(24, seed=21)


def oracle_maps(images: torch.Tensor, classes: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """The ground truth itself, as a pixel map: the best a relevance map could do."""
    return masks.double()


@pytest.fixture(scope="module")
def oracle_result(shapes_model_and_data):
    model, dataset = shapes_model_and_data
    return evaluate_methods(model, dataset, [], custom_maps={"oracle": oracle_maps}, progress=False)


def test_harness_scores_the_oracle_above_the_random_baseline_on_every_metric(oracle_result):
    result = oracle_result
    assert [row["method"] for row in result.rows] == ["oracle", "random"]
    assert all(result.beats_random("oracle").values()), result.rows
    oracle = result.row("oracle")
    assert oracle["pixel_acc"] == pytest.approx(100.0) and oracle["pointing"] == pytest.approx(100.0)
    assert result.settings["clean_accuracy"] >= 90
    # predicted-class curves start at 100% by definition; AUCs lie in [0, 90]
    for curves in result.curves.values():
        assert curves["neg_pred"][0] == 1.0
    for row in result.rows:
        assert 0 <= row["neg_pred_auc"] <= 90 and 0 <= row["pos_target_auc"] <= 90


def test_harness_is_reproducible_and_reports_failing_methods_as_rows(shapes_model_and_data):
    model, dataset = shapes_model_and_data

    def unsupported(images, classes, masks):
        raise UnsupportedModelError("no such thing here")

    few = ShapesDataset(8, seed=21)
    first = evaluate_methods(model, few, ["rollout"], custom_maps={"broken": unsupported}, progress=False)
    second = evaluate_methods(model, few, ["rollout"], progress=False)
    assert first.row("rollout") | {"seconds": 0} == second.row("rollout") | {"seconds": 0}
    assert first.row(RANDOM) | {"seconds": 0} == second.row(RANDOM) | {"seconds": 0}
    broken = first.row("broken")
    assert "no such thing" in broken["note"] and np.isnan(broken["miou"])
    with pytest.raises(InputError, match="reserved"):
        evaluate_methods(model, dataset, [], custom_maps={RANDOM: oracle_maps}, progress=False)


def test_report_writes_table_csv_sidecar_and_plot(oracle_result, tmp_path):
    import csv
    import json

    from PIL import Image

    from attnmap.evaluate.report import format_table, plot_curves, write_csv

    result = oracle_result
    table = format_table(result)
    assert "oracle" in table and "random" in table and "mIoU" in table
    assert format_table(result, markdown=True).startswith("| method |")
    record = {"attnmap_version": "test", "method": "oracle"}
    csv_path = write_csv(result, tmp_path / "out" / "eval.csv", record)
    rows = list(csv.DictReader(csv_path.open()))
    assert [row["method"] for row in rows] == ["oracle", "random"]
    assert float(rows[0]["miou"]) == pytest.approx(result.row("oracle")["miou"], abs=1e-4)
    sidecar = json.loads(csv_path.with_suffix(".json").read_text())
    assert sidecar["provenance"] == record and len(sidecar["curves"]["oracle"]["pos_pred"]) == 10
    png = plot_curves(result, tmp_path / "curves.png", record)
    with Image.open(png) as image:
        assert image.text["method"] == "oracle"


@pytest.mark.slow
def test_chefer_methods_beat_the_random_baseline_on_every_metric_on_the_bundled_model():
    from attnmap.data.shapes_model import load_shapes_vit

    torch.manual_seed(0)
    model, dataset = load_shapes_vit(), ShapesDataset(24, seed=1)
    result = evaluate_methods(model, dataset, ["transformer_attribution", "grad_rollout"], progress=False)
    for method in ("transformer_attribution", "grad_rollout"):
        assert all(result.beats_random(method).values()), (method, result.rows)


def test_target_class_columns_use_the_labels_where_the_model_is_wrong(shapes_model_and_data):
    from types import SimpleNamespace

    model, dataset = shapes_model_and_data
    few = ShapesDataset(8, seed=21)
    wrong_labels = few.labels.clone()
    wrong_labels[:2] = (wrong_labels[:2] + 1) % 5  # pretend two images are labelled otherwise
    relabelled = SimpleNamespace(images=few.images, labels=wrong_labels, masks=few.masks)
    result = evaluate_methods(model, relabelled, [], custom_maps={"oracle": oracle_maps}, progress=False)
    curves = result.curves["oracle"]
    assert result.settings["clean_accuracy"] == pytest.approx(75.0)
    assert curves["neg_pred"][0] == 1.0 and curves["neg_target"][0] == pytest.approx(0.75)
    expected = perturbation_curve(model, few.images, maps_to_pixels(few.masks.double(), (64, 64)),
                                  wrong_labels, positive=True)
    np.testing.assert_allclose(curves["pos_target"], expected)


def test_hugging_face_classifier_in_training_mode_is_evaluated_and_left_as_found():
    """The harness called model(images).argmax (an HF output object has none), read the patch grid
    from timm's patch_embed (HF has none: 16 px assumed) and left the model in eval mode."""
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=64,
        patch_size=8, num_labels=5, hidden_dropout_prob=0.5,
    )
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(config).train()
    result = evaluate_methods(model, ShapesDataset(4, seed=3), ["rollout", "lrp"], progress=False)
    for name in ("rollout", "lrp"):
        row = result.row(name)
        assert not row.get("note"), row
        assert all(np.isfinite(float(row[metric])) for metric in ("pointing", "pos_pred_auc", "miou"))
    assert all(module.training for module in model.modules())


def test_masks_must_be_binary_and_localise_something_and_constant_maps_do_not_point():
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, 0, 0] = True  # the object sits on the first pixel, where an argmax of ties lands
    flat_maps = torch.zeros(2, 8, 8)
    np.testing.assert_array_equal(pointing_hits(flat_maps, mask, tolerance=0), [False, False])
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    for bad in (torch.zeros(2, 8, 8, dtype=torch.bool), torch.ones(2, 8, 8, dtype=torch.bool)):
        with pytest.raises(InputError, match="cannot be missed or won"):
            pointing_hits(maps, bad)
    with pytest.raises(InputError, match="at least one mask"):
        segmentation_scores(maps, torch.zeros(2, 8, 8, dtype=torch.bool))
    soft = mask.double() * 0.5
    for metric in (pointing_hits, segmentation_scores):
        with pytest.raises(InputError, match="binary"):
            metric(maps, soft)
    assert segmentation_scores(maps, mask.double()) == segmentation_scores(maps, mask)  # 0/1 floats pass
    # mAP averages over images with an object and background only: a full mask adds no free 1.0
    mixed = torch.stack([mask[0], torch.ones(8, 8, dtype=torch.bool)])
    assert segmentation_scores(maps, mixed)["map"] == segmentation_scores(maps[:1], mask[:1])["map"]
    with pytest.raises(InputError, match="no relevance maps"):
        maps_to_pixels(torch.zeros(0, 2, 2), (4, 4))


def test_harness_says_when_a_method_returns_constant_maps(shapes_model_and_data):
    model, _ = shapes_model_and_data
    few = ShapesDataset(4, seed=21)

    def all_zero(images, classes, masks):
        return torch.zeros(len(images), 4, 4)

    def half_zero(images, classes, masks):
        maps = masks.double()
        maps[::2] = 0.0
        return maps

    result = evaluate_methods(model, few, [], custom_maps={"zero": all_zero, "half": half_zero},
                              progress=False)
    zero = result.row("zero")
    assert "every map is constant" in zero["note"] and all(np.isnan(zero[m]) for m in ("miou", "pointing"))
    half = result.row("half")
    assert half["note"].startswith("2 of 4 maps constant") and not np.isnan(half["miou"])
    assert half["pointing"] <= 50.0  # the two flat maps never count as hits
    assert result.row(RANDOM)["note"] == ""


def test_perturbation_steps_must_strictly_increase():
    images, mask = corner_images(2)
    classes = torch.ones(2, dtype=torch.long)
    for steps in ((0.1, 0.1, 0.5), (0.0, 0.5), (0.5, 1.0), ()):
        with pytest.raises(InputError, match="strictly increasing"):
            perturbation_curve(BrightSpotModel(), images, mask.double(), classes, positive=True, steps=steps)
    # 256 pixels: a 0.1% step removes no pixel and 0.5% the same one as 0.4% (a flat, fake segment)
    for steps in ((0.001, 0.5), (0.004, 0.005, 0.5)):
        with pytest.raises(InputError, match="too small for steps"):
            perturbation_curve(BrightSpotModel(), images, mask.double(), classes, positive=True, steps=steps)


def test_a_pointing_tolerance_that_grows_the_mask_over_the_image_is_refused(shapes_model_and_data):
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, 3:5, 3:5] = True
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    assert pointing_hits(maps, mask, tolerance=1).shape == (2,)
    with pytest.raises(InputError, match="fills the image once grown by the 8 px"):
        pointing_hits(maps, mask, tolerance=8)  # every peak would count as a hit
    model, _ = shapes_model_and_data
    with pytest.raises(InputError, match="every pointing would hit"):
        evaluate_methods(model, ShapesDataset(2, seed=21), [], pointing_tolerance=200, progress=False)


def test_harness_refuses_a_method_name_given_twice(shapes_model_and_data):
    model, _ = shapes_model_and_data
    few = ShapesDataset(2, seed=21)
    with pytest.raises(InputError, match="more than once: rollout"):
        evaluate_methods(model, few, ["rollout", "rollout"], progress=False)
    with pytest.raises(InputError, match="more than once: rollout"):  # a custom source would replace it
        evaluate_methods(model, few, ["rollout"], custom_maps={"rollout": oracle_maps}, progress=False)


def test_random_maps_refuse_a_seed_beyond_64_bits_and_keep_negative_seeds():
    with pytest.raises(InputError, match="too large"):
        random_patch_maps(2, (2, 2), seed=2**62)
    negative = random_patch_maps(2, (2, 2), seed=-1)
    torch.testing.assert_close(negative, random_patch_maps(2, (2, 2), seed=-1))
    assert not torch.equal(negative, random_patch_maps(2, (2, 2), seed=1))
