"""xMIL-LRP for attention MIL (Hense et al., NeurIPS 2024), as analytic passes over the bag.

The attention weights a_i are constants: the bag is then a linear pooling M = Σ_i a_i h_i between
two Linear layers, h_i = ReLU(W x_i + b) and y_c = w · M + b_c. Relevance flows down as

- read-out (LRP-ε/γ):  R_M = M ⊙ w' · y_c / (y'_c ± ε),  w' = w + γ·max(w, 0), y'_c = w'·M + b'_c;
- pooling (LRP-ε):     R_{h_i} = a_i h_i ⊙ R_M / (M ± ε);
- ReLU:                identity;
- embedding (LRP-ε/γ): R_{x_i} = x_i ⊙ W'ᵀ (R_{h_i} / (z'_i ± ε)),  z'_i = W' x_i + b',

where "± ε" adds ε with the sign of the denominator and primes mark γ-modified parameters
(γ = 0: the plain ones). Every step is a few (N, H) element-wise operations; per-patch totals use
Σ_d R_{x_id} = Σ_k R_{h_ik} (z'_ik − b'_k) / (z'_ik ± ε), so the (N, H) @ (H, D) product is only
paid for per-feature relevance. With γ = 0 and ε = 0 this is gradient × input of the model with
the attention detached. docs/mil-relevance.md gives the total relevance (the logit minus the
biases' share).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from attnmap.errors import InputError
from attnmap.mil.base import AttentionMILBase
from attnmap.mil.readout import BagPass, Readout, chunk_slices


def stabilise(denominator: torch.Tensor, eps: float) -> torch.Tensor:
    """denominator + ε·sign (sign(0) = +1); exact zeros stay 1 so 0/0 terms give 0, not NaN."""
    out = denominator + eps * torch.where(denominator >= 0, 1.0, -1.0).to(denominator.dtype)
    return torch.where(out == 0, torch.ones_like(out), out)


def gamma_modified(tensor: torch.Tensor, gamma: float) -> torch.Tensor:
    """LRP-γ parameters: the positive part boosted, w + γ·max(w, 0)."""
    return tensor + gamma * tensor.clamp(min=0) if gamma else tensor


def check_lrp_options(eps: float, gamma: float) -> tuple[float, float]:
    """eps and gamma as floats: finite numbers >= 0 (one-element tensors and numpy scalars too).

    An infinite eps divides every relevance to 0 and an infinite gamma makes every term inf/inf,
    so both gave an all-zero or all-NaN map without a word; a bool or a string is a mistake too.
    """
    return _finite_option("eps", eps), _finite_option("gamma", gamma)


def _finite_option(name: str, value: object) -> float:
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)) and int(np.prod(value.shape)) == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"lrp needs a number for {name}, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise InputError(f"lrp needs a finite {name} >= 0, got {value}")
    return value


def lrp_relevance(
    model: AttentionMILBase,
    features: torch.Tensor,
    readout: Readout,
    bag: BagPass,
    target: int,
    chunk_size: int,
    per_feature: bool,
    eps: float = 1e-5,
    gamma: float = 0.0,
) -> torch.Tensor:
    """xMIL-LRP relevance of every patch (N,) or of every feature (N, D) for class ``target``."""
    eps, gamma = check_lrp_options(eps, gamma)
    branch, w, b = readout.target(target)
    h_all = bag.embeddings
    weights = bag.weights(branch)
    with torch.no_grad():
        pooled = weights @ h_all  # M (H,)
        w_mod, b_mod = gamma_modified(w, gamma), gamma_modified(b, gamma)
        logit = (weights @ bag.values[:, target]) + b  # y_c in the model's dtype
        relevance_pooled = pooled * w_mod * (logit / stabilise(pooled @ w_mod + b_mod, eps))
        per_unit = relevance_pooled / stabilise(pooled, eps)  # R_{h_ik} = a_i h_ik per_unit_k
        embedding = readout.embedding
        weight = gamma_modified(embedding.weight.detach(), gamma)
        bias = gamma_modified(embedding.bias.detach(), gamma)
        n_patches = h_all.shape[0]
        if per_feature:
            out = torch.empty(n_patches, embedding.in_features, dtype=h_all.dtype, device=features.device)
        else:
            out = torch.empty(n_patches, dtype=h_all.dtype, device=h_all.device)
        for rows in chunk_slices(n_patches, chunk_size):
            h = h_all[rows]
            if not (gamma or per_feature):
                # z' = z, which equals h wherever h carries relevance: R_i = a_i Σ_k u_k h(h − b)/(h + ε)
                share = (h - bias)  # times h / (h + ε), which is 1 on the active units when ε = 0
                share = share.mul_(h).div_(h + eps) if eps else share.masked_fill_(h <= 0, 0.0)
                out[rows] = weights[rows] * (share @ per_unit)
                continue
            x = model.check_features(features[rows])
            pre = torch.addmm(bias, x, weight.t()) if gamma else h  # z' = W' x + b'
            ratio = (h * per_unit).mul_(weights[rows, None]).div_(stabilise(pre, eps))  # R_h / (z' ± ε)
            if per_feature:
                out[rows] = ((ratio @ weight).mul_(x)).to(out.device)
            else:
                out[rows] = torch.einsum("nh,nh->n", ratio, pre - bias)
    return out
