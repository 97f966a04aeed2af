"""Patch flipping: is a MIL heatmap faithful to the model, without any labels?

Order the patches of a bag by a method's scores and remove them from the bag in steps (the most
relevant first), recomputing the target class's probability each time. If the scores are faithful
the probability falls fast and the area under the curve is low. The same is done in the reverse
order (least relevant first: the curve should stay high) and in a seeded random order, the floor
any method should beat (xMIL, Hense et al. 2024, use this protocol for slides).

Removing a patch means dropping it from the bag (attention MIL has no "blank" patch), so the
softmax re-normalises over the remaining ones. Because the bag logits are softmax-weighted means
of per-patch read-outs (`attnmap.mil.readout`), every point of every curve costs O(N) after one
pass over the features; each equals the model's forward on the reduced bag.

AUC = trapezoid area under probability versus removed fraction, divided by the fraction range:
the curve's mean probability, in [0, 1]. At fraction f of N patches, f × N patches are removed,
rounded half up with f as written (5% of 10 patches is 1 patch, as 5% of 30 is 2; numpy's
round-half-to-even made it 0), and at least one patch always stays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from attnmap.errors import InputError
from attnmap.evaluate.inputs import as_array, check_finite, share_of
from attnmap.mil.base import AttentionMILBase, check_bag_shape
from attnmap.mil.readout import BagPass, bag_pass, check_mirrored, readout_for, resolve_target
from attnmap.mil.scores import DEFAULT_CHUNK
from attnmap.model_state import eval_mode

FRACTIONS: tuple[float, ...] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


@dataclass
class PatchFlippingResult:
    """Target-class probability after removing each fraction of patches, in three orders.

    ``most_relevant_first`` (lower AUC = more faithful), ``least_relevant_first`` (higher is
    better) and ``random_order`` (the floor; seeded by ``seed``). ``removed`` counts the patches
    removed at each fraction (at least one patch always stays).
    """

    fractions: np.ndarray
    removed: np.ndarray
    most_relevant_first: np.ndarray
    least_relevant_first: np.ndarray
    random_order: np.ndarray
    auc_most_relevant_first: float
    auc_least_relevant_first: float
    auc_random: float
    target: int
    n_patches: int
    seed: int

    def to_dict(self) -> dict[str, object]:
        """Plain Python values (lists for the arrays), for JSON."""
        return {key: value.tolist() if isinstance(value, np.ndarray) else value
                for key, value in asdict(self).items()}


def flipping_auc(fractions: Sequence[float], probabilities: Sequence[float]) -> float:
    """Trapezoid area under the curve divided by the fraction range (the curve's mean value).

    Needs at least two strictly increasing finite fractions and as many finite probabilities."""
    x, y = as_array(fractions).reshape(-1), as_array(probabilities).reshape(-1)
    if x.size < 2 or x.shape != y.shape:
        raise InputError(
            f"need at least two fractions and one probability each, got {x.size} and {y.size}"
        )
    check_finite(x, "fractions")
    check_finite(y, "probabilities")
    if np.any(np.diff(x) <= 0):
        raise InputError(f"fractions must increase, got {x.tolist()}")
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2 / (x[-1] - x[0]))


def nothing_to_flip(n_patches: int, scores: np.ndarray | None = None) -> str | None:
    """Why a bag (and its finite scores, when given) cannot be flipped: one patch, or scores equal
    on every patch (most and least relevant first would be one order); None when it can."""
    if n_patches < 2:
        return "one patch: nothing to flip (patch flipping needs at least 2 patches)"
    if scores is not None and scores.min() == scores.max():
        return "constant scores: no patch ranks above another"
    return None


def patch_flipping(
    model: AttentionMILBase,
    features: torch.Tensor | np.ndarray,
    scores: np.ndarray | torch.Tensor,
    target: int | None = None,
    fractions: Sequence[float] = FRACTIONS,
    seed: int = 0,
    chunk_size: int = DEFAULT_CHUNK,
) -> PatchFlippingResult:
    """Remove the highest-scored patches first and track the target probability (see module doc).

    ``target`` None is the class predicted on the whole bag. Ties in ``scores`` keep the bag's
    patch order (stable sort), so the result is deterministic. Constant scores (both orders would
    be the bag's own order) and one-patch bags (nothing to remove) are refused.
    """
    fractions_array = _check_fractions(fractions)
    if int(seed) < 0:  # numpy's generators take only non-negative seeds
        raise InputError(f"the random-order seed must be >= 0, got {seed}")
    if isinstance(features, np.ndarray):
        features = torch.from_numpy(features)
    features = check_bag_shape(features)
    n_patches = features.shape[0]
    scores_array = as_array(scores).reshape(-1)
    if scores_array.shape != (n_patches,):
        raise InputError(f"scores must have one value per patch ({n_patches}), got {scores_array.size}")
    if not np.all(np.isfinite(scores_array)):
        raise InputError("scores contain NaN or infinite values")
    readout = readout_for(model)
    if features.shape[1] != model.embed_dim:
        raise InputError(f"features have {features.shape[1]} columns but the model expects {model.embed_dim}")
    with eval_mode(model):  # every module's own flag restored after
        check_mirrored(model, readout, features)
        bag = bag_pass(model, features, readout, chunk_size)
    target = resolve_target(model, target, bag.prediction)
    reason = nothing_to_flip(n_patches, scores_array)
    if reason is not None:
        raise InputError(reason)
    removed = np.array([min(share_of(f, n_patches, half_up=True), n_patches - 1) for f in fractions_array],
                       dtype=np.int64)
    orders = {
        "most": np.argsort(-scores_array, kind="stable"),
        "least": np.argsort(scores_array, kind="stable"),
        "random": np.random.default_rng(seed).permutation(n_patches),
    }
    bias = readout.bias.double().cpu()
    curves = {name: _curve(bag, readout.branch, bias, order, removed, target)
              for name, order in orders.items()}
    return PatchFlippingResult(
        fractions=fractions_array,
        removed=removed,
        most_relevant_first=curves["most"],
        least_relevant_first=curves["least"],
        random_order=curves["random"],
        auc_most_relevant_first=flipping_auc(fractions_array, curves["most"]),
        auc_least_relevant_first=flipping_auc(fractions_array, curves["least"]),
        auc_random=flipping_auc(fractions_array, curves["random"]),
        target=target,
        n_patches=n_patches,
        seed=seed,
    )


def _curve(
    bag: BagPass, branch: list[int], bias: torch.Tensor, order: np.ndarray, removed: np.ndarray, target: int
) -> np.ndarray:
    """Target probability of the bag without its first ``removed[j]`` patches in ``order``."""
    raw = bag.raw.double().cpu()
    values = bag.values.double().cpu()
    order_tensor = torch.from_numpy(order)
    probabilities = np.empty(len(removed), dtype=np.float64)
    for j, n_removed in enumerate(removed):
        keep = order_tensor[int(n_removed):]
        logits = torch.stack([
            torch.softmax(raw[branch[c], keep], dim=0) @ values[keep, c] for c in range(values.shape[1])
        ]) + bias
        probabilities[j] = float(torch.softmax(logits, dim=0)[target])
    return probabilities


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    array = np.asarray(list(fractions), dtype=np.float64)
    if (
        array.ndim != 1
        or array.size < 2
        or not np.all((array >= 0) & (array < 1))
        or np.any(np.diff(array) <= 0)
    ):
        raise InputError(
            f"fractions must be at least two increasing values in [0, 1), got {list(fractions)}"
        )
    return array
