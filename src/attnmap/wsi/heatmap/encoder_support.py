"""Which patch encoders the conservative pixel rules of `attnmap.wsi.heatmap.encoder_relevance` cover.

Checked before a run (`check_fine_encoder`) and before each call: a layer the rules do not mirror is
refused in one line naming it, never explained as a different function.
"""

from __future__ import annotations

import torch
from timm.layers import (
    Attention,
    AttentionPoolLatent,
    AttentionRope,
    GluMlp,
    Mlp,
    PatchEmbed,
    QuickGELU,
    RmsNorm,
    SwiGLU,
)
from timm.layers.activations import GELU, GELUTanh
from timm.models.deit import VisionTransformerDistilled
from timm.models.eva import Eva, EvaAttention, EvaBlock
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from attnmap.errors import InputError, UnsupportedModelError
from attnmap.vit.timm_build import ClassAndPatchMeanViT


def check_fine_encoder(model: nn.Module, method: str = "lrp") -> nn.Module:
    """``model`` (or the timm twin of a Hugging Face encoder, its ``fine_twin``) if the conservative
    rules below cover it (checked before a run); else an `UnsupportedModelError` naming the layer.

    A timm VisionTransformer whose every layer this module mirrors, or a piecewise-linear (ReLU)
    CNN (`attnmap.wsi.heatmap.encoder_relevance_cnn`, method ``lrp`` only).
    """
    from attnmap.wsi.heatmap.encoder_relevance_cnn import cnn_refusal

    twin = getattr(model, "fine_twin", None)
    if callable(twin):
        model = twin()
    if isinstance(model, torch.jit.ScriptModule):
        raise UnsupportedModelError(
            "fine maps need the encoder's Python model, not a TorchScript archive (its code is opaque to "
            "the LRP rules): load it as a timm or hf: encoder"
        )
    if not isinstance(model, TRANSFORMERS):
        refusal = cnn_refusal(model)
        if refusal == "":
            raise UnsupportedModelError(
                "fine maps need a timm VisionTransformer / Eva or a ReLU CNN encoder, got "
                f"{type(model).__name__}"
            )
        if refusal is not None:
            raise UnsupportedModelError(f"fine maps of the CNN {type(model).__name__}: {refusal}")
        if method != "lrp":
            raise UnsupportedModelError(
                f"fine method {method!r} needs a ViT encoder; {type(model).__name__} is a CNN: use method lrp"
            )
        return model
    _check_vit(model)
    if method != "lrp" and isinstance(model, VisionTransformerDistilled):
        raise UnsupportedModelError(
            f"fine method {method!r}: the attention methods read one token, a distilled ViT's features "
            "average two (class and distillation): use method lrp"
        )
    return model


