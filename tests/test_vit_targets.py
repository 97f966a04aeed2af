"""Targets: class indices, directions and callables; headless models; grad modes; flat-map warnings."""

from __future__ import annotations

import warnings

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

import attnmap
from attnmap.errors import InputError
from attnmap.vit.explain import FlatMapWarning

ALL = sorted(attnmap.methods())
SCORED = ["attn_gradcam", "grad_rollout", "lrp", "lrp_attention", "lrp_rollout", "transformer_attribution"]
FREE = ["attention", "rollout"]


def tiny_vit(**kwargs: object) -> nn.Module:
    torch.manual_seed(0)
    options = dict(img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3, num_classes=5)
    options.update(kwargs)
    return VisionTransformer(**options).double().eval()


def images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


def quiet(model: nn.Module, x: torch.Tensor, method: str, **kwargs: object) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FlatMapWarning)
        return attnmap.explain(model, x, method, **kwargs)


@pytest.mark.parametrize("method", SCORED)
def test_headless_model_needs_a_target(single_thread: None, method: str) -> None:
    with pytest.raises(InputError, match="needs a target"):
        attnmap.explain(tiny_vit(num_classes=0), images(), method)


@pytest.mark.parametrize("method", FREE)
def test_attention_and_rollout_need_no_target_on_headless_models(single_thread: None, method: str) -> None:
    for model in (tiny_vit(num_classes=0), tiny_vit(global_pool="")):
        assert attnmap.explain(model, images(), method).shape == (2, 4, 4)


def test_class_index_on_a_headless_model_is_refused(single_thread: None) -> None:
    with pytest.raises(InputError, match="has no classes"):
        attnmap.explain(tiny_vit(num_classes=0), images(), "grad_rollout", target=3)


@pytest.mark.parametrize("method", ALL)
def test_one_hot_direction_and_callable_equal_the_class_target(single_thread: None, method: str) -> None:
    """⟨logits, e_c⟩ is logit c: the same gradients. LRP seeds logit_c · e_c instead of e_c, and its
    rules are linear in the seed, so a single-block LRP map scales by logit_c (> 0 here)."""
    model, x = tiny_vit(), images()
    with torch.no_grad():
        logits = model(x)
    target = logits.argmax(-1)  # positive logits: clamp(·, 0) commutes with the scaling
    assert (logits.gather(1, target[:, None]) > 0).all()
    direction = torch.nn.functional.one_hot(target, 5).double()
    by_class = quiet(model, x, method, target=target)
    by_direction = quiet(model, x, method, target=direction)
    by_callable = quiet(model, x, method, target=lambda out: out.gather(1, target[:, None])[:, 0])
    assert torch.allclose(by_direction, by_callable, rtol=1e-9, atol=1e-14)
    if method in ("lrp_rollout", "transformer_attribution"):
        return  # (I + cĀ₁)(I + cĀ₀) is not linear in c: only direction == callable holds
    scale = logits.gather(1, target[:, None])[:, 0] if method in ("lrp", "lrp_attention") else torch.ones(2)
    expected = by_class * scale.view(2, *[1] * (by_class.ndim - 1))
    # float64 uses the reference ε = 1e-9, which is not scale invariant: agreement to ~1e-6
    assert torch.allclose(by_direction, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


@pytest.mark.parametrize("method", ALL)
def test_direction_on_headless_and_token_models_batch_equals_singles(
    single_thread: None, method: str
) -> None:
    x = images(3)
    for model in (tiny_vit(num_classes=0, reg_tokens=2, init_values=1e-2), tiny_vit(global_pool="")):
        with torch.no_grad():
            out = model(x)
        direction = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
        together = quiet(model, x, method, target=direction)
        alone = torch.cat([quiet(model, x[i : i + 1], method, target=direction[i : i + 1]) for i in range(3)])
        assert torch.isfinite(together).all() and together.shape[0] == 3
        assert torch.allclose(together, alone, rtol=1e-9, atol=1e-12 * float(alone.abs().max()))


def test_shared_direction_and_wrong_shapes(single_thread: None) -> None:
    model, x = tiny_vit(num_classes=0), images()
    shared = torch.randn(48, dtype=torch.float64)
    assert torch.allclose(
        attnmap.explain(model, x, "grad_rollout", target=shared),
        attnmap.explain(model, x, "grad_rollout", target=shared.expand(2, 48)),
    )
    with pytest.raises(InputError, match="direction target has shape"):
        attnmap.explain(model, x, "grad_rollout", target=torch.randn(7, dtype=torch.float64))
    with pytest.raises(InputError, match="callable must return"):
        attnmap.explain(model, x, "lrp", target=lambda out: out.sum())


@pytest.mark.parametrize("target", [2.5, 2.0, True, [1.0, 2.0], "cat"])
def test_class_targets_that_are_not_integers_are_refused(single_thread: None, target: object) -> None:
    """A float or bool class index used to be cast silently (2.5 explained class 2, True class 1)."""
    model, x = tiny_vit(), images()
    # a string is a class name, looked up in the model's names: this model has none
    message = "names no classes" if target == "cat" else "target must be an int, B ints"
    for method in ("grad_rollout", "lrp"):
        with pytest.raises(InputError, match=message):
            attnmap.explain(model, x, method, target=target)
    assert attnmap.explain(model, x, "grad_rollout", target=torch.tensor([1, 2])).shape == (2, 4, 4)


@pytest.mark.parametrize("method", [*ALL, "lrp_attention(grad)"])
@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_every_method_under_no_grad_and_inference_mode(single_thread: None, method: str, mode: str) -> None:
    model = tiny_vit()
    model.blocks[1].attn.qkv.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    options = {"grad": True} if method.endswith("(grad)") else {}
    method = method.split("(")[0]
    reference = quiet(model, images(), method, target=[1, 2], **options)
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    with context:
        x = images()
        maps = quiet(model, x, method, target=[1, 2], **options)
    assert torch.allclose(maps, reference, rtol=1e-12, atol=1e-15)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


def test_flat_maps_are_reported_with_image_and_method(single_thread: None) -> None:
    model = tiny_vit(num_classes=0)
    direction = torch.zeros(2, 48, dtype=torch.float64)
    direction[1] = 1.0
    with pytest.warns(FlatMapWarning, match="grad_rollout map of image 0 is all zero"):
        attnmap.explain(model, images(), "grad_rollout", target=direction)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlatMapWarning)
        attnmap.explain(model, images(), "rollout")


