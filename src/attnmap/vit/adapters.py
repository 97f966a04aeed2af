"""What differs between the ViT implementations we read attention from: timm and Hugging Face.

An adapter knows, for one model family, how to
- check that an image batch fits the model (channels, size, dtype, device) *before* running it,
- find the token layout: how many prefix tokens (CLS, distillation, registers) precede the patches,
  the patch grid (gh, gw) for the actual input size, and which token row stands for what the
  model's read-out looks at (its "query row", see `ViTAdapter.query_weights`),
- switch the model to a path that materialises each block's post-softmax attention, record it, and
  put everything back exactly as it was (see `attnmap.vit.capture`).

timm (``VisionTransformer``, ``Eva``, ``Beit``): their attention modules compute attention with
``scaled_dot_product_attention`` when the ``fused_attn`` flag is on, and then the attention matrix
never exists. We switch that flag off on the blocks we record (only those) and read the matrix at the
output of ``attn.attn_drop`` with a forward hook: that is the tensor multiplied with V, so its
gradient is exactly d(score)/dA. RoPE, qk_norm and relative position bias act before the softmax and
need nothing. The attention-pool head (``global_pool='map'``) is read as one more attention block:
its latent query's attention row (head mean) is the query row of every method.
The timm adapter is `attnmap.vit.adapters_timm`; Hugging Face: see `attnmap.vit.adapters_hf`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any, Literal

import torch
from torch import nn

from attnmap.errors import InputError, UnsupportedModelError
from attnmap.model_state import eval_mode
from attnmap.vit.pooling import UNIFORM_SHARE, query_share
from attnmap.vit.readout import TOKEN_READOUTS, readout_rows
from attnmap.vit.unsupported import attention_hint, part_hint, vision_tower_hint

QueryRow = Literal[
    "cls", "patch_mean", "token_mean", "distilled", "latent", "cls_and_patch_mean", "pooled_max",
    "pooled_avgmax",
]

SUPPORTED_MODELS = (
    "timm VisionTransformer (DeiT, registers, LayerScale, SwiGLU, qk_norm, "
    "global_pool ''/token/avg/max/avgmax/map, hybrid CNN stems, parallel-scaling blocks), "
    "VisionTransformerRelPos, Eva (RoPE ViTs), Beit and "
    "NaFlexVit (attention methods); "
    "Hugging Face ViTForImageClassification / ViTModel, ViT-MSN, DeiT, DINOv2 (with registers), DINOv3, "
    "CLIP vision (MetaCLIP 2, Chinese-CLIP), SigLIP vision (and their image classifiers), BEiT, "
    "Data2Vec-Vision and I-JEPA models"
)


class ViTAdapter:
    """Common part: dtype/device checks and eval-mode switching with exact restoration."""

    family = "generic"

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.latent_rows: torch.Tensor | None = None
        self.pooled_tokens: torch.Tensor | None = None  # what a max pool read, for its query row
        self.pool_start = 0  # first token a max pool reads

    # -- token layout -------------------------------------------------------------------------
    num_blocks: int
    num_prefix_tokens: int
    query_row: QueryRow
    classifier: bool

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        raise NotImplementedError

    def pixels_covered(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) of the pixels the patch grid of an ``height`` × ``width`` input covers: the input
        itself, unless the model pads it to whole patches (timm ``dynamic_img_pad``): then more, or
        drops the pixels past the last whole patch (Hugging Face's patch convolution): then less."""
        return height, width

    def query_weights(self, batch: int, tokens: int, like: torch.Tensor) -> torch.Tensor:
        """(B, N) weights of the token rows the read-out looks at.

        ``cls``: one-hot token 0; ``distilled``: ½ on the class and distillation tokens;
        ``patch_mean``: uniform over the patch tokens; ``token_mean``: uniform over every token (a
        pool including the prefix tokens, timm ``pool_include_prefix``); ``cls_and_patch_mean``: ½ on
        token 0, ½ spread over the patches (a read-out of concat(CLS, mean of patches)); ``latent``:
        the attention-pool head's attention row (head mean) recorded in the last forward pass;
        ``pooled_max``: each pooled token's share of the features whose maximum it holds (the max
        pool's Jacobian averaged over features, ties split), from the tokens the pool read in the last
        forward pass; ``pooled_avgmax``: ½ that plus ½ uniform (timm's avgmax).
        """
        prefix = self.num_prefix_tokens
        if self.query_row in TOKEN_READOUTS:  # cls, patch_mean, cls_and_patch_mean
            return readout_rows(self.query_row, batch, tokens, prefix, like)
        weights = torch.zeros(batch, tokens, dtype=like.dtype, device=like.device)
        if self.query_row == "latent":
            if self.latent_rows is None:
                raise RuntimeError("the attention-pool head's attention was not recorded")
            rows = self.latent_rows.to(like.dtype)
            weights[:, tokens - rows.shape[-1] :] = rows
        elif self.query_row == "distilled":
            weights[:, :2] = 0.5
        elif self.query_row == "token_mean":
            weights[:] = 1.0 / tokens
        elif self.query_row in ("pooled_max", "pooled_avgmax"):
            if self.pooled_tokens is None:
                raise RuntimeError("the tokens the max pool read were not recorded")
            kind = self.query_row.removeprefix("pooled_")
            weights[:, self.pool_start :] = query_share(self.pooled_tokens[:, self.pool_start :], kind)
        else:
            raise ValueError(f"unknown query row {self.query_row!r}")
        return weights

    def identity_weights(self, query: torch.Tensor) -> torch.Tensor:
        """The share of ``query`` whose residual identity path the rollouts remove: the part spread
        evenly over the pooled tokens, which would drown the signal (docs/average_pooling.md). An
        attention-pool row and a max pool's winners are what the read-out reads: kept."""
        if self.query_row == "latent":
            return torch.zeros_like(query)
        if self.query_row in ("pooled_max", "pooled_avgmax"):
            identity = torch.zeros_like(query)
            uniform = UNIFORM_SHARE[self.query_row.removeprefix("pooled_")]
            identity[:, self.pool_start :] = uniform / (query.shape[-1] - self.pool_start)
            return identity
        return query

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

    def run(self, images: torch.Tensor, sink: dict[int, torch.Tensor]) -> Any:
        """One forward pass; returns the model's raw output."""
        raise NotImplementedError

    def eval_mode(self, stack: ExitStack) -> None:
        """Switch every submodule to eval mode; restore each module's own flag on exit."""
        stack.enter_context(eval_mode(self.model))


