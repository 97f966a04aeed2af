"""An LRP twin of the user's timm VisionTransformer: its structure, validated, and a recording forward.

Relevance propagation needs tensors the model's own forward never keeps (pre-bias outputs, the
attention matrix that fused attention never materialises). The twin reads the user's modules and
weights (detached, never modified), refuses any layer without an LRP rule with an
`UnsupportedModelError` naming it, and runs a functional forward in eval semantics that records
exactly what the relevance pass needs, only for the blocks it will reach. `attnmap.vit.lrp.check`
compares its output with the model's own forward, so a twin that drifts from the model fails loudly.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed, resample_abs_pos_embed
from timm.layers.layer_scale import LayerScale
from timm.models.vision_transformer import Attention, Block, Mlp, VisionTransformer
from torch import nn

from attnmap.errors import InputError, UnsupportedModelError
from attnmap.vit.lrp.stem import StemConv, StemTrace, read_stem, stem_forward

_ACTIVATIONS = (nn.GELU, nn.ReLU)

# |W| of every Linear the z⁺ rule went through, per weight tensor. Computing |W| costs about as much
# as the forward matmul at batch 1 (it reads and writes all weights), so it is kept while the model
# lives: one extra copy of the block weights. A changed tensor (in-place update, new dtype/device/data)
# is detected by its version counter and data pointer and recomputed.
_ABS_WEIGHTS: dict[int, tuple[weakref.ref, tuple, torch.Tensor]] = {}


def absolute_weight(weight: torch.Tensor) -> torch.Tensor:
    """|weight|, cached per tensor state (see ``_ABS_WEIGHTS``); dropped when the tensor dies."""
    state = (weight._version, weight.data_ptr(), weight.dtype, weight.device, tuple(weight.shape))
    key = id(weight)
    cached = _ABS_WEIGHTS.get(key)
    if cached is not None and cached[0]() is weight and cached[1] == state:
        return cached[2]
    with torch.no_grad():
        result = weight.detach().abs()
    if cached is None or cached[0]() is not weight:
        weakref.finalize(weight, _ABS_WEIGHTS.pop, key, None)
    _ABS_WEIGHTS[key] = (weakref.ref(weight), state, result)
    return result


def _norm(module: nn.Module, name: str) -> nn.LayerNorm | None:
    """A LayerNorm (identity rule) or None for Identity; anything else has no rule here."""
    if isinstance(module, nn.Identity):
        return None
    if isinstance(module, nn.LayerNorm):
        return module
    raise UnsupportedModelError(f"{name} ({type(module).__name__}) has no LRP rule: expected LayerNorm or Identity")


def _apply_norm(norm: nn.LayerNorm | None, x: torch.Tensor) -> torch.Tensor:
    if norm is None:
        return x
    weight = norm.weight.detach() if norm.weight is not None else None
    bias = norm.bias.detach() if norm.bias is not None else None
    return F.layer_norm(x, norm.normalized_shape, weight, bias, norm.eps)


def _layer_scale(module: nn.Module, name: str) -> torch.Tensor | None:
    if isinstance(module, nn.Identity):
        return None
    if type(module) is LayerScale:
        return module.gamma.detach()
    raise UnsupportedModelError(f"{name} ({type(module).__name__}) has no LRP rule: expected LayerScale or Identity")


def _require_identity(module: nn.Module | None, name: str, what: str) -> None:
    if module is not None and not isinstance(module, nn.Identity):
        raise UnsupportedModelError(f"{name} ({type(module).__name__}): {what} has no LRP rule")


@dataclass
class BlockTwin:
    """One pre-norm timm Block: weights detached, norms kept as modules (their own eps)."""

    index: int
    num_heads: int
    head_dim: int
    scale: float
    norm1: nn.LayerNorm | None
    norm2: nn.LayerNorm | None
    act: nn.Module
    weights: dict[str, torch.Tensor | None]
    linears: dict[str, nn.Linear]

    def abs_weight(self, key: str) -> torch.Tensor:
        """|W| of linear ``key`` (qkv, proj, fc1, fc2), cached while the model lives."""
        return absolute_weight(self.linears[key].weight)

    @classmethod
    def read(cls, block: nn.Module, index: int) -> BlockTwin:
        name = f"blocks.{index}"
        if not isinstance(block, Block) or type(block).forward is not Block.forward:
            raise UnsupportedModelError(
                f"{name} ({type(block).__name__}) has no LRP rule: only timm's pre-norm Block is supported"
            )
        attn, mlp = block.attn, block.mlp
        if type(attn) is not Attention:
            raise UnsupportedModelError(f"{name}.attn ({type(attn).__name__}) has no LRP rule")
        _require_identity(attn.q_norm, f"{name}.attn.q_norm", "qk_norm")
        _require_identity(attn.k_norm, f"{name}.attn.k_norm", "qk_norm")
        _require_identity(getattr(attn, "norm", None), f"{name}.attn.norm", "attention output norm")
        if getattr(attn, "gate", None) is not None:
            raise UnsupportedModelError(f"{name}.attn.gate: gated attention has no LRP rule")
        if type(mlp) is not Mlp:
            raise UnsupportedModelError(f"{name}.mlp ({type(mlp).__name__}) has no LRP rule: expected timm Mlp")
        if not isinstance(mlp.fc1, nn.Linear) or not isinstance(mlp.fc2, nn.Linear):
            raise UnsupportedModelError(f"{name}.mlp uses convolutions (use_conv=True): no LRP rule")
        _require_identity(mlp.norm, f"{name}.mlp.norm", "MLP hidden norm")
        if not isinstance(mlp.act, _ACTIVATIONS):
            raise UnsupportedModelError(f"{name}.mlp.act ({type(mlp.act).__name__}) has no LRP rule")

        def w(linear: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
            return linear.weight.detach(), None if linear.bias is None else linear.bias.detach()

        weights: dict[str, torch.Tensor | None] = {}
        for key, linear in (("qkv", attn.qkv), ("proj", attn.proj), ("fc1", mlp.fc1), ("fc2", mlp.fc2)):
            weights[f"{key}_w"], weights[f"{key}_b"] = w(linear)
        weights["ls1"] = _layer_scale(block.ls1, f"{name}.ls1")
        weights["ls2"] = _layer_scale(block.ls2, f"{name}.ls2")
        return cls(
            index=index,
            num_heads=attn.num_heads,
            head_dim=attn.head_dim,
            scale=attn.scale,
            norm1=_norm(block.norm1, f"{name}.norm1"),
            norm2=_norm(block.norm2, f"{name}.norm2"),
            act=mlp.act,
            weights=weights,
            linears={"qkv": attn.qkv, "proj": attn.proj, "fc1": mlp.fc1, "fc2": mlp.fc2},
        )


@dataclass
class BlockTrace:
    """Tensors of one block's forward that its relevance rules read (B = batch, N = tokens)."""

    x: torch.Tensor  # block input (B, N, D)
    n1: torch.Tensor  # norm1 output
    z_qkv: torch.Tensor  # qkv pre-bias (B, N, 3D)
    q: torch.Tensor  # (B, H, N, d)
    k: torch.Tensor
    v: torch.Tensor
    scores: torch.Tensor  # Q Kᵀ without the scale (B, H, N, N)
    attn: torch.Tensor  # softmax output A (B, H, N, N)
    o_heads: torch.Tensor  # A V (B, H, N, d)
    o: torch.Tensor  # heads merged (B, N, D)
    z_proj: torch.Tensor
    attn_out: torch.Tensor  # after layer scale
    h: torch.Tensor  # x + attn_out
    n2: torch.Tensor
    z_fc1: torch.Tensor
    hidden: torch.Tensor  # activation output
    z_fc2: torch.Tensor
    mlp_out: torch.Tensor  # after layer scale


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    z = x @ weight.T
    return z, (z if bias is None else z + bias)


