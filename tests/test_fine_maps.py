"""Fine heatmaps: hard synthetic slides, the conservative encoder relevance, the fine TIFF."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from attnmap.data.hard_slides import (
    crop,
    make_hard_slide,
    naive_scores,
    patch_fraction,
    render_hard_image,
    tissue_grid,
)
from attnmap.data.patch_vit import build_patch_vit
from attnmap.errors import InputError
from attnmap.mil.clam import CLAM_MB, CLAM_SB
from attnmap.wsi.heatmap.encoder_relevance import check_encoder_forward, encoder_relevance, input_bounds
from attnmap.wsi.heatmap.fine import FEATURE_TOLERANCE, FineConfig, bag_fine_maps, fine_maps, mil_directions


def test_hard_slides_are_deterministic_and_seeded():
    first, again, other = (render_hard_image(s, (256, 256)) for s in (3, 3, 4))
    assert np.array_equal(first.image, again.image) and np.array_equal(first.structures, again.structures)
    assert not np.array_equal(first.image, other.image)
    assert not render_hard_image(5, (256, 256), tumour=False).structures.any()


def test_darkness_and_colour_do_not_find_tumour():
    patches, labels = [], []
    for seed in range(500, 506):  # not the seeds the generator was tuned on
        slide = render_hard_image(seed, (1024, 1024))
        coords = tissue_grid(slide.tissue)
        patches.append(crop(slide.image, coords))
        labels.append(patch_fraction(slide.tumour, coords) >= 0.5)
    labels = np.concatenate(labels)
    scores = naive_scores(np.concatenate(patches))
    assert 10 < labels.sum() < len(labels)
    for name in ("darkness", "purple", "red", "green", "blue"):
        auc = roc_auc_score(labels, scores[name])
        assert abs(auc - 0.5) <= 0.15, (name, auc)


@pytest.mark.parametrize("stem", ["patch_vit", "demo_clam_hard"])
def test_bundled_weights_match_their_record(stem):
    from attnmap.data.patch_vit import WEIGHTS_DIR

    record = json.loads((WEIGHTS_DIR / f"{stem}.json").read_text())
    suffix = ".safetensors" if stem == "patch_vit" else ".pt"
    data = (WEIGHTS_DIR / f"{stem}{suffix}").read_bytes()
    assert hashlib.sha256(data).hexdigest() == record["weights_sha256"]
    assert len(data) < 2 << 20 and "command" in record and "seed" in record


def _tiny_models():
    torch.manual_seed(0)
    encoder = build_patch_vit().double().eval()
    for module in encoder.modules():  # non-trivial biases and norms, so the bias share is not zero
        if isinstance(module, (torch.nn.LayerNorm, torch.nn.Linear)) and module.bias is not None:
            torch.nn.init.normal_(module.bias, std=0.1)
    mil = CLAM_SB(embed_dim=64, n_classes=2, size="small", dropout=0.0).double().eval()
    return encoder, mil


def test_encoder_relevance_is_exactly_conservative(single_thread):
    encoder, _ = _tiny_models()
    images = torch.randn(3, 3, 64, 64, dtype=torch.float64)
    check_encoder_forward(encoder, images)
    direction = torch.randn(3, 64, dtype=torch.float64)
    result = encoder_relevance(encoder, images, direction)
    expected = (encoder(images) * direction).sum(dim=1)
    torch.testing.assert_close(result.score, expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(
        result.pixels.sum(dim=(1, 2)) + result.bias_share, expected, rtol=0, atol=1e-10
    )
    assert result.bias_share.abs().min() > 1e-6  # the biases do take a share
    bounded = torch.rand(3, 3, 64, 64, dtype=torch.float64) * 4 - 2  # within the transform's [-2, 2]
    zb = encoder_relevance(encoder, bounded, direction, bounds=input_bounds((0.5,) * 3, (0.25,) * 3))
    lrp0 = encoder_relevance(encoder, bounded, direction)
    torch.testing.assert_close(zb.pixels.sum(dim=(1, 2)), lrp0.pixels.sum(dim=(1, 2)), rtol=0, atol=1e-10)
    torch.testing.assert_close(zb.pixels.sum(dim=(1, 2)) + zb.bias_share, zb.score, rtol=0, atol=1e-10)
    assert not torch.allclose(zb.pixels, lrp0.pixels)  # a different rule at the pixel layer
    with pytest.raises(InputError):
        encoder_relevance(encoder, images, torch.randn(3, 5, dtype=torch.float64))


@pytest.mark.parametrize("mil_method", ["lrp", "gradient_x_input"])
def test_fine_maps_sum_to_the_patch_scores(single_thread, mil_method):
    encoder, mil = _tiny_models()
    images = torch.randn(6, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        features = encoder(images)
    directions, scores, target = mil_directions(mil, features, None, mil_method)
    # the MIL patch score is x_i · ∂y/∂x_i, checked against autograd of the logit
    x = features.clone().requires_grad_(True)
    h = mil.embed(x)
    weights = torch.softmax(mil.attention_logits(h).transpose(0, 1), dim=1)
    weights = weights.detach() if mil_method == "lrp" else weights
    (grad,) = torch.autograd.grad(mil.classify(weights @ h)[0, target], x)
    torch.testing.assert_close(scores, (grad * features).sum(dim=1), rtol=0, atol=1e-12)
    maps, bias, totals = fine_maps(encoder, images, directions)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), scores.numpy(), rtol=0, atol=1e-9)
    unspread, _, _ = fine_maps(encoder, images, directions, spread_bias=False)
    np.testing.assert_allclose(unspread.sum(axis=(1, 2)) + bias, totals, rtol=0, atol=1e-9)
    chosen = bag_fine_maps(encoder, images, mil, features, FineConfig(top_k=2, mil_method=mil_method))
    assert list(chosen.indices) == list(np.argsort(-scores.numpy())[:2])
    np.testing.assert_allclose(chosen.maps.sum(axis=(1, 2)), chosen.patch_scores, rtol=0, atol=1e-9)


def test_transformer_attribution_fine_maps_follow_the_direction_target(single_thread):
    """Other encoder methods go through `attnmap.explain` with the MIL directions as targets; their
    token maps are upsampled and scaled so that each sums to its patch's score."""
    import torch.nn.functional as F

    from attnmap import explain

    encoder, mil = _tiny_models()
    images = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        features = encoder(images)
    directions, scores, _ = mil_directions(mil, features, None, "lrp")
    maps, bias, _ = fine_maps(encoder, images, directions, method="transformer_attribution")
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), scores.numpy(), rtol=0, atol=1e-9)
    assert not bias.any()
    tokens = explain(encoder, images, "transformer_attribution", target=directions)
    expected = F.interpolate(tokens[:, None], size=(64, 64), mode="nearest")[:, 0].numpy()
    for drawn, token_map in zip(maps, expected, strict=True):  # the same map, up to its scale
        np.testing.assert_allclose(drawn * token_map.sum(), token_map * drawn.sum(), rtol=1e-9, atol=1e-12)


