"""The score → colour scale of a picture: which normalisation, which colour map, which tick labels.

Why one object: a heatmap is only readable with its colour bar, and the bar must state the very
mapping the pixels used. `ScoreScale` is that mapping; renderers call `unit` on scores, colour bars
call `ticks`, and both carry `describe()` as the legend's caption.

Defaults (`choose_scale`):
- signed maps (LRP, gradient×input, integrated gradients, occlusion; or any scores of both signs
  with the negative tail more than `SIGNED_FRACTION` of the positive one) use a diverging map
  centred on zero, so "no evidence" is white-ish and the sign reads as hue;
- unsigned maps use a linear scale between the 1st and 99th percentile of the scores ("robust"):
  unlike a percentile (rank) scale it keeps the gaps between scores, so a few patches far above the
  rest stand out instead of being spread into a uniform rainbow; unlike plain min-max a single
  outlier patch cannot wash the rest out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from attnmap.errors import InputError

ScaleKind = Literal["robust", "minmax", "percentile", "diverging"]
SCALE_KINDS: tuple[str, ...] = ("robust", "minmax", "percentile", "diverging")
SIGNED_METHODS = frozenset(
    {
        "lrp",
        "gradient_x_input",  # the MIL methods' names (`attnmap.mil.explain.METHODS`, `scores_<method>`)
        "integrated_gradients",
        "gradient_input",
        "gradient×input",
        "gradxinput",
        "occlusion",
        "lrp_signed",
    }
)
UNSIGNED_METHODS = frozenset({"attention", "attention_scores", "rollout", "attn_gradcam", "grad_rollout"})
"""Scores whose zero means nothing (raw MIL attention logits, rollout): never drawn as signed."""
SIGNED_FRACTION = 0.05
DEFAULT_CMAPS = {"diverging": "RdBu_r", "robust": "jet", "minmax": "jet", "percentile": "jet"}
ROBUST_PERCENTILES = (1.0, 99.0)


@dataclass(frozen=True)
class ScoreScale:
    """Maps scores to [0, 1] for colouring: ``kind`` with bounds ``low``..``high`` in score units.

    ``percentile`` keeps the sorted ``reference`` scores it ranks against (ticks are then ranks).
    """

    kind: str
    low: float
    high: float
    cmap: str
    reference: np.ndarray | None = None

    def unit(self, scores: np.ndarray) -> np.ndarray:
        """Scores → [0, 1] (clipped), float64.

        A scale without a span (every score equal) follows the renderer's rule
        (`attnmap.render.normalize`): a linear scale gives 0, the colour map's bottom colour, as
        min-max normalisation does (no patch stands out, so none is drawn hot, and none passes a
        binarising threshold); a diverging one 0.5, its zero. A percentile scale ranks as CLAM's
        renderer does (`attnmap.wsi.heatmap.scores.to_percentiles`): ties get their average rank,
        so equal scores sit mid-map rather than at its top."""
        scores = np.asarray(scores, dtype=np.float64)
        if self.kind == "percentile":
            reference = self.reference if self.reference is not None else np.sort(scores.ravel())
            left = np.searchsorted(reference, scores, side="left")
            right = np.searchsorted(reference, scores, side="right")
            # average rank of a tie (CLAM's percentileofscore "rank"); a score between two is ranked at
            # the one below it, as before
            return np.where(left < right, (left + right + 1) / 2, right) / max(len(reference), 1)
        span = self.high - self.low
        if span <= 0:
            return np.full(scores.shape, 0.5 if self.kind == "diverging" else 0.0)
        return np.clip((scores - self.low) / span, 0.0, 1.0)

    def ticks(self, count: int = 5) -> list[tuple[float, str]]:
        """(position in [0, 1], label) pairs for a colour bar."""
        positions = np.linspace(0.0, 1.0, count)
        if self.kind == "percentile":
            return [(float(p), f"{100 * p:.0f}%") for p in positions]
        values = self.low + positions * (self.high - self.low)
        return [(float(p), label) for p, label in zip(positions, _labels(values), strict=True)]

    def describe(self) -> str:
        """One line saying how scores became colours (for captions and the viewer's legend)."""
        if self.kind == "percentile":
            return "percentile rank of the score within the slide"
        if self.kind == "diverging":
            return f"signed, centred on 0, clipped at ±{_format(self.high)} (99th pct of |score|)"
        ticks = self.ticks()  # the bounds as the colour bar labels them
        low, high = ticks[0][1], ticks[-1][1]
        if self.kind == "robust":
            return f"linear, {low} (1st pct) to {high} (99th pct)"
        return f"linear, min {low} to max {high}"

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "low": self.low,
            "high": self.high,
            "cmap": self.cmap,
            "caption": self.describe(),
            "ticks": [[p, label] for p, label in self.ticks()],
        }


def _format(value: float) -> str:
    return f"{value:.3g}"


def _labels(values: np.ndarray) -> list[str]:
    """``values`` with three significant digits, or as many more as it takes to tell different values
    apart: a narrow range (0.05876..0.05884) read "0.0588" at every tick."""
    distinct = len(set(values.tolist()))
    for digits in range(3, 13):
        labels = [f"{value:.{digits}g}" for value in values]
        if len(set(labels)) == distinct:
            break
    return labels


def is_signed(scores: np.ndarray, method: str | None = None) -> bool:
    """Whether scores carry sign information (a known signed method, or a real negative tail)."""
    if method is not None and method.lower() in SIGNED_METHODS:
        return True
    if method is not None and method.lower() in UNSIGNED_METHODS:
        return False
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        return False
    negative, positive = -float(scores.min()), float(scores.max())
    return (
        negative > 0 and positive > 0 and min(negative, positive) > SIGNED_FRACTION * max(negative, positive)
    )


def choose_scale(
    scores: np.ndarray, method: str | None = None, kind: str | None = None, cmap: str | None = None
) -> ScoreScale:
    """The scale for ``scores``: ``kind`` if given, else diverging for signed maps and robust otherwise.

    Raises `InputError` for an unknown kind or scores with NaN / infinity.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not np.isfinite(scores).all():
        raise InputError("cannot scale scores that contain NaN or infinite values")
    if kind is None:
        kind = "diverging" if is_signed(scores, method) else "robust"
    if kind not in SCALE_KINDS:
        raise InputError(f"unknown score scale {kind!r}; choose one of {', '.join(SCALE_KINDS)}")
    if cmap is not None:
        from attnmap.render.colormap import get_cmap

        get_cmap(cmap)  # an unknown name fails here, not when the picture is drawn
    cmap = cmap or DEFAULT_CMAPS[kind]
    if scores.size == 0:
        return ScoreScale(kind, 0.0, 1.0, cmap)
    if kind == "percentile":
        return ScoreScale(kind, float(scores.min()), float(scores.max()), cmap, np.sort(scores))
    if kind == "diverging":
        bound = float(np.percentile(np.abs(scores), 99.0)) or float(np.abs(scores).max())
        return ScoreScale(kind, -bound, bound, cmap)
    if kind == "robust":
        low, high = (float(v) for v in np.percentile(scores, ROBUST_PERCENTILES))
        if high <= low:
            low, high = float(scores.min()), float(scores.max())
        return ScoreScale(kind, low, high, cmap)
    return ScoreScale(kind, float(scores.min()), float(scores.max()), cmap)


def colour_table(cmap: str, size: int = 256) -> np.ndarray:
    """(size, 3) uint8 colours of ``cmap`` sampled evenly over [0, 1]."""
    from attnmap.render.colormap import apply_colormap

    return apply_colormap(np.linspace(0.0, 1.0, size), cmap)
