"""Hugging Face vision transformers: ViT (and ViT-MSN), DeiT, DINOv2 (with registers), DINOv3, CLIP
and SigLIP vision, BEiT (and Data2Vec-Vision), I-JEPA.

Attention is read the documented way: ``output_attentions=True`` under an eager attention
implementation (HF's own, with the softmax kept in the model's dtype: `_exact_attention`) returns
each layer's post-softmax attention (the tensor multiplied with V). The
implementation setting of every config object in the model is switched for the call and restored
exactly afterwards. The token layout comes from the config (``model_type``), not from module names,
which transformers renames between major versions:

| model_type | prefix tokens | query row |
|---|---|---|
| vit, vit_msn, clip_vision_model (MetaCLIP 2, Chinese-CLIP) | CLS | CLS |
| deit | CLS + distillation | CLS (as for timm's distilled DeiT) |
| dinov2(_with_registers) | CLS (+ registers) | CLS; classifier: ½ CLS + ½ patch mean (concat read-out) |
| dinov3_vit | CLS + registers | CLS (RoPE on the patch tokens' q and k) |
| beit, data2vec-vision | CLS | patch mean when the pooler averages (``use_mean_pooling``), else CLS |
| ijepa | none | patch mean (its classifier averages every token) |
| siglip_vision_model | none | the attention-pool head's attention row (its ``nn.MultiheadAttention``) |
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch
from torch import nn

from attnmap.errors import InputError, UnsupportedModelError
from attnmap.vit.adapters import QueryRow, ViTAdapter, dict_output, takes_interpolation

HF_MODEL_TYPES = (
    "vit",
    "deit",
    "dinov2",
    "dinov2_with_registers",
    "clip_vision_model",
    "siglip_vision_model",
    "beit",
    "dinov3_vit",
    "vit_msn",
    "data2vec-vision",
    "ijepa",
)
BEIT_TYPES = ("beit", "data2vec-vision")  # Data2Vec-Vision is BEiT's architecture under another name


# model types whose vision transformer is another's layer for layer (names, norms, MLP, pooling): read
# as that one. MetaCLIP 2's and Chinese-CLIP's towers were refused as attention of an unknown kind
SAME_LAYERS = {
    "metaclip_2_vision_model": "clip_vision_model", "chinese_clip_vision_model": "clip_vision_model"
}

# image-text families whose image classifier is their vision tower + a linear head on the mean of
# the patch tokens (SigLIP: every token, there is no class token; CLIP: the tokens after its class
# token, before its post-layernorm): the tower's model type gives the token layout
IMAGE_TEXT_CLASSIFIERS = {
    "siglip": "siglip_vision_model", "clip": "clip_vision_model", "metaclip_2": "clip_vision_model"
}


def layout(model: nn.Module) -> tuple[str, Any]:
    """The model type and config that describe ``model``'s transformer: its own, or for an image-text
    family's image classifier (SiglipForImageClassification, CLIPForImageClassification) its vision
    tower's."""
    config = model.config
    kind = str(config.model_type)
    if kind in IMAGE_TEXT_CLASSIFIERS and "ForImageClassification" in type(model).__name__:
        return IMAGE_TEXT_CLASSIFIERS[kind], config.vision_config
    return SAME_LAYERS.get(kind, kind), config


def is_hf_vision_model(model: nn.Module) -> bool:
    if not hasattr(getattr(model, "config", None), "model_type"):
        return False
    kind, config = layout(model)
    return kind in HF_MODEL_TYPES and hasattr(config, "num_hidden_layers")