def test_fine_config_parsing():
    assert FineConfig.from_mapping({"method": "lrp", "top_k": "all"}).top_k is None
    assert FineConfig.from_mapping(None) is None
    for bad in ({"top_k": 0}, {"method": "saliency"}, {"colour": 1}, {"top_k": "most"}):
        with pytest.raises(InputError):
            FineConfig.from_mapping(bad)
    # strictly an integer (2.5 was cut to 2 and [1] was a TypeError), each error naming its dotted key
    for bad, key in (({"top_k": 2.5}, "top_k"), ({"top_k": [1]}, "top_k"), ({"top_k": True}, "top_k"),
                     ({"mil_method": "occlusion"}, "mil_method"), ({"colour": 1}, "")):
        with pytest.raises(InputError, match=rf"^heatmap.fine{'.' + key if key else ':'}"):
            FineConfig.from_mapping(bad)
    assert FineConfig.from_mapping({"top_k": 3}).top_k == 3


def test_fine_tiff_opens_in_openslide_with_fine_pages(tmp_path):
    import openslide
    import tifffile

    from attnmap.wsi import open_slide
    from attnmap.wsi.heatmap.fine_render import write_fine_gallery, write_fine_heatmap_tiff
    from attnmap.wsi.heatmap.tiff import write_heatmap_tiff

    made = make_hard_slide(tmp_path / "hard.tif", seed=2, size=(512, 512))
    coords = tissue_grid(made.structures | True)[:20]
    scores = np.linspace(-1, 1, len(coords))
    fine = np.random.default_rng(0).normal(size=(3, 64, 64))
    with open_slide(made.path) as slide:
        write_fine_heatmap_tiff(tmp_path / "fine.tif", slide, coords, scores, coords[:3], fine, patch_size=64)
        write_heatmap_tiff(tmp_path / "plain.tif", slide, coords, scores, patch_size=64, progress=False)
    with openslide.OpenSlide(str(tmp_path / "fine.tif")) as viewer:
        assert viewer.level_count == 2 and viewer.dimensions == (512, 512)
        assert viewer.level_dimensions[1] == (256, 256)
    fine_pages, plain_pages = (tifffile.TiffFile(tmp_path / n).pages for n in ("fine.tif", "plain.tif"))
    full_fine, full_plain = fine_pages[0].asarray(), plain_pages[0].asarray()
    x, y = coords[0]
    inside = np.abs(full_fine[y : y + 64, x : x + 64].astype(int) - full_plain[y : y + 64, x : x + 64]).mean()
    assert inside > 10  # the fine map is drawn inside the patch at full resolution
    x, y = coords[10]
    outside = np.abs(
        full_fine[y : y + 64, x : x + 64].astype(int) - full_plain[y : y + 64, x : x + 64]
    ).mean()
    assert outside < 1
    gallery = write_fine_gallery(
        tmp_path / "gallery.png", crop(np.zeros((512, 512, 3), np.uint8), coords[:3]), fine, scores[:3]
    )
    assert gallery.is_file()


