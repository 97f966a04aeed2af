"""A direction in a token read-out's space (`attnmap.vit.readout.ReadoutDirection`, ``--readout``).

Identity: a timm ViT whose output is its tokens (``global_pool=''``, Virchow2's published
configuration), explained along ⟨read-out(tokens), d⟩, gives the maps of the same weights built with
the pool that computes that read-out, explained along d, for every method that takes a target.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
from PIL import Image

import attnmap
from attnmap import ReadoutDirection
from attnmap.errors import InputError
from attnmap.provenance import read_sidecar
from attnmap.vit.timm_build import build_timm
from tests.test_cli_explain import run_cli

TARGET_METHODS = (
    "attn_gradcam", "grad_rollout", "transformer_attribution", "lrp", "lrp_rollout", "lrp_attention"
)
ARCH = {"img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 2, "num_heads": 2, "num_classes": 0}
# the pooled model that computes each read-out itself (fc_norm=False: the final norm before the mean)
POOLED = {"cls": {"global_pool": "token"}, "patch_mean": {"global_pool": "avg", "fc_norm": False},
          "cls_and_patch_mean": {"global_pool": "class_and_patch_mean"}}


def _pair(readout: str, reg_tokens: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    tokens = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, global_pool="", reg_tokens=reg_tokens, **ARCH
    )
    pooled = build_timm("vit_tiny_patch16_224", {**POOLED[readout], **ARCH, "reg_tokens": reg_tokens})
    pooled.load_state_dict(tokens.state_dict())
    return tokens.double().eval(), pooled.double().eval()


@pytest.mark.parametrize("readout", sorted(POOLED))
def test_a_token_read_out_explains_as_the_pool_that_computes_it(readout):
    tokens_model, pooled_model = _pair(readout, reg_tokens=2)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    width = 64 if readout == "cls_and_patch_mean" else 32
    direction = torch.randn(2, width, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    target = ReadoutDirection(readout, direction)
    for method in TARGET_METHODS:
        options = {"layer": 0} if method == "attn_gradcam" else {}  # the last block's is clamped away here
        ours = attnmap.explain(tokens_model, images, method, target=target, **options)
        reference = attnmap.explain(pooled_model, images, method, target=direction, **options)
        scale = reference.abs().max()
        assert scale > 0, method
        # 1e-6 of the map, the cross-implementation bound: the pooled model's mean rule divides by the
        # ε-stabilised mean (ε = 1e-9), the read-out's seed is the exact gradient × input
        error = (ours - reference).abs().max()
        assert error <= 1e-6 * scale, (method, error)
    # the score itself is ⟨pooled output, d⟩
    score = target.bound(tokens_model)(tokens_model(images))
    assert torch.allclose(score, (pooled_model(images) * direction).sum(-1), rtol=1e-12)


def test_batches_and_single_images_agree_and_chunks_get_their_own_rows():
    tokens_model, _ = _pair("patch_mean")
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    direction = torch.randn(3, 32, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    together = attnmap.explain(tokens_model, images, "lrp", target=ReadoutDirection("patch_mean", direction))
    for index in range(3):
        alone = attnmap.explain(tokens_model, images[index : index + 1], "lrp",
                                target=ReadoutDirection("patch_mean", direction[index]))
        assert torch.allclose(together[index], alone[0], atol=1e-12)


def test_read_outs_a_model_lacks_and_outputs_that_are_not_tokens_are_refused():
    torch.manual_seed(0)
    no_class = timm.create_model("vit_tiny_patch16_224", pretrained=False, global_pool="", class_token=False,
                                 **ARCH).eval()
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(InputError, match="has no class token; use patch_mean"):
        attnmap.explain(no_class, images, "lrp", target=ReadoutDirection("cls", torch.randn(32)))
    patch_mean = ReadoutDirection("patch_mean", torch.randn(32))
    assert attnmap.explain(no_class, images, "lrp", target=patch_mean).shape == (1, 32, 32)
    tokens_model, pooled_model = _pair("cls")
    with pytest.raises(InputError, match=r"read-out is 32 wide for 1 images: give \(32,\)"):
        attnmap.explain(tokens_model.float(), images, "lrp", target=ReadoutDirection("cls", torch.randn(64)))
    with pytest.raises(InputError, match="pass the direction itself as the target"):
        attnmap.explain(pooled_model.float(), images, "lrp", target=ReadoutDirection("cls", torch.randn(32)))
    with pytest.raises(InputError, match="readout must be one of"):
        ReadoutDirection("mean", torch.randn(32))


def test_a_hugging_face_model_saved_without_its_pooler_is_explained_along_its_class_token():
    """Phikon-style: a ViTModel without pooler gives tokens; the class token's direction names the score."""
    transformers = pytest.importorskip("transformers")
    config = transformers.ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=2, image_size=32, patch_size=8)
    torch.manual_seed(0)
    model = transformers.ViTModel(config, add_pooling_layer=False).double().eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    direction = torch.randn(32, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    by_hand = attnmap.explain(model, images, "lrp",
                              target=lambda out: (out.last_hidden_state[:, 0] * direction).sum(-1))
    ours = attnmap.explain(model, images, "lrp", target=ReadoutDirection("cls", direction))
    assert torch.allclose(ours, by_hand, atol=1e-12 * by_hand.abs().max())
    for method in ("grad_rollout", "transformer_attribution"):
        maps = attnmap.explain(model, images, method, target=ReadoutDirection("patch_mean", direction))
        assert maps.shape == (2, 4, 4) and torch.isfinite(maps).all()


def test_cli_readout(tmp_path, capsys):
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, global_pool="", num_classes=0, depth=2, img_size=64
    )
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    np.save(tmp_path / "d.npy", np.random.default_rng(1).normal(size=192))
    np.save(tmp_path / "d2.npy", np.random.default_rng(1).normal(size=384))
    base = ["explain", str(tmp_path / "a.png"), "--model", "timm:vit_tiny_patch16_224", "--checkpoint",
            str(tmp_path / "weights.pt"), "--model-arg", "depth=2", "--model-arg", "img_size=64",
            "--model-arg", "global_pool=", "--model-arg", "num_classes=0", "--method", "lrp,grad_rollout",
            "--out", str(tmp_path / "out")]
    direction = ["--direction", str(tmp_path / "d.npy")]
    assert run_cli([*base, *direction]) == 2  # a (D,) direction on (N, D) tokens: refused, names the shapes
    assert "direction target has shape (192,)" in capsys.readouterr().err
    assert run_cli([*base, *direction, "--readout", "cls"]) == 0
    cls_map = np.load(tmp_path / "out" / "a_lrp.npy")
    record = read_sidecar(tmp_path / "out" / "a_lrp.npy")
    assert "cls read-out" in json.dumps(record["parameters"])
    assert run_cli([*base, *direction, "--readout", "patch_mean"]) == 0  # another score: not the old map
    assert not np.allclose(np.load(tmp_path / "out" / "a_lrp.npy"), cls_map)
    assert run_cli([*base, "--direction", str(tmp_path / "d2.npy"), "--readout", "cls_and_patch_mean"]) == 0
    capsys.readouterr()
    assert run_cli([*base, "--readout", "cls"]) == 2
    err = capsys.readouterr().err
    assert "give --direction too" in err and len(err.strip().splitlines()) == 1
    assert run_cli([*base, *direction, "--readout", "cls_and_patch_mean"]) == 2
    err = capsys.readouterr().err
    assert "read-out is 384 wide" in err and "Traceback" not in err


