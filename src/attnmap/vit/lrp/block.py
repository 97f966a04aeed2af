"""One transformer block read for LRP: its weights by role, and a recording forward.

A `BlockTwin` is the pre-norm block every supported family shares, written with optional parts:

    x → norm1 → [q k v] = n1·Wqkvᵀ + b → (q_norm, k_norm, RoPE on q, k) → A = softmax(s·qkᵀ + bias)
      → o = A·v → attn_norm → proj → ×γ₁ → + x = h
    h → norm2 → fc1 → act (Mlp) or value ⊙ act(gate) (GLU: SwiGLU, GluMlp, SwiGLUPacked)
      → mlp_norm → fc2 → ×γ₂ → + h

Readers for timm ``Block`` live here; Eva, BEiT and Hugging Face layers in `attnmap.vit.lrp.readers`.
The relevance rules (`attnmap.vit.lrp.relevance`): norms and activations identity, LayerScale γ
passes relevance through (an elementwise linear map: LRP-0 gives R unchanged), GLU product uniform
(half to each factor, AttnLRP), q/k transforms (qk_norm, RoPE) identity on the Q·Kᵀ path only the
full LRP ever takes; the relative position bias takes no relevance (as a bias in the z⁺ rule).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from timm.layers import activations as timm_act
from timm.layers.layer_scale import LayerScale
from timm.models.vision_transformer import Attention, Block, Mlp
from torch import nn

from attnmap.errors import UnsupportedModelError
from attnmap.vit.lrp.weight_cache import absolute_weight

# Elementwise activations without parameters: relevance passes through them unchanged.
_ACTIVATIONS: tuple[type, ...] = (
    nn.GELU,
    nn.ReLU,
    nn.SiLU,
    nn.Tanh,
    timm_act.GELU,
    timm_act.GELUTanh,
    timm_act.QuickGELU,
)
try:  # Hugging Face activations, when transformers is installed
    from transformers import activations as hf_act

    _ACTIVATIONS += tuple(
        getattr(hf_act, name)
        for name in (
            "GELUActivation",
            "NewGELUActivation",
            "QuickGELUActivation",
            "GELUTanh",
            "FastGELUActivation",
            "PytorchGELUTanh",
            "SiLUActivation",
        )
        if hasattr(hf_act, name)
    )
except ImportError:  # pragma: no cover
    pass

def is_norm(module: nn.Module) -> bool:
    """A normalisation layer (identity rule): LayerNorm, RMSNorm and their timm/HF variants."""
    name = type(module).__name__.lower()
    return isinstance(module, (nn.LayerNorm, nn.RMSNorm)) or name.endswith(("layernorm", "rmsnorm", "norm2d"))


def read_norm(module: nn.Module | None, name: str) -> nn.Module | None:
    """A normalisation layer (identity rule) or None for Identity; anything else has no rule here."""
    if module is None or isinstance(module, nn.Identity):
        return None
    if is_norm(module):
        return module
    raise UnsupportedModelError(
        f"{name} ({type(module).__name__}) has no LRP rule: expected LayerNorm, RMSNorm or Identity"
    )


def apply_norm(norm: nn.Module | None, x: torch.Tensor) -> torch.Tensor:
    if norm is None:
        return x
    if type(norm) is nn.LayerNorm:
        weight = norm.weight.detach() if norm.weight is not None else None
        bias = norm.bias.detach() if norm.bias is not None else None
        return F.layer_norm(x, norm.normalized_shape, weight, bias, norm.eps)
    return norm(x)


def read_activation(module: nn.Module, name: str) -> nn.Module:
    if not isinstance(module, _ACTIVATIONS):
        raise UnsupportedModelError(f"{name} ({type(module).__name__}) has no LRP rule")
    return module


def layer_scale(module: nn.Module | torch.Tensor | None, name: str) -> torch.Tensor | None:
    """γ of a LayerScale (timm module, timm Eva/BEiT parameter, HF ``lambda1``), or None."""
    if module is None or isinstance(module, nn.Identity):
        return None
    if isinstance(module, torch.Tensor):
        return module.detach()
    if isinstance(module, LayerScale) or type(module).__name__.endswith("LayerScale"):
        gamma = getattr(module, "gamma", None)
        gamma = getattr(module, "lambda1", None) if gamma is None else gamma
        if isinstance(gamma, torch.Tensor):
            return gamma.detach()
    raise UnsupportedModelError(f"{name} ({type(module).__name__}) has no LRP rule: expected a LayerScale")


def require_identity(module: nn.Module | None, name: str, what: str) -> None:
    if module is not None and not isinstance(module, (nn.Identity, nn.Dropout)):
        raise UnsupportedModelError(f"{name} ({type(module).__name__}): {what} has no LRP rule")


def weight_and_bias(linear: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    if not isinstance(linear, nn.Linear):
        raise UnsupportedModelError(f"{name} ({type(linear).__name__}) has no LRP rule: expected Linear")
    return linear.weight.detach(), None if linear.bias is None else linear.bias.detach()


@dataclass
class Rope:
    """Rotary embedding applied to q and k after the prefix tokens (timm Eva's layout).

    ``per_block``: ``embed`` holds one table per block along its first dimension (timm's mixed RoPE,
    whose frequencies are learned per block and head); `at` gives a block's own."""

    embed: torch.Tensor
    num_prefix_tokens: int
    half: bool
    per_block: bool = False

    def at(self, index: int) -> Rope:
        """The embedding block ``index`` applies."""
        if not self.per_block:
            return self
        return Rope(self.embed[index], self.num_prefix_tokens, self.half)

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        from timm.layers import apply_rot_embed_cat

        npt = self.num_prefix_tokens
        rotated = apply_rot_embed_cat(t[:, :, npt:, :], self.embed, half=self.half)
        return torch.cat([t[:, :, :npt, :], rotated], dim=2).type_as(t)


@dataclass
class BlockTwin:
    """One pre-norm block's weights by role (see the module docstring)."""

    index: int
    num_heads: int
    head_dim: int
    scale: float
    norm1: nn.Module | None
    norm2: nn.Module | None
    act: nn.Module
    weights: dict[str, torch.Tensor | None]
    linears: dict[str, torch.Tensor] = field(default_factory=dict)  # weights whose |W| may be cached
    q_norm: nn.Module | None = None
    k_norm: nn.Module | None = None
    attn_norm: nn.Module | None = None
    mlp_norm: nn.Module | None = None
    glu: bool = False  # fc1 rows are [value; gate], hidden = value ⊙ act(gate)
    rope: bool = False  # apply the context's RoPE to q and k
    attn_bias: Callable[[], torch.Tensor] | None = None  # relative position bias (H, N, N)

    def abs_weight(self, key: str) -> torch.Tensor:
        """|W| of linear ``key`` (qkv, proj, fc1, fc2), reused inside a `weight_cache` block."""
        weight = self.linears.get(key)
        return absolute_weight(weight) if weight is not None else self.weights[f"{key}_w"].abs()

    @property
    def transforms_qk(self) -> bool:
        return self.q_norm is not None or self.k_norm is not None or self.rope

    @classmethod
    def read(cls, block: nn.Module, index: int) -> BlockTwin:
        """timm ``vision_transformer.Block`` with Attention and Mlp / GluMlp / SwiGLU."""
        name = f"blocks.{index}"
        if not isinstance(block, Block) or type(block).forward is not Block.forward:
            raise UnsupportedModelError(
                f"{name} ({type(block).__name__}) has no LRP rule: only pre-norm blocks are supported"
            )
        attn = block.attn
        if type(attn) is not Attention:
            raise UnsupportedModelError(f"{name}.attn ({type(attn).__name__}) has no LRP rule")
        if getattr(attn, "gate", None) is not None:
            raise UnsupportedModelError(f"{name}.attn.gate: gated attention has no LRP rule")
        attn_norm = read_norm(getattr(attn, "norm", None), f"{name}.attn.norm")
        twin = cls.read_parts(block, index, attn_norm=attn_norm)
        read_mlp(twin, block.mlp, f"{name}.mlp")
        return twin

    @classmethod
    def read_parts(cls, block: nn.Module, index: int, **extra: object) -> BlockTwin:
        """The parts timm's pre-norm blocks share (``norm1``, ``attn.qkv``/``proj``/``q_norm``/
        ``k_norm``, ``ls1``, ``norm2``, ``ls2``), the MLP left to `read_mlp`; ``extra``: the fields
        a block kind adds (attention norm, relative position bias)."""
        name = f"blocks.{index}"
        attn = block.attn
        weights: dict[str, torch.Tensor | None] = {}
        weights["qkv_w"], weights["qkv_b"] = weight_and_bias(attn.qkv, f"{name}.attn.qkv")
        weights["proj_w"], weights["proj_b"] = weight_and_bias(attn.proj, f"{name}.attn.proj")
        weights["ls1"] = layer_scale(block.ls1, f"{name}.ls1")
        weights["ls2"] = layer_scale(block.ls2, f"{name}.ls2")
        return cls(
            index=index,
            num_heads=attn.num_heads,
            head_dim=attn.head_dim,
            scale=attn.scale,
            norm1=read_norm(block.norm1, f"{name}.norm1"),
            norm2=read_norm(block.norm2, f"{name}.norm2"),
            act=nn.Identity(),
            weights=weights,
            linears={"qkv": attn.qkv.weight, "proj": attn.proj.weight},
            q_norm=read_norm(attn.q_norm, f"{name}.attn.q_norm"),
            k_norm=read_norm(attn.k_norm, f"{name}.attn.k_norm"),
            **extra,
        )


def read_mlp(twin: BlockTwin, mlp: nn.Module, name: str) -> None:
    """Fill the MLP part of ``twin`` from timm Mlp, GluMlp (incl. SwiGLUPacked) or SwiGLU."""
    from timm.layers import GluMlp, SwiGLU

    kind = type(mlp)
    wt = twin.weights
    if kind is Mlp:
        wt["fc1_w"], wt["fc1_b"] = weight_and_bias(mlp.fc1, f"{name}.fc1")
        twin.linears["fc1"] = mlp.fc1.weight
    elif kind is GluMlp:
        weight, bias = weight_and_bias(mlp.fc1, f"{name}.fc1")
        if getattr(mlp, "chunk_dim", -1) not in (-1, 2):
            raise UnsupportedModelError(f"{name} (GluMlp with chunk_dim={mlp.chunk_dim}) has no LRP rule")
        first, second = weight.chunk(2, dim=0)
        b_first, b_second = (None, None) if bias is None else bias.chunk(2)
        if mlp.gate_last:  # x1 * act(x2): value first already
            wt["fc1_w"], wt["fc1_b"] = weight, bias
            twin.linears["fc1"] = mlp.fc1.weight
        else:  # act(x1) * x2
            wt["fc1_w"] = torch.cat([second, first])
            wt["fc1_b"] = None if bias is None else torch.cat([b_second, b_first])
        twin.glu = True
    elif kind is SwiGLU:
        w_x, b_x = weight_and_bias(mlp.fc1_x, f"{name}.fc1_x")
        w_g, b_g = weight_and_bias(mlp.fc1_g, f"{name}.fc1_g")
        wt["fc1_w"] = torch.cat([w_x, w_g])
        wt["fc1_b"] = (
            None
            if b_x is None and b_g is None
            else torch.cat(
                [
                    b_x if b_x is not None else torch.zeros_like(w_x[:, 0]),
                    b_g if b_g is not None else torch.zeros_like(w_g[:, 0]),
                ]
            )
        )
        twin.glu = True
    else:
        raise UnsupportedModelError(
            f"{name} ({type(mlp).__name__}) has no LRP rule: expected timm Mlp, GluMlp, SwiGLU(Packed)"
        )
    if not isinstance(mlp.fc2, nn.Linear):
        raise UnsupportedModelError(f"{name} uses convolutions (use_conv=True): no LRP rule")
    wt["fc2_w"], wt["fc2_b"] = weight_and_bias(mlp.fc2, f"{name}.fc2")
    twin.linears["fc2"] = mlp.fc2.weight
    twin.act = read_activation(mlp.act, f"{name}.act")
    twin.mlp_norm = read_norm(getattr(mlp, "norm", None), f"{name}.norm")


@dataclass
class BlockTrace:
    """Tensors kept from one block's forward (B batch, N tokens, D width, H heads, d head width).

    Only what cannot be recomputed cheaply is kept; the rest is derived on demand by the methods
    below, so a relevance pass holds about as much memory as an ordinary backward pass. Linear
    outputs are kept with their bias (the z⁺ rule subtracts it inside its own pass), and the block's
    two sums ``h`` and ``out`` are the forward's own tensors (``out`` is the next block's input), so
    the add rules divide by them without recomputing them.
    """

    x: torch.Tensor  # block input (B, N, D)
    n1: torch.Tensor  # norm1 output
    qkv: torch.Tensor  # qkv output with bias (B, N, 3D)
    attn: torch.Tensor  # softmax output A (B, H, N, N)
    o: torch.Tensor  # A·V with heads merged (B, N, D); from here on (B, rows, ·) for a block run on ``rows``
    y_proj: torch.Tensor  # proj output with bias
    h: torch.Tensor  # x + attention branch
    n2: torch.Tensor
    pre_act: torch.Tensor  # fc1 output with bias (B, N, hidden) ([value; gate] for GLU)
    hidden: torch.Tensor  # activation output (GLU: value ⊙ act(gate))
    y_fc2: torch.Tensor  # fc2 output with bias
    out: torch.Tensor  # h + MLP branch: the block's output
    qk: tuple[torch.Tensor, torch.Tensor] | None = None  # q, k after qk_norm / RoPE, when present
    o_in: torch.Tensor | None = None  # proj input when an attention norm sits between
    hidden_in: torch.Tensor | None = None  # fc2 input when an MLP norm sits between
    scaled_scores: torch.Tensor | None = None  # (q·scale)·kᵀ (B, H, N, N) when it is the whole logit

    def heads(self, block: BlockTwin) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as (B, H, N, d) views (q, k as they enter the scores)."""
        batch, tokens, _ = self.qkv.shape
        qkv = self.qkv.view(batch, tokens, 3, block.num_heads, block.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.qk is not None:
            q, k = self.qk
        return q, k, v

    def proj_input(self) -> torch.Tensor:
        return self.o if self.o_in is None else self.o_in

    def fc2_input(self) -> torch.Tensor:
        return self.hidden if self.hidden_in is None else self.hidden_in

    def attn_out(self, block: BlockTwin) -> torch.Tensor:
        """The attention branch as added to the residual (bias and layer scale included)."""
        gamma = block.weights["ls1"]
        return self.y_proj if gamma is None else self.y_proj * gamma

    def mlp_out(self, block: BlockTwin) -> torch.Tensor:
        gamma = block.weights["ls2"]
        return self.y_fc2 if gamma is None else self.y_fc2 * gamma


def linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x Wᵀ, x Wᵀ + b): the pre-bias output is what the z⁺ rule needs."""
    z = x @ weight.T
    return z, (z if bias is None else z + bias)


def _scaled(y: torch.Tensor, gamma: torch.Tensor | None) -> torch.Tensor:
    return y if gamma is None else y * gamma


def block_forward(
    block: BlockTwin,
    x: torch.Tensor,
    track_attention: bool,
    rope: Rope | None = None,
    rows: int | None = None,
) -> tuple[torch.Tensor, BlockTrace, torch.Tensor]:
    """One block; with ``track_attention`` the attention becomes a grad leaf (when no graph exists yet).

    Returns (output, trace, attention). Grad mode is the caller's. Same operations, in the same
    order, as the derived quantities of `BlockTrace`, so recomputing them is exact. Every Linear
    runs with its bias in one call (as the model's own ``nn.Linear`` does).

    ``rows``: only the first ``rows`` tokens of the output are wanted (the last block before a
    class-token read-out). q, k, v and the attention matrix still cover every token, since the
    wanted rows attend to all of them; A·V, proj, the MLP and both sums run on those rows alone,
    and the trace holds them at that length.
    """
    wt = block.weights
    batch, tokens, _ = x.shape
    n1 = apply_norm(block.norm1, x)
    qkv = F.linear(n1, wt["qkv_w"], wt["qkv_b"])
    q, k, v = qkv.view(batch, tokens, 3, block.num_heads, block.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
    qk = None
    if block.transforms_qk:
        q, k = apply_norm(block.q_norm, q), apply_norm(block.k_norm, k)
        if block.rope and rope is not None:
            q, k = rope.apply(q), rope.apply(k)
        qk = (q, k)
    logits = (q * block.scale) @ k.transpose(-1, -2)  # the scaled q is also the contiguous operand
    # kept for the Q·Kᵀ rule, which would otherwise multiply q and k again
    scaled_scores = logits.detach() if block.attn_bias is None else None
    if block.attn_bias is not None:
        logits = logits + block.attn_bias()
    attn = logits.softmax(dim=-1)
    if track_attention and not attn.requires_grad:
        attn = attn.detach().requires_grad_(True)
    wanted = attn if rows is None else attn[:, :, :rows]
    o = (wanted @ v).transpose(1, 2).reshape(batch, wanted.shape[2], -1)
    o_in = None if block.attn_norm is None else apply_norm(block.attn_norm, o)
    y_proj = F.linear(o if o_in is None else o_in, wt["proj_w"], wt["proj_b"])
    h = (x if rows is None else x[:, :rows]) + _scaled(y_proj, wt["ls1"])
    n2 = apply_norm(block.norm2, h)
    pre_act = F.linear(n2, wt["fc1_w"], wt["fc1_b"])
    if block.glu:
        value, gate = pre_act.chunk(2, dim=-1)
        hidden = value * block.act(gate)
    else:
        hidden = block.act(pre_act)
    hidden_in = None if block.mlp_norm is None else apply_norm(block.mlp_norm, hidden)
    y_fc2 = F.linear(hidden if hidden_in is None else hidden_in, wt["fc2_w"], wt["fc2_b"])
    out = h + _scaled(y_fc2, wt["ls2"])
    trace = BlockTrace(
        x, n1, qkv, attn, o, y_proj, h, n2, pre_act, hidden, y_fc2, out, qk, o_in, hidden_in, scaled_scores
    )
    return out, trace, attn
