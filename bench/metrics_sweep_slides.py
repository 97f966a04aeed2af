"""Slide metrics of `bench/metrics_sweep.py`: patch flipping on tiny ABMIL / CLAM models with
planted evidence, FROC on planted lesions, patch footprints against a mask, the random baseline."""

from __future__ import annotations

import numpy as np
import torch
from metrics_sweep_cases import Case, refused, rng
from metrics_sweep_refs import auc_ref, flipping_ref, footprint_fraction, froc_ref, nms_ref, trapezoid_ref

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


# --- FROC on planted lesions -----------------------------------------------------------------


def _square(x0, y0, side) -> np.ndarray:
    return np.array([[x0, y0], [x0 + side, y0], [x0 + side, y0 + side], [x0, y0 + side]], dtype=np.float64)


def _slide(seed: int, n_lesions: int, size: int = 20, patch: float = 16.0):
    """A grid of patches, lesions planted as squares, scores high inside them (with noise)."""
    from attnmap.evaluate.lesions import SlideScores
    from attnmap.wsi.annotations import Region

    g = rng(seed)
    xs, ys = np.meshgrid(np.arange(size) * patch, np.arange(size) * patch)
    coords = np.stack([xs.ravel(), ys.ravel()], 1)
    rings = []
    for _ in range(n_lesions):
        x0, y0 = g.integers(0, size - 4, 2) * patch + 3
        rings.append(_square(x0, y0, patch * g.integers(1, 4)))
    centres = coords + patch / 2
    inside = np.zeros(len(coords), bool)
    for ring in rings:
        inside |= (
            (centres[:, 0] > ring[0, 0])
            & (centres[:, 0] < ring[1, 0])
            & (centres[:, 1] > ring[0, 1])
            & (centres[:, 1] < ring[2, 1])
        )
    scores = np.round(g.random(len(coords)) * 0.6 + 0.5 * inside, 2)  # ties between TP and FP too
    regions = [Region(outer=ring, label="Tumor") for ring in rings]
    return SlideScores(coords=coords, scores=scores, patch_size=patch, regions=regions), centres, rings


def froc_cases() -> list[Case]:
    from attnmap.evaluate.lesions import FROC_RATES, froc

    out = []
    radius = 1e-6  # no suppression: every patch centre is a detection the reference sees too
    sets = {"one slide, 3 lesions": [1], "4 slides, one negative": [2, 3, 0, 1], "many lesions": [6]}
    for label, counts in sets.items():
        made = [_slide(10 * i + c, c) for i, c in enumerate(counts)]
        slides = [m[0] for m in made]
        want = froc_ref([(m[1], m[0].scores, m[2]) for m in made], FROC_RATES)
        out.append(Case(f"froc/{label}", lambda s=slides: _froc_numbers(froc(s, radius=radius)), want))
    made = _slide(7, 3)
    slide = made[0]
    perm = rng(8).permutation(len(slide.coords))
    from attnmap.evaluate.lesions import SlideScores

    shuffled = SlideScores(
        coords=slide.coords[perm],
        scores=slide.scores[perm],
        patch_size=slide.patch_size,
        regions=slide.regions,
    )
    out.append(
        Case(
            "froc/patches shuffled",
            lambda: _froc_numbers(froc([shuffled])),
            lambda: _froc_numbers(froc([slide])),
        )
    )
    two = [_slide(1, 2)[0], _slide(2, 1)[0]]
    out.append(
        Case(
            "froc/slides reordered", lambda: _froc_numbers(froc(two[::-1])), lambda: _froc_numbers(froc(two))
        )
    )
    nan_slide = SlideScores(
        coords=slide.coords, scores=np.r_[np.nan, slide.scores[1:]], patch_size=16.0, regions=slide.regions
    )
    out.append(refused("froc/NaN score", lambda: froc([nan_slide]), "NaN"))
    bad = SlideScores(coords=slide.coords, scores=slide.scores[:-1], patch_size=16.0, regions=slide.regions)
    out.append(refused("froc/fewer scores than patches", lambda: froc([bad]), "lengths"))
    negative = SlideScores(coords=slide.coords, scores=slide.scores, patch_size=16.0, regions=[])
    out.append(refused("froc/no lesion at all", lambda: froc([negative]), "no lesion"))
    out.append(refused("froc/no slide", lambda: froc([]), "no slide"))
    return out