def block_forward(
    block: BlockTwin, x: torch.Tensor, track_attention: bool
) -> tuple[torch.Tensor, BlockTrace, torch.Tensor]:
    """One block; with ``track_attention`` the attention becomes a grad leaf (when no graph exists yet).

    Returns (output, trace, attention). Grad mode is the caller's.
    """
    wt = block.weights
    batch, tokens, dim = x.shape
    n1 = _apply_norm(block.norm1, x)
    z_qkv, qkv = _linear(n1, wt["qkv_w"], wt["qkv_b"])
    qkv = qkv.reshape(batch, tokens, 3, block.num_heads, block.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    scores = q @ k.transpose(-1, -2)
    attn = (scores * block.scale).softmax(dim=-1)
    if track_attention and not attn.requires_grad:
        attn = attn.detach().requires_grad_(True)
    o_heads = attn @ v
    o = o_heads.transpose(1, 2).reshape(batch, tokens, -1)
    z_proj, attn_out = _linear(o, wt["proj_w"], wt["proj_b"])
    if wt["ls1"] is not None:
        attn_out = attn_out * wt["ls1"]
    h = x + attn_out
    n2 = _apply_norm(block.norm2, h)
    z_fc1, pre_act = _linear(n2, wt["fc1_w"], wt["fc1_b"])
    hidden = block.act(pre_act)
    z_fc2, mlp_out = _linear(hidden, wt["fc2_w"], wt["fc2_b"])
    if wt["ls2"] is not None:
        mlp_out = mlp_out * wt["ls2"]
    out = h + mlp_out
    trace = BlockTrace(x, n1, z_qkv, q, k, v, scores, attn, o_heads, o, z_proj, attn_out, h, n2, z_fc1,
                       hidden, z_fc2, mlp_out)
    return out, trace, attn


@dataclass
class Trace:
    """Everything one twin forward recorded."""

    logits: torch.Tensor
    final_tokens: torch.Tensor  # output of the final norm (B, N, D), what model.norm returns
    pooled: torch.Tensor  # head input (B, D) or (B, 2D) for distilled models
    z_head: torch.Tensor  # head pre-bias output
    grid: tuple[int, int]
    blocks: dict[int, BlockTrace] = field(default_factory=dict)
    attentions: dict[int, torch.Tensor] = field(default_factory=dict)
    embed_input: torch.Tensor | None = None  # image after dynamic padding
    stem: StemTrace | None = None
    patch_tokens: torch.Tensor | None = None  # (B, P, D) before prefix tokens / pos_embed
    prefixed_tokens: torch.Tensor | None = None  # summand 0 of the pos_embed add
    pos_embed: torch.Tensor | None = None  # summand 1 (1, N', D)


class ViTTwin:
    """The user's VisionTransformer read into plain tensors; see the module docstring."""

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, VisionTransformer):
            raise UnsupportedModelError(
                f"LRP methods need a timm VisionTransformer (or DeiT), got {type(model).__name__}"
            )
        if getattr(model, "attn_pool", None) is not None:
            raise UnsupportedModelError(f"attn_pool ({type(model.attn_pool).__name__}) has no LRP rule")
        self.global_pool = model.global_pool
        if self.global_pool not in ("token", "avg"):
            raise UnsupportedModelError(
                f"global_pool={self.global_pool!r} has no LRP rule: supported are 'token' and 'avg'"
            )
        self.pool_include_prefix = bool(getattr(model, "pool_include_prefix", False))
        patch_embed = model.patch_embed
        if not isinstance(patch_embed, PatchEmbed) or type(patch_embed).forward is not PatchEmbed.forward:
            raise UnsupportedModelError(f"patch_embed ({type(patch_embed).__name__}) has no LRP rule")
        self.stem: list[StemConv] = read_stem(patch_embed.proj)
        self.patch_embed = patch_embed
        self.embed_norm = _norm(patch_embed.norm, "patch_embed.norm")
        self.norm_pre = _norm(model.norm_pre, "norm_pre")
        self.final_norm = _norm(model.norm, "norm")
        self.fc_norm = _norm(model.fc_norm, "fc_norm")
        self.model = model
        self.num_prefix = model.num_prefix_tokens
        self.distilled = hasattr(model, "head_dist")
        heads = [model.head] + ([model.head_dist] if self.distilled else [])
        for head_name, head in zip(("head", "head_dist"), heads, strict=False):
            if not isinstance(head, nn.Linear):
                raise UnsupportedModelError(
                    f"{head_name} ({type(head).__name__}) has no LRP rule: the model needs a Linear classifier "
                    "(num_classes > 0)"
                )
        if self.distilled:  # logits = (head(x_cls) + head_dist(x_dist)) / 2: one Linear on [x_cls, x_dist]
            self.head_w = torch.cat([model.head.weight.detach(), model.head_dist.weight.detach()], dim=1) / 2
            self.head_b = (model.head.bias.detach() + model.head_dist.bias.detach()) / 2
        else:
            self.head_w = model.head.weight.detach()
            self.head_b = None if model.head.bias is None else model.head.bias.detach()
        self.blocks = [BlockTwin.read(block, i) for i, block in enumerate(model.blocks)]
        if not self.blocks:
            raise UnsupportedModelError("the model has no transformer blocks")

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def _patch_grid(self, images: torch.Tensor) -> torch.Tensor:
        """Dynamic padding as timm does it; size checks as the model would (as InputError)."""
        pe = self.patch_embed
        height, width = images.shape[-2:]
        ph, pw = pe.patch_size
        if pe.img_size is not None and pe.strict_img_size and (height, width) != tuple(pe.img_size):
            raise InputError(f"image size {height}x{width} does not match the model's img_size {tuple(pe.img_size)}")
        if pe.dynamic_img_pad:
            return F.pad(images, (0, (pw - width % pw) % pw, 0, (ph - height % ph) % ph))
        if height % ph or width % pw:
            raise InputError(f"image size {height}x{width} is not a multiple of the patch size {pe.patch_size}")
        return images

    def _positions(self, patches: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor | None:
        model = self.model
        if model.pos_embed is None:
            return None
        pos = model.pos_embed.detach()
        if model.dynamic_img_size:
            prefix = 0 if model.no_embed_class else self.num_prefix
            pos = resample_abs_pos_embed(pos, new_size=grid, old_size=self.patch_embed.grid_size, num_prefix_tokens=prefix)
        elif pos.shape[1] != patches.shape[1] + (0 if model.no_embed_class else self.num_prefix):
            raise InputError(
                f"image gives a {grid[0]}x{grid[1]} patch grid but the model's pos_embed is for "
                f"{tuple(self.patch_embed.grid_size)} (build it with dynamic_img_size=True for other sizes)"
            )
        return pos

    def forward(
        self, images: torch.Tensor, record_from: int | None, grad_from: int | None, record_stem: bool = False
    ) -> Trace:
        """Functional forward in eval semantics.

        ``record_from``: first block whose tensors are kept (None: none). ``grad_from``: first block whose
        attention becomes a grad leaf; from there on an autograd graph is built (None: no graph at all),
        so `torch.autograd.grad` can reach every later attention without any parameter gradient.
        """
        model = self.model
        with torch.no_grad():
            padded = self._patch_grid(images)
            embedded, stem_trace = stem_forward(self.stem, padded, record=record_stem)
            grid = (embedded.shape[-2], embedded.shape[-1])
            patches = _apply_norm(self.embed_norm, embedded.flatten(2).transpose(1, 2))
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
            x = _apply_norm(self.norm_pre, x)
        trace_blocks: dict[int, BlockTrace] = {}
        attentions: dict[int, torch.Tensor] = {}
        for block in self.blocks:
            tracked = grad_from is not None and block.index >= grad_from
            with torch.set_grad_enabled(tracked):
                x, block_trace, attn = block_forward(block, x, track_attention=tracked)
            if record_from is not None and block.index >= record_from:
                trace_blocks[block.index] = block_trace
            if tracked:
                attentions[block.index] = attn
        with torch.set_grad_enabled(grad_from is not None):
            final_tokens = _apply_norm(self.final_norm, x)
            if self.distilled:
                pooled = torch.cat([final_tokens[:, 0], final_tokens[:, 1]], dim=1)
            elif self.global_pool == "token":
                pooled = final_tokens[:, 0]
            else:
                start = 0 if self.pool_include_prefix else self.num_prefix
                pooled = final_tokens[:, start:].mean(dim=1)
            pooled = _apply_norm(self.fc_norm, pooled)
            z_head, logits = _linear(pooled, self.head_w, self.head_b)
        return Trace(
            logits=logits,
            final_tokens=final_tokens,
            pooled=pooled,
            z_head=z_head,
            grid=grid,
            blocks=trace_blocks,
            attentions=attentions,
            embed_input=padded if record_stem else None,
            stem=stem_trace if record_stem else None,
            patch_tokens=patches if record_stem else None,
            prefixed_tokens=summand0 if record_stem else None,
            pos_embed=pos if record_stem else None,
        )
