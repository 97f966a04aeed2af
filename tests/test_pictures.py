"""Readable pictures: score scales, colour bars with titles, diverging signed maps, maps on the original."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from attnmap.errors import InputError
from attnmap.render.legend import add_legend
from attnmap.render.placement import overlay_in_box
from attnmap.render.scale import choose_scale, colour_table, is_signed


def test_scale_choice_and_units():
    signed = np.array([-2.0, -1.0, 0.0, 1.0, 3.0])
    scale = choose_scale(signed)
    assert scale.kind == "diverging" and scale.low == -scale.high
    assert scale.unit(np.array([0.0]))[0] == 0.5  # zero sits in the middle of the colour map
    assert choose_scale(np.array([0.1, 0.2, 5.0]), "lrp").kind == "diverging"  # known signed method
    robust = choose_scale(np.r_[np.zeros(98), 1.0, 1000.0])
    assert robust.kind == "robust" and robust.high < 1000  # one outlier cannot wash the map out
    ranks = choose_scale(np.array([3.0, 1.0, 2.0]), kind="percentile")
    np.testing.assert_allclose(ranks.unit(np.array([1.0, 2.0, 3.0])), [1 / 3, 2 / 3, 1.0])
    assert not is_signed(np.array([-0.001, 1.0]))  # a rounding-level negative tail is not a sign
    assert not is_signed(signed, "attention")  # raw MIL attention logits: zero means nothing
    with pytest.raises(InputError, match="unknown score scale"):
        choose_scale(signed, kind="rainbow")
    with pytest.raises(InputError, match="NaN"):
        choose_scale(np.array([np.nan]))


def test_legend_adds_title_and_colour_bar_below_untouched_pixels():
    image = np.random.default_rng(0).integers(0, 255, (300, 600, 3), dtype=np.uint8)
    scale = choose_scale(np.linspace(-1, 1, 50))
    out = add_legend(image, scale, "slide_1 · attention · predicted tumour (p = 0.910)")
    top = out.shape[0] - image.shape[0]
    assert out.shape[1] == 600 and top > 0
    rows = [r for r in range(out.shape[0]) if np.array_equal(out[r], image[0])]
    assert rows, "the picture is pasted unchanged"
    start = rows[0]
    np.testing.assert_array_equal(out[start : start + 300], image)
    below = out[start + 300 :]
    table = colour_table(scale.cmap)
    for colour in (table[0], table[-1]):  # both ends of the diverging map appear in the bar
        assert (np.abs(below.astype(int) - colour.astype(int)).max(axis=2) <= 3).any()
    assert (out[:start] < 100).any()  # the title's dark text


def test_overlay_in_box_touches_only_the_box():
    image = np.full((50, 80, 3), 200, dtype=np.uint8)
    heat = np.arange(16, dtype=float).reshape(4, 4)
    out = overlay_in_box(image, heat, (20.0, 5.0, 60.0, 45.0), alpha=1.0)
    assert out.shape == image.shape
    np.testing.assert_array_equal(out[:, :19], image[:, :19])
    np.testing.assert_array_equal(out[:, 61:], image[:, 61:])
    assert not np.array_equal(out[10:40, 25:55], image[10:40, 25:55])
    with pytest.raises(InputError, match="outside"):
        overlay_in_box(image, heat, (100, 100, 120, 120))


def test_crop_box_traces_resize_and_centre_crop():
    from attnmap.vit.original import crop_box

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1)
    x0, y0, x1, y1 = crop_box(model, (640, 480))  # crop_pct 0.9: shorter side → 248, centre 224
    side = 224 / (248 / 480)
    assert (y1 - y0) == pytest.approx(side, abs=1.5) and (x1 - x0) == pytest.approx(side, abs=1.5)
    assert (x0 + x1) / 2 == pytest.approx(320, abs=1) and (y0 + y1) / 2 == pytest.approx(240, abs=1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("pictures")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, img_size=64, num_classes=4)
    torch.save({"state_dict": model.state_dict()}, root / "weights.pt")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 150, 3), dtype=np.uint8)).save(
        root / "wide.png"
    )
    return root


def test_explain_on_original_and_grid_titles(checkpoint, single_thread):
    from attnmap.cli.main import main

    out = checkpoint / "out"
    model = [
        "--model",
        "timm:vit_tiny_patch16_224",
        "--model-arg",
        "depth=2",
        "--model-arg",
        "img_size=64",
        "--checkpoint",
        str(checkpoint / "weights.pt"),
    ]
    main(
        [
            "explain",
            str(checkpoint / "wide.png"),
            *model,
            "--method",
            "attention",
            "--on",
            "original",
            "--no-legend",  # the bare overlay, pixel for pixel the original's size
            "--out",
            str(out),
        ]
    )
    drawn = np.asarray(Image.open(out / "wide_attention.png"))
    assert drawn.shape == (90, 150, 3)
    original = np.asarray(Image.open(checkpoint / "wide.png"))
    np.testing.assert_array_equal(drawn[:, :25], original[:, :25])  # outside the centre crop: untouched
    assert not np.array_equal(drawn[:, 40:110], original[:, 40:110])


def test_explain_grid_has_prediction_title_and_colour_bars(checkpoint, single_thread, monkeypatch):
    import attnmap.vit.batch as batch
    from attnmap.vit.models import load_model

    seen = {}
    real = batch.save_grid

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(batch, "save_grid", spy)
    model = load_model(
        "timm:vit_tiny_patch16_224", checkpoint / "weights.pt", depth=2, img_size=64, num_classes=4
    )
    written = batch.explain_paths(
        [checkpoint / "wide.png"], model, "all", None, checkpoint / "grid", progress=False
    )
    grid = [p for p in written if p.name.endswith("_all_methods.png")][0]
    assert "predicted class" in seen["suptitle"] and "(p = 0." in seen["suptitle"]
    assert seen["scales"][0] is None and all(scale is not None for scale in seen["scales"][1:])
    with Image.open(grid) as picture:
        assert picture.size[0] > picture.size[1]


def test_signed_map_is_diverging_and_centred_on_zero():
    from attnmap.vit.batch import draw_map

    view = np.full((32, 32, 3), 128, dtype=np.uint8)
    heat = np.zeros((4, 4))
    heat[0, 0], heat[3, 3] = 1.0, -1.0
    picture, scale = draw_map(None, view, None, heat, "occlusion", None, 1.0)
    assert scale.kind == "diverging" and scale.cmap == "RdBu_r"
    middle = colour_table("RdBu_r")[128].astype(int)
    assert np.abs(picture[16, 16].astype(int) - middle).max() <= 8  # zero is the neutral middle colour
    assert picture[2, 2, 0] > picture[2, 2, 2] and picture[29, 29, 2] > picture[29, 29, 0]  # red +, blue -


def test_legend_text_wraps_to_a_narrow_picture():
    """A narrow slide's heatmap cut its title and caption off at the right edge."""
    from attnmap.render.legend import _font, wrap_text

    title = "slide_with_a_long_name · CLAM attention for class 0 · predicted class 1 (p = 1.000)"
    image = np.full((200, 250, 3), 128, dtype=np.uint8)
    scale = choose_scale(np.linspace(-3.48, 3.48, 50))
    narrow = add_legend(image, scale, title, label="attention")
    one_line = add_legend(image, scale, "s1", label="a")
    start = next(r for r in range(narrow.shape[0]) if (narrow[r] == 128).all())
    assert narrow.shape[1] == 250 and narrow.shape[0] > one_line.shape[0]  # more lines
    bands = np.concatenate([narrow[:start], narrow[start + 200 :]])  # title; colour bar and caption
    assert (bands[:, -3:] > 200).all(), "text reaches the right edge"
    lines = wrap_text(title, _font(11), 240)
    assert len(lines) > 1 and " ".join(lines).replace(" · ", " ") == title.replace(" · ", " ")


