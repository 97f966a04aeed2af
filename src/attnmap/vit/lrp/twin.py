"""An LRP twin of the user's timm VisionTransformer: its structure, validated, and a recording forward.

Relevance propagation needs tensors the model's own forward never keeps (pre-bias outputs, the
attention matrix that fused attention never materialises). The twin reads the user's modules and
weights (detached, never modified), refuses any layer without an LRP rule with an
`UnsupportedModelError` naming it, and runs a functional forward in eval semantics that records
exactly what the relevance pass needs, only for the blocks it will reach. `attnmap.vit.lrp.check`
compares its output with the model's own forward, so a twin that drifts from the model fails loudly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed, resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from attnmap.errors import InputError, UnsupportedModelError
from attnmap.vit.lrp.block import (
    BlockTrace,
    BlockTwin,
    Rope,
    apply_norm,
    block_forward,
    linear,
    read_norm,
)
from attnmap.vit.lrp.pool import PoolTrace, PoolTwin
from attnmap.vit.lrp.stem import StemConv, StemTrace, read_stem, stem_forward
from attnmap.vit.pooling import MAX_POOLS, pool_tokens
from attnmap.vit.timm_build import ClassAndPatchMeanViT

POOLS = ("token", "avg", "max", "avgmax", "", "map")


def check_pool(global_pool: str) -> None:
    """Refuse a timm ``global_pool`` the relevance rules do not cover (e.g. 'prr'), in one line."""
    if global_pool not in POOLS:
        raise UnsupportedModelError(
            f"global_pool={global_pool!r} has no LRP rule: supported are {', '.join(map(repr, POOLS))}"
        )


@dataclass
class Trace:
    """Everything one twin forward recorded."""

    logits: torch.Tensor  # the model's output: logits, or the embedding / tokens of a headless model
    final_tokens: torch.Tensor  # output of the final norm (B, N, D), what model.norm returns, or its first
    # ``rows`` tokens only
    rows: int | None  # the read-out rows the last block was run on (`ViTTwin.readout_rows`), None: all
    pooled: torch.Tensor  # head input (B, D), (B, 2D) for distilled models, (B, N, D) for global_pool=''
    z_head: torch.Tensor | None  # head pre-bias output (None without a head)
    grid: tuple[int, int]
    blocks: dict[int, BlockTrace] = field(default_factory=dict)
    attentions: dict[int, torch.Tensor] = field(default_factory=dict)
    embed_input: torch.Tensor | None = None  # image after dynamic padding
    stem: StemTrace | None = None
    patch_tokens: torch.Tensor | None = None  # (B, P, D) before prefix tokens / pos_embed
    prefixed_tokens: torch.Tensor | None = None  # summand 0 of the pos_embed add
    pos_embed: torch.Tensor | None = None  # summand 1 (1, N', D)
    first_tokens: torch.Tensor | None = None  # first block's input before norm_pre (generic embeddings)
    pool: PoolTrace | None = None  # attention-pool head (global_pool='map', SigLIP)
    pool_out: torch.Tensor | None = None  # pooled tokens after fc_norm (the pooler's input)
    z_pooler: torch.Tensor | None = None  # pooler dense pre-bias output


def linear_head(head: nn.Module) -> nn.Module:
    """The Linear of a classifier head: the head itself, or the one Linear of a Sequential whose other
    modules are dropouts or identities (the usual fine-tuning head, Sequential(Dropout, Linear)): in
    eval mode they pass their input on unchanged, and so their relevance."""
    if isinstance(head, nn.Sequential):
        rest = [m for m in head if not isinstance(m, (nn.modules.dropout._DropoutNd, nn.Identity))]
        if len(rest) == 1 and isinstance(rest[0], nn.Linear):
            return rest[0]
    return head


def pad_to_patches(images: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    """Zero-pad the bottom and right of ``images`` to whole patches, as timm's ``dynamic_img_pad`` does."""
    (ph, pw), (height, width) = patch_size, images.shape[-2:]
    return F.pad(images, (0, (pw - width % pw) % pw, 0, (ph - height % ph) % ph))