def test_pipeline_writes_fine_gallery_and_tiff(tmp_path, single_thread):
    import openslide
    import yaml

    from attnmap.data.hard_mil import MODEL_NAME
    from attnmap.data.patch_vit import WEIGHTS_DIR
    from attnmap.wsi.pipeline import run_slide
    from attnmap.wsi.pipeline.config import load_config

    made = make_hard_slide(tmp_path / "hard.tif", seed=7, size=(1024, 1024))
    (tmp_path / "slides.csv").write_text(f"slide_path,label\n{made.path},1\n")
    raw = {
        "slides": {"csv": str(tmp_path / "slides.csv")},
        "segmentation": {"preset": "bwh_biopsy"},
        "patching": {"patch_size": 64},
        "features": {"encoder": "attnmap:patch-vit", "batch_size": 128},
        "model": {"checkpoint": str(WEIGHTS_DIR / MODEL_NAME), "class_names": ["normal", "tumour"]},
        "heatmap": {"tiff": True, "fine": {"method": "lrp", "top_k": 5}},
        "run": {"output_dir": str(tmp_path / "out"), "device": "cpu"},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    run_slide(made.path, load_config(tmp_path / "config.yaml"))
    files = {p.name: p for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert {"hard_fine_gallery.png", "hard_heatmap_fine.tif", "hard_fine_maps.h5"} <= set(files)
    with openslide.OpenSlide(str(files["hard_heatmap_fine.tif"])) as viewer:
        assert viewer.dimensions == (1024, 1024) and viewer.level_count >= 3
    from attnmap.wsi.heatmap.fine_store import FineMapFile

    with FineMapFile(files["hard_fine_maps.h5"]) as store:  # the file holds what the gallery shows
        assert len(store) == 5 and store.method == "lrp" and store.map_shape == (64, 64)
        assert np.all(np.diff(store.scores[store.fine_index]) <= 0)
        totals = store.read(np.arange(5)).sum(axis=(1, 2))
        assert np.allclose(totals, store.scores[store.fine_index], atol=1e-4)
    again = run_slide(made.path, load_config(tmp_path / "config.yaml"))
    assert not any(again["stages"].values()), again["summary"]
    stamp = files["hard_fine_maps.h5"].stat().st_mtime_ns, files["hard_heatmap_fine.tif"].stat().st_mtime_ns
    raw["heatmap"]["cmap"] = "viridis"  # drawing only: pictures redrawn from the stored maps
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    redrawn = run_slide(made.path, load_config(tmp_path / "config.yaml"))
    assert redrawn["stages"]["heatmap"] and "fine_maps" not in redrawn["reasons"]["heatmap"]
    assert files["hard_fine_maps.h5"].stat().st_mtime_ns == stamp[0]
    assert files["hard_heatmap_fine.tif"].stat().st_mtime_ns != stamp[1]
    raw["heatmap"]["fine"]["top_k"] = 3  # the selection: the maps are computed again
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    recomputed = run_slide(made.path, load_config(tmp_path / "config.yaml"))
    assert recomputed["reasons"]["heatmap"].startswith("fine_maps.h5 fine.top_k changed")
    with FineMapFile(files["hard_fine_maps.h5"]) as store:
        assert len(store) == 3


def test_slide_evidence_reports_every_method_and_baseline(single_thread):
    from attnmap.evaluate.slide_evidence import PATCH_METHODS, evaluate_hard_slides, format_table

    report = evaluate_hard_slides(n_slides=1)
    means = report["means"]
    for method in PATCH_METHODS:
        assert 0.0 <= means[f"patch_auc/{method}"] <= 1.0 and 0.0 <= means[f"flip_auc/{method}"] <= 1.0
    for key in ("fine", "upsampled_patch_map", "darkness"):
        assert 0.0 <= means[f"pixel_auc/{key}"] <= 1.0
    assert "random order" in format_table(report) and "pooled" in format_table(report)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--slides", "0"], "--slides"),
        (["--fine-method", "lrpp"], "--fine-method"),
        (["--json", "{folder}"], "is a folder"),
    ],
)
def test_slide_evidence_command_refuses_bad_options_in_one_line_before_any_slide(
    tmp_path, capsys, monkeypatch, argv, message
):
    """`python -m attnmap.evaluate.slide_evidence` showed a traceback for --slides 0 and for an unknown
    --fine-method (the latter after scoring every slide's patches), and failed after the whole run
    when --json could not be written."""
    from attnmap.evaluate import slide_evidence

    def never(*args, **kwargs):
        raise AssertionError("slides evaluated before the options were checked")

    monkeypatch.setattr(slide_evidence, "evaluate_hard_slides", never)
    with pytest.raises(SystemExit) as stopped:
        slide_evidence.main([item.format(folder=tmp_path) for item in argv])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "Traceback" not in err
    assert message in err.strip().splitlines()[-1]


