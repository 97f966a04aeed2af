"""The bundled shapes ViT: architecture, preprocessing config and loading of the shipped weights.

No pretrained weights can be downloaded where attnmap runs, so the project ships one small timm
VisionTransformer trained on `attnmap.data.shapes` (the command and seed that made it are in
``weights/shapes_vit.json``). Its images have a known answer, which is what makes the evaluation
in `attnmap.evaluate` meaningful.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from timm.models.vision_transformer import VisionTransformer

from attnmap.data.bundled import require_bundled
from attnmap.data.shapes import SHAPE_CLASSES, SHAPES_MEAN, SHAPES_STD
from attnmap.vit.conv_stem import ConvPatchEmbed

WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_PATH = WEIGHTS_DIR / "shapes_vit.safetensors"
RECORD_PATH = WEIGHTS_DIR / "shapes_vit.json"

SHAPES_VIT_CONFIG: dict[str, Any] = {
    "img_size": 64,
    "patch_size": 8,
    "in_chans": 3,
    "num_classes": len(SHAPE_CLASSES),
    "embed_dim": 96,
    "depth": 4,
    "num_heads": 3,
    "mlp_ratio": 4.0,
    "qkv_bias": True,
    "class_token": True,
    "global_pool": "token",
}


def shapes_pretrained_cfg() -> dict[str, Any]:
    """The data config timm's ``resolve_data_config`` reads: input size, normalisation, crop."""
    size = SHAPES_VIT_CONFIG["img_size"]
    return {
        "architecture": "attnmap_shapes_vit",
        "input_size": (3, size, size),
        "mean": SHAPES_MEAN,
        "std": SHAPES_STD,
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "num_classes": SHAPES_VIT_CONFIG["num_classes"],
        "label_names": list(SHAPE_CLASSES),
        "first_conv": "patch_embed.proj.0",
        "classifier": "head",
    }


def build_shapes_vit(**overrides: Any) -> VisionTransformer:
    """A freshly initialised shapes ViT (img 64, patch 8 via a conv stem, embed 96, depth 4, 3 heads).

    ``overrides`` change timm options of `SHAPES_VIT_CONFIG`, e.g. ``global_pool="avg",
    class_token=False`` for the average-pooled variant the backbone checks compare against.
    """
    model = VisionTransformer(embed_layer=ConvPatchEmbed, **{**SHAPES_VIT_CONFIG, **overrides})
    model.pretrained_cfg = shapes_pretrained_cfg()
    return model


def load_shapes_vit(weights: str | Path | None = None) -> VisionTransformer:
    """The bundled (or given) trained weights in an eval-mode shapes ViT."""
    from attnmap.checkpoint import apply_state_dict, load_state_dict

    path = Path(weights) if weights is not None else WEIGHTS_PATH
    require_bundled(path, "shapes ViT weights", f"attnmap train-shapes --out {path}")
    model = build_shapes_vit()
    apply_state_dict(model, load_state_dict(path), path)
    return model.eval()


def shapes_vit_record() -> dict[str, Any]:
    """What the bundled weights were made with: config, seed, command, accuracy, training time."""
    return json.loads(RECORD_PATH.read_text())