def more_froc_cases() -> list[Case]:
    """Exclusion regions, tied neighbours under non-maximum suppression, patch AUC."""
    from attnmap.evaluate.lesions import FROC_RATES, SlideScores, detections, froc, patch_auc
    from attnmap.wsi.annotations import Region

    out = []
    slide, centres, rings = _slide(3, 2)
    exclusion = _square(centres[:, 0].max() - 44, centres[:, 1].max() - 44, 40)  # no centre on its edge
    scores = slide.scores.copy()
    in_exclusion = np.all((centres > exclusion[0]) & (centres < exclusion[2]), axis=1)
    scores[in_exclusion] = 0.99  # loud, but in a region the pathologist excluded
    regions = [*slide.regions, Region(outer=exclusion, label="Exclusion")]
    excluded = SlideScores(slide.coords, scores, slide.patch_size, regions)
    out.append(
        Case(
            "froc/exclusion region ignored",
            lambda: _froc_numbers(froc([excluded], radius=1e-6)),
            froc_ref([(centres, scores, rings, [exclusion])], FROC_RATES),
        )
    )
    # two neighbours tied at the top, one in the lesion: which is "the" maximum must not depend on
    # the order the patches are listed in
    coords = np.array([[0.0, 0.0], [16.0, 0.0], [160.0, 160.0], [200.0, 0.0]])
    lesion = Region(outer=_square(14.0, -2.0, 20.0), label="Tumor")
    tied = np.array([0.9, 0.9, 0.2, 0.1])
    one = SlideScores(coords, tied, 16.0, [lesion])
    other = SlideScores(coords[::-1].copy(), tied[::-1].copy(), 16.0, [lesion])
    out.append(
        Case(
            "froc/tied neighbours, patches listed in reverse",
            lambda: _froc_numbers(froc([other])),
            lambda: _froc_numbers(froc([one])),
        )
    )
    out.append(
        Case(
            "froc/detections are the local maxima",
            lambda: {tuple(map(float, row[:2])) for row in detections(one)},
            nms_ref(coords + 8.0, tied, 32.0),
            check=lambda got, want: None if got == want else f"kept {sorted(got)}, maxima {sorted(want)}",
        )
    )
    g = rng(4)
    for seed in range(3):
        slide, centres, rings = _slide(40 + seed, 3)
        noisy = slide.scores + g.random(len(centres)) * 1e-3  # distinct, so the order is the score's
        planted = SlideScores(slide.coords, noisy, slide.patch_size, slide.regions)
        out.append(
            Case(
                f"froc/local maxima {seed}",
                lambda s=planted: {tuple(map(float, row[:2])) for row in detections(s, max_detections=10**6)},
                nms_ref(centres, noisy, 32.0),
                check=lambda got, want: None if got == want else f"{len(got ^ want)} detections differ",
            )
        )

        from attnmap.wsi.annotations import regions_mask

        mask = regions_mask(slide.regions, (400, 400), 1.0)
        labels = footprint_fraction(slide.coords, slide.patch_size, mask, 1.0, sub=16) >= 0.5
        out.append(
            Case(
                f"froc/patch AUC {seed}",
                lambda s=planted: patch_auc(s, mask_downsample=1.0)["auc"],
                auc_ref(noisy, labels),
            )
        )
    return out


def _froc_numbers(result: dict) -> dict:
    return {"sensitivity_at": result["sensitivity_at"], "froc_score": result["froc_score"]}


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
    return [
        *flipping_cases(),
        *cohort_cases(),
        *froc_cases(),
        *more_froc_cases(),
        *footprint_cases(),
        *random_cases(),
    ]
