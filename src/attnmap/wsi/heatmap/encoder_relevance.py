"""Conservative pixel relevance of a headless patch encoder for a direction in its feature space.

A fine heatmap needs, for each patch, how the pixels contribute to ``d · f(p)``, where ``f`` is the
patch encoder and ``d`` a direction the MIL model chose (``∂y_c/∂x_i``). This module computes the
conservative LRP of transformers of Ali et al. (ICML 2022, "XAI for Transformers: better
explanations through conservative propagation"): the attention matrices (of every block and of
an attention-pool head; whatever shapes their logits, q/k norms or rotary positions, needs no rule),
the LayerNorm / RMSNorm scales, the activation gates (GELU, SiLU, QuickGELU: act(z) = z · g(z)) and
the gates of gated MLPs (SwiGLU, GluMlp, SwiGLUPacked: value ⊙ act(gate)) are held constant at their
values for ``p``;
with those frozen the encoder is an affine map ``f̃(p) = J p + f̃(0)`` that agrees with ``f`` at
``p``, and LRP-0 on it equals
gradient × input, ``R = p ⊙ Jᵀ d``. Conservation is then exact, not approximate::

    Σ_pixels R  +  d · f̃(0)  =  d · f(p)

``d · f̃(0)`` is the share the biases, the class token and the position embeddings absorb
(`EncoderRelevance.bias_share`, measured by a second forward of the frozen network at ``p = 0``).

Covered: timm's VisionTransformer (token, average, class-and-patch-mean, attention-pool and
distilled read-outs) and Eva (`encoder_relevance_eva`), Hugging Face encoders through their timm
twin (`attnmap.wsi.hf_timm_twin`), and piecewise-linear ReLU CNNs, where LRP-0 is gradient × input
(`encoder_relevance_cnn`). Anything else is refused by `check_fine_encoder` (`encoder_support`),
naming the layer.

This is an adaptor of the project's ViT LRP for direction targets: when
``attnmap.explain(vit, images, method, target=directions)`` accepts a (B, D) direction, the fine
maps can use its methods too (see `attnmap.wsi.heatmap.fine`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import AttentionPoolLatent, GluMlp, QuickGELU, SwiGLU
from timm.models.deit import VisionTransformerDistilled
from timm.models.eva import Eva
from torch import nn

from attnmap.errors import InputError, UnsupportedModelError
from attnmap.model_state import eval_mode
from attnmap.vit.timm_build import ClassAndPatchMeanViT
from attnmap.wsi.heatmap.encoder_support import (
    NORMS,
    TRANSFORMERS,
    check_fine_encoder,
    check_image_channels,
    check_image_size,
)


@dataclass
class EncoderRelevance:
    """Pixel relevance (B, H, W) summed over colour, the bias share (B,) and ``d · f(p)`` (B,)."""

    pixels: torch.Tensor
    bias_share: torch.Tensor
    score: torch.Tensor


class _Frozen:
    """One forward that records (first call) or replays (later calls) the nonlinear gates."""

    def __init__(self) -> None:
        self.gates: list[torch.Tensor] = []
        self.replay = False
        self.index = 0
        self.stem_out: torch.Tensor | None = None  # the patch-embedding convolution's output

    def gate(self, value: torch.Tensor) -> torch.Tensor:
        if self.replay:
            gate = self.gates[self.index]
            self.index += 1
            return gate
        self.gates.append(value.detach())
        return self.gates[-1]


def _norm(frozen: _Frozen, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LayerNorm / RMSNorm with the scale 1/σ a frozen gate (the identity rule of LRP for norms)."""
    if isinstance(module, nn.Identity):
        return x
    if not isinstance(module, NORMS):
        raise UnsupportedModelError(f"norm {type(module).__name__} has no conservative rule here")
    layer = isinstance(module, nn.LayerNorm)
    centred = x - x.mean(dim=-1, keepdim=True) if layer else x
    eps = module.eps if module.eps is not None else torch.finfo(x.dtype).eps  # nn.RMSNorm's default
    scale = frozen.gate(torch.rsqrt(centred.pow(2).mean(dim=-1, keepdim=True) + eps))
    out = centred * scale
    if module.weight is not None:
        out = out * module.weight
    return out + module.bias if getattr(module, "bias", None) is not None else out