def call_model(model: nn.Module, images: torch.Tensor) -> Any:
    """The model's own forward on a preprocessed batch, as its library calls it: a timm model takes
    the tensor; a Hugging Face model takes ``pixel_values``, with its positions interpolated for an
    input size other than its config's (where its forward offers that)."""

    config = getattr(model, "config", None)
    if not hasattr(config, "model_type"):
        return model(images)
    size = getattr(config, "image_size", None)  # an image-text family's classifier: its tower's
    size = size if size is not None else getattr(getattr(config, "vision_config", None), "image_size", None)
    size = (size, size) if isinstance(size, int) else tuple(size or ())
    kwargs: dict[str, Any] = {"pixel_values": images, **dict_output(model)}
    if size and tuple(images.shape[-2:]) != size and takes_interpolation(model):
        kwargs["interpolate_pos_encoding"] = True
    return model(**kwargs)


def dict_output(model: nn.Module) -> dict[str, Any]:
    """``return_dict=True`` for a Hugging Face forward that takes it: a config saying
    ``return_dict=False`` (set for tracing or export) makes the model return tuples, which hold no
    ``attentions`` or ``pooler_output`` by name and whose first item is the tokens, not the output."""
    import inspect

    parameters = inspect.signature(model.forward).parameters
    passes_on = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    takes = "return_dict" in parameters or passes_on
    return {"return_dict": True} if takes else {}


def takes_interpolation(model: nn.Module) -> bool:
    """Whether a Hugging Face model's forward takes ``interpolate_pos_encoding``: by name, or through
    the ``**kwargs`` it hands to its vision tower (CLIPForImageClassification)."""
    import inspect

    parameters = inspect.signature(model.forward).parameters
    if "interpolate_pos_encoding" in parameters:
        return True
    tower = getattr(model, "vision_model", None)
    passes_on = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return (
        passes_on
        and isinstance(tower, nn.Module)
        and "interpolate_pos_encoding" in inspect.signature(tower.forward).parameters
    )


def unwrap(model: object) -> object:
    """The model inside ``torch.compile``'s and ``nn.DataParallel``/``DistributedDataParallel``'s
    wrappers (same parameters): attnmap reads its blocks and runs it eagerly, as written."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    for _ in range(8):  # wrappers of wrappers, never a cycle
        inner = getattr(model, "_orig_mod", None) if type(model).__name__ == "OptimizedModule" else None
        if inner is None and isinstance(model, (DataParallel, DistributedDataParallel)):
            inner = model.module
        if not isinstance(inner, nn.Module):
            return model
        model = inner
    return model


def adapter_for(model: nn.Module) -> ViTAdapter:
    """The adapter for ``model``, or `UnsupportedModelError` saying what is supported."""
    model = unwrap(model)
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"expected a torch.nn.Module, got {type(model).__name__}")
    adapter = _family_adapter(model)
    if adapter is None:
        tower = vision_tower_hint(model, explains)  # an image-text model whose tower attnmap reads
        what = "not as a whole" if tower else ""
        if not tower:
            what, tower = part_hint(model, explains)  # a wrapper around a readable transformer
        raise UnsupportedModelError(
            f"{type(model).__name__} is not a supported Vision Transformer ({what or attention_hint(model)})"
            f"{tower}; supported: {SUPPORTED_MODELS}"
        )
    from attnmap.vit.readout import query_override

    adapter.query_row = query_override() or adapter.query_row  # a token read-out named by the target
    return adapter


def explains(module: nn.Module) -> bool:
    """Whether attnmap reads ``module``'s attention (a supported family, as it is configured)."""
    try:
        return _family_adapter(module) is not None
    except UnsupportedModelError:
        return False


def _family_adapter(model: nn.Module) -> ViTAdapter | None:
    from attnmap.vit.adapters_timm import TimmViTAdapter, is_timm_vit

    if is_timm_vit(model):
        return TimmViTAdapter(model)
    from attnmap.vit.adapters_naflex import NaFlexAdapter, is_naflexvit

    if is_naflexvit(model):
        return NaFlexAdapter(model)
    from attnmap.vit.adapters_hf import HFAdapter, is_hf_vision_model

    if is_hf_vision_model(model):
        return HFAdapter(model)
    return None
