"""timm NaFlexVit: the four attention methods read it as the equivalent VisionTransformer is read."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.models.vision_transformer import VisionTransformer

import attnmap
from attnmap.errors import InputError, UnsupportedModelError
from attnmap.vit.preprocess import preprocess

SIZE, PATCH, WIDTH = 32, 8, 32
ATTENTION_METHODS = ("attention", "attn_gradcam", "grad_rollout", "rollout")


def _naflex(**options: object) -> torch.nn.Module:
    torch.manual_seed(0)
    kwargs = dict(img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=2, num_heads=4, num_classes=5)
    kwargs.update(options)
    return timm.create_model("naflexvit_base_patch16_gap", pretrained=False, **kwargs).double().eval()


def _as_vision_transformer(naflex: torch.nn.Module, include_prefix: bool) -> torch.nn.Module:
    """The same network as a timm VisionTransformer: registers, no class token, positions added to
    the patches only, average pool + fc_norm; the linear patch projection (patch pixels in
    (row, column, channel) order) as a convolution, the position grid resampled as NaFlexVit does."""
    model = VisionTransformer(
        img_size=SIZE,
        patch_size=PATCH,
        embed_dim=WIDTH,
        depth=2,
        num_heads=4,
        num_classes=5,
        class_token=False,
        reg_tokens=4,
        no_embed_class=True,
        global_pool="avg",
        fc_norm=True,
        init_values=1e-5,
        pool_include_prefix=include_prefix,
    ).double()
    state = {key: value for key, value in naflex.state_dict().items() if not key.startswith("embeds.")}
    grid = SIZE // PATCH
    positions = torch.zeros(1, grid * grid, WIDTH, dtype=torch.float64)
    naflex.embeds._apply_learned_pos_embed(positions, grid_size=(grid, grid))
    weight = naflex.embeds.proj.weight.detach()
    state.update(
        reg_token=naflex.embeds.reg_token.detach(),
        pos_embed=positions,
        **{
            "patch_embed.proj.weight": weight.reshape(WIDTH, PATCH, PATCH, 3).permute(0, 3, 1, 2),
            "patch_embed.proj.bias": naflex.embeds.proj.bias.detach(),
        },
    )
    model.load_state_dict(state, strict=True)
    return model.eval()


@pytest.mark.parametrize("include_prefix", [False, True])
def test_attention_methods_equal_those_of_the_same_network_as_a_vision_transformer(
    single_thread: None, include_prefix: bool
) -> None:
    naflex = _naflex(pool_include_prefix=include_prefix)
    twin = _as_vision_transformer(naflex, include_prefix)
    x = torch.randn(2, 3, SIZE, SIZE, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(naflex(x), twin(x))  # the port is exact
    for method in ATTENTION_METHODS:
        maps = attnmap.explain(naflex, x, method, target=1)
        assert maps.shape == (2, SIZE // PATCH, SIZE // PATCH)
        torch.testing.assert_close(maps, attnmap.explain(twin, x, method, target=1), rtol=1e-9, atol=1e-15)
    with pytest.raises(UnsupportedModelError, match="NaFlexVit"):
        attnmap.explain(naflex, x, "lrp", target=1)


def test_any_size_gives_its_own_grid_and_bad_sizes_fail_in_one_line(single_thread: None) -> None:
    naflex = _naflex()
    x = torch.randn(1, 3, 24, 48, dtype=torch.float64)
    assert attnmap.explain(naflex, x, "rollout").shape == (1, 3, 6)
    with pytest.raises(InputError, match="not a multiple of the patch size"):
        attnmap.explain(naflex, torch.randn(1, 3, 30, 48, dtype=torch.float64), "rollout")
    with pytest.raises(InputError, match="4-channel"):
        attnmap.explain(_naflex(in_chans=4), torch.randn(1, 3, 32, 32, dtype=torch.float64), "rollout")
    with pytest.raises(InputError, match="smaller than one 8×8 patch"):
        preprocess(naflex.float(), Image.fromarray(np.zeros((4, 40, 3), dtype=np.uint8)))


def test_the_class_token_in_embeds_is_the_query_row_of_a_token_read_out() -> None:
    from attnmap.vit.adapters import adapter_for

    radio_like = _naflex(class_token=True, reg_tokens=2, global_pool="token")
    assert adapter_for(radio_like).query_row == "cls"
    assert adapter_for(_naflex()).query_row == "patch_mean"
    assert adapter_for(_naflex(pool_include_prefix=True)).query_row == "token_mean"


def test_method_all_leaves_out_the_lrp_methods_with_their_refusal(tmp_path):
    """`--method all` on a NaFlexViT wrote nothing: it has no LRP twin. The other methods run; each
    LRP method is left out with a warning giving its refusal, and the grid shows the others."""
    from attnmap.vit.batch import explain_paths
    from attnmap.vit.method_choice import SkippedMethodWarning

    torch.manual_seed(0)
    model = timm.create_model("naflexvit_base_patch16_gap", pretrained=False, depth=1, embed_dim=32,
                              num_heads=2, num_classes=3).eval()
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(image)
    with pytest.warns(SkippedMethodWarning) as record:
        written = explain_paths([image], model, "all", None, tmp_path / "out", progress=False)
    skipped = {str(w.message).split()[1] for w in record if w.category is SkippedMethodWarning}
    assert "lrp" in skipped and "attention" not in skipped
    assert all("LRP methods need" in str(w.message) for w in record if w.category is SkippedMethodWarning)
    names = {path.name for path in written}
    assert "x_all_methods.png" in names and "x_attention.npy" in names and "x_lrp.npy" not in names
