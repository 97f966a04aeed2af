"""LRP twins of the other families: timm Eva (RoPE), Beit and VisionTransformerRelPos (relative
position bias), Hugging Face ViT, DeiT, DINOv2 (with registers), CLIP vision, SigLIP vision and BEiT.

Modules are read by role, not by name (transformers renames them between versions): the trunk is
the module holding ``embeddings`` and the ModuleList of ``num_hidden_layers`` layers; inside a layer
the Linear layers are told apart by their name's last part (q/k/v projections, attention output,
MLP in/out, GLU gate/up/down), the first norm is the pre-attention norm, the second the pre-MLP
norm. The embedding runs the model's own module (positions, interpolation, tokens); full LRP
splits each patch token into its patch-embedding part (from the patch convolution, zᴮ/z⁺ to the
pixels) and everything else the model added (positions), by the add rule. Whatever the reader gets
wrong, `attnmap.vit.lrp.check` catches: the twin's output must equal the model's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from attnmap.errors import UnsupportedModelError
from attnmap.vit.lrp.block import (
    BlockTwin,
    Rope,
    layer_scale,
    read_mlp,
    read_norm,
    weight_and_bias,
)
from attnmap.vit.lrp.pool import PoolTwin
from attnmap.vit.lrp.stem import read_stem, stem_forward
from attnmap.vit.lrp.twin import Embedded, ViTTwin, check_pool, linear_head, pad_to_patches


def build_twin(model: nn.Module) -> ViTTwin:
    """The LRP twin of any supported model, or `UnsupportedModelError` naming what is not covered."""
    from timm.models.vision_transformer import VisionTransformer

    if isinstance(model, VisionTransformer):
        return ViTTwin(model)
    module = type(model).__module__
    if module.startswith("timm.models.eva") and type(model).__name__ == "Eva":
        return EvaTwin(model)
    if module.startswith("timm.models.beit") and type(model).__name__ == "Beit":
        return BeitTwin(model)
    if module.startswith("timm.models.vision_transformer_relpos"):
        return RelPosTwin(model)
    from attnmap.vit.adapters_hf import is_hf_vision_model

    if is_hf_vision_model(model):
        from attnmap.vit.lrp.readers_hf import HFTwin  # imports this module: import here

        return HFTwin(model)
    raise UnsupportedModelError(
        f"LRP methods need a timm VisionTransformer/VisionTransformerRelPos/Eva/Beit or a Hugging Face "
        f"ViT-family model, got {type(model).__name__}{_readable_part(model)}"
    )


def _readable_part(model: nn.Module) -> str:
    """Where in ``model`` LRP runs (its vision tower, the transformer it wraps); else the part the
    attention methods read, said to be theirs only. Why: a Qwen3-VL / DeepSeek tower classifier's
    LRP refusal sent the user to model.encoder, whose LRP is refused in turn."""
    from attnmap.vit.adapters import explains
    from attnmap.vit.unsupported import part_hint, vision_tower_hint

    hint = vision_tower_hint(model, _has_twin) or part_hint(model, _has_twin)[1]
    if hint:
        return hint
    hint = vision_tower_hint(model, explains) or part_hint(model, explains)[1]
    return f"{hint} (attention methods only: it has no LRP rule)" if hint else ""


def _has_twin(module: nn.Module) -> bool:
    try:
        build_twin(module)
    except UnsupportedModelError:
        return False
    return True


def _repeat_heads(
    weight: torch.Tensor, bias: torch.Tensor | None, head_dim: int, groups: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A k or v projection of grouped-query attention as one of full multi-head attention: each kv
    head's rows repeated for the ``groups`` q heads that read it (head h reads kv head h // groups,
    timm's repeat_interleave). Its outputs are copies, so LRP through the copies sums their relevance
    at the shared rows, which is the rule of the copy itself (a linear map: LRP-0 passes R back)."""
    rows = weight.reshape(-1, head_dim, weight.shape[-1]).repeat_interleave(groups, dim=0)
    if bias is not None:
        bias = bias.reshape(-1, head_dim).repeat_interleave(groups, dim=0).reshape(-1)
    return rows.reshape(-1, weight.shape[-1]), bias


