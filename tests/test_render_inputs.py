"""What users hand the drawing functions straight from a model or PIL (found by
bench/drawing_api_sweep.py): half-precision and grad-tracking tensors, PIL palette and 16-bit
images, signed maps, round-off-constant maps, shrinking resizes, NaN colours."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from attnmap import InputError, normalize, overlay, upsample
from attnmap.render import apply_colormap

RNG = np.random.default_rng(0)


def test_signed_normalisation_keeps_zero_in_the_middle():
    signed = np.array([[-3.0, 0.0], [1.0, 1.5]])
    np.testing.assert_allclose(normalize(signed, "signed"), [[0.0, 0.5], [2 / 3, 0.75]])
    out = normalize(torch.tensor(signed), "signed")
    assert isinstance(out, torch.Tensor)
    np.testing.assert_allclose(out.numpy(), [[0.0, 0.5], [2 / 3, 0.75]])
    np.testing.assert_array_equal(normalize(np.zeros((2, 2)), "signed"), np.full((2, 2), 0.5))
    assert "signed" in normalize.__doc__


def test_an_upsampled_constant_map_normalises_to_zeros_not_to_round_off_noise():
    grown = upsample(np.full((7, 5), 2.0), (70, 50))
    np.testing.assert_array_equal(normalize(grown), np.zeros((70, 50)))
    drawn = overlay(np.full((70, 50, 3), 200, np.uint8), np.full((7, 5), 2.0), alpha=1.0)
    assert (drawn == drawn[0, 0]).all()  # one colour: a constant map has no hot place
    # a real range, however small against the values, is still stretched
    np.testing.assert_allclose(normalize(np.array([1.0, 1.0 + 1e-9])), [0.0, 1.0])


def test_shrinking_a_map_keeps_a_hot_spot_that_falls_between_sample_points():
    big = np.zeros((64, 64))
    big[44:48, 12:16] = 1.0  # point samples of a 16× shrink sit at 7.5, 23.5, 39.5, 55.5: none on it
    small = upsample(big, (4, 4))
    assert np.unravel_index(np.argmax(small), small.shape) == (2, 0)
    assert small[2, 0] > 0.01


def test_half_precision_tensors_are_drawn():
    grid = torch.tensor(RNG.uniform(0, 0.5, (7, 5)), dtype=torch.float32)
    grid[4, 1] = 1.0
    image = torch.rand(3, 70, 50)
    for dtype in (torch.bfloat16, torch.float16):
        drawn = overlay(image.to(dtype), grid.to(dtype), alpha=1.0)
        reference = overlay(image.to(dtype).float(), grid.to(dtype).float(), alpha=1.0)
        np.testing.assert_array_equal(drawn, reference)
        assert upsample(grid.to(dtype), (70, 50), "bicubic").dtype == dtype


def test_apply_colormap_takes_tensors_and_refuses_nan():
    values = np.linspace(0, 1, 5)
    want = (matplotlib.colormaps["viridis"](values)[:, :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(apply_colormap(torch.tensor(values, requires_grad=True), "viridis"), want)
    np.testing.assert_array_equal(
        apply_colormap(torch.tensor([0.0, 1.0]).bfloat16(), "viridis"), want[[0, -1]]
    )
    for cmap in ("jet", "opencv:jet"):
        with pytest.raises(InputError, match="NaN"):
            apply_colormap(np.array([0.5, np.nan]), cmap)


def test_pil_palette_and_16_bit_images_are_drawn_as_shown():
    rgb = RNG.integers(0, 256, (28, 20, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    grid = np.ones((2, 2))
    np.testing.assert_array_equal(
        overlay(palette, grid, alpha=0.0), np.asarray(palette.convert("RGB")).astype(np.uint8)
    )
    grey = rgb[..., 0]
    wide = (grey.astype(np.uint16) << 8) | grey  # v * 257: exactly v on 0..255
    grey3 = np.repeat(grey[..., None], 3, -1)
    for image in (Image.fromarray(wide), np.repeat(wide[..., None], 3, -1)):
        drawn = overlay(image, grid, alpha=0.0)
        assert np.abs(drawn.astype(int) - grey3).max() <= 1  # alpha 0: the image, up to float rounding


def test_integer_images_outside_0_255_are_refused_not_clipped():
    with pytest.raises(InputError, match="0..255"):
        overlay(np.full((4, 4, 3), 300, np.int64), np.ones((2, 2)))
    with pytest.raises(InputError, match="0..255"):
        overlay(np.full((4, 4, 3), -1, np.int32), np.ones((2, 2)))


def test_percentile_normalisation_of_half_precision_tensors():
    values = torch.tensor([[3.0, 1.0], [2.0, 2.0]])
    for dtype in (torch.bfloat16, torch.float16):
        out = normalize(values.to(dtype), "percentile")
        assert out.dtype == dtype
        np.testing.assert_allclose(out.float().numpy(), [[1.0, 0.25], [0.625, 0.625]], atol=1e-2)


def test_grey_with_alpha_images_are_drawn_grey():
    grey = RNG.integers(0, 256, (6, 4), dtype=np.uint8)
    grey_alpha = np.dstack([grey, np.full_like(grey, 255)])
    drawn = overlay(grey_alpha, np.ones((2, 2)), alpha=0.0)
    np.testing.assert_array_equal(drawn, np.repeat(grey[..., None], 3, -1))


@pytest.mark.parametrize(
    "maps", [np.array([[None, 1.0]]), "a map", [torch.ones(2, 2), torch.ones(2, 2)], {"map": 1}]
)
def test_upsample_refuses_what_is_no_array_of_numbers_in_one_line(maps: object) -> None:
    """An object array, a string, a list of tensors (maps not stacked) or a dict was torch's
    TypeError or ValueError from ``torch.as_tensor``; normalize and overlay said it in one line."""
    with pytest.raises(InputError, match=r"^maps must be a tensor or an array of real numbers, got "):
        upsample(maps, (8, 8))


def test_colour_bar_labels_tell_a_narrow_range_apart():
    """A near-uniform attention map (scores 0.05876..0.05884) is stretched over the whole colour
    map, and its bar read "0.0588 0.0588 0.0588", the caption "min 0.0588 to max 0.0588": the reader
    could not see the range, nor that it is tiny."""
    from attnmap.render.scale import ScoreScale

    scale = ScoreScale("minmax", 0.05876, 0.05884, "jet")
    labels = [label for _, label in scale.ticks(5)]
    assert len(set(labels)) == 5 and [float(label) for label in labels] == sorted(float(x) for x in labels)
    low, high = (float(label) for label in (labels[0], labels[-1]))
    assert abs(low - 0.05876) < 5e-7 and abs(high - 0.05884) < 5e-7
    assert f"min {labels[0]} to max {labels[-1]}" in scale.describe()
    wide = ScoreScale("minmax", 0.0, 2.0, "jet")  # three significant digits stay the rule
    assert [label for _, label in wide.ticks(3)] == ["0", "1", "2"]
    assert [label for _, label in ScoreScale("diverging", -3.2e-6, 3.2e-6, "RdBu_r").ticks(3)][1] == "0"


@pytest.mark.parametrize(
    "scores",
    [
        torch.tensor([[-60000.0, 0.0], [30000.0, 60000.0]], dtype=torch.float16),
        np.array([[-3e38, 0.0], [1e38, 3e38]], dtype=np.float32),
        np.array([[-1e308, 0.0], [1e307, 1e308]]),
    ],
)
def test_normalising_a_map_whose_range_exceeds_its_dtype(scores):
    """max - min beyond the dtype's largest number (±60000 in float16, ±3e38 in float32) made
    minmax NaN (float16) or an overflow, and signed all 0.5: a map of nothing. Both are computed on
    the map scaled into [-1, 1] when its range would overflow."""
    import warnings

    reference = np.asarray(scores, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow
        minmax = np.asarray(normalize(scores, "minmax"), dtype=np.float64)
        signed = np.asarray(normalize(scores, "signed"), dtype=np.float64)
    small = reference / 1e300  # the same ratios without overflow
    expected_minmax = (small - small.min()) / (small.max() - small.min())
    np.testing.assert_allclose(minmax, expected_minmax, atol=1e-3)
    np.testing.assert_allclose(signed, reference / np.abs(reference).max() / 2 + 0.5, atol=1e-3)
    assert type(normalize(scores, "minmax")) is type(scores)
