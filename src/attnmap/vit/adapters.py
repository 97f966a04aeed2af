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
Hugging Face: see `attnmap.vit.adapters_hf`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, Literal

import torch
from torch import nn

from attnmap.errors import InputError, UnsupportedModelError
from attnmap.vit.latent_pool import latent_pool_forward, restore_instance_forward
from attnmap.vit.pooling import MAX_POOLS, UNIFORM_SHARE, query_share
from attnmap.vit.timm_build import ClassAndPatchMeanViT
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
    "CLIP vision, SigLIP vision (and their image classifiers), BEiT, Data2Vec-Vision and I-JEPA models"
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
        weights = torch.zeros(batch, tokens, dtype=like.dtype, device=like.device)
        if self.query_row == "latent":
            if self.latent_rows is None:
                raise RuntimeError("the attention-pool head's attention was not recorded")
            rows = self.latent_rows.to(like.dtype)
            weights[:, tokens - rows.shape[-1] :] = rows
        elif self.query_row == "cls":
            weights[:, 0] = 1.0
        elif self.query_row == "distilled":
            weights[:, :2] = 0.5
        elif self.query_row == "token_mean":
            weights[:] = 1.0 / tokens
        elif self.query_row == "cls_and_patch_mean":
            weights[:, 0] = 0.5
            weights[:, prefix:] = 0.5 / (tokens - prefix)
        elif self.query_row in ("pooled_max", "pooled_avgmax"):
            if self.pooled_tokens is None:
                raise RuntimeError("the tokens the max pool read were not recorded")
            kind = self.query_row.removeprefix("pooled_")
            weights[:, self.pool_start :] = query_share(self.pooled_tokens[:, self.pool_start :], kind)
        else:
            weights[:, prefix:] = 1.0 / (tokens - prefix)
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


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model.eval()`` for the block (no dropout, patch dropout or batch statistics in a map);
    each submodule's own training flag restored exactly afterwards, also when the block raises."""
    flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield
    finally:
        _restore_training(flags)


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
    kwargs: dict[str, Any] = {"pixel_values": images}
    if size and tuple(images.shape[-2:]) != size and takes_interpolation(model):
        kwargs["interpolate_pos_encoding"] = True
    return model(**kwargs)


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


def _restore_training(flags: list[tuple[nn.Module, bool]]) -> None:
    for module, training in flags:
        module.training = training


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


def _input_channels(patch_embed: nn.Module) -> int | None:
    """Channels the patch embedding takes: its first convolution's (a hybrid's CNN backbone comes
    first: its ``proj`` sees the backbone's features, not the image)."""
    first = next((m for m in patch_embed.modules() if isinstance(m, nn.Conv2d)), None)
    if first is not None:
        return int(first.in_channels)
    proj = getattr(patch_embed, "proj", None)
    return int(proj.in_channels) if hasattr(proj, "in_channels") else None


def _is_timm_vit(model: nn.Module) -> bool:
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
        elif has_cls and pool in ("token", ""):
            self.query_row = "cls"
        elif getattr(model, "pool_include_prefix", False):  # timm's avg/max pool over every token
            self.query_row = "token_mean"
        else:
            self.query_row = "patch_mean"
        head = getattr(model, "head", None)
        self.classifier = isinstance(head, nn.Linear) and pool != ""

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        patch_embed = self.model.patch_embed
        if getattr(self.model, "dynamic_img_size", False):
            return tuple(int(s) for s in patch_embed.dynamic_feat_size((height, width)))
        return tuple(int(s) for s in patch_embed.grid_size)

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
        tower = vision_tower_hint(model)  # an image-text model: its tower's attention is readable
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
    if _is_timm_vit(model):
        return TimmViTAdapter(model)
    from attnmap.vit.adapters_naflex import NaFlexAdapter, is_naflexvit

    if is_naflexvit(model):
        return NaFlexAdapter(model)
    from attnmap.vit.adapters_hf import HFAdapter, is_hf_vision_model

    if is_hf_vision_model(model):
        return HFAdapter(model)
    return None
