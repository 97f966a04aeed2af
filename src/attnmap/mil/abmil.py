"""ABMIL (Ilse, Tomczak & Welling 2018): attention-based deep multiple instance learning.

Patch features go through Linear(D -> H) + ReLU (+ Dropout), a gated or plain attention layer
gives one score per patch, and a Linear(H -> C) classifies the attention-weighted mean. There is no
instance-level loss, so the instance fields of the output stay None. It is the simplest baseline to
compare CLAM against, trained by the same `attnmap.mil.train_mil` (``model="abmil"``).

State dict: ``feature.0.*`` (the embedding Linear), ``attention.*`` (same names as CLAM's attention
layers), ``classifier.*``.
"""

from __future__ import annotations

import torch
from torch import nn

from attnmap.errors import InputError
from attnmap.mil.attention import make_attention_net
from attnmap.mil.base import AttentionMILBase, MILOutput


class ABMIL(AttentionMILBase):
    """Gated (default) or plain attention pooling with a linear bag classifier."""

    def __init__(
        self,
        embed_dim: int = 1024,
        hidden_dim: int = 512,
        attention_dim: int = 256,
        n_classes: int = 2,
        gate: bool = True,
        dropout: float = 0.0,
    ):
        super().__init__()
        if n_classes < 2:
            raise InputError(f"ABMIL needs at least 2 classes, got n_classes={n_classes}")
        if isinstance(dropout, bool):  # old CLAM: a switch meaning p = 0.25
            dropout = 0.25 if dropout else 0.0
        if not 0.0 <= float(dropout) < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {dropout}")
        self.embed_dim, self.hidden_dim, self.n_classes, self.n_branches = embed_dim, hidden_dim, n_classes, 1
        self.attention_dim, self.gate, self.dropout = attention_dim, gate, float(dropout)
        self.feature = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.ReLU(), nn.Dropout(self.dropout))
        self.attention = make_attention_net(gate, hidden_dim, attention_dim, 1, dropout=self.dropout > 0)
        self.classifier = nn.Linear(hidden_dim, n_classes)

    def config(self) -> dict[str, object]:
        """Constructor arguments, stored next to checkpoints."""
        return {
            "model": "abmil",
            "embed_dim": self.embed_dim,
            "hidden_dim": self.hidden_dim,
            "attention_dim": self.attention_dim,
            "n_classes": self.n_classes,
            "gate": self.gate,
            "dropout": self.dropout,
        }

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        linear = self.feature[0]
        if not self.training and not torch.is_grad_enabled():
            return torch.addmm(linear.bias, features, linear.weight.t()).relu_()
        return self.feature(features)

    def attention_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.attention(h)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(pooled)

    def forward(
        self, features: torch.Tensor, label: int | torch.Tensor | None = None, instance_eval: bool = False
    ) -> MILOutput:
        """Bag forward for features (N, D). ``label`` / ``instance_eval`` are accepted for a common
        calling convention with CLAM and ignored (ABMIL has no instance loss)."""
        output, _, _ = self.bag_forward(features)
        return output
