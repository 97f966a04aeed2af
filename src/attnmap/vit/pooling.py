"""Max pooling over tokens (timm ``global_pool='max'`` and ``'avgmax'``), as both map families read it.

A max pool reads, for each feature, the token holding its maximum. The attention methods need a
query row (which tokens the read-out looks at): each token's share of the features it wins, i.e.
the pool's Jacobian averaged over features. LRP needs the pool's rule: each feature's relevance goes
to the token that won it (winner takes all), and for ``avgmax`` (½ max + ½ mean) it is split in
proportion to each token's contribution. Tied maxima share a feature equally, as the gradient of
``amax`` does.
"""

from __future__ import annotations

import torch

MAX_POOLS = ("max", "avgmax")
# the part of each pool's read-out spread evenly over the pooled tokens (avgmax: its mean half): the
# rollouts remove its residual identity path, as for a mean pool (docs/average_pooling.md)
UNIFORM_SHARE = {"max": 0.0, "avgmax": 0.5}


def winners(tokens: torch.Tensor) -> torch.Tensor:
    """(B, T, D) tokens → (B, T, D): 1 / (number of tied maxima) where a token holds the feature's maximum."""
    won = (tokens == tokens.amax(dim=1, keepdim=True)).to(tokens.dtype)
    return won / won.sum(dim=1, keepdim=True)


def max_share(tokens: torch.Tensor) -> torch.Tensor:
    """(B, T, D) → (B, T): the share of the D features whose maximum each token holds (sums to 1)."""
    return winners(tokens).mean(dim=-1)


def query_share(tokens: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, T): the pooled tokens' weights in the read-out's row, for ``kind`` 'max' or 'avgmax'."""
    uniform = UNIFORM_SHARE[kind]
    return (1.0 - uniform) * max_share(tokens) + uniform / tokens.shape[1]


def pool_tokens(tokens: torch.Tensor, kind: str) -> torch.Tensor:
    """(B, T, D) → (B, D) as timm pools them."""
    if kind == "max":
        return tokens.amax(dim=1)
    return 0.5 * (tokens.amax(dim=1) + tokens.mean(dim=1))

