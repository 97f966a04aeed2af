"""How `wsi run` turns attention into colours by default, and the title and colour bar of its PNG.

Why not CLAM's percentile colouring by default: percentiles spread every slide's scores uniformly
over the colour map, so half of the normal tissue is drawn yellow to red whatever the model thinks.
On the demo's held-out slides (bench/heatmap_normalisation.py) a linear scale between the 1st and
99th percentile of the scores ("robust") keeps the tumour red and normal tissue cold: the share of
normal patches drawn in the hot half of jet falls from 47% to 10%, and the tumour/normal gap in
colour value grows 1.5× over percentiles. ``scale: clam`` restores CLAM's exact rule.
"""

from __future__ import annotations

import numpy as np

from attnmap.errors import InputError
from attnmap.render.legend import add_legend, describe_prediction, legend_offset
from attnmap.render.scale import ScoreScale, choose_scale

RUN_SCALES = ("robust", "minmax", "clam", "diverging")


def display_scores(
    scores: np.ndarray, reference: np.ndarray | None, kind: str, percentiles: bool, cmap: str
) -> tuple[np.ndarray, np.ndarray | None, bool, ScoreScale]:
    """(scores, reference, percentiles) for the renderer under scale ``kind``, and the scale drawn.

    ``clam`` hands the scores through (percentile rank, or against ``reference``, or raw / 100);
    ``robust`` / ``minmax`` / ``diverging`` (signed scores, 0 in the middle of the colour map) become
    100 × unit values (the renderer divides by 100) with the bounds taken from ``reference`` (the
    blockmap, for overlapping grids) when there is one.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if kind not in RUN_SCALES:
        raise InputError(f"heatmap.scale must be one of {', '.join(RUN_SCALES)}, got {kind!r}")
    if kind == "clam":
        if percentiles or reference is not None:
            basis = reference if reference is not None else scores
            return scores, reference, percentiles, choose_scale(basis, kind="percentile", cmap=cmap)
        return scores, None, False, ScoreScale("minmax", 0.0, 100.0, cmap)
    scale = choose_scale(reference if reference is not None else scores, kind=kind, cmap=cmap)
    return 100.0 * scale.unit(scores), None, False, scale


def titled_heatmap(
    canvas: np.ndarray, scale: ScoreScale, slide_id: str, attention: dict, class_names: list[str]
) -> tuple[np.ndarray, tuple[int, int]]:
    """The heatmap with its title (`heatmap_title`) and colour bar, and where in that picture the
    heatmap's top-left pixel lies."""
    title = heatmap_title(slide_id, attention, class_names)
    offset = legend_offset(canvas.shape[1], scale, title, label="attention")
    return add_legend(canvas, scale, title, label="attention"), offset


def heatmap_title(slide_id: str, attention: dict, class_names: list[str]) -> str:
    """Slide, method, the class whose attention branch is shown (models with one per class), prediction."""
    prediction = int(attention["prediction"])
    probs = np.asarray(attention.get("probs", []), dtype=np.float64).reshape(-1)
    name = class_names[prediction] if prediction < len(class_names) else f"class {prediction}"
    probability = float(probs[prediction]) if prediction < len(probs) else None
    if attention.get("n_branches") == 1:
        # one attention branch (CLAM-SB, ABMIL) weighs patches for every class alike: naming the
        # branch's index as a class ("attention for normal" on a slide predicted tumour) misled
        method = "attention"
    else:
        branch = int(attention.get("branch", prediction))
        method = f"attention for {class_names[branch] if branch < len(class_names) else f'class {branch}'}"
    return f"{slide_id} · CLAM {method} · {describe_prediction(name, probability)}"
