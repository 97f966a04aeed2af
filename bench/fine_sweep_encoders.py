"""The patch encoders of `bench/fine_sweep.py`: tiny, seeded, with the architectures pathologists run.

Every encoder is loaded the way the slide pipeline loads it (`attnmap.wsi.encoders.load_encoder`):
timm names with their published arguments and small depth / width overrides, Hugging Face models
saved with ``save_pretrained`` from small configs, the CNN presets, a TorchScript archive. Nothing
is downloaded. Each entry also says how to explain the encoder *alone* with `attnmap.explain`
(`Case.reference`): the model as it outputs tokens and the read-out its features are, so the sweep
can check that the fine map explains the features the MIL model was given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# depth / width overrides that keep each architecture but make it tiny
SMALL = dict(depth=2, embed_dim=48, num_heads=4)


@dataclass
class EncoderCase:
    """One encoder of the sweep: ``name`` for `load_encoder`, its ``args`` and how to read it alone.

    ``reference(encoder)`` → (token model, readout) for `attnmap.explain` with a `ReadoutDirection`
    (None: the encoder's own model is the reference, or there is none).
    """

    label: str
    name: str
    args: dict = field(default_factory=dict)
    input_size: int | None = None
    reference: Callable[[torch.nn.Module], tuple[torch.nn.Module, str] | None] | None = None


def _timm_tokens(model: torch.nn.Module) -> tuple[torch.nn.Module, str] | None:
    """A copy of a timm ViT that outputs all its tokens (``global_pool=''``), and its read-out."""
    import copy

    from timm.models.eva import Eva
    from timm.models.vision_transformer import VisionTransformer

    from attnmap.vit.timm_build import ClassAndPatchMeanViT

    if not isinstance(model, (VisionTransformer, Eva)) or getattr(model, "attn_pool", None) is not None:
        return None
    readout = (
        "cls_and_patch_mean"
        if isinstance(model, ClassAndPatchMeanViT)
        else {"token": "cls", "avg": "patch_mean"}.get(model.global_pool)
    )
    if readout is None or getattr(model, "pool_include_prefix", False):
        return None  # the mean of every token: no read-out `ReadoutDirection` names
    if not isinstance(model.fc_norm, torch.nn.Identity):
        return None  # a norm after the pooling: not a linear read-out of the tokens
    tokens = copy.deepcopy(model)
    if isinstance(model, VisionTransformer):
        tokens.__class__ = VisionTransformer
    tokens.global_pool = ""
    return tokens, readout


def _hf_raw(encoder: torch.nn.Module) -> tuple[torch.nn.Module, str] | None:
    """The Hugging Face model inside an `HFPatchEncoder`, read back from its folder by `load_model`."""
    readout = encoder.readout
    if getattr(encoder.model, "pooler", None) is not None or not hasattr(encoder.model, "pooler"):
        # `attnmap.explain` scores such a model's pooled output (DINOv2: the normed class token)
        # (CLIP: the class token after post_layernorm, the `pooler` read-out)
        kind = encoder.model.config.model_type
        if kind == "clip_vision_model":
            return (encoder.model, "direction") if readout == "pooler" else None
        pooled_cls = kind.startswith("dinov2")
        return (encoder.model, "direction") if pooled_cls and readout in ("cls", "pooler") else None
    return (encoder.model, readout) if readout in ("cls", "patch_mean", "cls_and_patch_mean") else None


def timm_cases() -> list[EncoderCase]:
    gated = dict(mlp_layer="SwiGLUPacked", act_layer="silu")
    return [
        EncoderCase(
            "UNI (ViT-L/16, LayerScale)",
            "timm:vit_large_patch16_224",
            dict(SMALL, img_size=32, init_values=1e-5, dynamic_img_size=True),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "UNI2-h (ViT-H/14, reg8, SwiGLU)",
            "timm:vit_huge_patch14_224",
            dict(
                SMALL,
                img_size=28,
                init_values=1e-5,
                reg_tokens=8,
                no_embed_class=True,
                mlp_ratio=5.3375,
                dynamic_img_size=True,
                **gated,
            ),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "Virchow (ViT-H/14, cls+mean)",
            "timm:vit_huge_patch14_224",
            dict(
                SMALL,
                img_size=28,
                init_values=1e-5,
                mlp_ratio=5.3375,
                global_pool="class_and_patch_mean",
                **gated,
            ),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "Virchow2 (ViT-H/14, reg4, cls+mean)",
            "timm:vit_huge_patch14_224",
            dict(
                SMALL,
                img_size=28,
                init_values=1e-5,
                mlp_ratio=5.3375,
                reg_tokens=4,
                global_pool="class_and_patch_mean",
                **gated,
            ),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "H-optimus-0/1 (ViT-g/14 reg4)",
            "timm:vit_giant_patch14_reg4_dinov2",
            dict(SMALL, img_size=28, init_values=1e-5),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "Prov-GigaPath (ViT-g/14 → /16)",
            "timm:vit_giant_patch14_dinov2",
            dict(SMALL, img_size=32, patch_size=16, init_values=1e-5),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "Lunit DINO ViT-S/8",
            "timm:vit_small_patch8_224",
            dict(SMALL, img_size=32),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "MAE-style avg pool",
            "timm:vit_base_patch16_224",
            dict(SMALL, img_size=32, global_pool="avg", class_token=False, fc_norm=True),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "avg pool with registers included",
            "timm:vit_base_patch16_224",
            dict(SMALL, img_size=32, global_pool="avg", reg_tokens=4, pool_include_prefix=True),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "CLIP ViT-B/16 (QuickGELU, pre-norm)",
            "timm:vit_base_patch16_clip_quickgelu_224",
            dict(SMALL, img_size=32),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "CONCH-style (attention-pool head)",
            "timm:vit_base_patch16_224",
            dict(SMALL, img_size=32, global_pool="map"),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "SigLIP (no cls, map head)",
            "timm:vit_base_patch16_siglip_224",
            dict(SMALL, img_size=32),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "UNI at another input size (48 px)",
            "timm:vit_large_patch16_224",
            dict(SMALL, img_size=32, init_values=1e-5, dynamic_img_size=True),
            input_size=48,
            reference=_timm_tokens,
        ),
        EncoderCase(
            "ViT with q/k norms",
            "timm:vit_base_patch16_224",
            dict(SMALL, img_size=32, qk_norm=True),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "ViT with RMSNorm",
            "timm:vit_base_patch16_224",
            dict(SMALL, img_size=32, norm_layer="rmsnorm"),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "DeiT distilled (cls + dist token)",
            "timm:deit_tiny_distilled_patch16_224",
            dict(SMALL, img_size=32),
        ),
        EncoderCase("hybrid ViT (ResNet stem)", "timm:vit_small_r26_s32_224", dict(depth=2, img_size=64)),
        EncoderCase(
            "ViT parallel blocks (18x2)", "timm:vit_small_patch16_18x2_224", dict(SMALL, img_size=32)
        ),
        EncoderCase(
            "ViT parallel scaling block (xp)", "timm:vit_base_patch16_xp_224", dict(SMALL, img_size=32)
        ),
        EncoderCase(
            "EVA02 (RoPE)", "timm:eva02_tiny_patch14_224", dict(depth=2, img_size=28), reference=_timm_tokens
        ),
        EncoderCase(
            "DINOv3 ViT-B/16 (timm Eva, RoPE, reg4)",
            "timm:vit_base_patch16_dinov3",
            dict(SMALL, img_size=32),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "RoPE ViT with mixed rotary (Eva)",
            "timm:vit_base_patch16_rope_mixed_224",
            dict(SMALL, img_size=32),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "RoPE ViT reg1 gap (Eva)",
            "timm:vit_medium_patch16_rope_reg1_gap_256",
            dict(SMALL, img_size=32),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "Sapiens2 (Eva, grouped-query attention)",
            "timm:vit_base_patch16_sapiens2",
            dict(SMALL, img_size=32, num_kv_heads=2),
            input_size=32,  # its data config says 768 whatever img_size is built
            reference=_timm_tokens,
        ),
        EncoderCase(
            "DINOv3 ViT-H+/16 (SwiGLU)",
            "timm:vit_huge_plus_patch16_dinov3",
            dict(SMALL, img_size=32),
            reference=_timm_tokens,
        ),
        EncoderCase(
            "CTransPath-style Swin",
            "timm:swin_tiny_patch4_window7_224",
            dict(embed_dim=24, depths=(1, 1), num_heads=(1, 2), img_size=56),
        ),
        EncoderCase("timm ResNet-18", "timm:resnet18", {}, input_size=32),
        EncoderCase("resnet50_trunc (CLAM)", "resnet50_trunc", {}, input_size=32),
        EncoderCase("attnmap:tiny (CNN)", "attnmap:tiny"),
        EncoderCase("attnmap:patch-vit", "attnmap:patch-vit", reference=_timm_tokens),
    ]


def _save_hf(model: torch.nn.Module, folder: Path, size: int) -> Path:
    model.save_pretrained(folder)
    processor = {
        "image_mean": MEAN,
        "image_std": STD,
        "size": {"height": size, "width": size},
        "do_resize": True,
        "do_normalize": True,
        "resample": 3,
    }
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return folder


def hf_cases(root: Path) -> list[EncoderCase]:
    """Hugging Face encoders saved under ``root`` (skipped without transformers)."""
    try:
        import transformers as t
    except ImportError:
        return []
    sizes = dict(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
    )
    torch.manual_seed(0)
    built: list[tuple[str, str, torch.nn.Module, dict]] = [
        (
            "Phikon (ViTModel, no pooler)",
            "phikon",
            t.ViTModel(t.ViTConfig(**sizes), add_pooling_layer=False),
            {},
        ),
        ("ViTModel with tanh pooler", "vit_pooler", t.ViTModel(t.ViTConfig(**sizes)), {"readout": "pooler"}),
        (
            "Phikon-v2 (Dinov2Model)",
            "phikon_v2",
            t.Dinov2Model(t.Dinov2Config(**sizes, layerscale_value=0.5)),
            {},
        ),
        (
            "DINOv2 pooler",
            "dinov2_pooler",
            t.Dinov2Model(t.Dinov2Config(**sizes, layerscale_value=0.5)),
            {"readout": "pooler"},
        ),
        (
            "Midnight (DINOv2 SwiGLU, cls+mean)",
            "midnight",
            t.Dinov2Model(t.Dinov2Config(**sizes, layerscale_value=0.5, use_swiglu_ffn=True)),
            {"readout": "cls_and_patch_mean"},
        ),
        (
            "DINOv2 patch mean",
            "dinov2_mean",
            t.Dinov2Model(t.Dinov2Config(**sizes, layerscale_value=0.5)),
            {"readout": "patch_mean"},
        ),
        (
            "Hibou (DINOv2 + registers)",
            "hibou",
            t.Dinov2WithRegistersModel(
                t.Dinov2WithRegistersConfig(**sizes, layerscale_value=0.5, num_register_tokens=4)
            ),
            {},
        ),
        (
            "PLIP / CLIP vision (pooler)",
            "clip_pooler",
            t.CLIPVisionModel(t.CLIPVisionConfig(**sizes)),
            {"readout": "pooler"},
        ),
        ("CLIP vision cls", "clip_cls", t.CLIPVisionModel(t.CLIPVisionConfig(**sizes)), {}),
        (
            "CLIP with projection (embeds)",
            "clip_embeds",
            t.CLIPVisionModelWithProjection(t.CLIPVisionConfig(**sizes, projection_dim=16)),
            {"readout": "embeds"},
        ),
    ]
    built += [
        (
            "ViT classifier folder (trunk used)",
            "vit_classifier",
            t.ViTForImageClassification(t.ViTConfig(**sizes, num_labels=3)),
            {},
        ),
        (
            "ViT with tanh GELU, no qkv bias",
            "vit_gelu_new",
            t.ViTModel(t.ViTConfig(**sizes, hidden_act="gelu_new", qkv_bias=False), add_pooling_layer=False),
            {},
        ),
        (
            "whole CLIP folder (embeds)",
            "clip_whole",
            t.CLIPModel(
                t.CLIPConfig(
                    text_config=dict(
                        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2
                    ),
                    vision_config=sizes,
                    projection_dim=16,
                )
            ),
            {"readout": "embeds"},
        ),
    ]
    if hasattr(t, "DINOv3ViTModel"):
        config = t.DINOv3ViTConfig(
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        )
        built.append(("DINOv3 ViT", "dinov3", t.DINOv3ViTModel(config), {}))
    cases = []
    for label, stem, model, args in built:
        folder = _save_hf(model.eval(), root / stem, 32)
        cases.append(EncoderCase(label, f"hf:{folder}", args, reference=_hf_raw))
        if stem == "phikon":  # the pipeline's input_size: positions resampled by the model itself
            cases.append(
                EncoderCase(label + " at 48 px", f"hf:{folder}", {}, input_size=48, reference=_hf_raw)
            )
    return cases


def torchscript_case(root: Path) -> EncoderCase:
    """A TorchScript archive of a tiny ViT (the pipeline runs it; its code is opaque to the rules)."""
    from attnmap.vit.timm_build import build_timm

    torch.manual_seed(0)
    model = build_timm("vit_small_patch8_224", dict(SMALL, img_size=32), num_classes=0).eval()
    path = root / "vit.torchscript.pt"
    torch.jit.trace(model, torch.zeros(1, 3, 32, 32)).save(str(path))
    return EncoderCase("TorchScript ViT", f"torchscript:{path}", input_size=32)
