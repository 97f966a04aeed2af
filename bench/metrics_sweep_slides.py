"""Slide metrics of `bench/metrics_sweep.py`: patch flipping on tiny ABMIL / CLAM models with
planted evidence, FROC on planted lesions, patch footprints against a mask, the random baseline."""

from __future__ import annotations

import numpy as np
import torch
from metrics_sweep_cases import Case, refused, rng
from metrics_sweep_refs import flipping_ref, footprint_fraction, trapezoid_ref

DIM = 8


def _models() -> dict[str, torch.nn.Module]:
    from attnmap.mil.abmil import ABMIL
    from attnmap.mil.clam import CLAM_MB, CLAM_SB

    torch.manual_seed(0)
    models = {
        "abmil": ABMIL(embed_dim=DIM, hidden_dim=8, attention_dim=4),
        "clam_sb": CLAM_SB(embed_dim=DIM, n_classes=3),
        "clam_mb": CLAM_MB(embed_dim=DIM),
    }
    return {name: model.double().eval() for name, model in models.items()}


def _bag(seed: int, n: int) -> tuple[torch.Tensor, np.ndarray]:
    """Random features with evidence planted on a few patches, and scores that rank them first."""
    g = rng(seed)
    features = g.normal(size=(n, DIM))
    evidence = g.choice(n, size=max(1, n // 5), replace=False)
    features[evidence] += 4.0
    scores = g.random(n)
    scores[evidence] += 1.0
    return torch.tensor(features), scores


def _flip_check(got, want) -> str | None:
    for name, key in (("most", "most_relevant_first"), ("least", "least_relevant_first")):
        if not np.array_equal(got.removed, want["removed"]):
            return f"removed {got.removed.tolist()}, fractions as written give {want['removed'].tolist()}"
        if not np.allclose(getattr(got, key), want[name], atol=1e-9):
            return f"{key} {np.round(getattr(got, key), 5)} vs forward {np.round(want[name], 5)}"
        if abs(getattr(got, f"auc_{key}") - want[f"auc_{name}"]) > 1e-9:
            return f"auc_{key} {getattr(got, f'auc_{key}')} vs {want[f'auc_{name}']}"
    return None


def flipping_cases() -> list[Case]:
    from attnmap.evaluate.patch_flipping import FRACTIONS, flipping_auc, patch_flipping

    out = []
    models = _models()
    for name, model in models.items():
        for n in (2, 7, 10, 30, 50):
            features, scores = _bag(n, n)
            out.append(
                Case(
                    f"flipping/{name} {n} patches",
                    lambda m=model, f=features, s=scores: patch_flipping(m, f, s, target=1),
                    lambda m=model, f=features, s=scores: flipping_ref(m, f, s, 1, FRACTIONS),
                    check=_flip_check,
                )
            )
    model = models["abmil"]
    features, scores = _bag(1, 40)
    ties = np.round(scores * 2) / 2
    out.append(
        Case(
            "flipping/tied scores keep the bag order",
            lambda: patch_flipping(model, features, ties, target=1),
            lambda: flipping_ref(model, features, ties, 1, FRACTIONS),
            check=_flip_check,
        )
    )
    perm = rng(5).permutation(40)

    def same_aucs(got, want):
        for key in ("auc_most_relevant_first", "auc_least_relevant_first"):
            if abs(getattr(got, key) - getattr(want, key)) > 1e-9:
                return f"{key} {getattr(got, key)} after shuffling, {getattr(want, key)} before"
        return None

    out.append(
        Case(
            "flipping/patches shuffled (distinct scores)",
            lambda: patch_flipping(model, features[perm], scores[perm], target=1),
            lambda: patch_flipping(model, features, scores, target=1),
            check=same_aucs,
        )
    )
    out.append(
        Case(
            "flipping/scores scaled x1e300",
            lambda: patch_flipping(model, features, scores * 1e300, target=1),
            lambda: patch_flipping(model, features, scores, target=1),
            check=same_aucs,
        )
    )
    out.append(
        Case(
            "flipping/float32 model and features",
            lambda: patch_flipping(_models()["abmil"].float(), features.float(), scores, target=1),
            lambda: flipping_ref(model, features.float().double(), scores, 1, FRACTIONS),
            check=lambda g, w: (
                None if np.allclose(g.most_relevant_first, w["most"], atol=1e-5) else "float32 curve"
            ),
        )
    )
    out.append(
        Case(
            "flipping/float16 features",
            lambda: patch_flipping(model, features.half(), scores, target=1),
            lambda: flipping_ref(model, features.half().double(), scores, 1, FRACTIONS),
            check=lambda g, w: (
                None if np.allclose(g.most_relevant_first, w["most"], atol=1e-9) else "float16 curve"
            ),
        )
    )
    out.append(
        Case(
            "flipping/numpy features, tensor scores",
            lambda: patch_flipping(
                model, features.numpy(), torch.tensor(scores, requires_grad=True), target=1
            ),
            lambda: flipping_ref(model, features, scores, 1, FRACTIONS),
            check=_flip_check,
        )
    )
    out.append(
        refused("flipping/one patch", lambda: patch_flipping(model, features[:1], scores[:1]), "one patch")
    )
    out.append(
        refused("flipping/constant scores", lambda: patch_flipping(model, features, np.ones(40)), "constant")
    )
    out.append(
        refused(
            "flipping/NaN score", lambda: patch_flipping(model, features, np.r_[np.nan, scores[1:]]), "NaN"
        )
    )
    out.append(
        refused(
            "flipping/inf score", lambda: patch_flipping(model, features, np.r_[np.inf, scores[1:]]), "inf"
        )
    )
    out.append(
        refused(
            "flipping/target 5 of 2 classes",
            lambda: patch_flipping(model, features, scores, target=5),
            "class",
        )
    )
    out.append(
        refused(
            "flipping/fraction 1.0",
            lambda: patch_flipping(model, features, scores, fractions=(0, 1.0)),
            "fraction",
        )
    )
    x = [0.0, 0.1, 0.3, 0.9]
    y = [0.9, 0.5, 0.2, 0.1]
    out.append(Case("flipping/flipping_auc", lambda: flipping_auc(x, y), trapezoid_ref(x, y) / 0.9))
    out.append(refused("flipping/flipping_auc one point", lambda: flipping_auc([0.0], [1.0]), "one point"))
    out.append(refused("flipping/flipping_auc lengths differ", lambda: flipping_auc(x, y[:3]), "lengths"))
    out.append(refused("flipping/flipping_auc decreasing x", lambda: flipping_auc(x[::-1], y), "order"))
    out.append(refused("flipping/flipping_auc NaN", lambda: flipping_auc(x, [np.nan, *y[1:]]), "NaN"))
    return out


# --- patch footprints against a mask; patch AUC ----------------------------------------------


def footprint_cases() -> list[Case]:
    from attnmap.evaluate.mil_localisation import patch_mask_fractions

    out = []
    g = rng(90)
    mask = g.random((20, 24)) < 0.4
    for label, coords, size, down in (
        ("aligned", np.array([[0, 0], [32, 16], [64, 64]]), 32.0, 4.0),
        ("fractional", g.random((20, 2)) * 80, 13.0, 4.0),
        ("beyond the border", np.array([[-8, -8], [88, 70], [90, 75]]), 16.0, 4.0),
        ("smaller than a mask pixel", g.random((10, 2)) * 80, 2.0, 4.0),
    ):
        out.append(
            Case(
                f"footprint/{label}",
                lambda c=coords, s=size, d=down: patch_mask_fractions(c, s, mask, d),
                footprint_fraction(coords, size, mask, down),
                tol=0.02,
            )
        )
    out.append(
        refused(
            "footprint/NaN coordinates",
            lambda: patch_mask_fractions(np.array([[np.nan, 0.0]]), 8.0, mask, 4.0),
            "NaN",
        )
    )
    out.append(
        refused("footprint/patch size 0", lambda: patch_mask_fractions(np.zeros((1, 2)), 0.0, mask, 4.0), "0")
    )
    return out


def random_cases() -> list[Case]:
    from attnmap.evaluate.random_baseline import random_patch_maps

    return [
        Case(
            "random/map i the same whatever n",
            lambda: random_patch_maps(5, (3, 4), 7)[:2],
            lambda: random_patch_maps(2, (3, 4), 7),
        ),
        Case("random/uniform in [0, 1)", lambda: float(random_patch_maps(200, (8, 8)).mean()), 0.5, tol=0.01),
        refused("random/grid of 0", lambda: random_patch_maps(2, (0, 4)), "empty grid"),
    ]


def cohort_cases() -> list[Case]:
    """`attnmap evaluate --mil-checkpoint` over a cohort: a slide's numbers are its own."""
    from pathlib import Path

    from attnmap.evaluate.slides import evaluate_bags
    from attnmap.mil.bags import Bag

    model = _models()["abmil"]
    bags = [Bag(f"slide-{i}", _bag(60 + i, 12 + i)[0], None, Path(f"slide-{i}.h5")) for i in range(3)]

    def per_slide(order):
        evaluation = evaluate_bags(model, order, ["attention", "gradient_x_input"])
        return {
            f"{slide} {method}": [r.auc_most_relevant_first, r.auc_least_relevant_first, r.auc_random]
            for slide, methods in evaluation.results.items()
            for method, r in methods.items()
        }

    return [
        Case("cohort/bags in reverse order", lambda: per_slide(bags[::-1]), lambda: per_slide(bags)),
        Case(
            "cohort/one slide alone",
            lambda: per_slide(bags[2:]),
            lambda: {k: v for k, v in per_slide(bags).items() if k.startswith("slide-2")},
        ),
    ]


def slide_cases() -> list[Case]:
    from metrics_sweep_froc import empty_slide_cases, froc_cases, more_froc_cases, tied_froc_cases

    return [
        *flipping_cases(),
        *cohort_cases(),
        *froc_cases(),
        *more_froc_cases(),
        *empty_slide_cases(),
        *tied_froc_cases(),
        *footprint_cases(),
        *random_cases(),
    ]
