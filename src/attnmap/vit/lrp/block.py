"""One timm ``Block`` read for LRP: validated structure, detached weights, and a recording forward.

The block is timm's pre-norm Block with standard Attention and Mlp; everything else (qk_norm,
gated attention, SwiGLU, post-norm blocks...) raises `UnsupportedModelError` naming the layer,
because no relevance rule here covers it. Layer scale is supported (an elementwise product).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import activations as timm_act
from timm.layers.layer_scale import LayerScale
from timm.models.vision_transformer import Attention, Block, Mlp
from torch import nn

from attnmap.errors import UnsupportedModelError

# Elementwise activations without parameters: relevance passes through them unchanged.
_ACTIVATIONS = (nn.GELU, nn.ReLU, nn.SiLU, timm_act.GELU, timm_act.GELUTanh, timm_act.QuickGELU)

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


def read_norm(module: nn.Module, name: str) -> nn.LayerNorm | None:
    """A LayerNorm (identity rule) or None for Identity; anything else has no rule here."""
    if isinstance(module, nn.Identity):
        return None
    if isinstance(module, nn.LayerNorm):
        return module
    raise UnsupportedModelError(
        f"{name} ({type(module).__name__}) has no LRP rule: expected LayerNorm or Identity"
    )


def apply_norm(norm: nn.LayerNorm | None, x: torch.Tensor) -> torch.Tensor:
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
    raise UnsupportedModelError(
        f"{name} ({type(module).__name__}) has no LRP rule: expected LayerScale or Identity"
    )


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
            raise UnsupportedModelError(
                f"{name}.mlp ({type(mlp).__name__}) has no LRP rule: expected timm Mlp"
            )
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
            norm1=read_norm(block.norm1, f"{name}.norm1"),
            norm2=read_norm(block.norm2, f"{name}.norm2"),
            act=mlp.act,
            weights=weights,
            linears={"qkv": attn.qkv, "proj": attn.proj, "fc1": mlp.fc1, "fc2": mlp.fc2},
        )


@dataclass
class BlockTrace:
    """Tensors kept from one block's forward (B batch, N tokens, D width, H heads, d head width).

    Only what cannot be recomputed cheaply is kept; the rest is derived on demand by the methods
    below, so a relevance pass holds about as much memory as an ordinary backward pass.
    """

    x: torch.Tensor  # block input (B, N, D)
    n1: torch.Tensor  # norm1 output
    qkv: torch.Tensor  # qkv output with bias (B, N, 3D)
    attn: torch.Tensor  # softmax output A (B, H, N, N)
    o: torch.Tensor  # A·V with heads merged (B, N, D)
    z_proj: torch.Tensor  # proj pre-bias
    h: torch.Tensor  # x + attention branch
    n2: torch.Tensor
    pre_act: torch.Tensor  # fc1 output with bias (B, N, hidden)
    hidden: torch.Tensor  # activation output
    z_fc2: torch.Tensor  # fc2 pre-bias

    def heads(self, block: BlockTwin) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as (B, H, N, d) views."""
        batch, tokens, _ = self.qkv.shape
        qkv = self.qkv.reshape(batch, tokens, 3, block.num_heads, block.head_dim).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)

    def o_heads(self, block: BlockTwin) -> torch.Tensor:
        batch, tokens, _ = self.o.shape
        return self.o.view(batch, tokens, block.num_heads, block.head_dim).transpose(1, 2)

    def attn_out(self, block: BlockTwin) -> torch.Tensor:
        """The attention branch as added to the residual (bias and layer scale included)."""
        return _branch(self.z_proj, block.weights["proj_b"], block.weights["ls1"])

    def mlp_out(self, block: BlockTwin) -> torch.Tensor:
        return _branch(self.z_fc2, block.weights["fc2_b"], block.weights["ls2"])


def _branch(z: torch.Tensor, bias: torch.Tensor | None, gamma: torch.Tensor | None) -> torch.Tensor:
    out = z if bias is None else z + bias
    return out if gamma is None else out * gamma


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x Wᵀ, x Wᵀ + b): the pre-bias output is what the z⁺ rule needs."""
    z = x @ weight.T
    return z, (z if bias is None else z + bias)


def block_forward(
    block: BlockTwin, x: torch.Tensor, track_attention: bool
) -> tuple[torch.Tensor, BlockTrace, torch.Tensor]:
    """One block; with ``track_attention`` the attention becomes a grad leaf (when no graph exists yet).

    Returns (output, trace, attention). Grad mode is the caller's. Same operations, in the same
    order, as the derived quantities of `BlockTrace`, so recomputing them is exact.
    """
    wt = block.weights
    batch, tokens, _ = x.shape
    n1 = apply_norm(block.norm1, x)
    _, qkv = linear(n1, wt["qkv_w"], wt["qkv_b"])
    q, k, v = qkv.reshape(batch, tokens, 3, block.num_heads, block.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    attn = ((q @ k.transpose(-1, -2)) * block.scale).softmax(dim=-1)
    if track_attention and not attn.requires_grad:
        attn = attn.detach().requires_grad_(True)
    o = (attn @ v).transpose(1, 2).reshape(batch, tokens, -1)
    z_proj, _ = linear(o, wt["proj_w"], None)
    h = x + _branch(z_proj, wt["proj_b"], wt["ls1"])
    n2 = apply_norm(block.norm2, h)
    _, pre_act = linear(n2, wt["fc1_w"], wt["fc1_b"])
    hidden = block.act(pre_act)
    z_fc2, _ = linear(hidden, wt["fc2_w"], None)
    out = h + _branch(z_fc2, wt["fc2_b"], wt["ls2"])
    return out, BlockTrace(x, n1, qkv, attn, o, z_proj, h, n2, pre_act, hidden, z_fc2), attn