@pytest.mark.parametrize("method", ["lrp", "transformer_attribution"])
def test_a_token_model_without_a_read_out_is_told_about_readout_direction(method):
    """On a model whose output is tokens (timm ``global_pool=''``), no target, or a (D,) direction
    (an embedding's direction, as a probe on the class token gives), was told to pass an (N, D)
    direction or a callable; the read-out made for this case, `attnmap.ReadoutDirection`, was not
    named."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=1, num_classes=0, global_pool="")
    images = torch.randn(2, 3, 32, 32)
    for target in (None, torch.randn(192)):
        with pytest.raises(InputError, match=r"attnmap\.ReadoutDirection\('cls'") as error:
            attnmap.explain(model.eval(), images, method, target=target)
        assert "--readout" in str(error.value)


def test_a_models_tokens_with_an_embedding_direction_point_to_the_readout():
    """A (D,) direction on a model whose output is tokens (Phikon-like: no pooler) was refused with
    "for token outputs a callable target may be simpler": no use on the command line, and silent
    about the read-out made for exactly this (--readout, attnmap.ReadoutDirection)."""
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, global_pool="", num_classes=0, depth=1, img_size=32
    ).eval()
    images = torch.randn(1, 3, 32, 32)
    with pytest.raises(InputError, match=r"direction target has shape \(192,\)") as refused:
        attnmap.explain(model, images, "grad_rollout", target=torch.randn(192))
    assert "ReadoutDirection" in str(refused.value) and "--readout" in str(refused.value)
    with pytest.raises(InputError, match="needs a target") as refused:
        attnmap.explain(model, images, "grad_rollout")
    assert "ReadoutDirection" in str(refused.value) and "--readout" in str(refused.value)


def test_a_readout_on_a_pooled_output_says_what_to_drop_on_the_command_line(tmp_path, capsys):
    """--readout on a model that already gives one embedding said "pass the direction itself as the
    target", the API's words: the command line user has to leave --readout out."""
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=1, img_size=32)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    np.save(tmp_path / "d.npy", np.ones(192))
    model_args = ["--model-arg", "depth=1", "--model-arg", "img_size=32", "--model-arg", "num_classes=0"]
    code = run_cli(["explain", str(tmp_path / "a.png"), "--model", "timm:vit_tiny_patch16_224", *model_args,
                    "--checkpoint", str(tmp_path / "weights.pt"), "--direction", str(tmp_path / "d.npy"),
                    "--readout", "cls", "--method", "grad_rollout", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "pass the direction itself as the target" in err and "leave --readout out" in err