def test_demo_hard_slide_section_writes_its_pictures(tmp_path, single_thread):
    from attnmap.demo_slides import hard_slide_section

    page = hard_slide_section(tmp_path)
    for name in ("hard_methods.png", "hard_fine_gallery.png", "hard_slide_fine.tif"):
        assert (tmp_path / name).stat().st_size > 1000 and name in page


def _foundation_like(kind: str) -> torch.nn.Module:
    """Tiny timm ViTs with the layers of the encoders pathologists run, non-trivial biases."""
    from timm.layers import QuickGELU, SwiGLU, SwiGLUPacked
    from timm.models.vision_transformer import VisionTransformer

    tiny = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=0)
    torch.manual_seed(1)
    if kind == "virchow2":  # packed SwiGLU with SiLU, 4 registers, LayerScale
        model = VisionTransformer(**tiny, mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU, reg_tokens=4,
                                  init_values=0.5, mlp_ratio=2.5)
    elif kind == "virchow2_embedding":  # [class token, patch mean] read-out (attnmap's pooling)
        from attnmap.vit.timm_build import build_timm

        arguments = dict(mlp_layer="SwiGLUPacked", act_layer="silu", reg_tokens=4, init_values=0.5,
                         global_pool="class_and_patch_mean", **{**tiny, "num_classes": 0})
        model = build_timm("vit_huge_patch14_224", arguments)
    elif kind == "uni":  # LayerScale and dynamic_img_size (tokens come out of the stem as NHWC)
        model = VisionTransformer(**tiny, init_values=0.5, dynamic_img_size=True)
    elif kind == "swiglu_avg":  # separate gate and value projections, average pooling
        model = VisionTransformer(**tiny, mlp_layer=SwiGLU, act_layer=torch.nn.SiLU, global_pool="avg",
                                  class_token=False)
    elif kind == "timm_gelu":  # act_layer: gelu in a configuration gives timm's own GELU module
        from timm.layers import get_act_layer

        model = VisionTransformer(**tiny, act_layer=get_act_layer("gelu"))
    else:  # CLIP-style QuickGELU
        model = VisionTransformer(**tiny, act_layer=QuickGELU)
    for module in model.modules():
        if isinstance(module, (torch.nn.LayerNorm, torch.nn.Linear)) and module.bias is not None:
            torch.nn.init.normal_(module.bias, std=0.1)
    return model.double().eval()


