"""The bundled headless ViT patch encoder for the hard synthetic slides (`attnmap.data.hard_slides`).

Fine heatmaps trace a slide decision through the MIL model into the pixels of each patch, which
needs a patch encoder that is itself a ViT (so its relevance can be propagated) and that has learnt
what tells tumour from normal tissue on slides where colour and darkness do not. This is a tiny timm
``VisionTransformer`` (64-px input, 8-px patches, width 64, depth 3, 2 heads) trained as a
tumour/normal patch classifier by ``python -m attnmap.data.train_patch_vit`` and shipped without its
head (``num_classes=0``): its output is the final-norm class token, 64 features.

`load_patch_vit` returns the same ``Encoder(model, transform, feature_dim)`` as
`attnmap.wsi.encoders.load_encoder`; importing this module registers ``"attnmap:patch-vit"``.
`patch_vit_model` is the same model for `attnmap explain` (``--model attnmap:patch-vit``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer

from attnmap.data.bundled import require_bundled
from attnmap.wsi.encoders import Encoder, PatchTransform, register_encoder

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_NAME = "patch_vit.safetensors"
RECORD_NAME = "patch_vit.json"
PATCH_VIT_MEAN = (0.5, 0.5, 0.5)
PATCH_VIT_STD = (0.25, 0.25, 0.25)
PATCH_VIT_CONFIG: dict[str, Any] = {
    "img_size": 64,
    "patch_size": 8,
    "in_chans": 3,
    "num_classes": 0,
    "embed_dim": 64,
    "depth": 3,
    "num_heads": 2,
    "mlp_ratio": 2.0,
    "qkv_bias": True,
    "class_token": True,
    "global_pool": "token",
}
FEATURE_DIM = PATCH_VIT_CONFIG["embed_dim"]


def build_patch_vit(num_classes: int = 0) -> VisionTransformer:
    """A freshly initialised patch ViT; ``num_classes`` > 0 adds a training head."""
    return VisionTransformer(**{**PATCH_VIT_CONFIG, "num_classes": num_classes})


def patch_vit_transform() -> PatchTransform:
    """uint8 RGB patch (H, W, 3) → (3, 64, 64): bilinear resize if needed, (x/255 − 0.5) / 0.25."""
    return PatchTransform(PATCH_VIT_CONFIG["img_size"], PATCH_VIT_MEAN, PATCH_VIT_STD, "bilinear")


def load_patch_vit(device: str | torch.device = "cpu", weights: str | Path | None = None) -> Encoder:
    """The shipped (or given) headless patch ViT as ``Encoder(model, transform, 64)``, eval mode."""
    from safetensors.torch import load_file

    path = require_bundled(
        Path(weights) if weights is not None else WEIGHTS_DIR / WEIGHTS_NAME,
        "patch ViT weights",
        "python -m attnmap.data.train_patch_vit",
    )
    model = build_patch_vit()
    model.load_state_dict(load_file(str(path)), strict=True)
    return Encoder(model.eval().to(device), patch_vit_transform(), FEATURE_DIM)


def patch_vit_model() -> VisionTransformer:
    """The shipped patch ViT alone, for ``attnmap explain --model attnmap:patch-vit``.

    It carries the data config `attnmap.vit.preprocess` reads, equal to the encoder's transform
    (whole image resized to 64 px, no crop, bilinear, (x/255 − 0.5) / 0.25), so an image is
    explained as the pipeline encodes it. Headless: give a direction (``--direction``).
    """
    model = load_patch_vit().model
    model.pretrained_cfg = {
        "architecture": "attnmap_patch_vit",
        "input_size": (3, PATCH_VIT_CONFIG["img_size"], PATCH_VIT_CONFIG["img_size"]),
        "mean": PATCH_VIT_MEAN,
        "std": PATCH_VIT_STD,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "squash",
        "num_classes": 0,
        "first_conv": "patch_embed.proj",
    }
    return model


def patch_vit_record(weights_dir: str | Path | None = None) -> dict[str, Any]:
    """What the shipped weights were made with: command, seed, sha256, held-out accuracy."""
    return json.loads((Path(weights_dir or WEIGHTS_DIR) / RECORD_NAME).read_text())


register_encoder("attnmap:patch-vit", lambda: tuple(load_patch_vit()))
