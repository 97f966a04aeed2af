"""The timm adapter: ``VisionTransformer`` (and its subclasses), ``Eva``, ``Beit`` and the relative-
position ViTs, read as `attnmap.vit.adapters` describes (the ``fused_attn`` flag switched off on the
recorded blocks, the attention read at the output of ``attn.attn_drop``; the attention-pool head as
one more block).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from attnmap.errors import InputError, UnsupportedModelError
from attnmap.vit.adapters import SUPPORTED_MODELS, ViTAdapter
from attnmap.vit.latent_pool import latent_pool_forward, restore_instance_forward
from attnmap.vit.pooling import MAX_POOLS
from attnmap.vit.timm_build import ClassAndPatchMeanViT


def _timm_attention_classes() -> tuple[type, ...]:
    """timm modules whose non-fused path applies ``attn_drop`` to the post-softmax A.

    Besides the attention modules this includes ``ParallelScalingBlock`` (ViT-22B style blocks,
    e.g. ``vit_base_patch16_xp_224``), which computes its attention inline with its own
    ``fused_attn`` flag and ``attn_drop``: the block itself is then the attention module.
    """
    from timm.layers import Attention

    classes: list[type] = [Attention]
    for module_name, class_name in (
        ("timm.models.eva", "EvaAttention"),
        ("timm.models.beit", "Attention"),
        ("timm.layers.attention", "AttentionRope"),
        ("timm.models.vision_transformer_relpos", "RelPosAttention"),
        ("timm.models.vision_transformer", "ParallelScalingBlock"),
    ):
        try:
            module = __import__(module_name, fromlist=[class_name])
            classes.append(getattr(module, class_name))
        except (ImportError, AttributeError):  # pragma: no cover - older timm
            continue
    return tuple(classes)


def _attention_module(block: nn.Module, classes: tuple[type, ...]) -> nn.Module | None:
    """The module of ``block`` whose ``attn_drop`` sees A: ``block.attn``, or the block itself for
    blocks computing attention inline; None when there is no single such module."""
    for candidate in (getattr(block, "attn", None), block):
        if candidate is None:
            continue
        known = any(type(candidate) is cls or type(candidate).forward is cls.forward for cls in classes)
        if known and hasattr(candidate, "fused_attn") and isinstance(candidate.attn_drop, nn.Module):
            return candidate
    return None


def _class_head(head: object) -> bool:
    """Whether ``head`` gives class logits: a Linear, or a module holding one, such as the usual
    fine-tuning head Sequential(Dropout, Linear), which was taken for no head at all (headless: class
    targets refused); a headless timm model's head is an Identity."""
    return isinstance(head, nn.Module) and any(isinstance(m, nn.Linear) for m in head.modules())