def test_a_padded_models_grid_is_drawn_where_its_patches_lie():
    """A model padding its input to whole patches (timm dynamic_img_pad) gives a 36×36 image 5×5
    patches covering 40×40 pixels; the overlay stretched the 5×5 map over the 36 pixels, every cell
    but the first drawn up to 4 pixels from where its patch lies."""
    from attnmap.render.overlay import overlay
    from attnmap.render.upsample import upsample
    from attnmap.vit.batch import draw_map

    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, depth=1, img_size=36, patch_size=8, num_classes=3,
        dynamic_img_size=True, dynamic_img_pad=True,
    ).eval()
    view = np.full((36, 36, 3), 128, dtype=np.uint8)
    heat = np.zeros((5, 5))
    heat[4, 4], heat[0, 2] = 1.0, 0.5
    picture, _ = draw_map(model, view, None, heat, "attention", None, 0.7)
    placed = upsample(heat, (40, 40))[:36, :36]  # the patches' own pixels, the padding cut off
    np.testing.assert_array_equal(picture, overlay(view, placed, alpha=0.7))
    unpadded = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, depth=1, img_size=32, patch_size=8, num_classes=3
    ).eval()
    square = np.full((32, 32, 3), 128, dtype=np.uint8)
    picture, _ = draw_map(unpadded, square, None, heat[:4, :4], "attention", None, 0.7)
    np.testing.assert_array_equal(picture, overlay(square, heat[:4, :4], alpha=0.7))


