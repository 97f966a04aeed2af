"""What to tell a user whose model attnmap cannot explain: where its attention is, or its vision tower.

A refusal that only names the model class leaves the user guessing whether the model has no
attention at all (a CNN) or attention of a kind attnmap cannot read (windowed, shifted-window,
cross-covariance, class-attention...): naming the first such module answers that in the same line.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from torch import nn

_ATTENTION_NAME = re.compile(r"Attn|Attention|XCA")  # class names: Attention, WindowAttention, ClassAttn, XCA


def attention_hint(model: nn.Module) -> str:
    """"no attention modules", or the first module whose class reads as attention, with its path."""
    for name, module in model.named_modules():
        if name and _ATTENTION_NAME.search(type(module).__name__):
            kind = type(module).__name__
            return f"its attention, first at {name} ({kind}), is of a kind attnmap cannot read"
    return "no attention modules"


def vision_tower_hint(model: nn.Module, explains: Callable[[nn.Module], bool]) -> str:
    """For a Hugging Face image-text model (CLIP, SigLIP pairs and their classifiers): where its
    vision transformer is, when ``explains`` says attnmap reads it. Why the check: SigLIP 2's
    classifier was sent to its tower, a Siglip2VisionModel, which attnmap refuses in turn."""
    if getattr(getattr(model, "config", None), "vision_config", None) is None:
        return ""
    tower = getattr(model, "vision_model", None)
    if not isinstance(tower, nn.Module) or not explains(tower):
        return ""
    where = f"model.vision_model, a {type(tower).__name__}"
    return f"; it is an image-text model: explain its vision tower ({where})"


def part_hint(model: nn.Module, explains: Callable[[nn.Module], bool]) -> tuple[str, str]:
    """(what, where) for a model attnmap cannot read as a whole but whose part it can: a classifier
    wrapping its transformer (timm's Qwen3-VL and DeepSeek towers: ``model.encoder``), or ViTMAE,
    whose encoder shuffles and drops patch tokens at random but whose weights are a ViT's. ("", "")
    otherwise. ``explains`` says whether attnmap reads a module (passed in: this module is imported
    by the adapters)."""
    if getattr(getattr(model, "config", None), "model_type", None) == "vit_mae":
        return (
            "it shuffles and drops its patch tokens at random (mask_ratio)",
            "; its weights load into a ViTModel (add_pooling_layer=False), which attnmap explains",
        )
    for name, child in model.named_children():
        if explains(child):
            return "not as a whole", (
                f"; its transformer is model.{name} (a {type(child).__name__}), which attnmap explains "
                "with a target on its output"
            )
    return "", ""
