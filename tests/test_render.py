"""The rendering core: exact values on small arrays, and a rendered PNG."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from PIL import Image

from attnmap.errors import InputError
from attnmap.render import apply_colormap, normalize, overlay, save_grid, upsample


def test_minmax_exact():
    out = normalize(np.array([[2.0, 4.0], [6.0, 10.0]]), "minmax")
    np.testing.assert_array_equal(out, [[0.0, 0.25], [0.5, 1.0]])


def test_percentile_ranks_with_averaged_ties():
    out = normalize(np.array([10.0, 20.0, 20.0, 40.0]), "percentile")
    # ranks 1, 2.5, 2.5, 4 over N = 4
    np.testing.assert_array_equal(out, [0.25, 0.625, 0.625, 1.0])


def test_none_keeps_values_and_converts_ints_to_float():
    out = normalize(np.array([1, 5, 3]), "none")
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [1.0, 5.0, 3.0])


@pytest.mark.parametrize("mode", ["minmax", "percentile"])
def test_constant_map_gives_zeros_or_uniform_ranks_never_nan(mode):
    out = normalize(np.full((3, 3), 7.0), mode)
    assert np.isfinite(out).all()
    if mode == "minmax":
        np.testing.assert_array_equal(out, np.zeros((3, 3)))


def test_constant_map_minmax_is_zero_for_tensors():
    out = normalize(torch.full((2, 2), 3.0), "minmax")
    assert isinstance(out, torch.Tensor)
    assert torch.equal(out, torch.zeros(2, 2))


def test_tensor_percentile_keeps_type_and_device():
    out = normalize(torch.tensor([3.0, 1.0, 2.0]), "percentile")
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, torch.tensor([1.0, 1 / 3, 2 / 3]))


def test_normalize_rejects_bad_input():
    with pytest.raises(InputError, match="unknown normalisation"):
        normalize(np.zeros(3), "zscore")
    with pytest.raises(InputError, match="NaN"):
        normalize(np.array([1.0, np.nan]), "minmax")


def test_upsample_nearest_repeats_patches():
    grid = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    out = upsample(grid, (4, 4), mode="nearest")
    expected = torch.tensor([[1.0, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]])
    assert out.shape == (1, 4, 4)
    torch.testing.assert_close(out[0], expected)


def test_upsample_bilinear_exact_values_and_array_roundtrip():
    grid = np.array([[0.0, 1.0]])
    out = upsample(grid, (1, 4))
    assert isinstance(out, np.ndarray)
    # align_corners=False: sample points at x = -0.25, 0.25, 0.75, 1.25 (clamped) of the 2-cell grid
    np.testing.assert_allclose(out, [[0.0, 0.25, 0.75, 1.0]])


def test_upsample_rejects_bad_shape():
    with pytest.raises(InputError, match="maps must be"):
        upsample(torch.zeros(1, 1, 2, 2), 4)


def test_opencv_colormap_equals_cv2_apply_colormap():
    import cv2

    values = np.linspace(0, 1, 256)[None, :]
    ours = apply_colormap(values, "opencv:jet")
    theirs = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * values), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(ours, theirs)


def test_matplotlib_colormap_truncates_like_clam():
    import matplotlib

    values = np.array([[0.0, 0.3, 0.5, 1.0]])
    expected = (matplotlib.colormaps["viridis"](values)[..., :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(apply_colormap(values, "viridis"), expected)
    np.testing.assert_array_equal(apply_colormap(values, "jet")[0, 0], [0, 0, 127])  # dark blue
    np.testing.assert_array_equal(apply_colormap(values, "jet")[0, -1], [127, 0, 0])  # dark red


def test_unknown_colormap_is_named():
    with pytest.raises(InputError, match="no_such_map"):
        apply_colormap(np.zeros((2, 2)), "no_such_map")


def test_overlay_blend_exact():
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    heat = np.array([[0.0, 0.0], [0.0, 1.0]])
    out = overlay(image, heat, cmap="gray", alpha=0.5, style="blend", normalize_mode="none")
    # gray maps 0 -> 0 and 1 -> 255: 0.5*0 + 0.5*100/255 and 0.5*1 + 0.5*100/255
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert out[0, 0, 0] == int((0.5 * 100 / 255) * 255)
    assert out[1, 1, 0] == int((0.5 + 0.5 * 100 / 255) * 255)


def test_overlay_add_divides_by_max():
    image = np.zeros((1, 2, 3), dtype=np.uint8)
    heat = np.array([[0.0, 1.0]])
    out = overlay(image, heat, cmap="gray", style="add", normalize_mode="none")
    np.testing.assert_array_equal(out[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(out[0, 1], [255, 255, 255])


def test_overlay_upsamples_patch_grid_and_rejects_bad_args():
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    out = overlay(image, torch.rand(4, 4))
    assert out.shape == (32, 32, 3)
    with pytest.raises(InputError, match="style"):
        overlay(image, np.zeros((4, 4)), style="multiply")
    with pytest.raises(InputError, match="alpha"):
        overlay(image, np.zeros((4, 4)), alpha=1.5)


def test_rendered_png_has_hot_colour_where_map_is_high(tmp_path):
    image = np.full((64, 64, 3), 128, dtype=np.uint8)
    heat = np.zeros((8, 8))
    heat[1, 6] = 1.0  # a hot patch in the top-right corner
    path = tmp_path / "overlay.png"
    Image.fromarray(overlay(image, heat, cmap="jet", alpha=0.6)).save(path)
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    redness = pixels[..., 0] - pixels[..., 2]
    y, x = np.unravel_index(np.argmax(redness), redness.shape)
    assert 8 <= y < 16 and 48 <= x < 56
    assert pixels[60, 4, 2] > pixels[60, 4, 0]  # cold (blue) far from the hot patch


def test_save_grid_writes_one_figure_with_metadata(tmp_path):
    images = [np.full((16, 16, 3), v, dtype=np.uint8) for v in (0, 128, 255)]
    path = save_grid(images, ["a", "b", "c"], tmp_path / "grid.png", metadata={"method": "all"})
    with Image.open(path) as saved:
        assert saved.size[0] > saved.size[1]  # one row of three
        assert saved.text.get("method") == "all"
    with pytest.raises(InputError, match="titles"):
        save_grid(images, ["a"], tmp_path / "bad.png")


finite_maps = arrays(
    np.float64,
    array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6),
    elements=st.floats(-1e6, 1e6, allow_nan=False),
)


@given(finite_maps, st.sampled_from(["minmax", "percentile"]))
@settings(max_examples=200, deadline=None)
def test_normalised_maps_lie_in_unit_interval_and_keep_order(values, mode):
    out = normalize(values, mode)
    assert out.shape == values.shape and np.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    flat, normed = values.ravel(), out.ravel()
    order = np.argsort(flat, kind="stable")
    assert np.all(np.diff(normed[order]) >= -1e-12)  # monotone: a higher score never maps lower


def test_drawing_helpers_refuse_bad_arguments_in_one_line(tmp_path):
    image, heat = np.random.default_rng(0).random((6, 10, 3)), np.arange(6.0).reshape(2, 3)
    bad_calls = {
        "colour map must be a name": lambda: overlay(image, heat, cmap=None),
        "alpha must be a number": lambda: overlay(image, heat, alpha="0.5"),
        "heatmap must hold real numbers": lambda: overlay(image, heat * 1j),
        "heatmap is empty": lambda: overlay(image, np.zeros((0, 3))),
        "image contains NaN": lambda: overlay(np.full((4, 4, 3), np.nan), heat),
        "float image must lie in [0, 1]": lambda: overlay(image * 255.0, heat),
        "image is empty": lambda: overlay(np.zeros((0, 4, 3)), heat),
        "size must be a positive int": lambda: upsample(heat, (0, 4)),
        "maps are empty": lambda: upsample(np.zeros((0, 3)), 4),
        "a map must hold real numbers": lambda: normalize(np.array(["a"])),
    }
    for message, call in bad_calls.items():
        with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
            call()


def test_opencv_and_colormap_objects_work_everywhere():
    import matplotlib

    from attnmap.render.colormap import get_cmap

    values = np.linspace(0.0, 1.0, 7)
    np.testing.assert_array_equal(apply_colormap(values, "OpenCV:jet"), apply_colormap(values, "opencv:jet"))
    table = (get_cmap("opencv:jet")(np.arange(256) / 256.0)[:, :3] * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(table, apply_colormap(np.arange(256) / 255.0 + 1e-9, "opencv:jet"))
    viridis = matplotlib.colormaps["viridis"]
    np.testing.assert_array_equal(apply_colormap(values, viridis), apply_colormap(values, "viridis"))
    black = overlay(np.zeros((4, 4, 3)), np.zeros((2, 2)), cmap="gray", style="add")
    np.testing.assert_array_equal(black, 0)  # black over black: no division by zero


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".webp", ".pdf"])
def test_save_grid_writes_the_format_of_the_suffix(tmp_path, suffix):
    path = save_grid([np.zeros((4, 6, 3), np.uint8)], ["a"], tmp_path / "new" / f"grid{suffix}", dpi=20)
    assert path.stat().st_size > 0
    if suffix != ".pdf":
        assert Image.open(path).format == {".jpg": "JPEG", ".tif": "TIFF"}.get(suffix, suffix[1:].upper())


def test_save_grid_refuses_paths_it_cannot_honour(tmp_path):
    tile = [np.zeros((4, 6, 3), np.uint8)]
    (tmp_path / "afile").write_text("x")
    for path, message in [
        (tmp_path / "grid.xyz", "cannot tell the picture format"),
        (tmp_path / "grid", "cannot tell the picture format"),
        (tmp_path, "is a folder"),
        (tmp_path / "afile" / "grid.png", "is a file, not a folder"),
    ]:
        with pytest.raises(InputError, match=message):
            save_grid(tile, None, path)
    with pytest.raises(InputError, match="PNG text chunks"):
        save_grid(tile, None, tmp_path / "grid.jpg", metadata={"model": "m"})
    for bad in ({"ncols": 0}, {"ncols": 1.5}, {"dpi": -1}, {"tile_inches": 0}):
        with pytest.raises(InputError, match="save_grid"):
            save_grid(tile, None, tmp_path / "grid.png", **bad)
    assert not list(tmp_path.glob("grid*"))


def test_legend_box_and_scale_refuse_or_fix_what_used_to_draw_wrong():
    from attnmap.render.legend import add_legend
    from attnmap.render.placement import overlay_in_box
    from attnmap.render.scale import choose_scale

    scale = choose_scale(np.linspace(0.0, 1.0, 10), cmap="opencv:jet")
    white = add_legend(np.ones((8, 8, 3)), scale, "t")  # floats in [0, 1] were cast to black
    black = add_legend(np.zeros((8, 8, 3), np.uint8), scale, "t")
    changed = white != black
    assert changed.sum() == 8 * 8 * 3 and (white[changed] == 255).all()
    assert add_legend(np.zeros((4, 4), np.uint8), scale, "t").ndim == 3  # greyscale drawn, not IndexError
    for box in [(np.nan, 0, 5, 5), (0, 0, np.inf, 5), (0, 0, 5)]:
        with pytest.raises(InputError, match="four finite numbers"):
            overlay_in_box(np.zeros((6, 6, 3)), np.ones((2, 2)), box)
    with pytest.raises(InputError, match="unknown colour map"):
        choose_scale(np.ones(4), cmap="nosuch")


def test_save_grid_refuses_titles_given_as_one_string(tmp_path):
    """save_grid([a, b], "ab", path) titled the panels 'a' and 'b', one letter each (a string is a
    sequence of its characters); one image with "a" passed by the same accident. A string is
    refused, naming the list it should be; one image and images not in a list likewise."""
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(InputError, match=r"^titles must be a list of strings, one per image, got the str"):
        save_grid([image, image], "ab", tmp_path / "grid.png")
    with pytest.raises(InputError, match=r"^images must be a list of images, got one ndarray"):
        save_grid(image, ["a"], tmp_path / "grid.png")
    with pytest.raises(InputError, match=r"^images must be a list of images, got one Image"):
        save_grid(Image.new("RGB", (8, 8)), ["a"], tmp_path / "grid.png")
    assert save_grid([image, image], ["a", "b"], tmp_path / "grid.png").is_file()