def test_a_hugging_face_models_grid_is_drawn_over_the_pixels_it_saw():
    """A Hugging Face ViT fed 36×36 pixels with 8-pixel patches sees 4×4 patches, 32×32 pixels (its
    convolution drops the rest); the map was stretched over all 36, every patch drawn off its place.
    Now it covers the 32 pixels seen and the unseen strip keeps the image's own pixels, on the
    model's view and on the original image alike (its box cut to the part seen)."""
    from transformers import ViTConfig, ViTForImageClassification

    from attnmap.render.overlay import overlay
    from attnmap.render.placement import overlay_in_box
    from attnmap.vit.batch import draw_map

    torch.manual_seed(0)
    config = ViTConfig(image_size=36, patch_size=8, hidden_size=32, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=64, num_labels=3)
    model = ViTForImageClassification(config).eval()
    view = np.random.default_rng(0).integers(0, 256, size=(36, 36, 3), dtype=np.uint8)
    heat = np.zeros((4, 4))
    heat[3, 3], heat[0, 2] = 1.0, 0.5
    picture, _ = draw_map(model, view, None, heat, "attention", None, 0.7)
    np.testing.assert_array_equal(picture[:32, :32], overlay(view[:32, :32], heat, alpha=0.7))
    np.testing.assert_array_equal(picture[32:], view[32:])
    np.testing.assert_array_equal(picture[:, 32:], view[:, 32:])
    pixels = np.zeros((36, 36))  # a pixel-level map: the unseen strip is left uncoloured too
    pixels[5, 5] = 1.0
    picture, _ = draw_map(model, view, None, pixels, "lrp", None, 0.7)
    np.testing.assert_array_equal(picture[32:], view[32:])
    alone, _ = draw_map(None, view[:32, :32], None, pixels[:32, :32], "lrp", None, 0.7)  # its scale: signed
    np.testing.assert_array_equal(picture[:32, :32], alone)
    original = np.random.default_rng(1).integers(0, 256, size=(72, 90, 3), dtype=np.uint8)
    box = (9.0, 0.0, 81.0, 72.0)  # the view's 36 pixels are 72 of the original's
    picture, _ = draw_map(model, view, original, heat, "attention", None, 0.7, box)
    np.testing.assert_array_equal(picture, overlay_in_box(original, heat, (9.0, 0.0, 73.0, 64.0), alpha=0.7))


