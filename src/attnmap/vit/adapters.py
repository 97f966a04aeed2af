"""What differs between the ViT implementations we read attention from: timm and Hugging Face.

An adapter knows, for one model family, how to
- check that an image batch fits the model (channels, size, dtype, device) *before* running it,
- find the token layout: how many prefix tokens (CLS, distillation, registers) precede the patches,
  the patch grid (gh, gw) for the actual input size, and which token row the classifier reads,
- switch the model to a path that materialises each block's post-softmax attention, record it, and
  put everything back exactly as it was (see `attnmap.vit.capture`).

timm: `timm.layers.Attention` computes attention with ``scaled_dot_product_attention`` when its
``fused_attn`` flag is on, and then the attention matrix never exists. We switch that flag off on the
blocks we record (only those) and read the matrix at the output of ``attn.attn_drop`` with a forward
hook: that is the tensor multiplied with V, so its gradient is exactly d(logit)/dA.
Hugging Face: ``output_attentions=True`` under the "eager" attention implementation returns the
same tensors; the implementation is switched for the call and restored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Literal

import torch
from torch import nn

from attnmap.errors import InputError, UnsupportedModelError

QueryRow = Literal["cls", "patch_mean"]

SUPPORTED_MODELS = (
    "timm VisionTransformer models whose blocks use timm.layers.Attention (ViT, DeiT incl. distilled, "
    "register-token models, dynamic_img_size) and Hugging Face ViTForImageClassification"
)


class ViTAdapter:
    """Common part: dtype/device checks and eval-mode switching with exact restoration."""

    family = "generic"

    def __init__(self, model: nn.Module) -> None:
        self.model = model

    # -- token layout -------------------------------------------------------------------------
    num_blocks: int
    num_prefix_tokens: int
    query_row: QueryRow

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        raise NotImplementedError

    # -- input checks -------------------------------------------------------------------------
    def check_images(self, images: torch.Tensor) -> None:
        """Raise `InputError` naming the problem when the model cannot take ``images``."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise InputError(f"images must be a (B, 3, H, W) tensor, got {shape}")
        param = next(self.model.parameters(), None)
        if param is not None:
            if images.dtype != param.dtype:
                raise InputError(
                    f"images are {images.dtype} but the model's parameters are {param.dtype}; "
                    f"convert one of them (e.g. images.to({param.dtype}))"
                )
            if images.device != param.device:
                raise InputError(f"images are on {images.device} but the model is on {param.device}")
        if images.shape[0] == 0:
            raise InputError("got an empty batch (0 images)")

    # -- recording ------------------------------------------------------------------------------
    def record(
        self, stack: ExitStack, layers: Sequence[int], with_grad: bool, sink: dict[int, torch.Tensor]
    ) -> None:
        """Prepare the model so that the next `run` fills ``sink[block] = A``; undo on stack close."""
        raise NotImplementedError

    def run(self, images: torch.Tensor, sink: dict[int, torch.Tensor]) -> torch.Tensor:
        """One forward pass; returns the logits (B, classes)."""
        raise NotImplementedError

    def eval_mode(self, stack: ExitStack) -> None:
        """Switch every submodule to eval mode; restore each module's own flag on exit."""
        flags = [(module, module.training) for module in self.model.modules()]
        stack.callback(_restore_training, flags)
        self.model.eval()


def _restore_training(flags: list[tuple[nn.Module, bool]]) -> None:
    for module, training in flags:
        module.training = training


class TimmViTAdapter(ViTAdapter):
    """timm ``VisionTransformer`` and subclasses (DeiT distilled, register tokens, avg pooling)."""

    family = "timm"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        from timm.layers import Attention

        self.attentions: list[nn.Module] = []
        for index, block in enumerate(model.blocks):
            attn = getattr(block, "attn", None)
            if not isinstance(attn, Attention) or type(attn).forward is not Attention.forward:
                raise UnsupportedModelError(
                    f"block {index} of {type(model).__name__} uses {type(attn).__name__}, which attnmap "
                    f"cannot read attention from; supported: {SUPPORTED_MODELS}"
                )
            self.attentions.append(attn)
        if not self.attentions:
            raise UnsupportedModelError(f"{type(model).__name__} has no attention blocks")
        self.num_blocks = len(self.attentions)
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))
        has_cls = bool(getattr(model, "has_class_token", self.num_prefix_tokens > 0))
        token_pool = getattr(model, "global_pool", "token") == "token"
        self.query_row = "cls" if has_cls and token_pool else "patch_mean"

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        patch_embed = self.model.patch_embed
        if getattr(self.model, "dynamic_img_size", False):
            return tuple(int(s) for s in patch_embed.dynamic_feat_size((height, width)))
        return tuple(int(s) for s in patch_embed.grid_size)

    def check_images(self, images: torch.Tensor) -> None:
        super().check_images(images)
        patch_embed = self.model.patch_embed
        channels = patch_embed.proj.in_channels if hasattr(patch_embed.proj, "in_channels") else None
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

    def run(self, images: torch.Tensor, sink: dict[int, torch.Tensor]) -> torch.Tensor:
        logits = self.model(images)
        if isinstance(logits, (tuple, list)):  # distilled DeiT in training mode; not reached in eval
            logits = (logits[0] + logits[1]) / 2
        return logits


