"""Fine maps over the encoder families `bench/fine_sweep.py` sweeps: ReLU CNNs, q/k-normed, RMSNorm and
distilled ViTs, the refusals by layer, and the read-out explained being the encoder's own."""

from __future__ import annotations

import copy
import re
import warnings

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from attnmap.errors import UnsupportedModelError
from attnmap.wsi.heatmap.encoder_relevance import check_encoder_forward, check_fine_encoder, encoder_relevance
from attnmap.wsi.heatmap.fine import fine_maps

pytestmark = pytest.mark.usefixtures("single_thread")
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=0)


def _rough(model: torch.nn.Module) -> torch.nn.Module:
    """Seeded non-zero biases (and BatchNorm shifts / statistics), float64, eval."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, value in [*model.named_parameters(), *model.named_buffers()]:
            if name.rsplit(".", 1)[-1] in ("bias", "running_mean", "cls_token", "dist_token", "latent"):
                value.add_(torch.randn(value.shape, generator=generator) * 0.1)
    return model.double().eval()


def _bias_free(model: torch.nn.Module) -> torch.nn.Module:
    free = copy.deepcopy(model)
    with torch.no_grad():
        for name, value in [*free.named_parameters(), *free.named_buffers()]:
            if name.rsplit(".", 1)[-1] in ("bias", "running_mean", "feature_mean", "cls_token", "dist_token",
                                           "pos_embed", "reg_token", "q_bias", "v_bias"):
                value.zero_()
    return free


def _images(count: int = 3, size: int = 32) -> torch.Tensor:
    return torch.randn(count, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


def _cnn(kind: str) -> torch.nn.Module:
    from attnmap.data.tiny_encoder import TinyPatchEncoder
    from attnmap.wsi.encoders import TruncatedResNet50

    torch.manual_seed(0)
    return _rough(TinyPatchEncoder() if kind == "tiny" else TruncatedResNet50())


@pytest.mark.parametrize("kind", ["tiny", "resnet50_trunc"])
def test_relu_cnn_fine_maps_are_gradient_x_input_and_conservative(kind):
    """A ReLU CNN is piecewise linear: LRP-0 is gradient × input, exactly conservative, and without
    biases the whole score lands on the pixels (no share for anything else)."""
    model = _cnn(kind)
    images = _images()
    generator = torch.Generator().manual_seed(2)
    direction = torch.randn(model(images).shape, dtype=torch.float64, generator=generator)
    result = encoder_relevance(model, images, direction)
    score = (model(images) * direction).sum(dim=1).detach()
    torch.testing.assert_close(result.pixels.sum(dim=(1, 2)) + result.bias_share, score, rtol=0, atol=1e-9)
    leaf = images.clone().requires_grad_(True)
    (gradient,) = torch.autograd.grad((model(leaf) * direction).sum(), leaf)
    torch.testing.assert_close(result.pixels, (gradient * images).sum(dim=1), rtol=0, atol=1e-12)
    free = _bias_free(model)
    unbiased = encoder_relevance(free, images, direction)
    free_score = (free(images) * direction).sum(dim=1).detach()
    torch.testing.assert_close(unbiased.bias_share, torch.zeros_like(free_score), rtol=0,
                               atol=1e-9 * float(free_score.abs().max()))
    maps, _, _ = fine_maps(model, images, direction)  # the bias share spread: each map sums to its score
    torch.testing.assert_close(torch.from_numpy(maps).sum(dim=(1, 2)), score, rtol=0, atol=1e-9)
    alone, _, _ = fine_maps(model, images[1:2], direction[1:2])
    torch.testing.assert_close(torch.from_numpy(alone[0]), torch.from_numpy(maps[1]), rtol=0, atol=1e-12)
    with pytest.raises(UnsupportedModelError, match="needs a ViT encoder; .* is a CNN: use method lrp$"):
        fine_maps(model, images, direction, method="transformer_attribution")


def test_cnn_layers_without_a_piecewise_linear_rule_are_refused_by_name():
    from attnmap.data.tiny_encoder import TinyPatchEncoder

    gated = TinyPatchEncoder()
    gated.features[1] = torch.nn.Sigmoid()
    with pytest.raises(UnsupportedModelError, match=r"^fine maps of the CNN TinyPatchEncoder: layer "
                       r"features.1 \(Sigmoid\) has no piecewise-linear rule here$"):
        check_fine_encoder(gated)
    training = _cnn("resnet50_trunc").train()
    with pytest.raises(UnsupportedModelError, match=r"layer bn1 \(BatchNorm2d\) is in training mode"):
        check_fine_encoder(training)
    with pytest.raises(UnsupportedModelError, match="^fine maps need a timm VisionTransformer / Eva or a "
                       "ReLU CNN encoder, got Linear$"):
        check_fine_encoder(torch.nn.Linear(3, 3))
    with warnings.catch_warnings():  # torch.jit's deprecation notice: TorchScript is what users hold
        warnings.simplefilter("ignore")
        scripted = torch.jit.trace(TinyPatchEncoder().eval(), torch.zeros(1, 3, 64, 64))
    with pytest.raises(UnsupportedModelError, match="not a TorchScript archive"):
        check_fine_encoder(scripted)


@pytest.mark.parametrize(
    "options",
    [
        dict(qk_norm=True),
        dict(norm_layer="rmsnorm"),
        dict(distilled=True),
        dict(global_pool="map", class_token=False),  # SigLIP-style attention-pool head
        dict(global_pool="avg", reg_tokens=4, pool_include_prefix=True),  # the mean of every token
    ],
)
def test_qk_norm_rmsnorm_and_distilled_vits_are_exactly_conservative(options):
    """q/k norms sit on the attention logits (held constant), RMSNorm's scale is frozen as
    LayerNorm's is, a distilled ViT's features average its class and distillation tokens, an
    attention-pool head is one more attention block with learned queries, and a mean pooling that
    includes the prefix tokens averages them too (it was read as the patch mean: a wrong score)."""
    from timm.layers import get_norm_layer
    from timm.models.deit import VisionTransformerDistilled

    torch.manual_seed(3)
    options = dict(options)
    cls = VisionTransformerDistilled if options.pop("distilled", False) else VisionTransformer
    if "norm_layer" in options:
        options["norm_layer"] = get_norm_layer(options["norm_layer"])
    model = _rough(cls(**TINY, **options))
    images = _images()
    check_encoder_forward(model, images, atol=1e-12)
    direction = torch.randn(3, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    result = encoder_relevance(model, images, direction)
    score = (model(images) * direction).sum(dim=1)
    torch.testing.assert_close(result.score, score, rtol=0, atol=1e-10)
    torch.testing.assert_close(result.pixels.sum(dim=(1, 2)) + result.bias_share, score, rtol=0, atol=1e-10)
    unbiased = encoder_relevance(_bias_free(model), images, direction)
    torch.testing.assert_close(unbiased.bias_share, torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-10)
    if cls is VisionTransformerDistilled:
        with pytest.raises(UnsupportedModelError, match="average two .* use method lrp$"):
            check_fine_encoder(model, "transformer_attribution")


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("eva02_tiny_patch14_224", {}),
        ("vit_base_patch16_dinov3", {}),
        ("vit_huge_plus_patch16_dinov3", {}),
        ("vit_base_patch16_rope_mixed_224", {}),  # one rotation per block
        ("vit_base_patch16_sapiens2", {"num_kv_heads": 2}),  # grouped-query attention
    ],
)
def test_rotary_position_vits_are_exactly_conservative(name, extra):
    """timm's Eva (EVA02, DINOv3, Sapiens2: rotary positions on q/k, registers, SwiGLU, LayerScale,
    grouped-query heads): the rotation shapes the attention weights only, which are held constant."""
    from attnmap.vit.timm_build import build_timm

    torch.manual_seed(8)
    size = 28 if "patch14" in name else 32
    arguments = dict(depth=2, embed_dim=48, num_heads=4, img_size=size, **extra)
    model = _rough(build_timm(name, arguments, num_classes=0))
    with torch.no_grad():  # trained-like LayerScale (timm starts it at 1e-5)
        for block in model.blocks:
            for gamma in (block.gamma_1, block.gamma_2):
                if gamma is not None:
                    gamma.fill_(0.3)
    images = _images(2, size)
    check_encoder_forward(model, images, atol=1e-12)
    direction = torch.randn(2, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    result = encoder_relevance(model, images, direction)
    score = (model(images) * direction).sum(dim=1)
    torch.testing.assert_close(result.pixels.sum(dim=(1, 2)) + result.bias_share, score, rtol=0, atol=1e-10)
    unbiased = encoder_relevance(_bias_free(model), images, direction)
    torch.testing.assert_close(unbiased.bias_share, torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-10)


def test_attention_maps_of_an_untrained_layer_scale_still_sum_to_the_patch_score():
    """LayerScale at timm's 1e-5 makes transformer attribution's maps ~1e-15: they were zeroed by an
    absolute threshold, so the fine map no longer summed to its patch's score."""
    from attnmap.vit.timm_build import build_timm

    torch.manual_seed(10)
    arguments = dict(depth=2, embed_dim=48, num_heads=4, img_size=32)
    model = _rough(build_timm("vit_base_patch16_dinov3", arguments, num_classes=0))
    images = _images(2)
    direction = torch.randn(2, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(11))
    maps, _, scores = fine_maps(model, images, direction, method="transformer_attribution")
    torch.testing.assert_close(torch.from_numpy(maps).sum(dim=(1, 2)), torch.from_numpy(scores), rtol=1e-9,
                               atol=0)
    assert scores.min() != 0


