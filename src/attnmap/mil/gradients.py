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
from tqdm.auto import tqdm

from attnmap.mil.base import AttentionMILBase
from attnmap.mil.readout import BagPass, Readout, chunk_slices, logits_from_pass


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
    jacobian: torch.Tensor | None,
    h: torch.Tensor,
    weights: torch.Tensor,
    coefficients: torch.Tensor,
    w: torch.Tensor,
) -> torch.Tensor:
    """∂y/∂z (n, H) = [h > 0] ⊙ (a_i w + c_i J_i), c_i = a_i (v_i − ȳ); overwrites ``jacobian``.

    ``jacobian`` None means the attention is detached (only the a_i w term).
    """
    if jacobian is None:
        grad = torch.outer(weights, w)
    else:
        grad = jacobian.mul_(coefficients[:, None]).addr_(weights, w)
    return grad.masked_fill_(h <= 0, 0.0)


def gradient_x_input_one_pass(
    model: AttentionMILBase, features: torch.Tensor, readout: Readout, chunk_size: int
) -> tuple[BagPass, torch.Tensor, torch.Tensor]:
    """Per-patch gradient × input in one pass, for any class: (bag pass, U (N, C), Q (N, K)).

    Per patch, x_i · ∂y_c/∂x_i = a_i U_ic + a_i (v_ic − ȳ_c) Q_ik with P_i = [h_i > 0] ⊙ (h_i − b)
    (W x_i on the active units), U_ic = P_i · w_c and Q_ik = P_i · ∂s_ik/∂h_i: everything but the
    softmax is local to a patch, so the chunks need no second pass and no stored embeddings.
    """
    n_patches, n_branches = features.shape[0], model.n_branches
    device, dtype = model.device, model.parameter_dtype
    raw = torch.empty(n_branches, n_patches, dtype=dtype, device=device)
    values = torch.empty(n_patches, model.n_classes, dtype=dtype, device=device)
    local = torch.empty_like(values)
    directional = torch.empty(n_patches, n_branches, dtype=dtype, device=device)
    weight, bias = readout.embedding.weight.detach(), readout.embedding.bias.detach()
    for rows in chunk_slices(n_patches, chunk_size):
        with torch.no_grad():
            h = torch.addmm(bias, model.check_features(features[rows]), weight.t()).relu_()
            active = (h - bias).masked_fill_(h <= 0, 0.0)
            values[rows] = h @ readout.weight.t()
            local[rows] = active @ readout.weight.t()
        with torch.enable_grad():
            leaf = h.requires_grad_(True)
            logits = model.attention_logits(leaf)
            for k in range(n_branches):
                (jacobian,) = torch.autograd.grad(logits[:, k].sum(), leaf, retain_graph=k + 1 < n_branches)
                directional[rows, k] = jacobian.mul_(active).sum(dim=1)
        raw[:, rows] = logits.detach().t()
    bag = logits_from_pass(raw, values, readout, None)
    return bag, local, directional