@pytest.mark.parametrize("mode", ["no_grad", "inference_mode"])
def test_hugging_face_model_left_exactly_as_found(single_thread: None, mode: str) -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    model = transformers.ViTModel(config).double()
    model.train()
    before = dict(model.config.__dict__)
    flags = [p.requires_grad for p in model.parameters()]
    direction = torch.randn(32, dtype=torch.float64)
    context = torch.no_grad() if mode == "no_grad" else torch.inference_mode()
    for method in ALL:
        with context:
            maps = quiet(model, images(), method, target=direction)
        assert torch.isfinite(maps).all() and not maps.is_inference()
    assert (
        model.config.__dict__ == before
        and model.config._attn_implementation == before["_attn_implementation_internal"]
    )
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())


def test_average_pooled_rollout_removes_the_identity_path() -> None:
    """q J − q ⊙ Π 1/rowsum(M + I) with q the patch mean, against the explicit matrix product."""
    from attnmap.vit.methods import attention_rollout

    generator = torch.Generator().manual_seed(4)
    attentions = [
        torch.softmax(torch.randn(2, 3, 6, 6, generator=generator, dtype=torch.float64), -1) for _ in range(3)
    ]
    query = torch.full((6,), 1 / 5, dtype=torch.float64)
    query[0] = 0
    eye = torch.eye(6, dtype=torch.float64)
    joint, identity = eye.expand(2, 6, 6), query.expand(2, 6)
    for attention in attentions:
        fused = attention.mean(1) + eye
        sums = fused.sum(-1)
        joint = (fused / sums.unsqueeze(-1)) @ joint
        identity = identity / sums
    expected = torch.einsum("n,bnm->bm", query, joint) - identity
    ours = attention_rollout(attentions, query, num_prefix_tokens=1)
    assert torch.allclose(ours, expected[:, 1:], atol=1e-14)
    spread = ours.amax(1) - ours.amin(1)
    drowned = attention_rollout(attentions, query, num_prefix_tokens=1, remove_identity=False)
    assert torch.allclose(drowned - ours, identity[:, 1:], atol=1e-14) and (spread > 0).all()


def test_attention_pool_model_left_as_found_and_its_row_is_the_query(single_thread: None) -> None:
    model = tiny_vit(global_pool="map", class_token=False)
    flags = [block.attn.fused_attn for block in model.blocks] + [model.attn_pool.fused_attn]
    for method in ALL:
        quiet(model, images(), method)
    assert "forward" not in model.attn_pool.__dict__
    assert [block.attn.fused_attn for block in model.blocks] + [model.attn_pool.fused_attn] == flags
    from attnmap.vit.capture import capture

    captured = capture(model, images(), layers=[1])
    with torch.no_grad():
        x = model.norm(model.blocks(model._pos_embed(model.patch_embed(images()))))
        pool = model.attn_pool
        q = pool.q(pool.latent).reshape(1, 1, pool.num_heads, pool.head_dim).transpose(1, 2)
        k = pool.kv(x).reshape(2, 16, 2, pool.num_heads, pool.head_dim).permute(2, 0, 3, 1, 4)[0]
        row = ((q * pool.scale) @ k.transpose(-2, -1)).softmax(-1).mean(1)[:, 0]
    assert torch.allclose(captured.query, row, atol=1e-12)


