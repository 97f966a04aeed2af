"""Gradient-weighted attention methods: attention Grad-CAM and Chefer et al.'s gradient rollout.

Both need d(target logit)/dA. The wrapper runs one forward recording only the blocks it uses and one
backward through them (`torch.autograd.grad` w.r.t. the attention tensors: no parameter gradients,
and nothing below the lowest recorded block). The score is the sum over the batch of each image's
target logit; images are independent, so each image gets its own logit's gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from attnmap.errors import InputError
from attnmap.render import normalize
from attnmap.vit.adapters import adapter_for
from attnmap.vit.capture import Captured, attention_gradients, capture, resolve_layers, start_block
from attnmap.vit.methods.rollout import identity_part
from attnmap.vit.registry import Target, method


def attention_gradcam(
    attention: torch.Tensor, gradient: torch.Tensor, query: torch.Tensor, num_prefix_tokens: int
) -> torch.Tensor:
    """Grad-CAM on one block's attention, min–max normalised per image.

    At the query row and patch columns: wₕ = mean of ∇Aₕ; cam = clamp(mean over heads of wₕ·Aₕ, 0)
    (clamped after the head mean); then (cam − min) / (max − min) (a constant map gives zeros).
    ``attention``/``gradient`` (B, H, N, N) → (B, N − num_prefix_tokens).
    """
    query = query.to(attention.dtype).expand(attention.shape[0], attention.shape[-1])
    rows = torch.einsum("bn,bhnm->bhm", query, attention)[..., num_prefix_tokens:]
    grad_rows = torch.einsum("bn,bhnm->bhm", query, gradient)[..., num_prefix_tokens:]
    weights = grad_rows.mean(dim=-1, keepdim=True)
    cam = (weights * rows).mean(dim=1).clamp(min=0)
    return torch.stack([normalize(image, "minmax") for image in cam])


def gradient_rollout(
    attentions: Sequence[torch.Tensor],
    gradients: Sequence[torch.Tensor],
    query: torch.Tensor,
    num_prefix_tokens: int,
    remove_identity: bool | torch.Tensor = True,
) -> torch.Tensor:
    """Chefer et al. (ICCV 2021) rule: R ← I; per block R ← R + Ē R, Ē = head mean of clamp(∇A ⊙ A, 0).

    ``attentions``/``gradients``: blocks s..L−1 in order, each (B, H, N, N). Returns the query row of
    R = (I + Ē_{L−1})⋯(I + Ē_s) at the patch columns, (B, N − num_prefix_tokens), computed as a row
    vector so each block costs O(N²). With ``remove_identity`` the query row itself (R's identity
    term) is subtracted: nothing for a CLS query at patch columns, the uniform 1/P of a patch-mean
    query otherwise (see docs/average_pooling.md); a (B, N) tensor is the part of the query removed.
    """
    if not attentions or len(attentions) != len(gradients):
        raise InputError("gradient rollout needs one gradient per attention map (at least one block)")
    batch, _, tokens, _ = attentions[0].shape
    query = query.to(attentions[0].dtype).expand(batch, tokens)
    # carried as the part beyond the identity, Δ ← Δ + (q + Δ)Ē: adding tiny products to q and
    # subtracting q afterwards would round them away (a small-gradient model gave all-zero maps)
    delta = torch.zeros_like(query)
    for attention, gradient in zip(reversed(attentions), reversed(gradients), strict=True):
        weighted = (gradient * attention).clamp(min=0).mean(dim=1)
        delta = delta + torch.bmm((query + delta).unsqueeze(1), weighted).squeeze(1)
    row = delta + (query - identity_part(query, remove_identity))
    return row[:, num_prefix_tokens:]


def capture_with_gradients(
    model: nn.Module, images: torch.Tensor, target: Target, layers: Sequence[int], method: str = "gradients"
) -> tuple[Captured, dict[int, torch.Tensor]]:
    """One forward recording ``layers`` and one backward of the target scores to their attention."""
    captured = capture(model, images, layers=layers, with_grad=True)
    objective = captured.objective(target, method, needs_target=True)
    with torch.enable_grad():  # the caller may be inside torch.no_grad()
        score = objective.score(captured.output).sum()
        gradients = attention_gradients(score, captured)
    return captured, gradients


@method(
    "attn_gradcam",
    "Grad-CAM on the last block's attention: heads weighted by their mean query-row gradient, "
    "clamped after the head mean, min-max normalised.",
    needs_grad=True,
)
def attn_gradcam(model: nn.Module, images: torch.Tensor, target: Target, *, layer: int = -1) -> torch.Tensor:
    """Registered wrapper: gradients of block ``layer`` only."""
    block = resolve_layers(layer, adapter_for(model).num_blocks)[0]
    captured, gradients = capture_with_gradients(model, images, target, [block], "attn_gradcam")
    attention = captured.attentions[block].detach()
    scores = attention_gradcam(
        attention, gradients[block], captured.query_weights(attention), captured.num_prefix_tokens
    )
    return captured.to_grid(scores)


@method(
    "grad_rollout",
    "Chefer et al. (ICCV 2021) gradient rollout: R <- R + mean_h(clamp(dA*A, 0)) R from start_layer up.",
    needs_grad=True,
)
def grad_rollout(
    model: nn.Module, images: torch.Tensor, target: Target, *, start_layer: int = 0
) -> torch.Tensor:
    """Registered wrapper: gradients of blocks start_layer..L−1 only."""
    num_blocks = adapter_for(model).num_blocks
    start = start_block(start_layer, num_blocks)
    captured, gradients = capture_with_gradients(
        model, images, target, list(range(start, num_blocks)), "grad_rollout"
    )
    layers = captured.layers()
    attentions = [captured.attentions[index].detach() for index in layers]
    scores = gradient_rollout(
        attentions,
        [gradients[index] for index in layers],
        captured.query_weights(attentions[0]),
        captured.num_prefix_tokens,
        remove_identity=captured.identity_query,
    )
    return captured.to_grid(scores)