@pytest.mark.parametrize(
    "kind", ["virchow2", "virchow2_embedding", "uni", "swiglu_avg", "timm_gelu", "quick_gelu"]
)
def test_encoder_relevance_on_gated_and_silu_encoders_is_exactly_conservative(single_thread, kind):
    """Gated MLPs (the gate held constant, as the attention is) and SiLU / QuickGELU activations."""
    encoder = _foundation_like(kind)
    images = torch.randn(3, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    check_encoder_forward(encoder, images, atol=1e-12)  # the frozen-gate forward is the model's
    width = encoder(images).shape[1]  # 2 × 32 for the [class, patch mean] embedding
    direction = torch.randn(3, width, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    result = encoder_relevance(encoder, images, direction)
    expected = (encoder(images) * direction).sum(dim=1)
    torch.testing.assert_close(result.score, expected, rtol=0, atol=1e-10)
    total = result.pixels.sum(dim=(1, 2)) + result.bias_share
    torch.testing.assert_close(total, expected, rtol=0, atol=1e-10)
    assert result.pixels.abs().sum() > 0 and result.bias_share.abs().min() > 1e-6


def test_the_predicted_class_of_a_model_in_train_mode_is_its_eval_prediction(single_thread):
    # target=None used the model's forward as it was: in train mode dropout picked a random class
    torch.manual_seed(0)
    mil = CLAM_MB(embed_dim=16, n_classes=4, dropout=0.5).double()
    features = torch.randn(20, 16, dtype=torch.float64)
    predicted = int(mil.eval()(features).prediction)
    mil.train()
    for _ in range(20):
        directions, _, target = mil_directions(mil, features)
        assert target == predicted and mil.training
    torch.testing.assert_close(directions, mil_directions(mil.eval(), features, predicted)[0])


def test_a_one_element_integer_tensor_is_a_class_for_the_fine_maps(single_thread):
    # a model's own prediction (MILOutput.prediction, a tensor) was refused as "not an integer"
    torch.manual_seed(0)
    mil = CLAM_MB(embed_dim=16, n_classes=3).double().eval()
    features = torch.randn(6, 16, dtype=torch.float64)
    expected = mil_directions(mil, features, 2)
    for target in (torch.tensor(2), torch.tensor([2]), np.array([2])):
        directions, scores, chosen = mil_directions(mil, features, target)
        assert chosen == 2 and isinstance(chosen, int)
        torch.testing.assert_close(directions, expected[0])
    with pytest.raises(InputError, match="class index"):
        mil_directions(mil, features, torch.tensor(1.5))


def test_a_mil_head_the_chain_does_not_know_is_refused_in_one_line():
    # a user's own nn.Module raised AttributeError: 'Linear' object has no attribute 'check_features'
    with pytest.raises(InputError, match="Linear"):
        mil_directions(torch.nn.Linear(16, 2), torch.randn(4, 16))


@pytest.mark.parametrize("n_images", [4, 7])
def test_bag_fine_maps_refuses_images_that_are_not_one_per_feature_row(single_thread, n_images):
    # fewer images raised a bare IndexError; more were silently cut, pairing maps with other patches
    encoder, mil = _tiny_models()
    images = torch.randn(6, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        features = encoder(images)
    others = torch.randn(n_images, 3, 64, 64, dtype=torch.float64)
    with pytest.raises(InputError, match=f"{n_images} patch images but 6 feature rows"):
        bag_fine_maps(encoder, others, mil, features, FineConfig(top_k=None))


def test_fine_maps_run_inside_inference_mode(single_thread):
    # the encoder's relevance (and the MIL directions) failed with a bare autograd RuntimeError
    # under a caller's torch.inference_mode(), which enable_grad does not lift
    from attnmap.data.tiny_encoder import TinyPatchEncoder

    encoder, mil = _tiny_models()
    images = torch.randn(3, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        features = encoder(images)
    expected = bag_fine_maps(encoder, images, mil, features, FineConfig(top_k=2))
    torch.manual_seed(0)
    cnn = TinyPatchEncoder().double().eval()
    direction = torch.randn(3, cnn(images).shape[1], dtype=torch.float64)
    cnn_expected = encoder_relevance(cnn, images, direction).pixels
    with torch.inference_mode():
        fine = bag_fine_maps(encoder, images, mil, features, FineConfig(top_k=2))
        np.testing.assert_array_equal(fine.maps, expected.maps)
        cnn_pixels = encoder_relevance(cnn, images, direction).pixels
        torch.testing.assert_close(cnn_pixels, cnn_expected, rtol=0, atol=0)


def test_the_pipeline_shows_progress_over_the_fine_maps_and_their_tiff(tmp_path, single_thread, capfd):
    """`wsi run` with fine maps showed no bar while computing them (hours through a large encoder with
    top_k: all) nor while writing the fine TIFF; both now have one when the run shows progress."""
    from synthetic_slide_files import write_clam_checkpoint, write_pipeline_setup

    from attnmap.wsi.pipeline import run_slide
    from attnmap.wsi.pipeline.config import load_config, read_slide_list

    setup = write_pipeline_setup(tmp_path / "setup", n_slides=1, overrides={
        "features": {"encoder": "attnmap:tiny", "input_size": None},
        "model": {"checkpoint": "clam_tiny.pt"},
        "heatmap": {"tiff": True, "fine": {"top_k": 3}},
    })
    write_clam_checkpoint(setup.parent / "clam_tiny.pt", embed_dim=64)  # attnmap:tiny's 64-d features
    config = load_config(setup)
    (entry,) = read_slide_list(config)
    capfd.readouterr()
    run_slide(entry, config, progress=True)
    err = capfd.readouterr().err
    assert re.search(r"fine maps: .*\| 0/3 \[", err) and "fine TIFF page 0" in err  # a bar over 3 patches


def test_slide_evidence_table_names_the_fine_method_it_ran(single_thread):
    """With --fine-method transformer_attribution the table still labelled the fine-map row
    "xMIL-LRP → encoder LRP": a number of one method under the name of another."""
    from attnmap.evaluate.slide_evidence import evaluate_hard_slides, format_table

    lrp = format_table(evaluate_hard_slides(n_slides=1))
    attribution = format_table(evaluate_hard_slides(n_slides=1, fine_method="transformer_attribution"))
    assert "| fine map (xMIL-LRP → encoder LRP) |" in lrp  # the README's row, unchanged
    assert "encoder LRP" not in attribution
    assert "| fine map (xMIL-LRP → encoder transformer_attribution) |" in attribution


@pytest.mark.parametrize("wrong", ["unnormalised", "other_order"])
def test_bag_fine_maps_refuses_images_that_do_not_give_the_bags_features(single_thread, wrong):
    """Patch images other than those the features came from (raw pixels, not the encoder's transform;
    another order) gave maps that sum to anything but the patch scores they are stored with (the
    documented identity), silently."""
    encoder, mil = _tiny_models()
    images = torch.randn(6, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        features = encoder(images)
    others = images * 0.25 + 0.5 if wrong == "unnormalised" else images.flip(0)
    with pytest.raises(InputError, match="do not give the features") as caught:
        bag_fine_maps(encoder, others, mil, features, FineConfig(top_k=None))
    assert "\n" not in str(caught.value)


def test_bfloat16_features_are_explained_not_refused_and_sum_to_the_float32_score(single_thread):
    """`features.precision: bfloat16`: the stored features (and so the MIL patch scores) come from the
    encoder under autocast, the fine maps from its float32 forward. The maps sum to the float32 score
    d · f(p), which lies off the stored score by the precision's round-off (the docs called the identity
    with the stored score exact); the check of the features must not refuse such a run."""
    encoder, mil = (model.float() for model in _tiny_models())
    images = torch.randn(8, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        features = encoder(images).float()
    fine = bag_fine_maps(encoder, images, mil, features, FineConfig(top_k=None))
    directions, _, _ = mil_directions(mil, features, fine.target, "lrp")
    with torch.no_grad():
        explained = (encoder(images) * directions).sum(dim=1).double().numpy()[fine.indices]
    sums = fine.maps.astype(np.float64).sum(axis=(1, 2))
    largest = np.abs(fine.patch_scores).max()
    np.testing.assert_allclose(sums, explained, rtol=0, atol=1e-4 * largest)
    assert np.abs(sums - fine.patch_scores).max() / largest < FEATURE_TOLERANCE  # ~2% on this model


def test_slide_evidence_json_carries_its_provenance(tmp_path, capsys, monkeypatch):
    """--json wrote the report without a record of what made it (attnmap version, slides, fine method),
    unlike every other output, and in place (a stop mid-write left half a JSON)."""
    from attnmap.evaluate import slide_evidence

    report = {"n_slides": 1, "fine_method": "lrp", "means": {}, "per_slide": []}
    monkeypatch.setattr(slide_evidence, "evaluate_hard_slides", lambda n, method, **kwargs: dict(report))
    monkeypatch.setattr(slide_evidence, "format_table", lambda report: "table")
    assert slide_evidence.main(["--slides", "1", "--json", str(tmp_path / "evidence.json")]) == 0
    written = json.loads((tmp_path / "evidence.json").read_text())
    record = written.pop("provenance")
    assert written == report and record["method"] == "lrp" and "attnmap_version" in record
    assert json.loads(record["parameters"]) == {"slides": 1}
    assert record["command"].endswith(f"--slides 1 --fine-method lrp --json {tmp_path / 'evidence.json'}")
    assert [path.name for path in tmp_path.iterdir()] == ["evidence.json"]


def test_slide_evidence_shows_progress_over_the_slides(capfd, monkeypatch):
    """`--slides 100` ran for minutes without a word; the command now shows a bar over the slides."""
    from attnmap.evaluate import slide_evidence

    def one_slide(seed, encoder, model, fine_method):
        return {"prob_tumour": 0.5, "_pooled": (np.array([0, 1]), {"darkness": np.array([0.2, 0.1])})}

    monkeypatch.setattr(slide_evidence, "evaluate_slide", one_slide)
    report = slide_evidence.evaluate_hard_slides(3, progress=True)
    assert report["n_slides"] == 3 and "3/3" in capfd.readouterr().err
    slide_evidence.evaluate_hard_slides(3)
    assert "3/3" not in capfd.readouterr().err
