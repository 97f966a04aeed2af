"""Pixel-map cases of `bench/metrics_sweep.py`: the pointing game, the perturbation test on a
linear model whose answer is known, maps brought to pixels."""

from __future__ import annotations

import numpy as np
import torch
from metrics_sweep_cases import Case, _blob_masks, refused, rng
from metrics_sweep_refs import perturbation_ref, pointing_ref, trapezoid_ref

# --- pointing game ---------------------------------------------------------------------------


def pointing_cases() -> list[Case]:
    from attnmap.evaluate.pointing import pointing_accuracy, pointing_hits

    out = []
    g = rng(50)
    masks = np.zeros((300, 16, 16), bool)
    for i in range(300):
        y, x = g.integers(0, 16, 2)
        masks[i, y, x] = True  # one pixel: every distance from it matters
    maps = g.random((300, 16, 16))
    t_maps, t_masks = torch.tensor(maps), torch.tensor(masks)
    for tolerance in (0, 1, 2, 4, 7):
        out.append(
            Case(
                f"pointing/one-pixel masks, tolerance {tolerance}",
                lambda t=tolerance: pointing_hits(t_maps, t_masks, t),
                pointing_ref(maps, masks, tolerance),
            )
        )
    blobs = _blob_masks(g, 50, 16)
    bmaps = g.random((50, 16, 16))
    out.append(
        Case(
            "pointing/blobs",
            lambda: pointing_hits(torch.tensor(bmaps), torch.tensor(blobs), 2),
            pointing_ref(bmaps, blobs, 2),
        )
    )
    out.append(
        Case(
            "pointing/accuracy is the hit rate",
            lambda: pointing_accuracy(torch.tensor(bmaps), torch.tensor(blobs), 2),
            float(pointing_ref(bmaps, blobs, 2).mean()),
        )
    )
    out.append(
        Case(
            "pointing/batch equals single calls",
            lambda: pointing_hits(t_maps[:20], t_masks[:20], 3),
            lambda: np.array([pointing_hits(t_maps[i : i + 1], t_masks[i : i + 1], 3)[0] for i in range(20)]),
        )
    )
    tie = np.zeros((2, 8, 8))
    tie[:, 1, 6] = tie[:, 6, 1] = 1.0  # two equal peaks: the first in row-major order is (1, 6)
    tmask = np.zeros((2, 8, 8), bool)
    tmask[0, 1, 6] = True
    tmask[1, 6, 1] = True
    out.append(
        Case(
            "pointing/tied peaks: first in row-major",
            lambda: pointing_hits(torch.tensor(tie), torch.tensor(tmask), 0),
            np.array([True, False]),
        )
    )
    const = torch.full((2, 8, 8), 0.5)
    out.append(
        Case(
            "pointing/constant map misses",
            lambda: pointing_hits(const, torch.tensor(tmask), 1),
            np.array([False, False]),
        )
    )
    corner = np.zeros((1, 8, 8), bool)
    corner[0, 0, 0] = True
    peak = np.zeros((1, 8, 8))
    peak[0, 2, 2] = 1.0
    out.append(
        Case(
            "pointing/corner mask, peak at distance 2.83",
            lambda: pointing_hits(torch.tensor(peak), torch.tensor(corner), 2),
            np.array([False]),
        )
    )
    out.append(
        Case(
            "pointing/float16 maps",
            lambda: pointing_hits(t_maps.half(), t_masks, 2),
            pointing_ref(t_maps.half(), masks, 2),
        )
    )
    out.append(
        Case(
            "pointing/numpy arrays",
            lambda: pointing_hits(maps[:30], masks[:30], 2),
            pointing_ref(maps[:30], masks[:30], 2),
        )
    )
    out.append(
        Case(
            "pointing/1x1 image",
            lambda: pointing_hits(torch.ones(1, 1, 2), torch.tensor([[[True, False]]]), 0),
            np.array([False]),
        )
    )
    out.append(
        refused(
            "pointing/empty mask",
            lambda: pointing_hits(t_maps[:2], torch.zeros(2, 16, 16, dtype=torch.bool), 2),
            "empty",
        )
    )
    out.append(
        refused(
            "pointing/mask fills the image once grown",
            lambda: pointing_hits(t_maps[:1], torch.ones(1, 16, 16, dtype=torch.bool), 0),
            "full",
        )
    )
    nan_map = t_maps[:2].clone()
    nan_map[:, 0, 0] = torch.nan
    out.append(refused("pointing/NaN in map", lambda: pointing_hits(nan_map, t_masks[:2], 2), "NaN"))
    inf_map = t_maps[:2].clone()
    inf_map[:, 0, 0] = torch.inf
    out.append(refused("pointing/inf in map", lambda: pointing_hits(inf_map, t_masks[:2], 2), "inf"))
    out.append(
        refused("pointing/negative tolerance", lambda: pointing_hits(t_maps[:2], t_masks[:2], -1), "negative")
    )
    out.append(
        refused("pointing/tolerance 2.5", lambda: pointing_hits(t_maps[:2], t_masks[:2], 2.5), "not whole")
    )
    return out


