"""The four attention methods: pure functions against explicit formulas, wrappers' grad discipline."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

import attnmap
from attnmap.errors import InputError
from attnmap.vit.methods import attention_gradcam, attention_rollout, fuse_heads, gradient_rollout
from attnmap.vit.methods import gradients as gradient_methods
from attnmap.vit.methods.rollout import discard_weakest

METHODS = ["attention", "rollout", "attn_gradcam", "grad_rollout"]


def tiny_vit(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    options = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, num_classes=5)
    options.update(kwargs)
    return timm.models.vision_transformer.VisionTransformer(**options).double().eval()


def random_attention(blocks: int, batch: int = 2, heads: int = 3, tokens: int = 5) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [
        torch.softmax(torch.randn(batch, heads, tokens, tokens, generator=generator, dtype=torch.float64), -1)
        for _ in range(blocks)
    ]


def cls_query(tokens: int) -> torch.Tensor:
    query = torch.zeros(tokens, dtype=torch.float64)
    query[0] = 1
    return query


def test_methods_are_listed_with_descriptions():
    listed = attnmap.methods()
    for name in METHODS:
        assert name in listed and len(listed[name]) > 20


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_equals_explicit_matrix_product(fusion):
    attentions = random_attention(3)
    eye = torch.eye(5, dtype=torch.float64)
    joint = eye.expand(2, 5, 5)
    for attention in attentions:  # J = M̂_2 M̂_1 M̂_0: each later block multiplies on the left
        fused = {"mean": attention.mean(1), "max": attention.amax(1), "min": attention.amin(1)}[fusion] + eye
        joint = (fused / fused.sum(-1, keepdim=True)) @ joint
    ours = attention_rollout(attentions, cls_query(5), num_prefix_tokens=1, head_fusion=fusion)
    assert torch.allclose(ours, joint[:, 0, 1:], atol=1e-14)


def test_rollout_of_uniform_attention_is_uniform():
    uniform = [torch.full((1, 2, 5, 5), 0.2, dtype=torch.float64)] * 4
    out = attention_rollout(uniform, cls_query(5), 1)
    assert torch.allclose(out, out[0, 0].expand_as(out))


def test_discard_keeps_prefix_columns_and_drops_the_weakest():
    fused = fuse_heads(random_attention(1, tokens=6)[0])
    kept = discard_weakest(fused, 0.5, num_prefix_tokens=2)
    assert torch.equal(kept[:, :, :2], fused[:, :, :2])
    patch_part, kept_part = fused[:, :, 2:].reshape(2, -1), kept[:, :, 2:].reshape(2, -1)
    assert ((kept_part == 0).sum(1) == 12).all()
    for image in range(2):
        assert kept_part[image][kept_part[image] > 0].min() >= patch_part[image][kept_part[image] == 0].max()
    with pytest.raises(InputError, match="discard_ratio"):
        discard_weakest(fused, 1.0, 1)


def test_gradient_rollout_equals_explicit_recurrence():
    attentions, gradients = random_attention(3), [a - 0.2 for a in random_attention(3, tokens=5)[::-1]]
    relevance = torch.eye(5, dtype=torch.float64).repeat(2, 1, 1)
    for attention, gradient in zip(attentions, gradients, strict=True):
        relevance = relevance + (gradient * attention).clamp(min=0).mean(1) @ relevance
    ours = gradient_rollout(attentions, gradients, cls_query(5), num_prefix_tokens=1)
    assert torch.allclose(ours, relevance[:, 0, 1:], atol=1e-14)


def test_gradient_rollout_keeps_small_gradients_of_a_patch_mean_query_in_float32():
    """An average-pooled model's query row is ~1/P everywhere; its rollout products may be 1e-8 of
    that. Carrying q + Δ and subtracting q rounded them to an all-zero map in float32."""
    attentions = random_attention(3, tokens=17)
    gradients = [1e-8 * (a - 0.05) for a in random_attention(3, tokens=17)[::-1]]
    query = torch.full((17,), 1 / 16, dtype=torch.float64)
    query[0] = 0
    exact = gradient_rollout(attentions, gradients, query, num_prefix_tokens=1)
    single = gradient_rollout(
        [a.float() for a in attentions], [g.float() for g in gradients], query.float(), num_prefix_tokens=1
    )
    assert exact.abs().max() > 0
    torch.testing.assert_close(single.double(), exact, rtol=1e-4, atol=1e-4 * float(exact.abs().max()))


def test_attention_gradcam_formula_and_range():
    attention, gradient = random_attention(1)[0], random_attention(1)[0] - 0.2
    rows, grads = attention[:, :, 0, 1:], gradient[:, :, 0, 1:]
    cam = (grads.mean(-1, keepdim=True) * rows).mean(1).clamp(min=0)
    low, high = cam.amin(1, keepdim=True), cam.amax(1, keepdim=True)
    ours = attention_gradcam(attention, gradient, cls_query(5), 1)
    assert torch.allclose(ours, (cam - low) / (high - low), atol=1e-14)
    flat = attention_gradcam(attention, torch.zeros_like(gradient), cls_query(5), 1)
    assert torch.equal(flat, torch.zeros_like(flat))  # a constant map normalises to zeros, not NaN


def per_image_attention_gradients(model: nn.Module, images: torch.Tensor, targets: list[int]):
    """Independent route: unfused timm path, retain_grad, one .backward() per image on its logit."""
    saved = [block.attn.fused_attn for block in model.blocks]
    result = []
    try:
        for block in model.blocks:
            block.attn.fused_attn = False
        for index, target in enumerate(targets):
            maps: list[torch.Tensor] = []

            def keep(module, inputs, output, maps=maps):
                output.retain_grad()
                maps.append(output)

            handles = [block.attn.attn_drop.register_forward_hook(keep) for block in model.blocks]
            model(images[index : index + 1])[0, target].backward()
            for handle in handles:
                handle.remove()
            result.append([(a.detach(), a.grad) for a in maps])
            model.zero_grad(set_to_none=True)
    finally:
        for block, flag in zip(model.blocks, saved, strict=True):
            block.attn.fused_attn = flag
    return result


@pytest.mark.parametrize("start_layer", [0, 1])
def test_grad_rollout_on_a_model_uses_each_images_target_logit(start_layer):
    model = tiny_vit()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    targets = [3, 1]
    ours = attnmap.explain(model, images, "grad_rollout", target=targets, start_layer=start_layer)
    for index, blocks in enumerate(per_image_attention_gradients(model, images, targets)):
        relevance = torch.eye(17, dtype=torch.float64)
        for attention, gradient in blocks[start_layer:]:
            relevance = relevance + (gradient * attention).clamp(min=0).mean(1)[0] @ relevance
        assert torch.allclose(ours[index].flatten(), relevance[0, 1:], atol=1e-12)


def test_target_forms():
    model = tiny_vit()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        predicted = model(images).argmax(-1)
    default = attnmap.explain(model, images, "attn_gradcam")
    assert torch.equal(default, attnmap.explain(model, images, "attn_gradcam", target=predicted.tolist()))
    assert torch.equal(default, attnmap.explain(model, images, "attn_gradcam", target=predicted))
    other = (predicted + 1) % 5
    changed = attnmap.explain(model, images, "grad_rollout", target=other)
    assert not torch.allclose(changed, attnmap.explain(model, images, "grad_rollout"))
    same_target = attnmap.explain(model, images, "grad_rollout", target=2)
    assert torch.allclose(same_target, attnmap.explain(model, images, "grad_rollout", target=[2, 2]))


@pytest.mark.parametrize("name", ["attention", "rollout"])
def test_class_independent_methods_run_without_grad(name):
    model = tiny_vit()
    seen: list[bool] = []
    model.blocks[0].register_forward_hook(lambda m, a, o: seen.append(torch.is_grad_enabled()))
    attnmap.explain(model, torch.randn(2, 3, 32, 32, dtype=torch.float64), name)
    assert seen == [False]


@pytest.mark.parametrize("name", ["attn_gradcam", "grad_rollout"])
def test_gradient_methods_one_forward_one_backward_no_parameter_grads(name, monkeypatch):
    model = tiny_vit()
    for parameter in model.parameters():
        parameter.requires_grad_(False)  # frozen weights must still work...
    model.head.weight.requires_grad_(True)  # ...and trainable ones must get no .grad
    forwards: list[int] = []
    model.register_forward_hook(lambda m, a, o: forwards.append(1))
    calls: list[int] = []
    original = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    with torch.no_grad():  # gradient methods enable grad themselves
        maps = attnmap.explain(model, torch.randn(4, 3, 32, 32, dtype=torch.float64), name)
    assert maps.shape == (4, 4, 4) and torch.isfinite(maps).all() and maps.abs().sum() > 0
    assert len(forwards) == 1 and len(calls) == 1
    assert model.head.weight.grad is None
    assert [p.requires_grad for p in model.parameters()].count(True) == 1


def test_methods_record_only_the_blocks_they_use(monkeypatch):
    recorded: list[list[int]] = []
    original = gradient_methods.capture

    def spy(model, images, layers=None, with_grad=False):
        recorded.append(list(layers))
        return original(model, images, layers=layers, with_grad=with_grad)

    monkeypatch.setattr(gradient_methods, "capture", spy)
    model = tiny_vit()
    images = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    attnmap.explain(model, images, "attn_gradcam")
    attnmap.explain(model, images, "grad_rollout", start_layer=1)
    assert recorded == [[2], [1, 2]]
    fused_during_forward: list[bool] = []
    model.blocks[0].attn.register_forward_pre_hook(lambda m, a: fused_during_forward.append(m.fused_attn))
    attnmap.explain(model, images, "attention", layer=-1)
    assert fused_during_forward == [True]  # blocks we do not read keep the fast fused path


def test_option_errors_are_clear():
    model = tiny_vit()
    images = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with pytest.raises(InputError, match="has no option"):
        attnmap.explain(model, images, "rollout", layer=1)
    with pytest.raises(InputError, match="head_fusion"):
        attnmap.explain(model, images, "rollout", head_fusion="median")
    with pytest.raises(InputError, match="discard_ratio"):
        attnmap.explain(model, images, "rollout", discard_ratio=1.5)
    with pytest.raises(InputError, match="out of range"):
        attnmap.explain(model, images, "grad_rollout", start_layer=3)
    with pytest.raises(InputError, match="unknown method"):
        attnmap.explain(model, images, "saliency")


def test_rollout_options_change_the_map():
    model = tiny_vit()
    images = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    base = attnmap.explain(model, images, "rollout")
    for options in ({"head_fusion": "max"}, {"discard_ratio": 0.9}, {"start_layer": 2}):
        other = attnmap.explain(model, images, "rollout", **options)
        assert other.shape == base.shape and not torch.allclose(other, base)


@pytest.mark.parametrize("method", [["lrp", "rollout"], ("rollout",), {"rollout"}, "all"])
def test_several_methods_in_one_call_are_refused_in_one_line(method):
    """A list of methods (the command line takes several) failed with TypeError: unhashable type."""
    model = tiny_vit()
    with pytest.raises(InputError, match=r"one method name per call.*attnmap\.methods\(\)"):
        attnmap.explain(model, torch.randn(1, 3, 32, 32, dtype=torch.float64), method)


@pytest.mark.parametrize("name", ["rollout", "grad_rollout", "transformer_attribution", "lrp_rollout"])
def test_start_layer_is_one_rule_in_every_method_that_takes_it(name):
    """start_layer counts blocks from the first, 0..L-1, in all four methods: rollout and
    grad_rollout read -1 as the last block while the LRP rollouts refused it."""
    model = tiny_vit()
    images = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    for value in (-1, -3, 3):
        message = rf"start_layer={value} is out of range: the model has 3 blocks \(0\.\.2"
        with pytest.raises(InputError, match=message):
            attnmap.explain(model, images, name, start_layer=value)
    assert attnmap.explain(model, images, name, start_layer=2).shape == (1, 4, 4)