def gradient_x_input_scores(
    bag: BagPass, local: torch.Tensor, directional: torch.Tensor, readout: Readout, target: int
) -> torch.Tensor:
    """Combine `gradient_x_input_one_pass`'s per-patch terms for one class (N,)."""
    branch = readout.branch[target]
    weights = bag.weights(branch)
    values = bag.values[:, target]
    coefficients = weights * (values - weights @ values)
    return weights * local[:, target] + coefficients * directional[:, branch]


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

    Per patch, Σ_d x_id ∂y/∂x_id = (W x_i) · ∂y/∂z_i = a_i u_i + c_i q_i with P_i = [h_i > 0] ⊙
    (h_i − b) (that is W x_i on the active units), u_i = P_i · w and q_i = P_i · J_i: no (N, H)
    gradient is formed, and the (N, H) @ (H, D) product is only paid for per-feature values.
    """
    branch, w, _ = readout.target(target)
    embedding = readout.embedding
    h_all = bag.embeddings
    weights_all = bag.weights(branch)
    values_all = bag.values[:, target]
    coefficients_all = weights_all * (values_all - weights_all @ values_all)
    n_patches = h_all.shape[0]
    if per_feature:
        out = torch.empty(n_patches, embedding.in_features, dtype=h_all.dtype, device=features.device)
    else:
        out = torch.empty(n_patches, dtype=h_all.dtype, device=h_all.device)
    with torch.no_grad():
        weight, bias = embedding.weight.detach(), embedding.bias.detach()
        for rows in chunk_slices(n_patches, chunk_size):
            h = h_all[rows]
            jacobian = None if detach_attention else attention_jacobian(model, h, branch)[1]
            if not per_feature:
                active = (h - bias).masked_fill_(h <= 0, 0.0)  # W x on the active units
                scores = weights_all[rows] * (active @ w)
                if jacobian is not None:
                    scores += coefficients_all[rows] * jacobian.mul_(active).sum(dim=1)
                out[rows] = scores
                continue
            grad_z = embedding_gradients(jacobian, h, weights_all[rows], coefficients_all[rows], w)
            grad_x = grad_z @ weight
            if times_input:
                grad_x.mul_(model.check_features(features[rows]))
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
    progress: bool = False,
) -> torch.Tensor:
    """Integrated gradients from the zero bag, midpoint rule with ``steps`` points on the path.

    Steps are batched: as many scaled copies of the bag as fit in ``chunk_size`` rows go through
    the attention layer together, in one pass per batch. A bag larger than ``chunk_size`` takes
    each step in two passes over row chunks: attention logits and read-outs first (for the
    step's softmax), then the attention gradients, accumulated without an (N, H) buffer per step.
    """
    branch, w, _ = readout.target(target)
    embedding = readout.embedding
    weight, bias = embedding.weight.detach(), embedding.bias.detach()
    n_patches = features.shape[0]
    device, dtype = model.device, model.parameter_dtype
    with torch.no_grad():
        projected = torch.empty(n_patches, model.hidden_dim, dtype=dtype, device=device)  # W x
        for rows in chunk_slices(n_patches, chunk_size):
            torch.mm(model.check_features(features[rows]), weight.t(), out=projected[rows])
        grad_sum = torch.zeros_like(projected)  # Σ over steps of ∂y/∂z at α x
        alphas = (torch.arange(steps, dtype=dtype, device=device) + 0.5) / steps
        block = max(1, min(steps, chunk_size // n_patches))
        firsts = range(0, steps, block)
        bar = tqdm(total=steps, desc="integrated gradients", unit="step", leave=False,
                   disable=not progress or len(firsts) < 2)  # a large bag: minutes on a CPU
        for first in firsts:
            alpha = alphas[first : first + block]
            if n_patches * len(alpha) <= chunk_size:
                _steps_in_one_pass(model, projected, bias, alpha, branch, w, grad_sum)
            else:
                for step_alpha in alpha:
                    _step_in_two_passes(model, projected, bias, step_alpha, branch, w, chunk_size, grad_sum)
            bar.update(len(alpha))
        bar.close()
        grad_sum /= steps
        if not per_feature:
            return grad_sum.mul_(projected).sum(dim=1)
        out = torch.empty(n_patches, embedding.in_features, dtype=dtype, device=features.device)
        for rows in chunk_slices(n_patches, chunk_size):
            out[rows] = ((grad_sum[rows] @ weight).mul_(model.check_features(features[rows]))).to(out.device)
        return out


def _scaled_embeddings(projected: torch.Tensor, bias: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """h = ReLU(α W x + b) for one α (n, H) or several (B, n, H)."""
    if alpha.ndim == 0:
        return torch.add(bias, projected, alpha=float(alpha)).relu_()
    return (alpha[:, None, None] * projected).add_(bias).relu_()


def _steps_in_one_pass(model, projected, bias, alpha, branch, w, grad_sum) -> None:
    """Several steps of a bag small enough to go through the attention layer all at once."""
    n_alpha, (n_patches, hidden) = len(alpha), projected.shape
    h = _scaled_embeddings(projected, bias, alpha).reshape(-1, hidden)
    logits, jacobian = attention_jacobian(model, h, branch)
    values = (h @ w).reshape(n_alpha, n_patches)
    weights = torch.softmax(logits.reshape(n_alpha, n_patches), dim=1)
    coefficients = weights * (values - (weights * values).sum(dim=1, keepdim=True))
    grad = embedding_gradients(jacobian, h, weights.reshape(-1), coefficients.reshape(-1), w)
    grad_sum.add_(grad.reshape(n_alpha, n_patches, hidden).sum(dim=0))


def _step_in_two_passes(model, projected, bias, alpha, branch, w, chunk_size, grad_sum) -> None:
    """One step of a large bag: logits and read-outs first, then gradients, chunk by chunk."""
    n_patches = projected.shape[0]
    logits = torch.empty(n_patches, dtype=projected.dtype, device=projected.device)
    values = torch.empty_like(logits)
    for rows in chunk_slices(n_patches, chunk_size):
        h = _scaled_embeddings(projected[rows], bias, alpha)
        logits[rows] = model.attention_logits(h)[:, branch]
        values[rows] = h @ w
    weights = torch.softmax(logits, dim=0)
    coefficients = weights * (values - weights @ values)
    for rows in chunk_slices(n_patches, chunk_size):
        h = _scaled_embeddings(projected[rows], bias, alpha)
        _, jacobian = attention_jacobian(model, h, branch)
        grad_sum[rows].add_(embedding_gradients(jacobian, h, weights[rows], coefficients[rows], w))