# --- perturbation test on a linear model -----------------------------------------------------


class Linear(torch.nn.Module):
    def __init__(self, weights: np.ndarray):
        super().__init__()
        self.weights = torch.nn.Parameter(torch.tensor(weights))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.reshape(len(images), -1).to(self.weights.dtype) @ self.weights.T


def perturbation_cases() -> list[Case]:
    from attnmap.evaluate.perturbation import STEPS, perturbation_auc, perturbation_curve, perturbation_x

    out = []
    for (height, width), seed in (((6, 5), 60), ((9, 10), 61), ((10, 10), 62), ((1, 20), 63)):
        g = rng(seed)
        n, channels = 12, 2
        weights = g.normal(size=(3, channels * height * width))
        images = g.normal(size=(n, channels, height, width))
        classes = (weights @ images.reshape(n, -1).T).argmax(0)
        maps = g.random((n, height, width))
        ties = np.round(maps * 3)
        model = Linear(weights)
        for positive in (True, False):
            for label, m in (("random map", maps), ("tied map", ties), ("constant map", np.ones_like(maps))):
                out.append(
                    Case(
                        f"perturbation/{height}x{width} {label} {'positive' if positive else 'negative'}",
                        lambda m=m, p=positive, model=model, im=images, c=classes: perturbation_curve(
                            model, torch.tensor(im), torch.tensor(m), torch.tensor(c), p
                        ),
                        perturbation_ref(weights, images, m, classes, positive, STEPS),
                    )
                )
        if seed == 60:
            out += _perturbation_variants(model, weights, images, maps, classes)
    out.append(Case("perturbation/x axis", lambda: perturbation_x(), np.array([0, *STEPS])))
    for label, acc in (("flat 1", np.ones(10)), ("random", rng(64).random(10)), ("zeros", np.zeros(10))):
        out.append(
            Case(
                f"perturbation/auc {label}",
                lambda a=acc: perturbation_auc(a),
                trapezoid_ref([0, *STEPS], acc) * 100,
            )
        )
    out.append(
        refused("perturbation/auc NaN accuracy", lambda: perturbation_auc(np.r_[np.nan, np.ones(9)]), "NaN")
    )
    out.append(
        refused(
            "perturbation/auc accuracy 2", lambda: perturbation_auc(np.r_[2.0, np.ones(9)]), "outside [0, 1]"
        )
    )
    out.append(refused("perturbation/auc wrong length", lambda: perturbation_auc(np.ones(9)), "length"))
    return out