@pytest.mark.parametrize(
    ("name", "arguments", "message"),
    [
        ("vit_small_r26_s32_224", dict(depth=1, img_size=64), r"^patch embedding HybridEmbed has no"),
        ("vit_small_patch16_18x2_224", dict(depth=1, embed_dim=32, num_heads=4, img_size=32),
         r"^block 0 \(ParallelThingsBlock\) has no conservative rule here$"),
        ("vit_base_patch16_xp_224", dict(depth=1, embed_dim=32, num_heads=4, img_size=32),
         r"^block 0 \(ParallelScalingBlock\) has no conservative rule here$"),
    ],
)
def test_vit_layers_the_rules_do_not_mirror_are_refused_before_any_map(name, arguments, message):
    """They were accepted by the check and then crashed (a hybrid stem, parallel blocks) mid-run."""
    import timm

    model = timm.create_model(name, pretrained=False, num_classes=0, **arguments)
    with pytest.raises(UnsupportedModelError, match=message):
        check_fine_encoder(model)


def test_a_forward_the_rules_do_not_mirror_is_refused_not_drawn():
    """An encoder whose features are not what the rules' forward computes (here a subclass that
    rescales them) would get maps of another function: refused on the first batch."""

    class Rescaled(VisionTransformer):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return 2 * super().forward(x)

    torch.manual_seed(5)
    model = _rough(Rescaled(**TINY))
    images = _images(2)
    with pytest.raises(UnsupportedModelError, match="forward of Rescaled differs from its own"):
        fine_maps(model, images, torch.ones(2, 32, dtype=torch.float64))