def test_wrong_option_types_targets_and_images_are_one_line_errors(single_thread: None) -> None:
    model, x = tiny_vit(), images()
    cases = [
        ("rollout", {"discard_ratio": "a"}, "discard_ratio must be a number.*options: head_fusion"),
        ("rollout", {"start_layer": 1.5}, "option start_layer must be an integer"),
        ("rollout", {"head_fusion": 3}, "option head_fusion must be a string"),
        ("lrp_attention", {"grad": 1}, "option grad must be True or False"),
        ("attn_gradcam", {"target": [1]}, "got 1 targets for a batch of 2 images"),
        ("attn_gradcam", {"target": torch.tensor([1])}, "got 1 targets for a batch of 2 images"),
        ("attn_gradcam", {"target": lambda out: out.detach()[:, 0]}, "do not depend on the model's output"),
    ]
    for method, kwargs, message in cases:
        with pytest.raises(InputError, match=message):
            quiet(model, x, method, **kwargs)
    with pytest.raises(InputError, match="images contain NaN"):
        quiet(model, x * float("nan"), "rollout")
    # one class for every image still works, as an int or a 0-d tensor, and numpy numbers as options
    import numpy as np

    reference = quiet(model, x, "attn_gradcam", target=[2, 2])
    assert torch.equal(quiet(model, x, "attn_gradcam", target=torch.tensor(2)), reference)
    assert quiet(model, x, "rollout", start_layer=np.int64(1), discard_ratio=0).shape == (2, 4, 4)


@pytest.mark.parametrize("method", ALL)
def test_an_empty_batch_is_one_line_error_for_every_method(single_thread: None, method: str) -> None:
    """The LRP methods used to fail on 0 images with a RuntimeError from a reshape deep inside."""
    model = tiny_vit()
    with pytest.raises(InputError, match="empty batch"):
        attnmap.explain(model, torch.zeros(0, 3, 32, 32, dtype=torch.float64), method)


@pytest.mark.parametrize("method", ALL)
def test_target_errors_name_the_users_batch_not_a_chunks(single_thread: None, method: str) -> None:
    """The LRP methods run more than CHUNK_SIZE images in chunks; their target errors used to describe
    the chunk: a (3, 5) direction for 11 images was told 'give (5,) or (8, 5)', class 9 was listed 8
    times, a callable was told to return (8,) scores."""
    from attnmap.vit.lrp.methods import CHUNK_SIZE

    batch = CHUNK_SIZE + 3
    model, x = tiny_vit(), images(batch)
    with pytest.raises(InputError, match=rf"give \(5,\) or \({batch}, 5\)$"):
        quiet(model, x, method, target=torch.randn(3, 5, dtype=torch.float64))
    with pytest.raises(InputError, match=r"^target 9 out of range: the model has 5 classes \(0\.\.4\)$"):
        quiet(model, x, method, target=9)
    with pytest.raises(InputError, match=r"^targets \[7, 9\] out of range"):
        quiet(model, x, method, target=[7, 9] + [0] * (batch - 2))
    if method in SCORED:  # the others never call it
        with pytest.raises(InputError, match="callable must return") as raised:
            quiet(model, x, method, target=lambda out: out)
        assert f"({CHUNK_SIZE},)" not in str(raised.value)


@pytest.mark.parametrize("method", ["lrp", "transformer_attribution"])
def test_read_out_direction_errors_name_the_users_batch(single_thread: None, method: str) -> None:
    from attnmap.vit.lrp.methods import CHUNK_SIZE

    batch = CHUNK_SIZE + 3
    model, x = tiny_vit(num_classes=0, global_pool=""), images(batch)
    target = attnmap.ReadoutDirection("cls", torch.randn(3, 48, dtype=torch.float64))
    with pytest.raises(InputError, match=rf"48 wide for {batch} images: give \(48,\) or \({batch}, 48\)$"):
        quiet(model, x, method, target=target)


@pytest.mark.parametrize("method", ["attention", "rollout", "attn_gradcam", "grad_rollout"])
def test_a_fine_tuning_head_of_dropout_and_linear_is_a_classifier(single_thread: None, method: str) -> None:
    """model.head = Sequential(Dropout, Linear), the usual fine-tuning head, made the model 'headless':
    a class target was refused ('the model has no classes') and the prediction was not explained."""
    plain = tiny_vit()
    wrapped = tiny_vit()
    wrapped.head = nn.Sequential(nn.Dropout(0.1), plain.head)
    wrapped.eval()
    x = images()
    for target in (None, 3, [1, 4]):
        expected = quiet(plain, x, method, target=target)
        torch.testing.assert_close(quiet(wrapped, x, method, target=target), expected, rtol=0, atol=0)


@pytest.mark.parametrize("method", ALL)
def test_a_model_or_images_on_the_meta_device_are_one_line_errors(single_thread: None, method: str) -> None:
    """A model built under ``torch.device("meta")`` (weights never loaded) with meta images failed
    with torch's 'Tensor.item() cannot be called on meta tensors'; with real images the message
    blamed the images' device. Both now say that the weights or images hold no values."""
    with torch.device("meta"):
        model = tiny_vit()
    with pytest.raises(InputError, match=r"^images are on the meta device"):
        attnmap.explain(model, torch.zeros(1, 3, 32, 32, device="meta", dtype=torch.float64), method)
    with pytest.raises(InputError, match=r"^the model's weights are on the meta device"):
        attnmap.explain(model, images(1), method)
