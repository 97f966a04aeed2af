"""Same weights, two implementations, same maps: timm ViT vs HF ViT, timm distilled DeiT vs HF DeiT
with teacher, timm DINOv2 vs HF Dinov2Model,
timm DINOv3 (Eva with DINOv3's RoPE) vs HF DINOv3ViTModel.

The weights are copied by role (q/k/v split of timm's fused qkv), which is what timm's and HF's
converters do; in float64 every method must agree to 1e-6 relative.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import attnmap
from attnmap.vit.lrp.block import is_norm
from attnmap.vit.lrp.readers_hf import _role, find_trunk

transformers = pytest.importorskip("transformers")
METHODS = sorted(attnmap.methods())
SIZE, PATCH, WIDTH, HEADS = 28, 7, 32, 4


def _copy(target: torch.Tensor, source: torch.Tensor) -> None:
    assert target.shape == source.shape, (target.shape, source.shape)
    target.copy_(source)


@torch.no_grad()
def copy_timm_to_hf(timm_model: nn.Module, hf_model: nn.Module) -> None:
    trunk, layers = find_trunk(hf_model)
    embeddings = trunk.embeddings
    _copy(embeddings.cls_token, timm_model.cls_token)
    _copy(embeddings.position_embeddings, timm_model.pos_embed)
    conv = next(m for m in embeddings.modules() if isinstance(m, nn.Conv2d))
    _copy(conv.weight, timm_model.patch_embed.proj.weight)
    _copy(conv.bias, timm_model.patch_embed.proj.bias)
    for block, layer in zip(timm_model.blocks, layers, strict=True):
        linears = {_role(name): m for name, m in layer.named_modules() if isinstance(m, nn.Linear)}
        for role, weight, bias in zip(
            "qkv", block.attn.qkv.weight.chunk(3), block.attn.qkv.bias.chunk(3), strict=True
        ):
            _copy(linears[role].weight, weight)
            _copy(linears[role].bias, bias)
        for role, source in (("out", block.attn.proj), ("fc1", block.mlp.fc1), ("fc2", block.mlp.fc2)):
            _copy(linears[role].weight, source.weight)
            _copy(linears[role].bias, source.bias)
        norms = [m for m in layer.modules() if is_norm(m)]
        for norm, source in zip(norms, (block.norm1, block.norm2), strict=True):
            _copy(norm.weight, source.weight)
            _copy(norm.bias, source.bias)
        scales = [m for m in layer.modules() if "LayerScale" in type(m).__name__]
        if scales:
            for scale, source in zip(scales, (block.ls1, block.ls2), strict=True):
                _copy(scale.lambda1, source.gamma)
    _copy(trunk.layernorm.weight, timm_model.norm.weight)
    _copy(trunk.layernorm.bias, timm_model.norm.bias)
    if hasattr(hf_model, "classifier"):
        _copy(hf_model.classifier.weight, timm_model.head.weight)
        _copy(hf_model.classifier.bias, timm_model.head.bias)
    if hasattr(hf_model, "distillation_classifier"):  # DeiT with teacher
        _copy(embeddings.distillation_token, timm_model.dist_token)
        for hf_head, timm_head in (("cls_classifier", "head"), ("distillation_classifier", "head_dist")):
            _copy(getattr(hf_model, hf_head).weight, getattr(timm_model, timm_head).weight)
            _copy(getattr(hf_model, hf_head).bias, getattr(timm_model, timm_head).bias)


def _pair(timm_class: type[nn.Module] = VisionTransformer, **timm_options: object) -> tuple[nn.Module, dict]:
    torch.manual_seed(0)
    options = dict(img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=2, num_heads=HEADS)
    options.update(timm_options)
    config = dict(
        hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=2, num_attention_heads=HEADS
    )
    config.update(image_size=SIZE, patch_size=PATCH, layer_norm_eps=1e-6)
    return timm_class(**options).double().eval(), config


def _maps(model: nn.Module, x: torch.Tensor, method: str, target: object) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return attnmap.explain(model, x, method, target=target)


def _assert_same(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    scale = float(theirs.abs().max())
    assert ours.shape == theirs.shape
    assert (ours - theirs).abs().max() <= 1e-6 * max(scale, 1e-30)


@pytest.fixture(scope="module")
def vit_pair() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    timm_model, config = _pair(num_classes=5)
    hf_model = transformers.ViTForImageClassification(transformers.ViTConfig(**config, num_labels=5))
    hf_model = hf_model.double().eval()
    copy_timm_to_hf(timm_model, hf_model)
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(hf_model(pixel_values=x).logits, timm_model(x), rtol=1e-10, atol=1e-12)
    return timm_model, hf_model, x


@pytest.mark.parametrize("method", METHODS)
def test_timm_vit_and_hf_vit_give_the_same_maps(single_thread: None, vit_pair, method: str) -> None:
    timm_model, hf_model, x = vit_pair
    _assert_same(_maps(hf_model, x, method, [1, 3]), _maps(timm_model, x, method, [1, 3]))


@pytest.fixture(scope="module")
def deit_pair() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """timm's distilled DeiT and HF's DeiT with teacher: both output ½ class head + ½ distillation head."""
    timm_model, config = _pair(VisionTransformerDistilled, num_classes=5)
    hf_config = transformers.DeiTConfig(**config, num_labels=5)
    hf_model = transformers.DeiTForImageClassificationWithTeacher(hf_config).double().eval()
    copy_timm_to_hf(timm_model, hf_model)
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(hf_model(pixel_values=x).logits, timm_model(x), rtol=1e-10, atol=1e-12)
    return timm_model, hf_model, x


@pytest.mark.parametrize("method", METHODS)
def test_timm_distilled_deit_and_hf_deit_with_teacher_give_the_same_maps(
    single_thread: None, deit_pair, method: str
) -> None:
    timm_model, hf_model, x = deit_pair
    _assert_same(_maps(hf_model, x, method, [0, 2]), _maps(timm_model, x, method, [0, 2]))


@pytest.fixture(scope="module")
def dinov2_pair() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    timm_model, config = _pair(num_classes=0, init_values=0.5)
    hf_model = transformers.Dinov2Model(transformers.Dinov2Config(**config, mlp_ratio=4)).double().eval()
    copy_timm_to_hf(timm_model, hf_model)
    return _headless_pair(timm_model, hf_model, seed=2)


def _headless_pair(
    timm_model: nn.Module, hf_model: nn.Module, seed: int
) -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    """The pair with images on which their outputs agree, and a direction in the output space."""
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        torch.testing.assert_close(
            hf_model(pixel_values=x).pooler_output, timm_model(x), rtol=1e-10, atol=1e-12
        )
    direction = torch.randn(WIDTH, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    return timm_model, hf_model, x, direction




@torch.no_grad()
def copy_timm_dinov3_to_hf(timm_model: nn.Module, hf_model: nn.Module) -> None:
    """timm's DINOv3 (Eva: fused qkv without bias, gamma_1/gamma_2) into HF's layout by role."""
    embeddings = hf_model.embeddings
    _copy(embeddings.cls_token, timm_model.cls_token)
    _copy(embeddings.register_tokens, timm_model.reg_token)
    embeddings.patch_embeddings.load_state_dict(timm_model.patch_embed.proj.state_dict())
    for block, layer in zip(timm_model.blocks, hf_model.model.layer, strict=True):
        attention = layer.attention
        projections = (attention.q_proj, attention.k_proj, attention.v_proj)
        for linear, weight in zip(projections, block.attn.qkv.weight.chunk(3), strict=True):
            _copy(linear.weight, weight)
        attention.o_proj.load_state_dict(block.attn.proj.state_dict())
        layer.mlp.up_proj.load_state_dict(block.mlp.fc1.state_dict())
        layer.mlp.down_proj.load_state_dict(block.mlp.fc2.state_dict())
        layer.norm1.load_state_dict(block.norm1.state_dict())
        layer.norm2.load_state_dict(block.norm2.state_dict())
        _copy(layer.layer_scale1.lambda1, block.gamma_1)
        _copy(layer.layer_scale2.lambda1, block.gamma_2)
    hf_model.norm.load_state_dict(timm_model.norm.state_dict())


def share_rotation_table(timm_model: nn.Module, hf_model: nn.Module) -> None:
    """Make HF's DINOv3 use timm's rotation table (sin, cos of the same angles).

    The two libraries compute the angles differently (HF rounds 2π·coordinates to float32 before the
    float64 product), so their tables differ by ~4e-8 and the forward passes by ~1e-11, which the
    float64 LRP divisions magnify to 1e-5 of the map: a difference of the libraries' RoPE numerics,
    not of the maps. Given one table, the models compute the same function and must give the same maps.
    """

    def timm_table(module: nn.Module, inputs: tuple, _output: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        grid = [size // PATCH for size in inputs[0].shape[-2:]]
        sin, cos = timm_model.rope.get_embed(shape=grid).chunk(2, dim=-1)
        return cos.to(inputs[0].dtype), sin.to(inputs[0].dtype)

    hf_model.rope_embeddings.register_forward_hook(timm_table)


@pytest.fixture(scope="module")
def dinov3_pair() -> tuple[nn.Module, nn.Module, torch.Tensor, torch.Tensor]:
    if not hasattr(transformers, "DINOv3ViTModel"):  # pragma: no cover - older transformers
        pytest.skip("this transformers has no DINOv3ViTModel")
    import timm

    torch.manual_seed(0)
    sizes = dict(img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=2, num_heads=HEADS)
    options = dict(num_classes=0, global_pool="token", init_values=0.5, **sizes)
    timm_model = timm.create_model("vit_small_patch16_dinov3", pretrained=False, **options).double().eval()
    config = transformers.DINOv3ViTConfig(
        hidden_size=WIDTH, intermediate_size=4 * WIDTH, num_hidden_layers=2, num_attention_heads=HEADS,
        image_size=SIZE, patch_size=PATCH, num_register_tokens=timm_model.reg_token.shape[1],
        rope_theta=timm_model.rope.temperature, query_bias=False, key_bias=False, value_bias=False,
        layer_norm_eps=timm_model.norm.eps,
    )
    hf_model = transformers.DINOv3ViTModel(config).double().eval()
    copy_timm_dinov3_to_hf(timm_model, hf_model)
    share_rotation_table(timm_model, hf_model)
    return _headless_pair(timm_model, hf_model, seed=4)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pair", ["dinov2_pair", "dinov3_pair"])
def test_timm_and_hf_dinov2_and_dinov3_give_the_same_maps_along_a_direction(
    single_thread: None, request: pytest.FixtureRequest, pair: str, method: str
) -> None:
    timm_model, hf_model, x, direction = request.getfixturevalue(pair)
    _assert_same(_maps(hf_model, x, method, direction), _maps(timm_model, x, method, direction))


@pytest.fixture(scope="module")
def dinov2_tokens_pair(dinov2_pair) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """The DINOv2 pair with the timm model giving its tokens (``global_pool=''``, same weights): HF's
    Dinov2Model gives them as ``last_hidden_state`` beside its pooled class token."""
    import copy

    timm_model, hf_model, x, _ = dinov2_pair
    tokens_model = copy.deepcopy(timm_model)
    tokens_model.reset_classifier(0, global_pool="")
    return tokens_model, hf_model, x


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("readout", ["patch_mean", "cls_and_patch_mean"])
def test_a_token_readout_of_a_pooled_hf_model_equals_the_timm_token_model(
    single_thread: None, dinov2_tokens_pair, readout: str, method: str
) -> None:
    """A read-out of the tokens of a Hugging Face model that also pools (Dinov2Model: Midnight's class
    token ⊕ patch mean, a patch-mean probe), by `ReadoutDirection` or a callable reading
    ``out.last_hidden_state``, gives the maps of the same weights returning their tokens. The LRP
    methods used to hand such a callable a ModelOutput without ``last_hidden_state`` (a TypeError)."""
    tokens_model, hf_model, x = dinov2_tokens_pair
    width = WIDTH * (2 if readout == "cls_and_patch_mean" else 1)
    d = torch.randn(width, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    expected = _maps(tokens_model, x, method, attnmap.ReadoutDirection(readout, d))
    _assert_same(_maps(hf_model, x, method, attnmap.ReadoutDirection(readout, d)), expected)
    if readout == "patch_mean" and method == "lrp":  # pixels: no read-out rows involved

        def score(out: object) -> torch.Tensor:
            return (out.last_hidden_state[:, 1:].mean(dim=1) * d).sum(dim=1)

        _assert_same(_maps(hf_model, x, method, score), expected)


@pytest.mark.parametrize("method", METHODS)
def test_a_class_token_readout_of_dinov2_equals_a_direction_on_its_pooled_output(
    single_thread: None, dinov2_pair, method: str
) -> None:
    """Dinov2Model's pooled output is its final class token: ⟨cls(tokens), d⟩ and ⟨pooled, d⟩ are one
    score, so their maps are equal."""
    _, hf_model, x, direction = dinov2_pair
    _assert_same(_maps(hf_model, x, method, attnmap.ReadoutDirection("cls", direction)),
                 _maps(hf_model, x, method, direction))
