"""The model families of the support table (`attnmap.vit.support_matrix`), each built tiny and
seeded (random weights, no download: depth 2, width 32, 32×32 images), and the configurations
attnmap refuses, with what the user sees. A registry: adding a family is adding a row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

SIZE, PATCH, WIDTH, HEADS = 32, 8, 32, 4


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[[], nn.Module]
    headless: bool = False


def _timm_vit(**options: object) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    kwargs = dict(img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=2, num_heads=HEADS, num_classes=5)
    kwargs.update(options)
    return VisionTransformer(**kwargs)


def _virchow_embedding() -> nn.Module:
    from attnmap.vit.timm_build import build_timm

    return build_timm("vit_huge_patch14_224", dict(
        img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=2, num_heads=HEADS, reg_tokens=4,
        mlp_layer="SwiGLUPacked", act_layer="silu", init_values=0.1, global_pool="class_and_patch_mean",
    ))


def _timm_deit_distilled() -> nn.Module:
    from timm.models.deit import VisionTransformerDistilled

    return VisionTransformerDistilled(
        img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=2, num_heads=HEADS, num_classes=5
    )


def _hf(config_name: str, model_name: str, **options: object) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers

        sizes = dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=2)
        sizes.update(num_attention_heads=HEADS, image_size=SIZE, patch_size=PATCH)
        config = getattr(transformers, config_name)(**sizes, **options)
        return getattr(transformers, model_name)(config)

    return build


def _hf_image_text(config_name: str, model_name: str) -> Callable[[], nn.Module]:
    """An image-text family's image classifier: the table's vision tower, a one-layer text tower."""

    def build() -> nn.Module:
        import transformers

        tower = dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=2)
        tower.update(num_attention_heads=HEADS, image_size=SIZE, patch_size=PATCH)
        text = dict(hidden_size=WIDTH, intermediate_size=WIDTH, num_hidden_layers=1)
        text.update(num_attention_heads=HEADS, vocab_size=64)
        config = getattr(transformers, config_name)(vision_config=tower, text_config=text, num_labels=5)
        return getattr(transformers, model_name)(config)

    return build


def _timm_hybrid() -> nn.Module:
    import functools

    from timm.layers import HybridEmbed

    backbone = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 2, stride=2)
    )
    return _timm_vit(embed_layer=functools.partial(HybridEmbed, backbone=backbone), patch_size=2)


def _timm_named(name: str, **options: object) -> Callable[[], nn.Module]:
    """A timm architecture by its registry name, as a user builds it, shrunk to the table's size
    (an option given as None drops that size argument, for architectures without it)."""

    def build() -> nn.Module:
        import timm

        sizes = dict(img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=2, num_heads=HEADS)
        kwargs = {key: value for key, value in {**sizes, **options}.items() if value is not None}
        return timm.create_model(name, pretrained=False, num_classes=5, **kwargs)

    return build


def _timm_relpos() -> nn.Module:
    from timm.models.vision_transformer_relpos import VisionTransformerRelPos

    return VisionTransformerRelPos(
        img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=2, num_heads=HEADS, num_classes=5
    )


def families() -> list[Family]:
    """Every family the README lists, as tiny seeded models."""
    from timm.layers import GluMlp, SwiGLU, SwiGLUPacked
    from timm.models.beit import Beit
    from timm.models.eva import Eva

    silu = nn.SiLU
    tiny = dict(img_size=SIZE, patch_size=PATCH, embed_dim=WIDTH, depth=2, num_heads=HEADS, num_classes=5)
    result = [
        Family("timm ViT (CLS token)", lambda: _timm_vit()),
        Family("timm DeiT distilled", _timm_deit_distilled),
        Family(
            "timm ViT LayerScale + 4 registers, headless (DINOv2/UNI-like)",
            lambda: _timm_vit(init_values=0.1, reg_tokens=4, num_classes=0),
            headless=True,
        ),
        Family("timm ViT SwiGLU", lambda: _timm_vit(mlp_layer=SwiGLU, act_layer=silu)),
        Family("timm ViT GluMlp", lambda: _timm_vit(mlp_layer=GluMlp, act_layer=silu)),
        Family(
            "timm ViT global_pool='class_and_patch_mean' (attnmap: Virchow2's [class, patch mean] embedding)",
            _virchow_embedding,
            headless=True,
        ),
        Family(
            "timm ViT SwiGLUPacked, registers, global_pool='' (Virchow2-like)",
            lambda: _timm_vit(
                mlp_layer=SwiGLUPacked,
                act_layer=silu,
                reg_tokens=4,
                global_pool="",
                num_classes=0,
                init_values=0.1,
            ),
            headless=True,
        ),
        Family("timm ViT qk_norm", lambda: _timm_vit(qk_norm=True)),
        Family(
            "timm ViT global_pool='avg' + fc_norm, no CLS",
            lambda: _timm_vit(global_pool="avg", class_token=False, fc_norm=True),
        ),
        Family("timm ViT global_pool='max'", lambda: _timm_vit(global_pool="max")),
        Family(
            "timm ViT global_pool='avgmax', registers",
            lambda: _timm_vit(global_pool="avgmax", reg_tokens=2),
        ),
        Family(
            "timm ViT global_pool='map' (SigLIP-like)",
            lambda: _timm_vit(global_pool="map", class_token=False),
        ),
        Family("timm Eva (RoPE, SwiGLU)", lambda: Eva(**tiny, use_rot_pos_emb=True, swiglu_mlp=True)),
        Family(
            "timm Eva attn_type='rope' (RoPE ViTs, Perception Encoder)",
            lambda: Eva(
                **tiny, attn_type="rope", use_rot_pos_emb=True, use_abs_pos_emb=False, init_values=0.1
            ),
        ),
        Family("timm VisionTransformerRelPos (relative position MLP, avg pool)", _timm_relpos),
        Family(
            "timm Beit (relative position bias, LayerScale)",
            lambda: Beit(**tiny, use_rel_pos_bias=True, init_values=0.1),
        ),
        Family(
            "timm deit3_* (positions without the CLS token, LayerScale)",
            _timm_named("deit3_small_patch16_224"),
        ),
        Family("timm flexivit_*", _timm_named("flexivit_small")),
        Family(
            "timm vit_pe_core_* (Eva: RoPE, attention pool over all tokens, CLS included)",
            _timm_named("vit_pe_core_tiny_patch16_384"),
        ),
        Family(
            "timm vit_*_rope_reg1_gap_* (Eva: RoPE, a register, avg pool)",
            _timm_named("vit_base_patch16_rope_reg1_gap_256"),
        ),
        Family(
            "timm vit_*_rope_mixed_* (Eva: RoPE frequencies learned per block and head)",
            _timm_named("vit_small_patch16_rope_mixed_224", init_values=0.5),
        ),
        Family(
            "timm vit_*_dinov3 (Eva: DINOv3 RoPE, 4 registers, LayerScale)",
            _timm_named("vit_small_patch16_dinov3", global_pool="token"),
        ),
        Family(
            "timm vit_*_sapiens2 (Eva: RoPE, grouped-query attention)",
            _timm_named("vit_base_patch16_sapiens2", num_kv_heads=(2, 1), global_pool="token"),
        ),
    ]
    try:
        import transformers  # noqa: F401
    except ImportError:  # pragma: no cover - the hf extra is not installed
        return result
    result += [
        Family("HF ViTForImageClassification", _hf("ViTConfig", "ViTForImageClassification", num_labels=5)),
        Family("HF ViTModel (pooler)", _hf("ViTConfig", "ViTModel"), headless=True),
        Family(
            "HF DeiTForImageClassificationWithTeacher",
            _hf("DeiTConfig", "DeiTForImageClassificationWithTeacher", num_labels=5),
        ),
        Family("HF Dinov2Model", _hf("Dinov2Config", "Dinov2Model"), headless=True),
        Family(
            "HF Dinov2ForImageClassification",
            _hf("Dinov2Config", "Dinov2ForImageClassification", num_labels=5),
        ),
        Family(
            "HF Dinov2WithRegistersModel (SwiGLU)",
            _hf(
                "Dinov2WithRegistersConfig",
                "Dinov2WithRegistersModel",
                num_register_tokens=4,
                use_swiglu_ffn=True,
            ),
            headless=True,
        ),
        Family(
            "HF DINOv3ViTModel (RoPE, registers)",
            _hf("DINOv3ViTConfig", "DINOv3ViTModel", num_register_tokens=2, layerscale_value=0.5),
            headless=True,
        ),
        Family(
            "HF DINOv3ViTModel gated MLP (SiLU; the larger DINOv3 models)",
            _hf(
                "DINOv3ViTConfig",
                "DINOv3ViTModel",
                num_register_tokens=2,
                layerscale_value=0.5,
                use_gated_mlp=True,
                hidden_act="silu",
            ),
            headless=True,
        ),
        Family(
            "HF CLIPVisionModelWithProjection",
            _hf("CLIPVisionConfig", "CLIPVisionModelWithProjection", projection_dim=16),
            headless=True,
        ),
        Family(
            "HF SiglipVisionModel (attention-pool head)",
            _hf("SiglipVisionConfig", "SiglipVisionModel"),
            headless=True,
        ),
        Family(
            "HF BeitForImageClassification (mean pooling)",
            _hf("BeitConfig", "BeitForImageClassification", num_labels=5, use_mean_pooling=True),
        ),
        Family(
            "HF BeitForImageClassification (relative position bias per layer, LayerScale)",
            _hf(
                "BeitConfig",
                "BeitForImageClassification",
                num_labels=5,
                use_relative_position_bias=True,
                layer_scale_init_value=0.5,
            ),
        ),
        Family(
            "HF SiglipForImageClassification (mean of the tokens; the tower's pool head unused)",
            _hf_image_text("SiglipConfig", "SiglipForImageClassification"),
        ),
        Family(
            "HF CLIPForImageClassification (mean of the patch tokens)",
            _hf_image_text("CLIPConfig", "CLIPForImageClassification"),
        ),
        Family(
            "HF MetaClip2VisionModelWithProjection (CLIP's layers)",
            _hf("MetaClip2VisionConfig", "MetaClip2VisionModelWithProjection", projection_dim=16),
            headless=True,
        ),
        Family(
            "HF ChineseCLIPVisionModel (CLIP's layers)",
            _hf("ChineseCLIPVisionConfig", "ChineseCLIPVisionModel"),
            headless=True,
        ),
        Family(
            "HF ViTMSNForImageClassification",
            _hf("ViTMSNConfig", "ViTMSNForImageClassification", num_labels=5),
        ),
        Family(
            "HF Data2VecVisionModel (BEiT; tokens, SDPA attention class)",
            _hf("Data2VecVisionConfig", "Data2VecVisionModel", layer_scale_init_value=0.5),
            headless=True,
        ),
        Family(
            "HF IJepaForImageClassification (no class token, mean of the tokens)",
            _hf("IJepaConfig", "IJepaForImageClassification", num_labels=5),
        ),
    ]
    return result
