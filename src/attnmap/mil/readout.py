"""The affine pieces of an attention-MIL model that the relevance methods work with.

Every model here is h_i = ReLU(W x_i + b) (the embedding), s_i = attention(h_i) (K branches),
a = softmax(s), M = Σ_i a_i h_i and a bag logit that is *affine* in the pooled embedding:
y_c = w_c · M_{k(c)} + b_c, where k(c) = 0 for ABMIL and CLAM_SB and k(c) = c for CLAM_MB.

Because the read-out is affine, a bag logit is a softmax-weighted mean of per-patch numbers
v_ic = w_c · h_i, plus b_c. That is what makes exact leave-one-out occlusion and patch flipping
O(N) after one pass over the patches, and what the analytic gradient and LRP passes build on.
`readout_for` extracts these pieces so the rest of the code never inspects module names.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attnmap.errors import InputError, UnsupportedModelError
from attnmap.mil.abmil import ABMIL
from attnmap.mil.base import AttentionMILBase, label_index
from attnmap.mil.clam import CLAM_MB, CLAM_SB


@dataclass
class Readout:
    """The embedding Linear of a model and, for every class c, its branch and affine read-out.

    ``weight`` is (C, H) and ``bias`` (C,): logit c = weight[c] · pooled[branch[c]] + bias[c].
    """

    embedding: nn.Linear
    branch: list[int]
    weight: torch.Tensor
    bias: torch.Tensor

    def target(self, target: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        """The attention branch, read-out row (H,) and bias (scalar tensor) of one class."""
        return self.branch[target], self.weight[target], self.bias[target]


def readout_for(model: nn.Module) -> Readout:
    """The affine pieces of ABMIL, CLAM_SB or CLAM_MB (detached, in the model's dtype and device)."""
    if not isinstance(model, AttentionMILBase):
        raise InputError(
            f"expected an attnmap.mil model (ABMIL, CLAM_SB, CLAM_MB), got {type(model).__name__}"
        )
    if isinstance(model, ABMIL):
        embedding, classifier = model.feature[0], model.classifier
        weight, bias = classifier.weight, classifier.bias
        branch = [0] * model.n_classes
    elif isinstance(model, CLAM_MB):
        embedding = model.attention_net[0]
        weight = torch.cat([linear.weight for linear in model.classifiers])
        bias = torch.cat([linear.bias for linear in model.classifiers])
        branch = list(range(model.n_classes))
    elif isinstance(model, CLAM_SB):
        embedding, classifier = model.attention_net[0], model.classifiers
        weight, bias = classifier.weight, classifier.bias
        branch = [0] * model.n_classes
    else:
        raise UnsupportedModelError(
            f"relevance methods know ABMIL, CLAM_SB and CLAM_MB, not {type(model).__name__}"
        )
    if not isinstance(embedding, nn.Linear):
        raise UnsupportedModelError("the model's embedding does not start with a Linear layer")
    return Readout(embedding=embedding, branch=branch, weight=weight.detach(), bias=bias.detach())


def check_mirrored(model: AttentionMILBase, readout: Readout, features: torch.Tensor, rows: int = 8) -> None:
    """Refuse a model whose ``embed`` or ``classify`` is not what the methods compute themselves.

    The passes here compute h = ReLU(W x + b) and y_c = w_c · M + b_c from the parameters, not by
    calling the model, so a subclass with a deeper embedding or its own read-out was explained as
    another function, silently. Its own layers are run on a few rows (in eval mode: the caller's
    job) and compared; ``attention_logits`` needs no check, being always called as the model's own.
    """
    probe = features[: min(rows, features.shape[0])]
    if probe.is_floating_point() and not bool(torch.isfinite(probe).all()):
        return  # a bag the caller's own check refuses, counting its non-finite rows over the whole bag
    with torch.no_grad():
        x = model.check_features(probe)
        weight, bias = readout.embedding.weight, readout.embedding.bias
        h = torch.addmm(bias, x, weight.t()).relu_()
        pooled = h[torch.arange(model.n_branches, device=h.device) % h.shape[0]]  # (K, H), any rows
        branch_of_class = pooled[torch.as_tensor(readout.branch, device=h.device)]  # (C, H)
        logits = (readout.weight * branch_of_class).sum(dim=1) + readout.bias
        checks = (("embed", model.embed(x), h), ("classify", model.classify(pooled)[0], logits))
        for part, own, ours in checks:
            # float32: ~3e-4 relative, float64: ~1e-8, half: a few percent
            tolerance = torch.finfo(ours.dtype).eps ** 0.5 * (1.0 + float(ours.abs().max()))
            if own.shape != ours.shape or not torch.allclose(own, ours, rtol=0, atol=tolerance):
                raise UnsupportedModelError(
                    f"{type(model).__name__}.{part} is not the ReLU(Linear) embedding / affine read-out "
                    "the relevance methods compute from its parameters: its maps would explain another model"
                )


def resolve_target(model: AttentionMILBase, target: int | None, predicted: int) -> int:
    """The class to explain: the given one (checked), else the predicted class."""
    if target is None:
        return int(predicted)
    if isinstance(target, bool):
        raise InputError(f"target must be a class index, got {target!r}")
    return label_index(target, model.n_classes)


@dataclass
class BagPass:
    """One pass over a bag: attention logits (K, N), per-patch read-outs v (N, C), bag logits.

    ``logits`` (C,) float64 are computed from ``raw`` and ``values`` (softmax-weighted means plus
    the bias), which equals the model's forward. ``embeddings`` (N, H) are kept only on request.
    """

    raw: torch.Tensor
    values: torch.Tensor
    logits: torch.Tensor
    prediction: int
    embeddings: torch.Tensor | None

    def weights(self, branch: int) -> torch.Tensor:
        """Softmax attention (N,) of one branch, in the model's dtype."""
        return torch.softmax(self.raw[branch], dim=0)


def bag_pass(
    model: AttentionMILBase,
    features: torch.Tensor,
    readout: Readout,
    chunk_size: int,
    keep_embeddings: bool = False,
) -> BagPass:
    """Embed the bag in chunks (no autograd), keeping only O(N·(K+C)) numbers unless asked for h."""
    n_patches = features.shape[0]
    device, dtype = model.device, model.parameter_dtype
    raw = torch.empty(model.n_branches, n_patches, dtype=dtype, device=device)
    values = torch.empty(n_patches, model.n_classes, dtype=dtype, device=device)
    embeddings = (
        torch.empty(n_patches, model.hidden_dim, dtype=dtype, device=device) if keep_embeddings else None
    )
    weight, bias = readout.embedding.weight.detach(), readout.embedding.bias.detach()
    with torch.no_grad():
        for rows in chunk_slices(n_patches, chunk_size):
            x = model.check_features(features[rows])
            # h = ReLU(W x + b), written straight into the kept buffer when there is one
            h = torch.addmm(bias, x, weight.t(), out=embeddings[rows] if embeddings is not None else None)
            h.relu_()
            raw[:, rows] = model.attention_logits(h).t()
            values[rows] = h @ readout.weight.t()
    return logits_from_pass(raw, values, readout, embeddings)


def logits_from_pass(
    raw: torch.Tensor, values: torch.Tensor, readout: Readout, embeddings: torch.Tensor | None
) -> BagPass:
    """The bag logits (float64) from attention logits (K, N) and per-patch read-outs (N, C)."""
    with torch.no_grad():
        logits = torch.stack(
            [
                torch.softmax(raw[readout.branch[c]].double(), dim=0) @ values[:, c].double()
                for c in range(values.shape[1])
            ]
        ) + readout.bias.double()
    return BagPass(raw, values, logits, int(logits.argmax()), embeddings)


def chunk_slices(n_rows: int, chunk_size: int):
    """Consecutive row slices of at most ``chunk_size`` rows."""
    for start in range(0, n_rows, chunk_size):
        yield slice(start, min(start + chunk_size, n_rows))
