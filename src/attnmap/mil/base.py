"""What every attention-MIL model here shares: input checks, attention pooling and the output record.

A model is split into three steps so that the same pooling code serves the plain forward (training,
small bags) and the chunked inference over huge bags in `attnmap.mil.scores`:

- ``embed(features)``: (N, D) patch features -> (N, H) embeddings h;
- ``attention_logits(h)``: (N, H) -> (N, K) pre-softmax attention, K branches;
- ``classify(pooled)``: (K, H) attention-pooled embeddings -> (1, C) bag logits.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnmap.errors import InputError


@dataclass
class MILOutput:
    """Everything one bag's forward pass produces.

    ``attention`` is pre-softmax (K, N), as CLAM's ``A_raw``; ``pooled`` is (K, H) (CLAM's ``M``).
    The instance fields are set only by CLAM with ``instance_eval=True``: the summed instance
    clustering loss and the concatenated pseudo-labels / predictions of the evaluated branches.
    """

    logits: torch.Tensor
    probs: torch.Tensor
    prediction: torch.Tensor
    attention: torch.Tensor
    pooled: torch.Tensor
    instance_loss: torch.Tensor | None = None
    instance_targets: torch.Tensor | None = None
    instance_predictions: torch.Tensor | None = None


class AttentionMILBase(nn.Module):
    """Base of ABMIL and CLAM: subclasses set the dimensions and implement the three steps."""

    embed_dim: int
    hidden_dim: int
    n_classes: int
    n_branches: int

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def attention_logits(self, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def parameter_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_features(self, features: torch.Tensor) -> torch.Tensor:
        """Validate a bag and return it as (N, D) in the model's dtype and device.

        Accepts (N, D) or a batch of one (1, N, D). Empty bags, NaN/inf values and a feature size
        other than the model's ``embed_dim`` raise `InputError`, since each would otherwise give a
        silent NaN or a shape error deep inside a matmul.
        """
        features = check_bag_features(features, self.embed_dim)
        cast = features.to(device=self.device, dtype=self.parameter_dtype)
        # finite float64 values beyond a float32 (or half) model's range become inf on the cast,
        # which gave NaN logits and NaN maps without a word
        # (summed in at least float32: a half row sum may overflow where no value does)
        wide = torch.promote_types(cast.dtype, torch.float32)
        if cast.dtype != features.dtype and not bool(torch.isfinite(cast.sum(dim=1, dtype=wide)).all()):
            largest = float(features.abs().max())
            raise InputError(
                f"bag features do not fit the model's {str(cast.dtype).removeprefix('torch.')}: "
                f"values up to {largest:.3g} are beyond its range (scale them, or use a float64 model)"
            )
        return cast

    def pool(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Attention logits (K, N), their softmax over patches (K, N) and pooled embeddings (K, H)."""
        attention = self.attention_logits(h).transpose(0, 1)
        weights = F.softmax(attention, dim=1)
        return attention, weights, weights @ h

    def bag_forward(self, features: torch.Tensor) -> tuple[MILOutput, torch.Tensor, torch.Tensor]:
        """The bag-level forward; also returns h and the softmaxed attention for instance losses."""
        features = self.check_features(features)
        h = self.embed(features)
        attention, weights, pooled = self.pool(h)
        logits = self.classify(pooled)
        output = MILOutput(
            logits=logits,
            probs=F.softmax(logits, dim=1),
            prediction=logits.detach().argmax(dim=1)[0],
            attention=attention,
            pooled=pooled,
        )
        return output, h, weights


class FeatureRows:
    """A bag's (N, D) features that stay in their file: ``rows[a:b]`` reads those rows as a float
    tensor. Every pass over a bag here goes chunk by chunk (`infer_bag`, `attnmap.mil.explain`), so
    one of these serves in place of a tensor, and a bag larger than memory is read one chunk at a time.
    """

    shape: tuple[int, int]
    ndim = 2
    device = torch.device("cpu")

    def __getitem__(self, rows: slice) -> torch.Tensor:
        raise NotImplementedError


def check_bag_shape(features: torch.Tensor | FeatureRows) -> torch.Tensor | FeatureRows:
    """A non-empty (N, D) tensor (a leading batch axis of 1 is dropped); values are not read."""
    if isinstance(features, FeatureRows):  # its reader checked the layout; values come per chunk
        return features
    if not isinstance(features, torch.Tensor):
        raise InputError(f"bag features must be a torch.Tensor, got {type(features).__name__}")
    if features.ndim == 3 and features.shape[0] == 1:
        features = features[0]
    if features.ndim != 2:
        raise InputError(f"bag features must have shape (N, D), got {tuple(features.shape)}")
    if features.shape[0] == 0:
        raise InputError("the bag is empty: it has no patches (0 feature rows)")
    return features


def check_feature_size(size: int, embed_dim: int) -> None:
    """`InputError` unless a bag's ``size`` features per patch are the model's ``embed_dim``."""
    if size != embed_dim:
        raise InputError(
            f"features have {size} columns but the model expects {embed_dim} "
            "(the feature size it was built or trained with)"
        )


def check_bag_features(features: torch.Tensor, embed_dim: int | None = None) -> torch.Tensor:
    """The checks of `AttentionMILBase.check_features`, usable without a model (returns (N, D))."""
    features = check_bag_shape(features)
    if embed_dim is not None:
        check_feature_size(int(features.shape[1]), embed_dim)
    if not features.is_floating_point():
        features = features.float()
    # A row sum is NaN/inf whenever the row holds a NaN/inf: one cheap read instead of an (N, D) mask.
    if not bool(torch.isfinite(features.sum(dim=1)).all()):
        bad = int((~torch.isfinite(features)).any(dim=1).sum())
        if bad == 0:
            raise InputError(
                "bag features are too large: their row sums overflow (values near the dtype's max)"
            )
        raise InputError(
            f"bag features contain NaN or infinite values ({bad} of {features.shape[0]} patches)"
        )
    return features


def label_index(label: int | torch.Tensor, n_classes: int) -> int:
    """A bag label as a Python int, checked against the number of classes.

    Integers of any kind (Python, numpy, a one-element integer tensor) are accepted; a float such
    as 1.5 or a bool is refused rather than truncated to a class the caller did not mean.
    """
    if isinstance(label, (torch.Tensor, np.ndarray, np.generic)):
        if int(np.prod(label.shape)) != 1:
            raise InputError(f"a bag label must be one class index, got shape {tuple(label.shape)}")
        label = label.item()  # a Python bool, int or float
    integral = isinstance(label, numbers.Integral) or (isinstance(label, float) and label.is_integer())
    if isinstance(label, bool) or not integral:
        raise InputError(f"a class index must be an integer, got {label!r}")
    label = int(label)
    if not 0 <= label < n_classes:
        raise InputError(f"label {label} is out of range for a model with {n_classes} classes")
    return label