def _check_vit(model: nn.Module) -> None:
    """Every layer of ``model`` is one `_forward` mirrors (else a one-line error naming it)."""
    eva = isinstance(model, Eva)
    block_type, attention_types = (EvaBlock, (EvaAttention, AttentionRope)) if eva else (Block, (Attention,))
    concat = isinstance(model, ClassAndPatchMeanViT)
    distilled = isinstance(model, VisionTransformerDistilled)
    pool = getattr(model, "attn_pool", None)
    pool_ok = concat or distilled or model.global_pool in ("token", "avg")
    if pool is not None:
        pool_ok = type(pool) is AttentionPoolLatent and pool.pool in ("token", "avg")
        if pool_ok and pool.mlp is not None and type(pool.mlp) not in _MLPS:
            kind = type(pool.mlp).__name__
            raise UnsupportedModelError(f"attention-pool MLP {kind} has no conservative rule here")
    if not pool_ok:
        what = type(pool).__name__ if pool is not None else f"global_pool={model.global_pool!r}"
        raise UnsupportedModelError(f"{what} has no conservative rule here")
    if type(model.patch_embed) not in (PatchEmbed,) or not isinstance(model.patch_embed.proj, nn.Conv2d):
        raise UnsupportedModelError(
            f"patch embedding {type(model.patch_embed).__name__} has no conservative rule here"
        )
    norms = [model.patch_embed.norm, model.norm_pre, model.norm, model.fc_norm]
    if pool is not None:
        norms.append(pool.norm)
        if type(pool.mlp) is Mlp and not isinstance(pool.mlp.act, _ACTIVATIONS):
            raise UnsupportedModelError(f"MLP activation {type(pool.mlp.act).__name__} has no rule here")
    for index, block in enumerate(model.blocks):
        if type(block) is not block_type or type(block.attn) not in attention_types:
            kind = type(block).__name__ if type(block) is not block_type else type(block.attn).__name__
            raise UnsupportedModelError(f"block {index} ({kind}) has no conservative rule here")
        if type(block.mlp) not in _MLPS:
            raise UnsupportedModelError(f"MLP {type(block.mlp).__name__} has no conservative rule here")
        if type(block.mlp) is Mlp and not isinstance(block.mlp.act, _ACTIVATIONS):  # gated: any act
            raise UnsupportedModelError(f"MLP activation {type(block.mlp.act).__name__} has no rule here")
        norms += [block.norm1, block.norm2, block.attn.norm, getattr(block.mlp, "norm", nn.Identity())]
    for norm in norms:  # q/k norms sit on the attention logits' path, held constant: any is fine
        if not isinstance(norm, (nn.Identity, *NORMS)):
            raise UnsupportedModelError(f"norm {type(norm).__name__} has no conservative rule here")
    heads = [model.head] + ([model.head_dist] if distilled else [])
    if not all(isinstance(head, (nn.Identity, nn.Linear)) for head in heads):
        raise UnsupportedModelError(f"head {type(model.head).__name__} has no conservative rule here")


TRANSFORMERS = (VisionTransformer, Eva)  # Eva: timm's RoPE ViTs (EVA02, DINOv3)
_MLPS = (Mlp, GluMlp, SwiGLU)  # SwiGLUPacked is a GluMlp
NORMS = (nn.LayerNorm, nn.RMSNorm, RmsNorm)  # a frozen scale, then the affine part
# act(z) = z · g(z) with g(0) = ½: torch's and timm's GELU (exact or tanh), SiLU, QuickGELU
_ACTIVATIONS = (nn.GELU, nn.SiLU, QuickGELU, GELU, GELUTanh)


def check_image_size(embed: nn.Module, images: torch.Tensor) -> None:
    """timm's own PatchEmbed size check: the rules call its convolution directly, which skips it, so
    a wrong size failed deep inside or, with as many tokens, put every token at another position."""
    height, width = images.shape[-2:]
    fixed, patch = getattr(embed, "img_size", None), tuple(embed.patch_size)
    if fixed is not None and getattr(embed, "strict_img_size", True) and (height, width) != tuple(fixed):
        raise InputError(f"images are {height} × {width} but the encoder takes {fixed[0]} × {fixed[1]}")
    if height % patch[0] or width % patch[1]:  # timm pads or refuses these; the rules do neither
        raise InputError(
            f"images are {height} × {width}: not a multiple of the patch size {patch[0]} × {patch[1]}"
        )


def check_image_channels(model: nn.Module, images: torch.Tensor) -> None:
    """Grey or RGBA patches on an RGB encoder failed inside its first convolution with a bare
    RuntimeError: refused in one line naming both counts (the ViT's patch convolution, or a CNN's
    first convolution, which `cnn_refusal` has checked to be its stem)."""
    embed = getattr(model, "patch_embed", None)
    if embed is not None:
        first = embed.proj
    else:
        first = next((module for module in model.modules() if isinstance(module, nn.Conv2d)), None)
    if first is not None and images.shape[1] != first.in_channels:
        raise InputError(
            f"images have {images.shape[1]} channels but the encoder takes {first.in_channels} "
            "(convert grey or RGBA patches to the encoder's colour mode)"
        )
