"""The cases of `bench/metrics_sweep.py`: ranking metrics and segmentation here, pointing,
perturbation and maps in `metrics_sweep_pixels.py`, the MIL / slide metrics in
`metrics_sweep_slides.py`, each with its independent reference."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
from metrics_sweep_refs import (
    ap_ref,
    auc_ref,
    top_k_precision_ref,
)


@dataclass
class Case:
    name: str
    call: Callable[[], object]
    reference: object = None
    expect: str = "ok"
    tol: float = 1e-9
    check: Callable[[object, object], str | None] | None = None
    why: str = ""


def refused(name: str, call: Callable[[], object], why: str) -> Case:
    return Case(name, call, expect="error", why=why)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def cases() -> list[Case]:
    from metrics_sweep_pixels import maps_cases, perturbation_cases, pointing_cases
    from metrics_sweep_slides import slide_cases

    return [
        *localisation_cases(),
        *ap_cases(),
        *segmentation_cases(),
        *pointing_cases(),
        *perturbation_cases(),
        *maps_cases(),
        *slide_cases(),
    ]


# --- attention_localisation: AUC, AP, top-k precision of patch scores -------------------------


def _loc_ref(scores, labels, k=None) -> dict:
    labels = np.asarray(labels).astype(bool)
    k = int(labels.sum()) if k is None else k
    return {
        "auc": auc_ref(scores, labels),
        "average_precision": ap_ref(scores, labels),
        "top_k_precision": top_k_precision_ref(scores, labels, k),
        "top_k": float(k),
        "n_patches": float(labels.size),
        "n_positive": float(labels.sum()),
    }


def localisation_cases() -> list[Case]:
    from attnmap.evaluate.mil_localisation import attention_localisation as loc

    out = []
    for seed in range(4):
        g = rng(seed)
        n = int(g.integers(5, 200))
        labels = g.random(n) < 0.3
        labels[:2] = [True, False]
        scores = g.normal(size=n) + labels
        out.append(
            Case(
                f"localisation/random {seed}",
                lambda s=scores, lab=labels: loc(s, lab),
                _loc_ref(scores, labels),
            )
        )
    g = rng(10)
    labels = g.random(60) < 0.4
    labels[:2] = [True, False]
    ties = g.integers(0, 3, 60).astype(float)
    out.append(Case("localisation/ties everywhere", lambda: loc(ties, labels), _loc_ref(ties, labels)))
    const = np.full(60, 0.25)
    out.append(Case("localisation/constant scores", lambda: loc(const, labels), _loc_ref(const, labels)))
    perm = g.permutation(60)
    out.append(
        Case(
            "localisation/ties, patches shuffled",
            lambda: loc(ties[perm], labels[perm]),
            lambda: loc(ties, labels),
        )
    )
    out.append(
        Case(
            "localisation/ties, top_k 7 shuffled",
            lambda: loc(ties[perm], labels[perm], top_k=7),
            _loc_ref(ties, labels, 7),
        )
    )
    scores = g.normal(size=60)
    out.append(
        Case(
            "localisation/scaled x1e6 + 3", lambda: loc(scores * 1e6 + 3, labels), lambda: loc(scores, labels)
        )
    )
    out.append(
        Case(
            "localisation/softmaxed",
            lambda: loc(np.exp(scores) / np.exp(scores).sum(), labels),
            lambda: loc(scores, labels),
        )
    )
    huge = np.where(labels, 1e308, -1e308) * g.random(60)
    out.append(Case("localisation/huge values", lambda: loc(huge, labels), _loc_ref(huge, labels)))
    tiny = scores * 1e-310
    out.append(Case("localisation/subnormal values", lambda: loc(tiny, labels), _loc_ref(tiny, labels)))
    for dtype in (np.float16, np.float32):
        cast = scores.astype(dtype)
        out.append(
            Case(
                f"localisation/{np.dtype(dtype).name}", lambda c=cast: loc(c, labels), _loc_ref(cast, labels)
            )
        )
    out.append(
        Case(
            "localisation/torch tensors",
            lambda: loc(torch.tensor(scores), torch.tensor(labels)),
            _loc_ref(scores, labels),
        )
    )
    out.append(
        Case(
            "localisation/grad-tracking tensor",
            lambda: loc(torch.tensor(scores, requires_grad=True), labels),
            _loc_ref(scores, labels),
        )
    )
    out.append(
        Case("localisation/0/1 int labels", lambda: loc(scores, labels.astype(int)), _loc_ref(scores, labels))
    )
    out.append(refused("localisation/all positive", lambda: loc(scores, np.ones(60, bool)), "no negative"))
    out.append(refused("localisation/all negative", lambda: loc(scores, np.zeros(60, bool)), "no positive"))
    out.append(refused("localisation/one patch", lambda: loc([0.3], [True]), "one patch"))
    out.append(refused("localisation/no patch", lambda: loc([], []), "empty"))
    out.append(refused("localisation/NaN score", lambda: loc(np.r_[np.nan, scores[1:]], labels), "NaN"))
    out.append(refused("localisation/inf score", lambda: loc(np.r_[np.inf, scores[1:]], labels), "inf"))
    out.append(refused("localisation/soft labels", lambda: loc(scores, labels * 0.5), "labels 0.5"))
    out.append(refused("localisation/top_k 0", lambda: loc(scores, labels, top_k=0), "k = 0"))
    out.append(refused("localisation/top_k 2.5", lambda: loc(scores, labels, top_k=2.5), "k not whole"))
    out.append(refused("localisation/length mismatch", lambda: loc(scores[:-1], labels), "sizes"))
    return out


# --- segmentation.average_precision ---------------------------------------------------------


def ap_cases() -> list[Case]:
    from attnmap.evaluate.segmentation import average_precision as ap

    out = []
    for seed in range(3):
        g = rng(20 + seed)
        labels = g.random(300) < 0.2
        scores = g.random(300) + 0.3 * labels
        out.append(
            Case(
                f"average_precision/random {seed}",
                lambda s=scores, lab=labels: ap(s, lab),
                ap_ref(scores, labels),
            )
        )
    g = rng(30)
    labels = g.random(200) < 0.3
    ties = np.round(g.random(200) * 4) / 4
    out.append(Case("average_precision/ties", lambda: ap(ties, labels), ap_ref(ties, labels)))
    perm = g.permutation(200)
    out.append(
        Case("average_precision/ties shuffled", lambda: ap(ties[perm], labels[perm]), ap_ref(ties, labels))
    )
    out.append(
        Case("average_precision/constant", lambda: ap(np.zeros(200), labels), ap_ref(np.zeros(200), labels))
    )
    out.append(Case("average_precision/no positive is NaN", lambda: ap(ties, np.zeros(200, bool)), math.nan))
    out.append(Case("average_precision/all positive", lambda: ap(ties, np.ones(200, bool)), 1.0))
    out.append(Case("average_precision/one pixel", lambda: ap([0.4], [True]), 1.0))
    out.append(
        Case(
            "average_precision/float16 tensor",
            lambda: ap(torch.tensor(ties, dtype=torch.float16), labels),
            ap_ref(ties, labels),
        )
    )
    out.append(Case("average_precision/scaled", lambda: ap(ties * 1e300, labels), ap_ref(ties, labels)))
    out.append(refused("average_precision/NaN score", lambda: ap(np.r_[np.nan, ties[1:]], labels), "NaN"))
    out.append(refused("average_precision/inf score", lambda: ap(np.r_[-np.inf, ties[1:]], labels), "inf"))
    out.append(refused("average_precision/soft labels", lambda: ap(ties, labels * 0.5), "labels 0.5"))
    out.append(refused("average_precision/0-255 labels", lambda: ap(ties, labels * 255), "labels 255"))
    return out


# --- segmentation_scores: pixel accuracy, mIoU, mAP ------------------------------------------


def _exact_above_mean(one: np.ndarray) -> np.ndarray:
    """Pixels strictly above the map's exact mean (rational arithmetic)."""
    values = [Fraction(float(v)) for v in one.ravel()]
    mean = sum(values) / len(values)
    return np.array([v > mean for v in values]).reshape(one.shape)