class ViTTwin:
    """The user's VisionTransformer read into plain tensors; see the module docstring."""

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, VisionTransformer):
            raise UnsupportedModelError(
                f"LRP methods need a timm VisionTransformer (or DeiT), got {type(model).__name__}"
            )
        self.attn_pool = (
            None if getattr(model, "attn_pool", None) is None else PoolTwin.read_timm(model.attn_pool)
        )
        self.global_pool = "map" if self.attn_pool is not None else model.global_pool
        check_pool(self.global_pool)
        if isinstance(model, ClassAndPatchMeanViT):  # [class token, mean of the patch tokens]
            self.global_pool = "cls_mean"
        self.exact_embedding = True  # timm ViT: pos_embed add rule as the reference (else: generic)
        self.pooler: tuple[torch.Tensor, torch.Tensor | None, nn.Module] | None = None
        self.pool_start = model.num_prefix_tokens
        self.pool_include_prefix = bool(getattr(model, "pool_include_prefix", False))
        patch_embed = model.patch_embed
        if not isinstance(patch_embed, PatchEmbed) or type(patch_embed).forward is not PatchEmbed.forward:
            raise UnsupportedModelError(f"patch_embed ({type(patch_embed).__name__}) has no LRP rule")
        self.stem: list[StemConv] = read_stem(patch_embed.proj)
        self.patch_embed = patch_embed
        self.embed_norm = read_norm(patch_embed.norm, "patch_embed.norm")
        self.norm_pre = read_norm(model.norm_pre, "norm_pre")
        self.final_norm = read_norm(model.norm, "norm")
        self.fc_norm = read_norm(model.fc_norm, "fc_norm")
        self.model = model
        self.num_prefix = model.num_prefix_tokens
        self.distilled = hasattr(model, "head_dist")
        heads = [linear_head(model.head)] + ([linear_head(model.head_dist)] if self.distilled else [])
        self.head_w: torch.Tensor | None = None
        self.head_b: torch.Tensor | None = None
        if all(isinstance(head, nn.Identity) for head in heads):
            pass  # headless (num_classes=0): the output is the pooled embedding or the tokens
        elif not all(isinstance(head, nn.Linear) for head in heads):
            bad = next(head for head in heads if not isinstance(head, nn.Linear))
            raise UnsupportedModelError(
                f"head ({type(bad).__name__}) has no LRP rule: expected Linear or Identity"
            )
        elif self.distilled:  # logits = (head(x_cls) + head_dist(x_dist)) / 2: one Linear on [x_cls, x_dist]
            self.head_w = torch.cat([heads[0].weight.detach(), heads[1].weight.detach()], dim=1) / 2
            biases = [b.detach() for b in (heads[0].bias, heads[1].bias) if b is not None]
            self.head_b = sum(biases) / 2 if biases else None
        else:
            self.head_w = heads[0].weight.detach()
            self.head_b = None if heads[0].bias is None else heads[0].bias.detach()
        self.classifier = self.head_w is not None and self.global_pool != ""
        self.has_class_token = getattr(model, "cls_token", None) is not None
        reference = next(model.parameters())
        self.dtype, self.device = reference.dtype, reference.device
        self.blocks = [BlockTwin.read(block, i) for i, block in enumerate(model.blocks)]
        if not self.blocks:
            raise UnsupportedModelError("the model has no transformer blocks")

    @property
    def depth(self) -> int:
        return len(self.blocks)

    @property
    def readout_rows(self) -> int | None:
        """How many leading tokens the read-out takes from the last block: 1 for a class token, 2 for
        class + distillation tokens; None when it reads every token (mean or attention pooling,
        token outputs). Only those rows of the last block's output are computed and hold relevance."""
        if self.distilled:
            return 2
        if self.global_pool == "token":
            return 1
        return None

    def _patch_grid(self, images: torch.Tensor) -> torch.Tensor:
        """Dynamic padding as timm does it; size checks as the model would (as InputError)."""
        pe = self.patch_embed
        height, width = images.shape[-2:]
        ph, pw = pe.patch_size
        channels = self.stem[0].weight.shape[1] * self.stem[0].conv["groups"]
        if images.shape[1] != channels:
            raise InputError(f"images have {images.shape[1]} channels but the model expects {channels}")
        if pe.img_size is not None and pe.strict_img_size and (height, width) != tuple(pe.img_size):
            raise InputError(
                f"image size {height}x{width} does not match the model's img_size {tuple(pe.img_size)}"
            )
        if pe.dynamic_img_pad:
            return pad_to_patches(images, (ph, pw))
        if not pe.strict_img_size and (height % ph or width % pw):
            raise InputError(
                f"image size {height}x{width} is not a multiple of the patch size {pe.patch_size}"
            )
        # a model built for an img_size that is not a multiple of the patch (timm allows it): the
        # convolution drops the last rows/columns, as in the model, and they get no relevance
        return images

    def _positions(self, patches: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor | None:
        model = self.model
        if model.pos_embed is None:
            return None
        pos = model.pos_embed.detach()
        if model.dynamic_img_size:
            prefix = 0 if model.no_embed_class else self.num_prefix
            pos = resample_abs_pos_embed(
                pos, new_size=grid, old_size=self.patch_embed.grid_size, num_prefix_tokens=prefix
            )
        elif pos.shape[1] != patches.shape[1] + (0 if model.no_embed_class else self.num_prefix):
            raise InputError(
                f"image gives a {grid[0]}x{grid[1]} patch grid but the model's pos_embed is for "
                f"{tuple(self.patch_embed.grid_size)} (build it with dynamic_img_size=True for other sizes)"
            )
        return pos

    def embed(self, images: torch.Tensor, record_stem: bool) -> Embedded:
        """Patch embedding, prefix tokens and positions (no grad): the first block's input."""
        model = self.model
        padded = self._patch_grid(images)
        embedded, stem_trace = stem_forward(self.stem, padded, record=record_stem)
        grid = (embedded.shape[-2], embedded.shape[-1])
        patches = apply_norm(self.embed_norm, embedded.flatten(2).transpose(1, 2))
        prefix = [model.cls_token] if model.cls_token is not None else []
        if self.distilled:
            prefix.append(model.dist_token)
        if getattr(model, "reg_token", None) is not None:
            prefix.append(model.reg_token)
        prefix = [p.detach().expand(patches.shape[0], -1, -1) for p in prefix]
        pos = self._positions(patches, grid)
        if pos is None:
            summand0 = torch.cat(prefix + [patches], dim=1)
            x = summand0
        elif model.no_embed_class:
            summand0 = patches
            x = torch.cat(prefix + [patches + pos], dim=1)
        else:
            summand0 = torch.cat(prefix + [patches], dim=1)
            x = summand0 + pos
        return Embedded(x, grid, padded, stem_trace, patches, summand0, pos)

    def forward(
        self,
        images: torch.Tensor,
        record_from: int | None,
        grad_from: int | None,
        record_stem: bool = False,
        all_rows: bool = False,
    ) -> Trace:
        """Functional forward in eval semantics.

        ``record_from``: first block whose tensors are kept (None: none). ``grad_from``: first block whose
        attention becomes a grad leaf; from there on an autograd graph is built (None: no graph at all),
        so `torch.autograd.grad` can reach every later attention without any parameter gradient.
        ``all_rows``: run the last block on every token, not only the read-out's rows (a callable
        target may read the final tokens themselves).
        """
        with torch.no_grad():
            emb = self.embed(images, record_stem)
            x = apply_norm(self.norm_pre, emb.tokens)
        trace_blocks: dict[int, BlockTrace] = {}
        attentions: dict[int, torch.Tensor] = {}
        rows = None if all_rows else self.readout_rows
        for block in self.blocks:
            tracked = grad_from is not None and block.index >= grad_from
            last = block.index == self.depth - 1
            with torch.set_grad_enabled(tracked):
                x, block_trace, attn = block_forward(
                    block,
                    x,
                    track_attention=tracked,
                    rope=None if emb.rope is None else emb.rope.at(block.index),
                    rows=rows if last else None,
                )
            if record_from is not None and block.index >= record_from:
                trace_blocks[block.index] = block_trace
            if tracked:
                attentions[block.index] = attn
        pool_trace = None
        with torch.set_grad_enabled(grad_from is not None):
            final_tokens = apply_norm(self.final_norm, x)
            if self.distilled:
                pooled = torch.cat([final_tokens[:, 0], final_tokens[:, 1]], dim=1)
            elif self.global_pool == "token":
                pooled = final_tokens[:, 0]
            elif self.global_pool == "":
                pooled = final_tokens
            elif self.global_pool == "cls_mean":  # concat(CLS, mean of the patch tokens)
                pooled = torch.cat(
                    [final_tokens[:, 0], final_tokens[:, self.pool_start :].mean(dim=1)], dim=1
                )
            elif self.global_pool == "map":
                start = 0 if self.pool_include_prefix else self.num_prefix
                pooled, pool_trace = self.attn_pool.forward(final_tokens[:, start:])
            else:
                start = 0 if self.pool_include_prefix else self.num_prefix
                pooled = (
                    pool_tokens(final_tokens[:, start:], self.global_pool)
                    if self.global_pool in MAX_POOLS
                    else final_tokens[:, start:].mean(dim=1)
                )
            pooled = apply_norm(self.fc_norm, pooled)
            pool_out, z_pooler = pooled, None
            if self.pooler is not None:  # dense + activation (Hugging Face ViT/DeiT pooler)
                z_pooler, pooled = linear(pooled, self.pooler[0], self.pooler[1])
                pooled = self.pooler[2](pooled)
            if self.head_w is None:
                z_head, logits = None, pooled
            else:
                z_head, logits = linear(pooled, self.head_w, self.head_b)
        return Trace(
            logits=logits,
            final_tokens=final_tokens,
            rows=rows,
            pooled=pooled,
            z_head=z_head,
            grid=emb.grid,
            blocks=trace_blocks,
            attentions=attentions,
            embed_input=emb.padded if record_stem else None,
            stem=emb.stem if record_stem else None,
            patch_tokens=emb.patch_tokens if record_stem else None,
            prefixed_tokens=emb.prefixed_tokens if record_stem else None,
            pos_embed=emb.pos_embed if record_stem else None,
            first_tokens=emb.tokens if record_stem else None,
            pool=pool_trace,
            pool_out=pool_out,
            z_pooler=z_pooler,
        )


@dataclass
class Embedded:
    """The first block's input (before ``norm_pre``) and what full LRP needs from the embedding."""

    tokens: torch.Tensor
    grid: tuple[int, int]
    padded: torch.Tensor | None = None
    stem: StemTrace | None = None
    patch_tokens: torch.Tensor | None = None
    prefixed_tokens: torch.Tensor | None = None
    pos_embed: torch.Tensor | None = None
    rope: Rope | None = None
