"""Attention scoring layers of attention MIL: one score per patch and branch.

Both layers map patch embeddings ``h`` (N, L) to attention logits (N, K) (pre-softmax). Their
parameter names follow CLAM's checkpoints exactly (``attention_a.0``, ``attention_b.0``,
``attention_c`` for the gated net; ``module.0`` and ``module.2``/``module.3`` for the plain one) so a
CLAM state_dict loads without renaming.

``dropout`` is a switch, as in CLAM: when on, a Dropout(0.25) follows each non-linearity.

In inference (no autograd, eval mode) the gated layer computes its two (L -> D) projections as one
(L -> 2D) matmul and applies tanh / sigmoid / product in place: fewer passes over memory and one
larger GEMM, which matters for bags of 10^5-10^6 patches. The result is the same computation.
"""

from __future__ import annotations

import torch
from torch import nn

ATTENTION_DROPOUT = 0.25


class AttentionNet(nn.Module):
    """Plain attention: Linear(L->D), Tanh, [Dropout], Linear(D->K)."""

    def __init__(self, in_dim: int = 512, hidden_dim: int = 256, n_branches: int = 1, dropout: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.Tanh()]
        if dropout:
            layers.append(nn.Dropout(ATTENTION_DROPOUT))
        layers.append(nn.Linear(hidden_dim, n_branches))
        self.module = nn.Sequential(*layers)
        self.in_dim, self.hidden_dim, self.n_branches = in_dim, hidden_dim, n_branches

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Attention logits (N, K) for embeddings ``h`` (N, L)."""
        return self.module(h)


class GatedAttentionNet(nn.Module):
    """Gated attention (Ilse et al. 2018): Linear(D->K)(tanh(V h) * sigmoid(U h))."""

    def __init__(self, in_dim: int = 512, hidden_dim: int = 256, n_branches: int = 1, dropout: bool = False):
        super().__init__()
        branch_a: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.Tanh()]
        branch_b: list[nn.Module] = [nn.Linear(in_dim, hidden_dim), nn.Sigmoid()]
        if dropout:
            branch_a.append(nn.Dropout(ATTENTION_DROPOUT))
            branch_b.append(nn.Dropout(ATTENTION_DROPOUT))
        self.attention_a = nn.Sequential(*branch_a)
        self.attention_b = nn.Sequential(*branch_b)
        self.attention_c = nn.Linear(hidden_dim, n_branches)
        self.in_dim, self.hidden_dim, self.n_branches = in_dim, hidden_dim, n_branches

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Attention logits (N, K) for embeddings ``h`` (N, L)."""
        if not self.training and not torch.is_grad_enabled():
            return self._fused_inference(h)
        return self.attention_c(self.attention_a(h) * self.attention_b(h))

    def _fused_inference(self, h: torch.Tensor) -> torch.Tensor:
        """The same function without autograd: one (L -> 2D) matmul and in-place activations."""
        linear_a, linear_b = self.attention_a[0], self.attention_b[0]
        weight = torch.cat([linear_a.weight, linear_b.weight])
        bias = torch.cat([linear_a.bias, linear_b.bias])
        both = torch.addmm(bias, h, weight.t())
        gate_a, gate_b = both[:, : self.hidden_dim], both[:, self.hidden_dim :]
        gate_a.tanh_()
        gate_b.sigmoid_()
        gate_a.mul_(gate_b)
        return torch.addmm(self.attention_c.bias, gate_a, self.attention_c.weight.t())


def make_attention_net(
    gated: bool, in_dim: int, hidden_dim: int, n_branches: int, dropout: bool
) -> AttentionNet | GatedAttentionNet:
    """The gated or plain attention layer with CLAM's parameter names."""
    cls = GatedAttentionNet if gated else AttentionNet
    return cls(in_dim=in_dim, hidden_dim=hidden_dim, n_branches=n_branches, dropout=dropout)