def _segmentation_ref(maps, masks) -> dict:
    maps = np.asarray(torch.as_tensor(maps).double())
    masks = np.asarray(torch.as_tensor(masks)).astype(bool)
    predicted = np.stack([_exact_above_mean(m) for m in maps])
    ious = []
    for p, t in ((predicted, masks), (~predicted, ~masks)):
        union = (p | t).sum()
        ious.append((p & t).sum() / union if union else 1.0)
    scored = [i for i in range(len(masks)) if masks[i].any() and not masks[i].all()]
    return {
        "pixel_acc": float((predicted == masks).mean()),
        "miou": float(np.mean(ious)),
        "map": float(np.mean([ap_ref(maps[i], masks[i]) for i in scored])),
    }


def _blob_masks(g: np.random.Generator, n: int, size: int = 12) -> np.ndarray:
    masks = np.zeros((n, size, size), bool)
    for i in range(n):
        y, x = g.integers(0, size - 3, 2)
        h, w = g.integers(1, 5, 2)
        masks[i, y : y + h, x : x + w] = True
    return masks


def segmentation_cases() -> list[Case]:
    from attnmap.evaluate.segmentation import segmentation_scores as seg

    out = []
    g = rng(40)
    masks = _blob_masks(g, 4)
    maps = g.random((4, 12, 12)) + masks
    t_maps, t_masks = torch.tensor(maps), torch.tensor(masks)
    out.append(Case("segmentation/random", lambda: seg(t_maps, t_masks), _segmentation_ref(maps, masks)))
    for value in (0.0, 0.1, 0.7, 1 / 3):
        const = torch.full((4, 12, 12), value, dtype=torch.float64)
        out.append(
            Case(
                f"segmentation/constant {value:.3g}",
                lambda c=const: seg(c, t_masks),
                _segmentation_ref(const, masks),
            )
        )
    ties = torch.tensor(np.round(maps * 2) / 2)
    out.append(Case("segmentation/ties", lambda: seg(ties, t_masks), _segmentation_ref(ties, masks)))
    out.append(
        Case(
            "segmentation/scaled x1e6 + 3",
            lambda: seg(t_maps * 1e6 + 3, t_masks),
            _segmentation_ref(maps, masks),
            tol=1e-9,
        )
    )
    half = t_maps.half()
    out.append(Case("segmentation/float16", lambda: seg(half, t_masks), _segmentation_ref(half, masks)))
    out.append(
        Case(
            "segmentation/float32",
            lambda: seg(t_maps.float(), t_masks),
            _segmentation_ref(t_maps.float(), masks),
        )
    )
    out.append(Case("segmentation/numpy arrays", lambda: seg(maps, masks), _segmentation_ref(maps, masks)))
    with_empty = masks.copy()
    with_empty[1] = False
    out.append(
        Case(
            "segmentation/one empty mask",
            lambda: seg(t_maps, torch.tensor(with_empty)),
            _segmentation_ref(maps, with_empty),
        )
    )
    border = np.zeros_like(masks)
    border[:, :3, :] = True
    out.append(
        Case(
            "segmentation/mask on the border",
            lambda: seg(t_maps, torch.tensor(border)),
            _segmentation_ref(maps, border),
        )
    )
    out.append(
        Case(
            "segmentation/one image",
            lambda: seg(t_maps[:1], t_masks[:1]),
            _segmentation_ref(maps[:1], masks[:1]),
        )
    )
    out.append(
        Case(
            "segmentation/0-1 float masks",
            lambda: seg(t_maps, t_masks.double()),
            _segmentation_ref(maps, masks),
        )
    )
    out.append(
        refused(
            "segmentation/all masks empty", lambda: seg(t_maps, torch.zeros_like(t_masks)), "nothing to find"
        )
    )
    out.append(
        refused("segmentation/NaN map", lambda: seg(torch.where(t_masks, torch.nan, t_maps), t_masks), "NaN")
    )
    out.append(
        refused("segmentation/inf map", lambda: seg(torch.where(t_masks, torch.inf, t_maps), t_masks), "inf")
    )
    out.append(refused("segmentation/0-255 masks", lambda: seg(t_maps, t_masks.to(torch.uint8) * 255), "255"))
    out.append(refused("segmentation/shape mismatch", lambda: seg(t_maps[:, :-1], t_masks), "shapes"))
    return out
