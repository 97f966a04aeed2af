"""Analytic gradients of a bag logit with respect to every patch's features, in chunks.

For y_c = w · Σ_i a_i h_i + b with a = softmax(s) and s_i = attention(h_i) (one branch), the
chain rule through the softmax gives, per patch,

    ∂y/∂h_i = a_i · (w + (v_i − ȳ) · J_i),    v_i = w · h_i,  ȳ = Σ_j a_j v_j,  J_i = ∂s_i/∂h_i,

and ∂y/∂x_i = Wᵀ (∂y/∂h_i ⊙ [h_i > 0]) through the embedding ReLU(W x + b). J_i is the only part
that needs autograd, and only through the small attention layer (a row-wise function, so the
gradient of Σ_i s_i gives every J_i at once). This costs about one forward plus one attention
backward, instead of autograd over the whole (N, D) bag, and works on bags of any size: only the
embeddings h (N, H) are kept between the two passes.

The same pieces give integrated gradients cheaply: with the zero baseline, the embedding
pre-activation of the scaled bag α·x is α·(W x) + b, so W x is computed once and every step only
re-runs the attention layer. ``detach_attention=True`` drops the softmax term (a treated as a
constant), the gradient that LRP-0 reproduces.
"""

from __future__ import annotations

import torch

from attnmap.mil.base import AttentionMILBase
from attnmap.mil.readout import BagPass, Readout, chunk_slices


def attention_jacobian(
    model: AttentionMILBase, h: torch.Tensor, branch: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention logits s (n,) of one branch and their gradients J = ∂s_i/∂h_i (n, H)."""
    with torch.enable_grad():
        leaf = h.detach().requires_grad_(True)
        logits = model.attention_logits(leaf)[:, branch]
        (jacobian,) = torch.autograd.grad(logits.sum(), leaf)
    return logits.detach(), jacobian


def embedding_gradients(
    model: AttentionMILBase,
    h: torch.Tensor,
    weights: torch.Tensor,
    values: torch.Tensor,
    pooled_value: torch.Tensor,
    branch: int,
    w: torch.Tensor,
    detach_attention: bool,
) -> torch.Tensor:
    """∂y/∂z (n, H) for a chunk: z the embedding pre-activations, h = ReLU(z) their embeddings.

    ``weights`` (n,) are the chunk's softmax attention over the whole bag, ``values`` (n,) its
    v_i = w · h_i and ``pooled_value`` the bag's ȳ = Σ a_j v_j.
    """
    grad = weights[:, None] * w
    if not detach_attention:
        _, jacobian = attention_jacobian(model, h, branch)
        grad = grad + (weights * (values - pooled_value))[:, None] * jacobian
    return grad * (h > 0)


def gradient_passes(
    model: AttentionMILBase,
    features: torch.Tensor,
    readout: Readout,
    bag: BagPass,
    target: int,
    chunk_size: int,
    per_feature: bool,
    detach_attention: bool = False,
    times_input: bool = True,
) -> torch.Tensor:
    """Gradient × input per patch (N,) or per feature (N, D), or the bare gradient (N, D).

    Per patch, Σ_d x_id ∂y/∂x_id = (W x_i) · ∂y/∂z_i = (h_i − b) · ∂y/∂z_i on the active units,
    so the (N, H) @ (H, D) product is only paid when per-feature values are asked for.
    """
    branch, w, _ = readout.target(target)
    embedding = readout.embedding
    h_all = bag.embeddings
    weights_all = bag.weights(branch)
    values_all = bag.values[:, target]
    pooled_value = weights_all @ values_all
    n_patches = h_all.shape[0]
    if per_feature:
        out = torch.empty(n_patches, embedding.in_features, dtype=h_all.dtype, device=features.device)
    else:
        out = torch.empty(n_patches, dtype=h_all.dtype, device=h_all.device)
    with torch.no_grad():
        weight, bias = embedding.weight.detach(), embedding.bias.detach()
        for rows in chunk_slices(n_patches, chunk_size):
            h = h_all[rows]
            grad_z = embedding_gradients(
                model, h, weights_all[rows], values_all[rows], pooled_value, branch, w, detach_attention
            )
            if not per_feature:
                out[rows] = ((h - bias) * grad_z).sum(dim=1)
                continue
            grad_x = grad_z @ weight
            if times_input:
                grad_x = grad_x * model.check_features(features[rows])
            out[rows] = grad_x.to(out.device)
    return out


def integrated_gradients(
    model: AttentionMILBase,
    features: torch.Tensor,
    readout: Readout,
    target: int,
    chunk_size: int,
    per_feature: bool,
    steps: int,
) -> torch.Tensor:
    """Integrated gradients from the zero bag, midpoint rule with ``steps`` points on the path.

    Steps are batched: as many scaled copies of the bag as fit in ``chunk_size`` rows go through
    the attention layer together (a small bag runs all its steps at once; a huge bag one by one,
    in row chunks).
    """
    branch, w, _ = readout.target(target)
    embedding = readout.embedding
    weight, bias = embedding.weight.detach(), embedding.bias.detach()
    n_patches = features.shape[0]
    device, dtype = model.device, model.parameter_dtype
    with torch.no_grad():
        projected = torch.empty(n_patches, model.hidden_dim, dtype=dtype, device=device)  # W x
        for rows in chunk_slices(n_patches, chunk_size):
            projected[rows] = model.check_features(features[rows]) @ weight.t()
        mean_grad = torch.zeros_like(projected)  # mean over steps of ∂y/∂z at α x
        alphas = (torch.arange(steps, dtype=dtype, device=device) + 0.5) / steps
        block = max(1, min(steps, chunk_size // n_patches))
        rows_per_chunk = max(1, chunk_size // block)
        logits = torch.empty(block, n_patches, dtype=dtype, device=device)
        values = torch.empty_like(logits)
        jacobian = torch.empty(block, n_patches, model.hidden_dim, dtype=dtype, device=device)
        for first in range(0, steps, block):
            alpha = alphas[first : first + block]
            n_alpha = len(alpha)
            for rows in chunk_slices(n_patches, rows_per_chunk):
                h = (alpha[:, None, None] * projected[rows] + bias).clamp_(min=0)  # (B, n, H)
                s, jac = attention_jacobian(model, h.reshape(-1, h.shape[-1]), branch)
                logits[:n_alpha, rows] = s.reshape(n_alpha, -1)
                jacobian[:n_alpha, rows] = jac.reshape(h.shape)
                values[:n_alpha, rows] = h @ w
            weights = torch.softmax(logits[:n_alpha], dim=1)
            pooled_value = (weights * values[:n_alpha]).sum(dim=1, keepdim=True)
            coefficient = weights * (values[:n_alpha] - pooled_value)  # (B, N)
            for rows in chunk_slices(n_patches, rows_per_chunk):
                active = (alpha[:, None, None] * projected[rows] + bias) > 0
                grad = weights[:, rows, None] * w + coefficient[:, rows, None] * jacobian[:n_alpha, rows]
                mean_grad[rows] += (grad * active).sum(dim=0) / steps
        if not per_feature:
            return (projected * mean_grad).sum(dim=1)
        out = torch.empty(n_patches, embedding.in_features, dtype=dtype, device=features.device)
        for rows in chunk_slices(n_patches, chunk_size):
            out[rows] = ((mean_grad[rows] @ weight) * model.check_features(features[rows])).to(out.device)
        return out