def _recorder(
    index: int, sink: dict[int, torch.Tensor], with_grad: bool
) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor]:
    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], attention: torch.Tensor) -> torch.Tensor:
        if with_grad and torch.is_grad_enabled() and not attention.requires_grad:
            # frozen weights and a plain input: make A a leaf so d(logit)/dA exists, without
            # touching the user's requires_grad flags or building a graph below this block
            attention = attention.detach().requires_grad_(True)
        sink[index] = attention
        return attention

    return hook


class HFViTAdapter(ViTAdapter):
    """Hugging Face ``ViTForImageClassification`` (CLS token, patch grid from the config)."""

    family = "hf"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        config = model.config
        self.num_blocks = int(config.num_hidden_layers)
        self.num_prefix_tokens = 1
        self.query_row = "cls"
        patch = config.patch_size
        self.patch_size = (patch, patch) if isinstance(patch, int) else tuple(patch)
        size = config.image_size
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch_size[0], width // self.patch_size[1]

    def check_images(self, images: torch.Tensor) -> None:
        super().check_images(images)
        channels = int(self.model.config.num_channels)
        if images.shape[1] != channels:
            raise InputError(f"the model takes {channels}-channel images, got {images.shape[1]} channels")
        height, width = images.shape[-2:]
        patch_h, patch_w = self.patch_size
        if height < patch_h or width < patch_w:
            raise InputError(f"image size {height}x{width} is smaller than one patch ({patch_h}x{patch_w})")

    def record(
        self, stack: ExitStack, layers: Sequence[int], with_grad: bool, sink: dict[int, torch.Tensor]
    ) -> None:
        config = self.model.config
        saved = dict(config.__dict__)
        stack.callback(_restore_attn_implementation, config, saved)
        config._attn_implementation = "eager"
        self._layers = list(layers)
        self._with_grad = with_grad

    def run(self, images: torch.Tensor, sink: dict[int, torch.Tensor]) -> torch.Tensor:
        if self._with_grad and torch.is_grad_enabled() and not images.requires_grad:
            # makes the attention tensors part of a graph even when every weight is frozen
            images = images.detach().requires_grad_(True)
        resize = tuple(images.shape[-2:]) != self.image_size
        output = self.model(pixel_values=images, output_attentions=True, interpolate_pos_encoding=resize)
        attentions = output.attentions
        if attentions is None or len(attentions) != self.num_blocks:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} returned no attention maps with output_attentions=True"
            )
        for index in self._layers:
            sink[index] = attentions[index]
        return output.logits


def _restore_attn_implementation(config: object, saved: dict[str, object]) -> None:
    for key in [key for key in config.__dict__ if "attn_implementation" in key]:
        if key not in saved:
            delattr(config, key)
    for key, value in saved.items():
        if "attn_implementation" in key:
            config.__dict__[key] = value


def adapter_for(model: nn.Module) -> ViTAdapter:
    """The adapter for ``model``, or `UnsupportedModelError` saying what is supported."""
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"expected a torch.nn.Module, got {type(model).__name__}")
    try:
        from timm.models.vision_transformer import VisionTransformer
    except ImportError:  # pragma: no cover - timm is a dependency
        VisionTransformer = ()  # type: ignore[assignment]
    if VisionTransformer and isinstance(model, VisionTransformer):
        return TimmViTAdapter(model)
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) == "vit" and type(model).__name__ == "ViTForImageClassification":
        return HFViTAdapter(model)
    raise UnsupportedModelError(
        f"{type(model).__name__} is not a supported Vision Transformer (no attention blocks attnmap can "
        f"read); supported: {SUPPORTED_MODELS}"
    )