def _perturbation_variants(model, weights, images, maps, classes) -> list[Case]:
    """Batching, dtypes, arrays, one image, scale and non-finite maps, on one model and data."""
    from attnmap.evaluate.perturbation import STEPS, perturbation_curve

    t = torch.tensor
    out = []
    out.append(
        Case(
            "perturbation/batch_size 1 equals one batch",
            lambda: perturbation_curve(model, t(images), t(maps), t(classes), True, batch_size=1),
            lambda: perturbation_curve(model, t(images), t(maps), t(classes), True, batch_size=100),
        )
    )
    out.append(
        Case(
            "perturbation/float32 images",
            lambda: perturbation_curve(model, t(images).float(), t(maps).float(), t(classes), True),
            perturbation_ref(
                weights, images.astype(np.float32), maps.astype(np.float32), classes, True, STEPS
            ),
            tol=1e-9,
        )
    )
    out.append(
        Case(
            "perturbation/numpy arrays",
            lambda: perturbation_curve(model, images, maps, classes, True),
            perturbation_ref(weights, images, maps, classes, True, STEPS),
        )
    )
    out.append(
        Case(
            "perturbation/one image",
            lambda: perturbation_curve(model, t(images[:1]), t(maps[:1]), t(classes[:1]), False),
            perturbation_ref(weights, images[:1], maps[:1], classes[:1], False, STEPS),
        )
    )
    out.append(
        Case(
            "perturbation/scale of the map does not matter",
            lambda: perturbation_curve(model, t(images), t(maps * 1e-300), t(classes), True),
            perturbation_ref(weights, images, maps, classes, True, STEPS),
        )
    )
    nan_maps = maps.copy()
    nan_maps[0, 0, 0] = np.nan
    out.append(
        refused(
            "perturbation/NaN in map",
            lambda: perturbation_curve(model, t(images), t(nan_maps), t(classes), True),
            "NaN",
        )
    )
    inf_maps = maps.copy()
    inf_maps[0, 0, 0] = np.inf
    out.append(
        refused(
            "perturbation/inf in map",
            lambda: perturbation_curve(model, t(images), t(inf_maps), t(classes), True),
            "inf",
        )
    )
    return out


# --- maps brought to pixels ------------------------------------------------------------------


def maps_cases() -> list[Case]:
    from attnmap.evaluate.maps import maps_to_pixels

    out = []
    g = rng(70)
    maps = g.normal(size=(3, 8, 8))

    def minmax(m):
        m = np.asarray(m, dtype=np.float64)
        lo, hi = m.min(axis=(1, 2), keepdims=True), m.max(axis=(1, 2), keepdims=True)
        return (m / 2 - lo / 2) / (hi / 2 - lo / 2)

    out.append(
        Case("maps/pixel-size maps min-max", lambda: maps_to_pixels(torch.tensor(maps), (8, 8)), minmax(maps))
    )
    out.append(
        Case(
            "maps/constant patch map upsampled is zeros",
            lambda: maps_to_pixels(torch.full((2, 4, 4), 0.1), (64, 64)),
            np.zeros((2, 64, 64)),
        )
    )
    out.append(Case("maps/1x1 map", lambda: maps_to_pixels(torch.ones(1, 1, 1), (5, 5)), np.zeros((1, 5, 5))))
    out.append(Case("maps/numpy arrays", lambda: maps_to_pixels(maps, (8, 8)), minmax(maps)))
    huge = np.array([[[-1e308, 0.0], [1e308, 0.0]]])
    out.append(
        Case(
            "maps/values near the float64 limit",
            lambda: maps_to_pixels(torch.tensor(huge), (2, 2)),
            minmax(huge),
        )
    )
    tiny = maps * 1e-300
    out.append(
        Case("maps/values of 1e-300", lambda: maps_to_pixels(torch.tensor(tiny), (8, 8)), minmax(tiny))
    )
    half = torch.tensor(maps).half()
    out.append(Case("maps/float16", lambda: maps_to_pixels(half, (8, 8)), minmax(half.double())))
    out.append(
        Case(
            "maps/batch equals single calls",
            lambda: maps_to_pixels(torch.tensor(maps), (16, 16)),
            lambda: torch.cat([maps_to_pixels(torch.tensor(maps[i : i + 1]), (16, 16)) for i in range(3)]),
        )
    )
    out.append(refused("maps/NaN", lambda: maps_to_pixels(torch.tensor([[[np.nan, 1.0]]]), (1, 2)), "NaN"))
    out.append(refused("maps/empty", lambda: maps_to_pixels(torch.zeros(0, 4, 4), (8, 8)), "empty"))
    return out
