"""FROC cases of `bench/metrics_sweep.py`: planted lesions, exclusion regions, tied neighbours
under non-maximum suppression, patch AUC, slides without patches."""

from __future__ import annotations

import numpy as np
from metrics_sweep_cases import Case, refused, rng
from metrics_sweep_refs import auc_ref, footprint_fraction, froc_ref, nms_ref

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


def tied_froc_cases() -> list[Case]:
    """Detections tied across a lesion and false positives: the curve has slanted steps, where
    reading it by interpolation and by the best point at or below a rate differ."""
    from attnmap.evaluate.lesions import FROC_RATES, SlideScores, froc
    from attnmap.wsi.annotations import Region

    coords = np.array([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0], [300.0, 0.0], [400.0, 0.0], [500.0, 0.0]])
    centres = coords + 8.0
    rings = [_square(-2.0, -2.0, 20.0), _square(298.0, -2.0, 20.0)]
    regions = [Region(outer=ring, label="Tumor") for ring in rings]
    out = []
    for label, scores in (
        ("a lesion tied with false positives", np.array([0.9, 0.8, 0.6, 0.6, 0.6, 0.1])),
        ("the top tied between a lesion and a false positive", np.array([0.9, 0.9, 0.5, 0.4, 0.3, 0.2])),
    ):
        slide = SlideScores(coords, scores, 16.0, regions)
        out.append(
            Case(
                f"froc/{label}",
                lambda s=slide: _froc_numbers(froc([s], radius=1e-6)),
                froc_ref([(centres, scores, rings)], FROC_RATES),
            )
        )
    return out


def empty_slide_cases() -> list[Case]:
    """A slide without patches: in FROC its lesions are missed; its patch AUC does not exist."""
    from attnmap.evaluate.lesions import FROC_RATES, SlideScores, froc, patch_auc

    slide, centres, rings = _slide(5, 2)
    empty = SlideScores(np.zeros((0, 2)), np.zeros(0), 16.0, slide.regions)
    return [
        Case(
            "froc/a slide without patches",
            lambda: _froc_numbers(froc([slide, empty], radius=1e-6)),
            froc_ref([(centres, slide.scores, rings), (np.zeros((0, 2)), np.zeros(0), rings)], FROC_RATES),
        ),
        refused("froc/patch AUC of a slide without patches", lambda: patch_auc(empty), "no patches"),
    ]


def _froc_numbers(result: dict) -> dict:
    return {"sensitivity_at": result["sensitivity_at"], "froc_score": result["froc_score"]}