def _input_channels(patch_embed: nn.Module) -> int | None:
    """Channels the patch embedding takes: its first convolution's (a hybrid's CNN backbone comes
    first: its ``proj`` sees the backbone's features, not the image)."""
    first = next((m for m in patch_embed.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        return int(first.in_channels)
    proj = getattr(patch_embed, "proj", None)
    return int(proj.in_channels) if hasattr(proj, "in_channels") else None


def is_timm_vit(model: nn.Module) -> bool:
    timm_class = type(model).__module__.startswith("timm.models.") or isinstance(model, ClassAndPatchMeanViT)
    if timm_class and hasattr(model, "blocks"):
        return hasattr(model, "patch_embed") and hasattr(model, "num_prefix_tokens")
    return False


class TimmViTAdapter(ViTAdapter):
    """timm ``VisionTransformer`` (and subclasses), ``Eva`` and ``Beit``."""

    family = "timm"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        classes = _timm_attention_classes()
        self.attentions: list[nn.Module] = []
        for index, block in enumerate(model.blocks):
            attn = _attention_module(block, classes)
            if attn is None:
                inner = getattr(block, "attn", None)
                where = f"blocks.{index} ({type(block).__name__}, no single attn module)"
                if isinstance(inner, nn.Module):
                    where = f"blocks.{index}.attn ({type(inner).__name__})"
                raise UnsupportedModelError(
                    f"{where} of {type(model).__name__}: attnmap cannot read its attention; "
                    f"supported: {SUPPORTED_MODELS}"
                )
            self.attentions.append(attn)
        if not self.attentions:
            raise UnsupportedModelError(f"{type(model).__name__} has no attention blocks")
        self.num_blocks = len(self.attentions)
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))
        self.attn_pool = getattr(model, "attn_pool", None)
        if self.attn_pool is not None:
            from timm.layers.attention_pool import AttentionPoolLatent

            if type(self.attn_pool) is not AttentionPoolLatent or self.attn_pool.latent_len != 1:
                raise UnsupportedModelError(
                    f"attn_pool ({type(self.attn_pool).__name__}): only AttentionPoolLatent with one latent "
                    "query is supported"
                )
        has_cls = getattr(model, "cls_token", None) is not None
        pool = getattr(model, "global_pool", "token")
        if self.attn_pool is not None:
            self.query_row = "latent"
        elif isinstance(model, ClassAndPatchMeanViT):
            self.query_row = "cls_and_patch_mean"
        elif pool in MAX_POOLS:
            if not isinstance(getattr(model, "norm", None), nn.Module):
                raise UnsupportedModelError(
                    f"global_pool={pool!r} without a final norm module: attnmap cannot read what it pools"
                )
            self.query_row = f"pooled_{pool}"
            self.pool_start = 0 if getattr(model, "pool_include_prefix", False) else self.num_prefix_tokens
        elif hasattr(model, "head_dist"):  # DeiT distilled: ½ class head + ½ distillation head, any pool
            self.query_row = "distilled"
        elif has_cls and pool in ("token", ""):
            self.query_row = "cls"
        elif getattr(model, "pool_include_prefix", False):  # timm's avg/max pool over every token
            self.query_row = "token_mean"
        else:
            self.query_row = "patch_mean"
        head = getattr(model, "head", None)
        self.classifier = _class_head(head) and pool != ""

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        patch_embed = self.model.patch_embed
        if getattr(self.model, "dynamic_img_size", False):
            return tuple(int(s) for s in patch_embed.dynamic_feat_size((height, width)))
        return tuple(int(s) for s in patch_embed.grid_size)

    def pixels_covered(self, height: int, width: int) -> tuple[int, int]:
        """Whole patches: past the image when it pads (dynamic_img_pad), else within it (the patch
        convolution drops the pixels past the last whole patch: img_size 36, patch 8)."""
        patch_embed = self.model.patch_embed
        grid_h, grid_w = self.grid_size(height, width)
        ratio = getattr(patch_embed, "feat_ratio", None)  # a hybrid stem: its backbone's stride too
        step_h, step_w = ratio(as_scalar=False) if callable(ratio) else patch_embed.patch_size
        return grid_h * int(step_h), grid_w * int(step_w)

    def check_images(self, images: torch.Tensor) -> None:
        super().check_images(images)
        patch_embed = self.model.patch_embed
        channels = _input_channels(patch_embed)
        if channels is not None and images.shape[1] != channels:
            raise InputError(f"the model takes {channels}-channel images, got {images.shape[1]} channels")
        height, width = images.shape[-2:]
        patch_h, patch_w = patch_embed.patch_size
        if not getattr(self.model, "dynamic_img_size", False):
            expected = tuple(patch_embed.img_size)
            if (height, width) != expected:
                raise InputError(
                    f"image size {height}x{width} does not fit the model, which takes "
                    f"{expected[0]}x{expected[1]}; resize the images (see attnmap.vit.preprocess) or build "
                    "the timm model with dynamic_img_size=True"
                )
        elif not getattr(patch_embed, "dynamic_img_pad", False) and (height % patch_h or width % patch_w):
            raise InputError(
                f"image size {height}x{width} is not a multiple of the patch size {patch_h}x{patch_w}; "
                "crop/resize the images or build the model with dynamic_img_pad=True"
            )
        # timm's grid for a CNN stem floors H / reduction; a padded CNN rounds up: only whole
        # multiples give the grid the tokens have
        ratio = getattr(patch_embed, "feature_ratio", None)
        cnn_stem = getattr(patch_embed, "backbone", None) is not None and ratio is not None
        dynamic = getattr(self.model, "dynamic_img_size", False)
        if cnn_stem and dynamic and (height % ratio[0] or width % ratio[1]):
            raise InputError(
                f"image size {height}x{width} is not a multiple of the CNN stem's reduction "
                f"{ratio[0]}x{ratio[1]} (patch_embed.backbone): crop/resize the images to a multiple"
            )
        if height < patch_h or width < patch_w:
            raise InputError(f"image size {height}x{width} is smaller than one patch ({patch_h}x{patch_w})")

    def record(
        self, stack: ExitStack, layers: Sequence[int], with_grad: bool, sink: dict[int, torch.Tensor]
    ) -> None:
        model = self.model
        if hasattr(model, "grad_checkpointing"):
            # checkpointing re-runs blocks in backward, which would fire the hooks twice
            stack.callback(setattr, model, "grad_checkpointing", model.grad_checkpointing)
            model.grad_checkpointing = False
        for index in layers:
            attn = self.attentions[index]
            stack.callback(setattr, attn, "fused_attn", attn.fused_attn)
            attn.fused_attn = False
            handle = attn.attn_drop.register_forward_hook(_recorder(index, sink, with_grad))
            stack.callback(handle.remove)
        if self.attn_pool is not None:
            pool = self.attn_pool
            stack.callback(restore_instance_forward, pool, pool.__dict__.get("forward"))
            pool.forward = latent_pool_forward(pool, self)
        if self.query_row in ("pooled_max", "pooled_avgmax"):  # the pool reads the final norm's tokens
            handle = model.norm.register_forward_hook(
                lambda _module, _inputs, tokens: setattr(self, "pooled_tokens", tokens.detach())
            )
            stack.callback(handle.remove)

    def run(self, images: torch.Tensor, sink: dict[int, torch.Tensor]) -> Any:
        self.latent_rows = self.pooled_tokens = None
        output = self.model(images)
        if isinstance(output, (tuple, list)):  # distilled DeiT in training mode; not reached in eval
            output = (output[0] + output[1]) / 2
        return output


def _recorder(
    index: int, sink: dict[int, torch.Tensor], with_grad: bool
) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor]:
    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], attention: torch.Tensor) -> torch.Tensor:
        if with_grad and torch.is_grad_enabled() and not attention.requires_grad:
            # frozen weights and a plain input: make A a leaf so d(score)/dA exists, without
            # touching the user's requires_grad flags or building a graph below this block
            attention = attention.detach().requires_grad_(True)
        sink[index] = attention
        return attention

    return hook
