"""The configurations attnmap refuses, listed in the support table (`attnmap.vit.support_matrix`)
with the one line the user sees: each built tiny and seeded as the families of
`attnmap.vit.support_families` are. A registry: adding a refusal is adding a row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from attnmap.vit.support_families import HEADS, PATCH, SIZE, WIDTH, _hf, _timm_hybrid, _timm_named, _timm_vit


def _siglip2() -> nn.Module:
    import transformers

    sizes = dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=2, num_patches=16)
    config = transformers.Siglip2VisionConfig(**sizes, num_attention_heads=HEADS, patch_size=PATCH)
    return transformers.Siglip2VisionModel(config)


def _clip_pair() -> nn.Module:
    import transformers

    layers = dict(hidden_size=WIDTH, intermediate_size=2 * WIDTH, num_hidden_layers=1)
    layers.update(num_attention_heads=HEADS)
    vision, text = dict(layers, image_size=SIZE, patch_size=PATCH), dict(layers, vocab_size=64)
    return transformers.CLIPModel(transformers.CLIPConfig(vision_config=vision, text_config=text))


@dataclass(frozen=True)
class Refusal:
    """A configuration attnmap refuses for ``method``, listed with the message the user sees."""

    label: str
    build: Callable[[], nn.Module]
    method: str
    headless: bool = False


def refused() -> list[Refusal]:
    """Configurations with no rule (model, method): the user gets a one-line UnsupportedModelError."""
    from timm.models.vision_transformer import ParallelScalingBlock, ParallelThingsBlock, ResPostBlock

    result = [
        Refusal(
            "timm ViT with post-norm blocks (ResPostBlock)", lambda: _timm_vit(block_fn=ResPostBlock), "lrp"
        ),
        Refusal(
            "timm ViT global_pool='prr' (AttentionPoolPrr)", lambda: _timm_vit(global_pool="prr"), "attention"
        ),
        Refusal(
            "timm ViT-22B parallel blocks (ParallelScalingBlock; the 4 attention methods run)",
            lambda: _timm_vit(block_fn=ParallelScalingBlock),
            "lrp",
        ),
        Refusal(
            "timm ViT parallel blocks (ParallelThingsBlock)",
            lambda: _timm_vit(block_fn=ParallelThingsBlock),
            "attention",
        ),
        Refusal("timm hybrid ViT, CNN stem (HybridEmbed; the 4 attention methods run)", _timm_hybrid, "lrp"),
        Refusal(
            "timm ViT attn_layer='diff' (DiffAttention)", lambda: _timm_vit(attn_layer="diff"), "attention"
        ),
        Refusal(
            "timm cait_* (talking-heads and class-attention blocks)",
            _timm_named("cait_xxs24_224", depth_token_only=1),
            "attention",
        ),
        Refusal(
            "timm xcit_* (cross-covariance attention)",
            _timm_named("xcit_nano_12_p16_224", cls_attn_layers=1),
            "attention",
        ),
        Refusal(
            "timm samvit_* (windowed attention)",
            _timm_named("samvit_base_patch16", window_size=2, global_attn_indexes=(1,), neck_chans=16),
            "attention",
        ),
        Refusal(
            "timm swin_* (shifted windows)",
            _timm_named(
                "swin_tiny_patch4_window7_224", depths=(1, 1), num_heads=(2, 2), window_size=2, depth=None
            ),
            "attention",
        ),
        Refusal(
            "timm naflexvit_* (the 4 attention methods run)", _timm_named("naflexvit_base_patch16_gap"), "lrp"
        ),
        Refusal(
            "timm vit_*_enc of Gemma 4 (Gemma4Attention)",
            _timm_named("gemma4_vit_167m_enc"),
            "attention",
        ),
        Refusal(
            "timm qwen3_vit_* / deepseek_vit_* classifiers (their transformer is model.encoder)",
            _timm_named("qwen3_vit_88m"),
            "attention",
        ),
        Refusal(
            "timm qwen3_vit_*_enc (Qwen3-VL tower; the 4 attention methods run)",
            _timm_named("qwen3_vit_88m_enc"),
            "lrp",
            headless=True,
        ),
        Refusal(
            "timm deepseek_vit_*_enc (DeepSeek tower; the 4 attention methods run)",
            _timm_named("deepseek_vit_412m_enc", out_features=WIDTH),
            "lrp",
            headless=True,
        ),
        Refusal(
            "timm Eva post-norm blocks (EvaBlockPostNorm, eva02_enormous_*; the 4 attention methods run)",
            _timm_named("eva02_enormous_patch14_clip_224"),
            "lrp",
        ),
        Refusal(
            "a CNN (no attention blocks)",
            lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()),
            "attention",
        ),
    ]
    try:
        import transformers  # noqa: F401
    except ImportError:  # pragma: no cover - the hf extra is not installed
        return result
    return result + [
        Refusal("HF Siglip2VisionModel (NaFlex patches)", _siglip2, "attention"),
        Refusal("HF Aimv2VisionModel", _hf("Aimv2VisionConfig", "Aimv2VisionModel"), "attention"),
        Refusal(
            "HF MLCDVisionModel (CLIP with 2D RoPE)", _hf("MLCDVisionConfig", "MLCDVisionModel"), "attention"
        ),
        Refusal("HF ViTMAEModel (random patch masking)", _hf("ViTMAEConfig", "ViTMAEModel"), "attention"),
        Refusal("HF CLIPModel (the image-text pair)", _clip_pair, "attention"),
    ]