def _concat_qkv(
    parts: list[tuple[torch.Tensor, torch.Tensor | None]],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight = torch.cat([w for w, _ in parts])
    if all(b is None for _, b in parts):
        return weight, None
    return weight, torch.cat([b if b is not None else torch.zeros_like(w[:, 0]) for w, b in parts])


class GenericTwin(ViTTwin):
    """Shared set-up of the non-timm-ViT twins (generic embedding relevance)."""

    def _setup(self, model: nn.Module, patch_conv: nn.Module, num_prefix: int) -> None:
        self.model = model
        self.exact_embedding = False
        self.attn_pool = None
        self.pooler = None
        self.pool_include_prefix = False
        self.num_prefix = num_prefix
        self.pool_start = num_prefix
        self.distilled = False
        self.head_w = None
        self.head_b = None
        self.norm_pre = None
        self.fc_norm = None
        self.final_norm = None
        self.stem = read_stem(patch_conv, "patch embedding")
        reference = next(model.parameters())
        self.dtype, self.device = reference.dtype, reference.device

    def _read_timm_output(self, model: nn.Module) -> None:
        """Final norm, pooling (an attention-pool head as "map") and head of a timm model."""
        self.final_norm = read_norm(model.norm, "norm")
        self.fc_norm = read_norm(model.fc_norm, "fc_norm")
        if getattr(model, "attn_pool", None) is not None:
            self.attn_pool = PoolTwin.read_timm(model.attn_pool)
            self.global_pool = "map"
        else:
            self.global_pool = model.global_pool
        check_pool(self.global_pool)
        self._set_head(model.head, "head")

    def _set_head(self, head: nn.Module | None, name: str) -> None:
        head = None if head is None else linear_head(head)
        if head is None or isinstance(head, nn.Identity):
            return
        self.head_w, self.head_b = weight_and_bias(head, name)

    def _finish(self) -> None:
        self.classifier = self.head_w is not None and self.global_pool != "" and not self.projection
        if not self.blocks:
            raise UnsupportedModelError("the model has no transformer blocks")

    projection = False
    prefix_params: tuple[torch.Tensor | None, ...] = ()  # raw prefix token values before positions

    def raw_prefix(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, prefix, D): the prefix tokens' own values (class/distillation token parameters where
        known, else the token as it enters, i.e. nothing added)."""
        rows = tokens[:, : self.num_prefix].clone()
        for index, param in enumerate(self.prefix_params[: self.num_prefix]):
            if param is not None:
                rows[:, index] = param.detach().reshape(-1).to(rows.dtype)
        return rows

    def embed_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, Rope | None]:
        raise NotImplementedError

    def embed(self, images: torch.Tensor, record_stem: bool) -> Embedded:
        tokens, rope = self.embed_tokens(images)
        # the model's own embedding (in embed_tokens) pads a timm dynamic_img_pad model's image to
        # whole patches; the stem must see the same image, or its grid has fewer patches than tokens
        patch_embed = getattr(self.model, "patch_embed", None)
        if getattr(patch_embed, "dynamic_img_pad", False):
            images = pad_to_patches(images, tuple(patch_embed.patch_size))
        conv_out, stem_trace = stem_forward(self.stem, images, record=record_stem)
        grid = (conv_out.shape[-2], conv_out.shape[-1])
        patches = conv_out.flatten(2).transpose(1, 2)
        return Embedded(tokens, grid, images, stem_trace if record_stem else None, patches, rope=rope)


class EvaTwin(GenericTwin):
    """timm ``Eva``: RoPE on q/k (no relevance rule needed), SwiGLU, LayerScale γ, optional inner norms.

    Its attention is ``EvaAttention`` (EVA-02) or timm's generic ``AttentionRope`` (the RoPE ViTs,
    Perception Encoder), which compute the same thing with other parameter names."""

    def __init__(self, model: nn.Module) -> None:
        from timm.models.eva import EvaAttention, EvaBlock

        attentions: tuple[type, ...] = (EvaAttention,)
        try:  # timm's RoPE ViTs (vit_*_rope_*, PE) build Eva with attn_type='rope'
            from timm.layers.attention import AttentionRope

            attentions += (AttentionRope,)
        except ImportError:  # pragma: no cover - older timm
            pass

        self._setup(model, model.patch_embed.proj, model.num_prefix_tokens)
        _require_plain_patch_embed(model.patch_embed)
        self.has_class_token = model.cls_token is not None
        self.prefix_params = (model.cls_token,)
        self.norm_pre = read_norm(model.norm_pre, "norm_pre")
        self._read_timm_output(model)
        # Eva's attention pool reads every token, prefix included (a VisionTransformer's only the
        # patches unless pool_include_prefix); its average pool leaves the prefix out like timm's
        self.pool_include_prefix = self.attn_pool is not None
        self.blocks = []
        for index, block in enumerate(model.blocks):
            name = f"blocks.{index}"
            attn = block.attn
            if type(block) is not EvaBlock:
                raise UnsupportedModelError(f"{name} ({type(block).__name__}) has no LRP rule")
            if type(attn) not in attentions:
                raise UnsupportedModelError(f"{name}.attn ({type(attn).__name__}) has no LRP rule")
            if getattr(attn, "gate", None) is not None:  # older timm: no gate attribute
                raise UnsupportedModelError(f"{name}.attn.gate: gated attention has no LRP rule")
            if attn.qkv is not None:
                weight, bias = weight_and_bias(attn.qkv, f"{name}.attn.qkv")
                if getattr(attn, "q_bias", None) is not None:
                    extra = torch.cat([attn.q_bias, attn.k_bias, attn.v_bias]).detach()
                    bias = extra if bias is None else bias + extra
            else:
                parts = [weight_and_bias(getattr(attn, f"{p}_proj"), f"{name}.attn.{p}_proj") for p in "qkv"]
                groups = int(getattr(attn, "num_kv_groups", 1))
                if groups != 1:  # grouped-query attention (Sapiens2): one k/v head per group of q heads
                    parts[1:] = [_repeat_heads(w, b, attn.head_dim, groups) for w, b in parts[1:]]
                weight, bias = _concat_qkv(parts)
            twin = _gamma_block(
                index,
                block,
                name,
                weight,
                bias,
                linears={"proj": attn.proj.weight},
                q_norm=read_norm(attn.q_norm, f"{name}.attn.q_norm"),
                k_norm=read_norm(attn.k_norm, f"{name}.attn.k_norm"),
                attn_norm=read_norm(attn.norm, f"{name}.attn.norm"),
                rope=True,
            )
            read_mlp(twin, block.mlp, f"{name}.mlp")
            self.blocks.append(twin)
        self._rope_prefix = self.model.blocks[0].attn.num_prefix_tokens if self.blocks else 0
        self._rope_half = (
            bool(getattr(self.model.blocks[0].attn, "rotate_half", False)) if self.blocks else False
        )
        self._finish()

    def embed_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, Rope | None]:
        x, rope = self.model._pos_embed(self.model.patch_embed(images))
        if rope is None:
            return x, None
        # mixed RoPE: (depth, [B,] heads, N, dim), one table per block (as Eva's forward indexes it)
        return x, Rope(rope, self._rope_prefix, self._rope_half, per_block=bool(self.model.rope_mixed))


class BeitTwin(GenericTwin):
    """timm ``Beit``: relative position bias added to the attention logits (no relevance), LayerScale γ."""

    def __init__(self, model: nn.Module) -> None:
        from timm.models.beit import Attention, Block

        self._setup(model, model.patch_embed.proj, 1)
        _require_plain_patch_embed(model.patch_embed)
        self.has_class_token = True
        self.prefix_params = (model.cls_token,)
        self._read_timm_output(model)
        shared = model.rel_pos_bias
        self.blocks = []
        for index, block in enumerate(model.blocks):
            name = f"blocks.{index}"
            attn = block.attn
            if type(block) is not Block or type(attn) is not Attention:
                raise UnsupportedModelError(f"{name} ({type(block).__name__}) has no LRP rule")
            weight = attn.qkv.weight.detach()
            bias = None
            if attn.q_bias is not None:
                bias = torch.cat([attn.q_bias, attn.k_bias, attn.v_bias]).detach()
            twin = _gamma_block(
                index,
                block,
                name,
                weight,
                bias,
                linears={"qkv": attn.qkv.weight, "proj": attn.proj.weight},
                attn_bias=_beit_bias(attn, shared),
            )
            read_mlp(twin, block.mlp, f"{name}.mlp")
            self.blocks.append(twin)
        self._finish()

    def embed_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, Rope | None]:
        model = self.model
        x = model.patch_embed(images)
        x = torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        if model.pos_embed is not None:
            x = x + model.pos_embed
        return x, None


class RelPosTwin(GenericTwin):
    """timm ``VisionTransformerRelPos``: no absolute positions, a relative position bias (table or
    MLP, per block or shared) added to the attention logits (no relevance), LayerScale ``ls1``/``ls2``."""

    def __init__(self, model: nn.Module) -> None:
        from timm.models.vision_transformer_relpos import RelPosAttention, RelPosBlock

        self._setup(model, model.patch_embed.proj, model.num_prefix_tokens)
        _require_plain_patch_embed(model.patch_embed)
        self.has_class_token = model.cls_token is not None
        self.prefix_params = (model.cls_token,)
        self._read_timm_output(model)
        shared = model.shared_rel_pos
        self.blocks = []
        for index, block in enumerate(model.blocks):
            name = f"blocks.{index}"
            attn = block.attn
            if type(block) is not RelPosBlock:
                raise UnsupportedModelError(
                    f"{name} ({type(block).__name__}) has no LRP rule: only pre-norm blocks are supported"
                )
            if type(attn) is not RelPosAttention:
                raise UnsupportedModelError(f"{name}.attn ({type(attn).__name__}) has no LRP rule")
            twin = BlockTwin.read_parts(
                block, index, attn_bias=_relpos_bias(attn.rel_pos if attn.rel_pos is not None else shared)
            )
            read_mlp(twin, block.mlp, f"{name}.mlp")
            self.blocks.append(twin)
        self._finish()

    def embed_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, Rope | None]:
        model = self.model
        x = model.patch_embed(images)
        if model.cls_token is not None:
            x = torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        return x, None


def _relpos_bias(rel_pos: nn.Module | None) -> Callable[[], torch.Tensor] | None:
    if rel_pos is None:
        return None

    def bias() -> torch.Tensor:
        with torch.no_grad():
            return rel_pos.get_bias()

    return bias


def _beit_bias(attn: nn.Module, shared: nn.Module | None) -> Callable[[], torch.Tensor] | None:
    if attn.relative_position_bias_table is None and shared is None:
        return None

    def bias() -> torch.Tensor:
        with torch.no_grad():
            total = attn._get_rel_pos_bias() if attn.relative_position_bias_table is not None else 0
            if shared is not None:
                total = total + shared()
        return total

    return bias


def _require_plain_patch_embed(patch_embed: nn.Module) -> None:
    """The generic embedding rule splits tokens into conv output + additions: no norm in between."""
    if read_norm(getattr(patch_embed, "norm", None), "patch_embed.norm") is not None:
        raise UnsupportedModelError("patch_embed.norm: a norm inside the patch embedding has no LRP rule")


def _gamma_block(
    index: int, block: nn.Module, name: str, weight: torch.Tensor, bias: torch.Tensor | None, **extra: Any
) -> BlockTwin:
    """The twin of a timm Eva / Beit block: fused q/k/v ``weight``/``bias`` as read, LayerScale as
    ``gamma_1`` / ``gamma_2``, and ``extra`` for what differs (q/k norms, RoPE, relative bias)."""
    attn = block.attn
    proj_w, proj_b = weight_and_bias(attn.proj, f"{name}.attn.proj")
    return BlockTwin(
        index=index,
        num_heads=attn.num_heads,
        head_dim=weight.shape[0] // 3 // attn.num_heads,
        scale=attn.scale,
        norm1=read_norm(block.norm1, f"{name}.norm1"),
        norm2=read_norm(block.norm2, f"{name}.norm2"),
        act=nn.Identity(),
        weights={
            "qkv_w": weight,
            "qkv_b": bias,
            "proj_w": proj_w,
            "proj_b": proj_b,
            "ls1": layer_scale(block.gamma_1, f"{name}.gamma_1"),
            "ls2": layer_scale(block.gamma_2, f"{name}.gamma_2"),
        },
        **extra,
    )
