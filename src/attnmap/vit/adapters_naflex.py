"""timm ``NaFlexVit`` (native-aspect, flexible-size ViTs) given an image batch: the four attention methods.

NaFlexVit runs timm's own ``Block``/``Attention`` modules, so its attention is read exactly as a
``VisionTransformer``'s (see `attnmap.vit.adapters`); what differs is where its parts live and what
its read-out looks at. Its patch embedding is ``model.embeds`` (a convolution, or patchify + linear
projection), its class and register tokens sit in ``embeds``, any image size is accepted (the grid
is the size over the patch, rounded up with ``dynamic_img_pad``), and pooling may include the prefix
tokens (``pool_include_prefix``, as for a VisionTransformer). Pre-patchified (NaFlex mode) input
with masks is not an image batch and is not taken. LRP has no twin for it (`attnmap.vit.lrp`
refuses it by class).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attnmap.errors import InputError
from attnmap.vit.adapters import ViTAdapter
from attnmap.vit.adapters_timm import TimmViTAdapter


def is_naflexvit(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.models.naflexvit") and isinstance(
        getattr(model, "embeds", None), nn.Module
    )


class NaFlexAdapter(TimmViTAdapter):
    """timm ``NaFlexVit`` on (B, C, H, W) images."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        has_cls = getattr(model.embeds, "cls_token", None) is not None
        if self.attn_pool is None and has_cls and getattr(model, "global_pool", "token") in ("token", ""):
            self.query_row = "cls"  # the class token lives in model.embeds, not model.cls_token

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        patch_h, patch_w = self.model.embeds.patch_size
        if getattr(self.model.embeds, "dynamic_img_pad", False):
            return math.ceil(height / patch_h), math.ceil(width / patch_w)
        return height // patch_h, width // patch_w

    def pixels_covered(self, height: int, width: int) -> tuple[int, int]:
        grid_h, grid_w = self.grid_size(height, width)
        return grid_h * self.model.embeds.patch_size[0], grid_w * self.model.embeds.patch_size[1]

    def check_images(self, images: torch.Tensor) -> None:
        ViTAdapter.check_images(self, images)
        embeds = self.model.embeds
        patch_h, patch_w = embeds.patch_size
        proj = embeds.proj
        if isinstance(proj, nn.Conv2d):
            channels = int(proj.in_channels)
        else:  # patchify + linear: (patch_h * patch_w * C) inputs
            channels = int(proj.in_features) // (patch_h * patch_w)
        if images.shape[1] != channels:
            raise InputError(f"the model takes {channels}-channel images, got {images.shape[1]} channels")
        height, width = images.shape[-2:]
        if height < patch_h or width < patch_w:
            raise InputError(f"image size {height}x{width} is smaller than one patch ({patch_h}x{patch_w})")
        if not getattr(embeds, "dynamic_img_pad", False) and (height % patch_h or width % patch_w):
            raise InputError(
                f"image size {height}x{width} is not a multiple of the patch size {patch_h}x{patch_w}; "
                "crop/resize the images or build the model with dynamic_img_pad=True"
            )