def _has_pooler(model: nn.Module) -> bool:
    return any(type(module).__name__.endswith("Pooler") for module in model.modules())


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class HFAdapter(ViTAdapter):
    """Any model of `HF_MODEL_TYPES` (base model, classifier, or with projection)."""

    family = "hf"

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        kind, config = layout(model)
        self.config = config
        name = type(model).__name__
        self.num_blocks = int(config.num_hidden_layers)
        self.classifier = "ForImageClassification" in name
        self.patch_size = _pair(config.patch_size)
        self.image_size = _pair(config.image_size)
        self.pool_heads = [m for m in model.modules() if isinstance(m, nn.MultiheadAttention)]
        prefix = 1
        query: QueryRow = "cls"
        if kind == "deit":
            prefix = 2
            if hasattr(model, "distillation_classifier"):  # with teacher: ½ class head + ½ distillation head
                query = "distilled"
        elif kind.startswith("dinov"):  # dinov2, dinov2_with_registers, dinov3_vit (pooler: CLS)
            prefix = 1 + int(getattr(config, "num_register_tokens", 0) or 0)
            query = "cls_and_patch_mean" if self.classifier else "cls"
        elif kind in BEIT_TYPES:
            # the pooler averages the patches; without one (Data2VecVisionModel's default, BeitModel
            # with add_pooling_layer=False) the output is the tokens, read at the class token as for ViT
            averaged = getattr(config, "use_mean_pooling", False) and _has_pooler(model)
            query = "patch_mean" if averaged else "cls"
        elif kind == "ijepa":
            prefix, query = 0, "patch_mean"
            if _has_pooler(model):
                raise UnsupportedModelError(
                    f"{name}: I-JEPA's pooler (IJepaPooler) reads the first patch token as if it were a "
                    "class token; build the model without it (add_pooling_layer=False, the default)"
                )
        elif kind == "siglip_vision_model":
            prefix = 0
            query = "latent" if self.pool_heads else "patch_mean"
        if self.classifier and config is not model.config:  # an image-text family's classifier
            query, self.pool_heads = "patch_mean", []  # the tower's attention-pool head is not used
        if self.pool_heads and kind != "siglip_vision_model":
            raise UnsupportedModelError(f"{name}: an attention-pool head is only supported for SigLIP")
        self.num_prefix_tokens = prefix
        self.query_row = query
        self._layers: list[int] = []
        self._with_grad = False
        self._takes_interpolate = takes_interpolation(model)
        self._dict_output = dict_output(model)  # named outputs even where the config asks for tuples

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        return height // self.patch_size[0], width // self.patch_size[1]

    def pixels_covered(self, height: int, width: int) -> tuple[int, int]:
        """The whole patches only: the patch convolution drops the pixels left past the last one."""
        grid_h, grid_w = self.grid_size(height, width)
        return grid_h * self.patch_size[0], grid_w * self.patch_size[1]

    def check_images(self, images: torch.Tensor) -> None:
        super().check_images(images)
        channels = int(getattr(self.config, "num_channels", 3))
        if images.shape[1] != channels:
            raise InputError(f"the model takes {channels}-channel images, got {images.shape[1]} channels")
        height, width = images.shape[-2:]
        patch_h, patch_w = self.patch_size
        if height < patch_h or width < patch_w:
            raise InputError(f"image size {height}x{width} is smaller than one patch ({patch_h}x{patch_w})")
        if (
            (height, width) != self.image_size
            and not self._takes_interpolate
            and "dinov" not in str(self.config.model_type)
        ):
            raise InputError(
                f"image size {height}x{width} does not fit the model, which takes "
                f"{self.image_size[0]}x{self.image_size[1]}"
            )

    def record(
        self, stack: ExitStack, layers: Sequence[int], with_grad: bool, sink: dict[int, torch.Tensor]
    ) -> None:
        configs = {
            id(c): c for c in (getattr(m, "config", None) for m in self.model.modules()) if c is not None
        }
        implementation = _exact_attention()
        for config in configs.values():
            saved = dict(config.__dict__)
            stack.callback(_restore_attn_implementation, config, saved)
            config._attn_implementation = implementation
        for module in self.model.modules():
            eager = _eager_class(module)
            if eager is not None:
                stack.callback(setattr, module, "__class__", type(module))
                module.__class__ = eager
        for head in self.pool_heads:
            handle = head.register_forward_hook(self._pool_hook)
            stack.callback(handle.remove)
        self._layers = list(layers)
        self._with_grad = with_grad

    def _pool_hook(self, module: nn.Module, inputs: Any, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None or weights.ndim != 3 or weights.shape[1] != 1:
            raise UnsupportedModelError(
                f"the attention-pool head ({type(module).__name__}) returned no (B, 1, N) attention weights"
            )
        self.latent_rows = weights.detach()[:, 0]

    def run(self, images: torch.Tensor, sink: dict[int, torch.Tensor]) -> Any:
        self.latent_rows = None
        if self._with_grad and torch.is_grad_enabled() and not images.requires_grad:
            # makes the attention tensors part of a graph even when every weight is frozen
            images = images.detach().requires_grad_(True)
        kwargs: dict[str, Any] = {"pixel_values": images, "output_attentions": True, **self._dict_output}
        if self._takes_interpolate and tuple(images.shape[-2:]) != self.image_size:
            kwargs["interpolate_pos_encoding"] = True
        output = self.model(**kwargs)
        attentions = getattr(output, "attentions", None)
        if attentions is None or len(attentions) != self.num_blocks:
            raise UnsupportedModelError(
                f"{type(self.model).__name__} returned no attention maps with output_attentions=True"
            )
        for index in self._layers:
            if attentions[index] is None:  # an attention class that computes no weights
                layer = next((m for m in self.model.modules() if "SelfAttention" in type(m).__name__), None)
                raise UnsupportedModelError(
                    f"{type(self.model).__name__}: its attention ({type(layer).__name__}) returned no "
                    "weights with output_attentions=True; load the model with attn_implementation='eager'"
                )
            sink[index] = attentions[index]
        return output


def _eager_class(module: nn.Module) -> type | None:
    """The eager class an SDPA attention module subclasses (BEiT's generation of HF models, e.g.
    Data2VecVisionSdpaSelfAttention): chosen when the model is built, so the attention setting cannot
    switch it; the eager class has the same weights and returns the post-softmax weights."""
    name = type(module).__name__
    if "Sdpa" not in name:
        return None
    for base in type(module).__bases__:
        if base.__name__ == name.replace("Sdpa", "") and issubclass(base, nn.Module):
            return base
    return None


_EXACT = "attnmap_eager"


def _exact_attention() -> str:
    """Name of an attention function like HF's "eager" but with the softmax in the input's dtype.

    HF's eager attention computes the softmax in float32 even for float64 models, which limits
    float64 maps to float32 accuracy (and breaks agreement with timm and the LRP twin at ~1e-6).
    Registered once with transformers' AttentionInterface; "eager" where that does not exist.
    """
    try:
        from transformers import AttentionInterface
    except ImportError:  # pragma: no cover - old transformers
        return "eager"
    if _EXACT not in AttentionInterface._global_mapping:
        AttentionInterface.register(_EXACT, _attention_forward)
    return _EXACT


def _attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


def _restore_attn_implementation(config: object, saved: dict[str, object]) -> None:
    for key in [key for key in config.__dict__ if "attn_implementation" in key]:
        if key not in saved:
            delattr(config, key)
    for key, value in saved.items():
        if "attn_implementation" in key:
            config.__dict__[key] = value