def test_fine_maps_explain_the_class_and_patch_mean_read_out_the_features_are():
    """Virchow2-style features ([class token, patch mean]) explained by `transformer_attribution` are
    `attnmap.explain` on the same network as a token model with that read-out's direction."""
    import torch.nn.functional as F

    from attnmap import ReadoutDirection, explain
    from attnmap.vit.timm_build import build_timm

    arguments = dict(TINY, mlp_layer="SwiGLUPacked", act_layer="silu", reg_tokens=4, init_values=0.5,
                     global_pool="class_and_patch_mean")
    torch.manual_seed(6)
    model = _rough(build_timm("vit_huge_patch14_224", arguments))
    tokens = copy.deepcopy(model)
    tokens.__class__, tokens.global_pool = VisionTransformer, ""
    images = _images(2)
    direction = torch.randn(2, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    maps, _, scores = fine_maps(model, images, direction, method="transformer_attribution")
    torch.testing.assert_close(torch.from_numpy(scores), (model(images) * direction).sum(dim=1).detach())
    target = ReadoutDirection("cls_and_patch_mean", direction)
    expected = explain(tokens, images, "transformer_attribution", target=target)
    expected = F.interpolate(expected[:, None].double(), size=(32, 32), mode="nearest")[:, 0]
    for drawn, reference in zip(torch.from_numpy(maps), expected, strict=True):  # equal up to the scale
        torch.testing.assert_close(drawn * reference.sum(), reference * drawn.sum(), rtol=1e-9, atol=1e-12)


def test_a_slide_run_draws_fine_maps_with_a_cnn_encoder(tmp_path):
    """`wsi run` with the shipped CNN encoder: the map file's maps sum to their patch scores (the
    transform's input bounds, which a ViT uses for zB, leave the CNN at LRP-0: same totals)."""
    import numpy as np
    import yaml
    from synthetic_slide_files import write_clam_checkpoint, write_pipeline_setup

    from attnmap.wsi.heatmap.fine_store import FineMapFile
    from attnmap.wsi.pipeline import run_slide
    from attnmap.wsi.pipeline.config import load_config

    path = write_pipeline_setup(tmp_path, n_slides=1)
    write_clam_checkpoint(tmp_path / "clam64.pt", embed_dim=64)
    data = yaml.safe_load(path.read_text())
    data["features"] = {"encoder": "attnmap:tiny", "batch_size": 16}
    data["model"]["checkpoint"] = "clam64.pt"
    data["heatmap"]["fine"] = {"method": "lrp", "top_k": 3}
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    run_slide(tmp_path / "slides" / "slide_0.tif", config)
    with FineMapFile(next((tmp_path / "out").rglob("slide_0_fine_maps.h5"))) as store:
        assert len(store) == 3 and store.map_shape == (64, 64)
        totals = store.read(np.arange(3)).sum(axis=(1, 2))
        np.testing.assert_allclose(totals, store.scores[store.fine_index], rtol=1e-4, atol=1e-5)


def test_a_class_that_is_not_an_integer_is_refused():
    from attnmap.errors import InputError
    from attnmap.mil.abmil import ABMIL
    from attnmap.wsi.heatmap.fine import mil_directions

    model = ABMIL(embed_dim=8, hidden_dim=8, attention_dim=4, n_classes=3).eval()
    with pytest.raises(InputError, match=r"must be a class index \(an integer\), got 1.5$"):
        mil_directions(model, torch.randn(4, 8), 1.5)
    assert mil_directions(model, torch.randn(4, 8), 2)[2] == 2


@pytest.mark.parametrize("shape", [(40, 40), (16, 64), (36, 36)])
def test_images_of_a_size_the_vit_does_not_take_are_refused_in_one_line(shape):
    """The rules embed the pixels with the patch convolution itself, skipping timm's size check: 40 × 40
    on a 32 × 32 ViT failed deep inside (a position-embedding shape error) and 16 × 64, with as many
    tokens as 32 × 32, went through with every token at another position."""
    from attnmap.errors import InputError

    torch.manual_seed(0)
    model = _rough(VisionTransformer(**TINY))
    images = torch.randn(2, 3, *shape, dtype=torch.float64)
    with pytest.raises(InputError, match=r"images are \d+ × \d+ .*32 × 32"):
        encoder_relevance(model, images, torch.ones(2, 32, dtype=torch.float64))
    dynamic = _rough(VisionTransformer(**TINY, dynamic_img_size=True))  # any multiple of the patch
    direction = torch.ones(2, 32, dtype=torch.float64)
    if shape[0] % 8 == 0 and shape[1] % 8 == 0:
        result = encoder_relevance(dynamic, images, direction)
        assert result.pixels.shape[-2:] == shape
        with torch.no_grad():
            torch.testing.assert_close(result.score, dynamic(images).sum(dim=1), rtol=0, atol=1e-10)
    else:
        with pytest.raises(InputError, match="multiple of the patch size 8 × 8"):
            encoder_relevance(dynamic, images, direction)


@pytest.mark.parametrize("channels", [1, 4])
@pytest.mark.parametrize("kind", ["vit", "tiny"])
def test_images_with_other_channel_counts_than_the_encoder_takes_are_refused_in_one_line(kind, channels):
    """Grey or RGBA patches failed with a bare convolution RuntimeError (weight of size [...]), in
    `encoder_relevance`, `fine_maps` and `bag_fine_maps` alike."""
    from attnmap.errors import InputError
    from attnmap.mil import ABMIL
    from attnmap.wsi.heatmap.fine import FineConfig, bag_fine_maps

    torch.manual_seed(0)
    model = _rough(VisionTransformer(**TINY)) if kind == "vit" else _cnn("tiny")
    width = model(_images()).shape[1]
    takes = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).in_channels
    expected = re.escape(f"{channels} channels") + ".*" + re.escape(f"takes {takes}")
    images = torch.randn(2, channels, 32, 32, dtype=torch.float64)
    direction = torch.ones(2, width, dtype=torch.float64)
    with pytest.raises(InputError, match=expected) as caught:
        encoder_relevance(model, images, direction)
    assert "\n" not in str(caught.value)
    with pytest.raises(InputError, match=expected):
        fine_maps(model, images, direction)
    mil = ABMIL(embed_dim=width, hidden_dim=8, attention_dim=4, n_classes=2).double().eval()
    features = torch.randn(2, width, dtype=torch.float64)
    with pytest.raises(InputError, match=expected):
        bag_fine_maps(model, images, mil, features, FineConfig(top_k=None))


def test_a_vit_left_in_train_mode_gets_its_eval_maps_and_keeps_its_mode():
    """Dropout and drop-path ran in the rules' forward: encoder_relevance gave another random map on
    every call, and fine_maps refused the encoder as one whose forward the rules do not mirror."""
    torch.manual_seed(0)
    drops = dict(proj_drop_rate=0.5, attn_drop_rate=0.5, drop_path_rate=0.5, pos_drop_rate=0.5)
    model = _rough(VisionTransformer(**TINY, **drops))
    images, direction = _images(2), torch.randn(2, 32, dtype=torch.float64)
    expected = encoder_relevance(model, images, direction).pixels
    maps = fine_maps(model, images, direction)[0]
    model.train()
    model.blocks[1].eval()  # a mixed state is given back as it was
    modes = [module.training for module in model.modules()]
    for _ in range(2):
        pixels = encoder_relevance(model, images, direction).pixels
        torch.testing.assert_close(pixels, expected, rtol=0, atol=0)
    np.testing.assert_array_equal(fine_maps(model, images, direction)[0], maps)
    assert [module.training for module in model.modules()] == modes