def _activation_gate(act: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """g(z) with act(z) = z · g(z): the factor the frozen network holds constant."""
    if isinstance(act, nn.GELU) and act.approximate == "none":
        return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    if isinstance(act, (nn.SiLU, QuickGELU)):  # z·σ(z), z·σ(1.702 z)
        return torch.sigmoid(1.702 * z if isinstance(act, QuickGELU) else z)
    return torch.where(z == 0, torch.full_like(z, 0.5), act(z) / z)  # timm's GELUs, tanh GELU


def _mlp(frozen: _Frozen, mlp: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """timm's Mlp with its activation a frozen gate, z · g(z); a gated MLP (GluMlp, SwiGLUPacked,
    SwiGLU) with its whole gate act(gate) frozen, so the value path carries all the relevance."""
    if isinstance(mlp, SwiGLU):
        value, gate = mlp.fc1_x(x), frozen.gate(mlp.act(mlp.fc1_g(x)))
        hidden = value * gate
    elif isinstance(mlp, GluMlp):
        first, second = mlp.fc1(x).chunk(2, dim=-1)
        value, gate = (first, second) if mlp.gate_last else (second, first)
        hidden = value * frozen.gate(mlp.act(gate))
    else:
        z = mlp.fc1(x)
        hidden = z * frozen.gate(_activation_gate(mlp.act, z))
    return mlp.fc2(_norm(frozen, getattr(mlp, "norm", nn.Identity()), hidden))


def _forward(model: nn.Module, frozen: _Frozen, images: torch.Tensor) -> torch.Tensor:
    """The encoder's features with every nonlinearity a recorded/replayed constant factor."""
    embed = model.patch_embed
    tokens = embed.proj(images)
    frozen.stem_out = tokens
    if getattr(embed, "flatten", True):
        tokens = tokens.flatten(2).transpose(1, 2)
    elif str(getattr(embed, "output_fmt", "NCHW")).endswith("NHWC"):  # dynamic_img_size: (B, H, W, C)
        tokens = tokens.permute(0, 2, 3, 1)
    tokens = _norm(frozen, embed.norm, tokens)
    if isinstance(model, Eva):
        from attnmap.wsi.heatmap.encoder_relevance_eva import eva_tokens

        x = eva_tokens(model, frozen, tokens)
    else:
        x = _norm(frozen, model.norm_pre, model._pos_embed(tokens))
        for block in model.blocks:
            normed = _norm(frozen, block.norm1, x)
            out = _attention(frozen, block.attn, normed, *block.attn.qkv(normed).chunk(3, dim=-1))
            x = x + block.ls1(block.attn.proj(out))
            x = x + block.ls2(_mlp(frozen, block.mlp, _norm(frozen, block.norm2, x)))
    return _read_out(model, frozen, _norm(frozen, model.norm, x))


def _attention(
    frozen: _Frozen,
    attn: nn.Module,
    normed: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    rope: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-head attention with its weights (softmax of the q/k logits, whatever shapes them: q/k
    norms, rotary positions) and its output gate held constant: linear in the values."""
    batch, n, _ = q.shape
    heads, kv_heads = attn.num_heads, getattr(attn, "num_kv_heads", None) or attn.num_heads
    q = q.reshape(batch, n, heads, -1).transpose(1, 2)
    k, v = (t.reshape(batch, n, kv_heads, -1).transpose(1, 2) for t in (k, v))
    q, k = attn.q_norm(q), attn.k_norm(k)  # the logits' path: held constant with the weights
    if rope is not None:
        from timm.layers import apply_rot_embed_cat

        start, half = attn.num_prefix_tokens, getattr(attn, "rotate_half", False)
        q, k = (torch.cat([t[:, :, :start], apply_rot_embed_cat(t[:, :, start:], rope, half=half)], dim=2)
                for t in (q, k))
    if kv_heads != heads:  # grouped-query attention: head h reads key/value head h // group
        k, v = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
    weights = frozen.gate(((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1))
    out = _norm(frozen, attn.norm, (weights @ v).transpose(1, 2).reshape(batch, n, -1))
    if getattr(attn, "gate", None) is not None:  # timm's gated attention: a sigmoid factor
        out = out * frozen.gate(attn.gate(normed).sigmoid())
    return out


def _read_out(model: nn.Module, frozen: _Frozen, x: torch.Tensor) -> torch.Tensor:
    """The model's pooling of its (normed) tokens, then fc_norm and head, as its forward_head does."""
    if isinstance(model, VisionTransformerDistilled):  # the mean of the class and distillation heads
        return (model.head(x[:, 0]) + model.head_dist(x[:, 1])) / 2
    prefix = 0 if getattr(model, "pool_include_prefix", False) else model.num_prefix_tokens
    if isinstance(model, ClassAndPatchMeanViT):
        pooled = model.pool(x)  # its own read-out: linear in the tokens
    elif getattr(model, "attn_pool", None) is not None:
        pooled = _attention_pool(frozen, model.attn_pool, x if isinstance(model, Eva) else x[:, prefix:])
    else:
        pooled = x[:, 0] if model.global_pool == "token" else x[:, prefix:].mean(dim=1)
    return model.head(_norm(frozen, model.fc_norm, pooled))


def _attention_pool(frozen: _Frozen, pool: AttentionPoolLatent, x: torch.Tensor) -> torch.Tensor:
    """timm's attention-pool head (SigLIP, ``global_pool='map'``): one more attention block whose
    queries are learned latents; its weights held constant as every block's, values and MLP linear."""
    batch, n, _ = x.shape
    if pool.pos_embed is not None:
        x = x + pool.pos_embed.unsqueeze(0).to(x.dtype)
    q = pool.q(pool.latent.expand(batch, -1, -1)).reshape(batch, pool.latent_len, pool.num_heads, -1)
    k, v = pool.kv(x).reshape(batch, n, 2, pool.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = pool.q_norm(q.transpose(1, 2)), pool.k_norm(k)
    weights = frozen.gate(((q * pool.scale) @ k.transpose(-2, -1)).softmax(dim=-1))
    out = pool.proj((weights @ v).transpose(1, 2).reshape(batch, pool.latent_len, -1))
    if pool.mlp is not None:
        out = out + _mlp(frozen, pool.mlp, _norm(frozen, pool.norm, out))
    return out[:, 0] if pool.pool == "token" else out.mean(dim=1) if pool.pool == "avg" else out


def _zb_pixels(
    conv: nn.Conv2d,
    images: torch.Tensor,
    token_relevance: torch.Tensor,
    bounds: tuple[torch.Tensor, torch.Tensor],
) -> torch.Tensor:
    """zB rule through the patch-embedding convolution: token relevance (B, C, gh, gw) → pixels (B, H, W).

    z_ij = w⁺_ij (x_i − l_i) + w⁻_ij (x_i − h_i) ≥ 0 for inputs within [l, h]; each token's relevance
    is shared in proportion to z_ij, exactly (a token whose z are all zero shares it evenly).
    """
    if conv.kernel_size != conv.stride or conv.padding not in (0, (0, 0)) or conv.groups != 1:
        raise UnsupportedModelError("the zB pixel rule needs a non-overlapping patch-embedding convolution")
    stride = conv.stride
    weight = conv.weight.to(images.dtype)
    positive, negative = weight.clamp(min=0), weight.clamp(max=0)
    low = bounds[0].to(images).view(1, -1, 1, 1).expand_as(images)
    high = bounds[1].to(images).view(1, -1, 1, 1).expand_as(images)
    total = F.conv2d(images - low, positive, stride=stride) + F.conv2d(images - high, negative, stride=stride)
    usable = total > torch.finfo(images.dtype).tiny ** 0.5
    share = torch.where(usable, token_relevance / torch.where(usable, total, torch.ones_like(total)), 0.0)
    pixels = (images - low) * F.conv_transpose2d(share, positive, stride=stride)
    pixels = pixels + (images - high) * F.conv_transpose2d(share, negative, stride=stride)
    flat = torch.where(usable, 0.0, token_relevance) / weight[0].numel()
    pixels = pixels + F.conv_transpose2d(flat, torch.ones_like(weight), stride=stride)
    height, width = images.shape[-2:]
    out = torch.zeros_like(images[:, 0])
    out[:, : pixels.shape[-2], : pixels.shape[-1]] = pixels.sum(dim=1)[:, :height, :width]
    return out


@torch.inference_mode(False)  # a caller's inference mode, which enable_grad does not lift, broke autograd
def encoder_relevance(
    model: nn.Module,
    images: torch.Tensor,
    direction: torch.Tensor,
    bounds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> EncoderRelevance:
    """Pixel relevance of ``direction · model(images)`` for a headless timm ViT (see module docstring)
    or a piecewise-linear CNN (`attnmap.wsi.heatmap.encoder_relevance_cnn`: LRP-0 at every layer).

    ``images`` (B, 3, H, W) are the encoder's normalised inputs, ``direction`` (B, D) or (D,).
    ``bounds`` (per-channel lowest and highest input values, e.g. `input_bounds`) switch the pixel
    layer from LRP-0 (gradient × input) to the zB rule, the usual LRP rule for bounded pixel inputs
    (fewer sign flips inside a patch); the pixel total, and so conservation, is the same.
    Runs in the dtype of ``images`` (float64 for exact checks). The model is not modified.
    """
    model = check_fine_encoder(model)
    with eval_mode(model):  # dropout / drop-path off (the rules refuse BatchNorm in training first)
        return _relevance(model, images, direction, bounds)


def _relevance(
    model: nn.Module, images: torch.Tensor, direction: torch.Tensor, bounds: tuple | None
) -> EncoderRelevance:
    if images.ndim != 4:
        raise InputError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")
    check_image_channels(model, images)
    # a clone: one made in inference mode cannot enter the autograd graph below
    direction = torch.as_tensor(direction, dtype=images.dtype, device=images.device).clone()
    if direction.ndim == 1:
        direction = direction.expand(images.shape[0], -1)
    if not isinstance(model, TRANSFORMERS):  # a ReLU CNN: LRP-0 is gradient × input
        from attnmap.wsi.heatmap.encoder_relevance_cnn import cnn_relevance

        return EncoderRelevance(*cnn_relevance(model, images, direction))
    check_image_size(model.patch_embed, images)
    frozen = _Frozen()
    inputs = images.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        features = _forward(model, frozen, inputs)
        if direction.shape != features.shape:
            raise InputError(
                f"direction must be {tuple(features.shape)} (one per image), got {tuple(direction.shape)}"
            )
        score = (features * direction).sum(dim=1)
        stem_out = frozen.stem_out
        gradient, stem_gradient = torch.autograd.grad(score.sum(), [inputs, stem_out])
    if bounds is None:
        pixels = (gradient * inputs.detach()).sum(dim=1)
    else:
        conv = model.patch_embed.proj
        bias = 0.0 if conv.bias is None else conv.bias.view(1, -1, 1, 1)
        token_relevance = ((stem_out.detach() - bias) * stem_gradient).detach()
        pixels = _zb_pixels(conv, images.detach(), token_relevance, bounds)
    frozen.replay = True
    with torch.no_grad():
        bias_share = (_forward(model, frozen, torch.zeros_like(images)) * direction).sum(dim=1)
    return EncoderRelevance(pixels.detach(), bias_share, score.detach())


def input_bounds(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (lowest, highest) normalised input of pixels in [0, 1]: ((0 − m)/s, (1 − m)/s)."""
    mean_t, std_t = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    return (0.0 - mean_t) / std_t, (1.0 - mean_t) / std_t


def check_encoder_forward(model: nn.Module, images: torch.Tensor, atol: float = 1e-4) -> None:
    """Raise `UnsupportedModelError` when the frozen-gate forward does not reproduce ``model(images)``.

    Guards against encoder variants whose forward this module does not mirror (fused layers,
    register tokens handled differently, ...): a silently different function would give wrong maps.
    """
    checked = check_fine_encoder(model)
    if not isinstance(checked, TRANSFORMERS):
        return  # a piecewise-linear CNN is explained through its own forward
    with torch.no_grad():
        ours = _forward(checked, _Frozen(), images)
        theirs = model(images)
    if ours.shape != theirs.shape or not torch.allclose(ours, theirs, atol=atol, rtol=1e-4):
        raise UnsupportedModelError("the encoder's forward differs from the conservative twin: no fine maps")