def test_a_timm_models_grid_is_drawn_over_the_pixels_it_saw():
    """timm's patch convolution also drops the pixels past the last whole patch (img_size=36 with
    8-pixel patches: 4×4 patches, 32×32 pixels seen); its
    map was stretched over all 36 pixels. Now the unseen strip is left uncoloured, as for Hugging Face."""
    from attnmap.render.overlay import overlay
    from attnmap.vit.batch import draw_map

    torch.manual_seed(0)
    view = np.random.default_rng(0).integers(0, 256, size=(36, 36, 3), dtype=np.uint8)
    heat = np.zeros((4, 4))
    heat[3, 3], heat[0, 2] = 1.0, 0.5
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, depth=1, img_size=36, patch_size=8, num_classes=3
    ).eval()
    assert model(torch.zeros(1, 3, 36, 36)).shape == (1, 3)  # timm runs it: 16 patches
    picture, _ = draw_map(model, view, None, heat, "attention", None, 0.7)
    np.testing.assert_array_equal(picture[:32, :32], overlay(view[:32, :32], heat, alpha=0.7))
    np.testing.assert_array_equal(picture[32:], view[32:])
    np.testing.assert_array_equal(picture[:, 32:], view[:, 32:])


def test_colour_bar_tick_labels_do_not_run_into_each_other():
    """Under a small picture (the legend is then 240 pixels wide) five labels such as -0.000855 ran
    together ("-0.000855-0.000428"); fewer ticks are drawn when their labels do not fit."""
    from PIL import ImageDraw

    from attnmap.render.legend import _font, _layout, legend_ticks
    from attnmap.render.scale import ScoreScale

    scale = ScoreScale("diverging", -0.000855, 0.000855, "RdBu_r")

    def extents(width: int) -> list[tuple[float, float]]:
        _, _, _, text_size, _, _ = _layout(width, "t", "c")
        bar = max(width, 240) - 2 * text_size
        font = _font(max(10, int(text_size * 0.8)))
        measure = ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength
        spans = []
        for position, text in legend_ticks(scale, width):
            x, size = position * (bar - 1), measure(text, font=font)
            left = x if position == 0 else x - size if position == 1 else x - size / 2
            spans.append((left, left + size))
        return spans

    narrow = extents(30)
    assert len(narrow) >= 2 and all(a[1] < b[0] for a, b in zip(narrow[:-1], narrow[1:], strict=True))
    assert len(extents(1200)) == 5  # room for all five under a wide picture
    picture = add_legend(np.zeros((30, 30, 3), np.uint8), scale, "t")
    assert picture.shape[1] == 240


def test_a_small_original_is_drawn_enlarged_by_whole_pixels(tmp_path):
    """`--on original` drew a 20×30 image at its own size: the 64-pixel model's patch map squeezed
    into the ~18 pixels of its crop, whose one-pixel frame covered the edge patches. Now it is
    enlarged by the largest whole factor that keeps its crop within the model's view, pixels as blocks."""
    from attnmap.vit.batch import explain_paths
    from attnmap.vit.original import crop_box

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=1, img_size=64, num_classes=3)
    original = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(original).save(tmp_path / "icon.png")
    explain_paths([tmp_path / "icon.png"], model, "attention", None, tmp_path / "out", on="original",
                  legend=False, progress=False)
    drawn = np.asarray(Image.open(tmp_path / "out" / "icon_attention.png"))
    factor = drawn.shape[0] // 20
    assert drawn.shape == (20 * factor, 30 * factor, 3)
    x0, y0, x1, y1 = crop_box(model, (30, 20))
    assert factor * min(x1 - x0, y1 - y0) <= 64 < (factor + 1) * min(x1 - x0, y1 - y0) and factor > 1
    blocks = original.repeat(factor, axis=0).repeat(factor, axis=1)
    left = int(np.floor(x0 * factor)) - 1  # outside the crop: the original's pixels, as blocks
    np.testing.assert_array_equal(drawn[:, :left], blocks[:, :left])
    rows = slice(int(y0 * factor) + 2, int(y1 * factor) - 2)
    cols = slice(int(x0 * factor) + 2, int(x1 * factor) - 2)
    assert (drawn[rows, cols] != blocks[rows, cols]).mean() > 0.5  # the map, over all the crop
