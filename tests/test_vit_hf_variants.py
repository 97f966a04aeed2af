"""Hugging Face families that are a supported architecture under another name give that family's maps.

SigLIP's and CLIP's image classifiers are their vision tower with a linear head on the mean of the
patch tokens (a timm ViT with ``global_pool='avg'``).

ViT-MSN is HF ViT without a pooler, Data2Vec-Vision is HF BEiT (with the older SDPA attention classes,
which return no weights: attnmap runs their eager parent class for the call), I-JEPA is a ViT
without a class token whose classifier averages every token (timm: ``class_token=False``,
``global_pool='avg'``). With the same weights, every method must give the same maps (float64,
1e-6 relative), and the model must be left as it was.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import attnmap
from attnmap.errors import UnsupportedModelError
from attnmap.vit.lrp.block import is_norm
from attnmap.vit.lrp.readers_hf import _role, find_trunk
from attnmap.vit.targets import output_tensor

transformers = pytest.importorskip("transformers")
METHODS = sorted(attnmap.methods())
SIZE, PATCH, WIDTH, HEADS = 28, 7, 32, 4
SIZES = dict(
    hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=2, num_attention_heads=HEADS,
    image_size=SIZE, patch_size=PATCH, layer_norm_eps=1e-6,
)

TEXT = dict(  # the text tower of an image-text config, as small as it builds
    hidden_size=WIDTH, intermediate_size=WIDTH, num_hidden_layers=1, num_attention_heads=HEADS, vocab_size=64
)


def _maps(model: nn.Module, x: torch.Tensor, method: str, target: object) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return attnmap.explain(model, x, method, target=target)


def _assert_same(ours: torch.Tensor, theirs: torch.Tensor, method: str) -> None:
    assert ours.shape == theirs.shape
    scale = float(theirs.abs().max())
    assert float((ours - theirs).abs().max()) <= 1e-6 * max(scale, 1e-30)
    if method != "attn_gradcam":  # its clamp may zero a map on random weights (docs/support_matrix.md)
        assert float(theirs.amax() - theirs.amin()) > 0  # a real map, not two equal constants


def _images(seed: int) -> torch.Tensor:
    return torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


_OLD_NAMES = (  # BEiT's generation of HF layer names (Data2Vec-Vision) -> the current ones (BEiT, ViT)
    ("encoder.layer.", "layers."),
    ("attention.attention.query", "attention.q_proj"),
    ("attention.attention.key", "attention.k_proj"),
    ("attention.attention.value", "attention.v_proj"),
    ("attention.output.dense", "attention.o_proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
    ("data2vec_vision.", "beit."),
)


def _current_name(name: str) -> str:
    for old, new in _OLD_NAMES:
        name = name.replace(old, new)
    return name


@torch.no_grad()
def _twin(source: nn.Module, cls: type, config: object) -> nn.Module:
    """A model of ``cls`` holding ``source``'s parameters (matched by name, older HF names mapped to
    the current ones), checked by the outputs being equal."""
    model = cls(config).double().eval()
    given = {_current_name(name): p for name, p in source.named_parameters()}
    mine = {_current_name(name): p for name, p in model.named_parameters()}
    assert sorted(given) == sorted(mine)
    for name, parameter in mine.items():
        parameter.copy_(given[name])
    x = _images(9)
    torch.testing.assert_close(
        output_tensor(model(pixel_values=x)), output_tensor(source(pixel_values=x)), rtol=1e-10, atol=1e-12
    )
    return model


def _direction(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        shape = output_tensor(model(pixel_values=x)).shape[1:]
    return torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def msn_pairs() -> list[tuple[nn.Module, nn.Module, object]]:
    torch.manual_seed(0)
    base = transformers.ViTMSNModel(transformers.ViTMSNConfig(**SIZES)).double().eval()
    vit_config = transformers.ViTConfig(**SIZES)
    vit = _twin(base, lambda c: transformers.ViTModel(c, add_pooling_layer=False), vit_config)
    head = transformers.ViTMSNForImageClassification(transformers.ViTMSNConfig(**SIZES, num_labels=5))
    head = head.double().eval()
    head_config = transformers.ViTConfig(**SIZES, num_labels=5)
    vit_head = _twin(head, transformers.ViTForImageClassification, head_config)
    return [(base, vit, _direction(base, _images(1))), (head, vit_head, [1, 3])]


@pytest.mark.parametrize("method", METHODS)
def test_vit_msn_gives_hf_vits_maps(single_thread: None, msn_pairs, method: str) -> None:
    x = _images(1)
    for msn, vit, target in msn_pairs:
        _assert_same(_maps(msn, x, method, target), _maps(vit, x, method, target), method)


@pytest.fixture(scope="module")
def data2vec_pairs() -> list[tuple[nn.Module, nn.Module, object]]:
    torch.manual_seed(0)
    config = transformers.Data2VecVisionConfig(**SIZES, layer_scale_init_value=0.5)
    base = transformers.Data2VecVisionModel(config).double().eval()  # no pooler: the output is the tokens
    beit = _twin(
        base,
        lambda c: transformers.BeitModel(c, add_pooling_layer=False),
        transformers.BeitConfig(**SIZES, layer_scale_init_value=0.5),
    )
    head = transformers.Data2VecVisionForImageClassification(
        transformers.Data2VecVisionConfig(**SIZES, layer_scale_init_value=0.5, num_labels=5)
    ).double().eval()
    beit_head = _twin(
        head,
        transformers.BeitForImageClassification,
        transformers.BeitConfig(**SIZES, layer_scale_init_value=0.5, num_labels=5),
    )
    return [(base, beit, _direction(base, _images(2))), (head, beit_head, [0, 4])]


@pytest.mark.parametrize("method", METHODS)
def test_data2vec_vision_gives_hf_beits_maps_and_keeps_its_attention_class(
    single_thread: None, data2vec_pairs, method: str
) -> None:
    x = _images(2)
    for data2vec, beit, target in data2vec_pairs:
        classes = [type(m) for m in data2vec.modules()]
        assert any("Sdpa" in cls.__name__ for cls in classes)
        _assert_same(_maps(data2vec, x, method, target), _maps(beit, x, method, target), method)
        assert [type(m) for m in data2vec.modules()] == classes


@pytest.mark.parametrize("method", METHODS)
def test_a_token_output_beit_is_read_at_its_class_token(single_thread: None, data2vec_pairs, method) -> None:
    """Without a pooler the output is the tokens, read at the class token as for HF ViT (also with
    ``use_mean_pooling``, which only a pooler applies): a direction on the class token's row gives
    the maps of the class-token read-out."""
    data2vec = data2vec_pairs[0][0]
    x = _images(2)
    d = torch.randn(WIDTH, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    rows = torch.zeros(1 + (SIZE // PATCH) ** 2, WIDTH, dtype=torch.float64)
    rows[0] = d
    readout = attnmap.ReadoutDirection("cls", d)
    _assert_same(_maps(data2vec, x, method, rows), _maps(data2vec, x, method, readout), method)


@torch.no_grad()
def _copy_timm_to_hf(timm_model: nn.Module, hf_model: nn.Module) -> None:
    """timm ViT weights into an HF model without ViT's own layout: I-JEPA (no class token), the
    SigLIP / CLIP towers (position table as an nn.Embedding, CLIP's class embedding and pre-norm)."""
    trunk, layers = find_trunk(hf_model)
    embeddings = trunk.embeddings
    table = getattr(embeddings, "position_embedding", None)
    if table is not None:
        table.weight.copy_(timm_model.pos_embed[0])
    else:
        embeddings.position_embeddings.copy_(timm_model.pos_embed)
    if timm_model.cls_token is not None:
        embeddings.class_embedding.copy_(timm_model.cls_token.reshape(-1))
    conv = next(m for m in embeddings.modules() if isinstance(m, nn.Conv2d))
    conv.weight.copy_(timm_model.patch_embed.proj.weight)
    if conv.bias is not None:
        conv.bias.copy_(timm_model.patch_embed.proj.bias)
    else:  # CLIP's patch convolution has no bias; timm's pre-norm ViT has none either
        assert timm_model.patch_embed.proj.bias is None
    pre = getattr(trunk, "pre_layrnorm", None)
    if pre is not None:
        pre.weight.copy_(timm_model.norm_pre.weight)
        pre.bias.copy_(timm_model.norm_pre.bias)
    for block, layer in zip(timm_model.blocks, layers, strict=True):
        linears = {_role(name): m for name, m in layer.named_modules() if isinstance(m, nn.Linear)}
        qkv = zip("qkv", block.attn.qkv.weight.chunk(3), block.attn.qkv.bias.chunk(3), strict=True)
        for role, weight, bias in qkv:
            linears[role].weight.copy_(weight)
            linears[role].bias.copy_(bias)
        for role, source in (("out", block.attn.proj), ("fc1", block.mlp.fc1), ("fc2", block.mlp.fc2)):
            linears[role].weight.copy_(source.weight)
            linears[role].bias.copy_(source.bias)
        norms = [m for m in layer.modules() if is_norm(m)]
        for norm, source in zip(norms, (block.norm1, block.norm2), strict=True):
            norm.weight.copy_(source.weight)
            norm.bias.copy_(source.bias)
    final = getattr(trunk, "layernorm", None) or getattr(trunk, "post_layernorm", None)
    if is_norm(timm_model.norm):
        final.weight.copy_(timm_model.norm.weight)
        final.bias.copy_(timm_model.norm.bias)
    hf_model.classifier.weight.copy_(timm_model.head.weight)
    hf_model.classifier.bias.copy_(timm_model.head.bias)


def _timm_vit(**options: object) -> nn.Module:
    return VisionTransformer(
        img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=2, num_heads=HEADS, mlp_ratio=2,
        global_pool="avg", fc_norm=False, num_classes=5, **options,
    ).double().eval()


def _checked_pair(timm_model: nn.Module, hf_model: nn.Module) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    _copy_timm_to_hf(timm_model, hf_model.double().eval())
    x = _images(3)
    with torch.no_grad():
        torch.testing.assert_close(hf_model(pixel_values=x).logits, timm_model(x), rtol=1e-10, atol=1e-12)
    return timm_model, hf_model, x


@pytest.fixture(scope="module")
def ijepa_pair() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    timm_model = _timm_vit(class_token=False)
    config = transformers.IJepaConfig(**SIZES, num_labels=5)
    return _checked_pair(timm_model, transformers.IJepaForImageClassification(config))


@pytest.fixture(scope="module")
def siglip_pair() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """SigLIP's classifier: post-layernorm, mean of every token (no class token), linear head; its
    tower keeps an attention-pool head the classifier does not use."""
    torch.manual_seed(0)
    timm_model = _timm_vit(class_token=False, act_layer="gelu_tanh")
    config = transformers.SiglipConfig(vision_config=SIZES, text_config=TEXT, num_labels=5)
    return _checked_pair(timm_model, transformers.SiglipForImageClassification(config))


@pytest.fixture(scope="module")
def clip_pair() -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """CLIP's classifier: pre-norm, mean of the tokens after the class token, no final norm."""
    torch.manual_seed(0)
    timm_model = _timm_vit(class_token=True, pre_norm=True, final_norm=False)
    tower = dict(SIZES, hidden_act="gelu", layer_norm_eps=1e-6)
    config = transformers.CLIPConfig(vision_config=tower, text_config=TEXT, num_labels=5)
    return _checked_pair(timm_model, transformers.CLIPForImageClassification(config))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pair", ["siglip_pair", "clip_pair"])
def test_siglip_and_clip_image_classifiers_give_the_maps_of_the_timm_vit(
    single_thread: None, request: pytest.FixtureRequest, pair: str, method: str
) -> None:
    timm_model, hf_model, x = request.getfixturevalue(pair)
    _assert_same(_maps(hf_model, x, method, [1, 2]), _maps(timm_model, x, method, [1, 2]), method)


@pytest.mark.parametrize("method", METHODS)
def test_ijepa_gives_the_maps_of_a_timm_vit_without_class_token(
    single_thread: None, ijepa_pair, method: str
) -> None:
    timm_model, hf_model, x = ijepa_pair
    _assert_same(_maps(hf_model, x, method, [1, 2]), _maps(timm_model, x, method, [1, 2]), method)


@pytest.mark.parametrize("method", ["attention", "lrp"])
def test_ijepas_first_token_pooler_is_refused_in_one_line(method: str) -> None:
    model = transformers.IJepaModel(transformers.IJepaConfig(**SIZES), add_pooling_layer=True).eval()
    with pytest.raises(UnsupportedModelError, match="pooler") as caught:
        attnmap.explain(model, torch.randn(1, 3, SIZE, SIZE), method, target=torch.randn(WIDTH))
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "cls_name, options",
    [
        ("BeitForImageClassification", dict(use_relative_position_bias=True, num_labels=5)),
        ("BeitModel", dict(use_shared_relative_position_bias=True, layer_scale_init_value=0.5)),
        ("Data2VecVisionForImageClassification", dict(use_relative_position_bias=True, num_labels=5)),
    ],
)
def test_beits_relative_position_bias_runs_in_the_lrp_twin(
    single_thread: None, cls_name: str, options: dict
) -> None:
    """Every released HF BEiT / Data2Vec-Vision checkpoint has a relative position bias: the LRP methods
    take it (the twin's forward is checked against the model's own, at the config's size and at an
    interpolated one), instead of refusing."""
    config_name = "Data2VecVisionConfig" if cls_name.startswith("Data2Vec") else "BeitConfig"
    torch.manual_seed(0)
    model = getattr(transformers, cls_name)(getattr(transformers, config_name)(**SIZES, **options))
    model = model.double().eval()
    with torch.no_grad():  # a bias of zeros (HF's init) would prove nothing
        for module in model.modules():
            if type(module).__name__.endswith("RelativePositionBias"):
                module.relative_position_bias_table.normal_(0, 1.0)
    for size in (SIZE, SIZE + PATCH):
        x = torch.randn(2, 3, size, size, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
        target = None if "Classification" in cls_name else _direction(model, x)
        for method in ("lrp", "lrp_attention", "lrp_rollout", "transformer_attribution"):
            maps = _maps(model, x, method, target)
            grid = (size, size) if method == "lrp" else (size // PATCH, size // PATCH)
            assert tuple(maps.shape) == (2, *grid)
            assert torch.isfinite(maps).all() and float(maps.amax() - maps.amin()) > 0


def test_a_saved_siglip_image_classifier_loads_whole_and_explains_its_classes(tmp_path) -> None:
    """A SiglipForImageClassification folder is the classifier (its tower alone would drop the head
    and need a target)."""
    from attnmap.vit.models import load_model

    torch.manual_seed(0)
    config = transformers.SiglipConfig(vision_config=SIZES, text_config=TEXT, num_labels=3)
    transformers.SiglipForImageClassification(config).save_pretrained(tmp_path)
    model = load_model(f"hf:{tmp_path}")
    assert type(model).__name__ == "SiglipForImageClassification"
    maps = _maps(model, torch.randn(2, 3, SIZE, SIZE), "transformer_attribution", None)
    assert maps.shape == (2, SIZE // PATCH, SIZE // PATCH) and torch.isfinite(maps).all()


@pytest.mark.parametrize("method", METHODS)
def test_clips_image_classifier_takes_other_input_sizes(single_thread: None, clip_pair, method: str) -> None:
    """CLIPForImageClassification hands interpolate_pos_encoding to its tower through **kwargs: at
    another size every method maps (the LRP methods crashed in their check forward, the others
    refused the size)."""
    hf_model = clip_pair[1]
    x = torch.randn(2, 3, SIZE + PATCH, SIZE + 2 * PATCH, dtype=torch.float64)
    maps = _maps(hf_model, x, method, [0, 2])
    grid = tuple(x.shape[-2:]) if method == "lrp" else ((SIZE + PATCH) // PATCH, (SIZE + 2 * PATCH) // PATCH)
    assert tuple(maps.shape) == (2, *grid) and torch.isfinite(maps).all()


def test_an_image_text_classifier_is_preprocessed_as_its_tower(siglip_pair, clip_pair) -> None:
    """Without a saved processor, SigLIP's / CLIP's classifier gets its family's preprocessing (it got
    timm's ImageNet defaults)."""
    from attnmap.vit.preprocess import data_config

    for _, hf_model, _ in (siglip_pair, clip_pair):
        assert data_config(hf_model) == data_config(hf_model.vision_model)
        assert data_config(hf_model)["input_size"] == (3, SIZE, SIZE)


@pytest.mark.parametrize("kind", ["ViTModel", "CLIPVisionModel"])
@pytest.mark.parametrize("method", METHODS)
def test_models_configured_to_return_tuples_give_the_same_maps(kind: str, method: str) -> None:
    """A Hugging Face model whose config says return_dict=False (as set for tracing or export) returns
    tuples: the attention methods found no `.attentions` and refused it as unsupported, and the LRP
    check compared the pooled output with the tuple's first item, the tokens, and refused it too."""
    small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                 image_size=32, patch_size=8)
    configs = {"ViTModel": transformers.ViTConfig, "CLIPVisionModel": transformers.CLIPVisionConfig}
    config_class = configs[kind]
    model_class = getattr(transformers, kind)
    torch.manual_seed(0)
    reference = model_class(config_class(**small)).double().eval()
    tuples = model_class(config_class(**small, return_dict=False)).double().eval()
    tuples.load_state_dict(reference.state_dict())
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    direction = torch.randn(32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = attnmap.explain(reference, images, method, target=direction)
        maps = attnmap.explain(tuples, images, method, target=direction)
    torch.testing.assert_close(maps, expected, rtol=1e-9, atol=1e-12)
    assert tuples.config.return_dict is False  # the model is left as it was
