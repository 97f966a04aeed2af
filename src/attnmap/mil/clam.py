"""CLAM (Lu et al. 2021): attention pooling with instance-level clustering, single or multi branch.

Parameter names match CLAM's checkpoints (``attention_net.0``, ``attention_net.3.*``,
``classifiers``, ``instance_classifiers.{i}``), so `attnmap.mil.load_clam` loads them as they are.

- CLAM_SB: one attention branch; a Linear(H -> C) bag classifier.
- CLAM_MB: one attention branch per class; class c's logit is its own Linear(H -> 1) applied to the
  bag embedding pooled with branch c.
- Instance clustering (``instance_eval=True``, needs the label): for the true class's instance
  classifier, the k most attended patches are pseudo-labelled 1 and the k least attended 0; with
  ``subtyping`` every other class's classifier also learns that its top-k patches are 0. The loss is
  the sum of the evaluated branches' mean cross-entropies (divided by C when subtyping).
- Small bags: CLAM's reference crashes (``topk``) when a bag has fewer than ``k_sample`` patches.
  Bags with N >= k_sample behave exactly as the reference (for N < 2·k_sample its top and bottom
  sets overlap, as there). Below that, k shrinks to max(1, N // 2): the top and bottom halves stay
  disjoint, so no patch gets both pseudo-labels (a one-patch bag uses its patch for both).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnmap.errors import InputError
from attnmap.mil.attention import make_attention_net
from attnmap.mil.base import AttentionMILBase, MILOutput, label_index

# size name -> (embedding width H, attention hidden width D)
CLAM_SIZES: dict[str, tuple[int, int]] = {"small": (512, 256), "big": (512, 384)}


def effective_k(k_sample: int, n_patches: int) -> int:
    """The number of top / bottom patches used for instance clustering in a bag of n_patches."""
    return k_sample if n_patches >= k_sample else max(1, n_patches // 2)


class _CLAMBase(AttentionMILBase):
    multi_branch = False

    def __init__(
        self,
        gate: bool = True,
        size: str = "small",
        dropout: float = 0.0,
        k_sample: int = 8,
        n_classes: int = 2,
        subtyping: bool = False,
        embed_dim: int = 1024,
    ):
        super().__init__()
        if size not in CLAM_SIZES:
            raise InputError(f"unknown CLAM size {size!r}; choose one of {sorted(CLAM_SIZES)}")
        if n_classes < 2:
            raise InputError(f"CLAM needs at least 2 classes, got n_classes={n_classes}")
        if k_sample < 1:
            raise InputError(f"k_sample must be at least 1, got {k_sample}")
        if isinstance(dropout, bool):  # old CLAM: a switch meaning p = 0.25
            dropout = 0.25 if dropout else 0.0
        if not 0.0 <= float(dropout) < 1.0:
            raise InputError(f"dropout must be in [0, 1), got {dropout}")
        hidden, attention_hidden = CLAM_SIZES[size]
        self.embed_dim, self.hidden_dim, self.n_classes = embed_dim, hidden, n_classes
        self.n_branches = n_classes if self.multi_branch else 1
        self.gate, self.size, self.dropout = gate, size, float(dropout)
        self.k_sample, self.subtyping = k_sample, subtyping
        self.attention_net = nn.Sequential(
            nn.Linear(embed_dim, hidden),
            nn.ReLU(),
            nn.Dropout(self.dropout),
            make_attention_net(gate, hidden, attention_hidden, self.n_branches, dropout=self.dropout > 0),
        )
        self.instance_classifiers = nn.ModuleList([nn.Linear(hidden, 2) for _ in range(n_classes)])

    def config(self) -> dict[str, object]:
        """Constructor arguments, stored next to checkpoints."""
        return {
            "model": "clam_mb" if self.multi_branch else "clam_sb",
            "gate": self.gate,
            "size": self.size,
            "dropout": self.dropout,
            "k_sample": self.k_sample,
            "n_classes": self.n_classes,
            "subtyping": self.subtyping,
            "embed_dim": self.embed_dim,
        }

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        linear = self.attention_net[0]
        if not self.training and not torch.is_grad_enabled():
            return torch.addmm(linear.bias, features, linear.weight.t()).relu_()
        return self.attention_net[2](self.attention_net[1](linear(features)))

    def attention_logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.attention_net[3](h)

    def forward(
        self, features: torch.Tensor, label: int | torch.Tensor | None = None, instance_eval: bool = False
    ) -> MILOutput:
        """Bag forward for features (N, D); with ``instance_eval`` also the instance clustering."""
        output, h, weights = self.bag_forward(features)
        if instance_eval:
            if label is None:
                raise InputError("instance evaluation needs the bag label (label=None was given)")
            if len(self.instance_classifiers) == 0:
                raise InputError(
                    "this CLAM model has no instance classifiers (its checkpoint held none), so "
                    "instance_eval is unavailable; inference and explanations need none"
                )
            self._instance_clustering(output, h, weights, label_index(label, self.n_classes))
        return output

    def _instance_clustering(
        self, output: MILOutput, h: torch.Tensor, weights: torch.Tensor, label: int
    ) -> None:
        k = effective_k(self.k_sample, h.shape[0])
        total = h.new_zeros(())
        targets, predictions = [], []
        for branch, classifier in enumerate(self.instance_classifiers):
            row = weights[branch if self.multi_branch else 0]
            top = torch.topk(row, k).indices
            if branch == label:
                bottom = torch.topk(-row, k).indices
                patches = torch.cat([h[top], h[bottom]])
                branch_targets = torch.cat([torch.ones(k), torch.zeros(k)]).long().to(h.device)
            elif self.subtyping:
                patches = h[top]
                branch_targets = torch.zeros(k, dtype=torch.long, device=h.device)
            else:
                continue
            logits = classifier(patches)
            total = total + F.cross_entropy(logits, branch_targets)
            targets.append(branch_targets)
            predictions.append(logits.detach().argmax(dim=1))
        if self.subtyping:
            total = total / self.n_classes
        output.instance_loss = total
        output.instance_targets = torch.cat(targets)
        output.instance_predictions = torch.cat(predictions)


class CLAM_SB(_CLAMBase):  # noqa: N801 - CLAM's own name, which users look for
    """Single-branch CLAM: one attention map shared by all classes."""

    multi_branch = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.classifiers = nn.Linear(self.hidden_dim, self.n_classes)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifiers(pooled)


class CLAM_MB(_CLAMBase):  # noqa: N801 - CLAM's own name, which users look for
    """Multi-branch CLAM: one attention map and one Linear(H -> 1) bag classifier per class."""

    multi_branch = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.classifiers = nn.ModuleList([nn.Linear(self.hidden_dim, 1) for _ in range(self.n_classes)])

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        weight = torch.cat([linear.weight for linear in self.classifiers])  # (C, H)
        bias = torch.cat([linear.bias for linear in self.classifiers])  # (C,)
        return ((pooled * weight).sum(dim=1) + bias).unsqueeze(0)
