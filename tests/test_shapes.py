"""The shapes generator: seeded, index-stable, one visible target whose mask matches the drawing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnmap.data.shapes import (
    SHAPE_CLASSES,
    SHAPES_MEAN,
    SHAPES_STD,
    ShapesDataset,
    make_shape_sample,
    make_shapes,
)
from attnmap.errors import InputError


def test_shapes_have_documented_types_and_shapes():
    images, labels, masks = make_shapes(12, size=64, seed=3)
    assert images.shape == (12, 64, 64, 3) and images.dtype == np.uint8
    assert labels.shape == (12,) and labels.dtype == np.int64
    assert masks.shape == (12, 64, 64) and masks.dtype == bool
    assert set(labels.tolist()) <= set(range(len(SHAPE_CLASSES)))


def test_same_seed_same_images_and_samples_do_not_depend_on_n_or_start():
    first = make_shapes(10, seed=7)
    again = make_shapes(10, seed=7)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    longer = make_shapes(14, seed=7)
    tail = make_shapes(4, seed=7, start=6)
    for whole, short, part in zip(longer, first, tail, strict=True):
        np.testing.assert_array_equal(whole[:10], short)
        np.testing.assert_array_equal(whole[6:10], part)
    single = make_shape_sample(8, seed=7)
    np.testing.assert_array_equal(single[0], first[0][8])


def test_different_seeds_differ():
    a, _, _ = make_shapes(4, seed=0)
    b, _, _ = make_shapes(4, seed=1)
    assert not np.array_equal(a, b)


def test_every_class_appears_and_is_roughly_balanced():
    _, labels, _ = make_shapes(500, seed=0)
    counts = np.bincount(labels, minlength=len(SHAPE_CLASSES))
    assert counts.min() > 500 / len(SHAPE_CLASSES) * 0.7


def test_mask_is_one_sizeable_target_that_stands_out_from_the_background():
    images, _, masks = make_shapes(40, seed=2)
    areas = masks.reshape(40, -1).sum(1)
    assert areas.min() > 64 * 64 * 0.02 and areas.max() < 64 * 64 * 0.3
    for image, mask in zip(images.astype(float), masks, strict=True):
        inside = image[mask].mean(0)
        ring = np.zeros_like(mask)
        ring[max(0, np.argwhere(mask)[:, 0].min() - 6):np.argwhere(mask)[:, 0].max() + 7,
             max(0, np.argwhere(mask)[:, 1].min() - 6):np.argwhere(mask)[:, 1].max() + 7] = True
        outside = image[ring & ~mask].mean(0)
        assert np.abs(inside - outside).max() > 25  # the target contrasts with its surroundings


def test_target_stays_inside_the_image():
    _, _, masks = make_shapes(60, seed=4)
    border = masks[:, 0, :].any() or masks[:, -1, :].any() or masks[:, :, 0].any() or masks[:, :, -1].any()
    assert not border


def test_class_subset_relabels_from_zero():
    _, labels, _ = make_shapes(50, seed=0, classes=("star", "circle"))
    assert set(labels.tolist()) == {0, 1}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n": -1},
        {"n": 2, "size": 16},
        {"n": 2, "classes": ("circle",)},
        {"n": 2, "classes": ("blob", "star")},
    ],
)
def test_bad_arguments_raise_input_error(kwargs):
    with pytest.raises(InputError):
        make_shapes(**kwargs)


def test_dataset_normalises_for_the_model_and_keeps_masks():
    dataset = ShapesDataset(6, seed=5)
    image, label, mask = dataset[2]
    images, labels, masks = make_shapes(6, seed=5)
    expected = (torch.from_numpy(images[2]).permute(2, 0, 1).float() / 255 - SHAPES_MEAN[0]) / SHAPES_STD[0]
    torch.testing.assert_close(image, expected)
    assert label == labels[2] and torch.equal(mask, torch.from_numpy(masks[2]))
    assert len(dataset) == 6 and dataset.images.shape == (6, 3, 64, 64)
