"""A figure comparing several maps or methods side by side."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attnmap.errors import InputError
from attnmap.render.overlay import to_uint8_rgb
from attnmap.render.scale import ScoreScale


def add_colorbar(fig, ax, scale: ScoreScale) -> None:
    """A horizontal colour bar under ``ax`` labelled in score units (``scale``'s ticks)."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from attnmap.render.colormap import get_cmap

    mappable = ScalarMappable(Normalize(0.0, 1.0), get_cmap(scale.cmap))
    bar = fig.colorbar(mappable, ax=ax, orientation="horizontal", fraction=0.06, pad=0.03)
    positions, labels = zip(*scale.ticks(3), strict=True)
    bar.set_ticks(list(positions), labels=list(labels))
    bar.ax.tick_params(labelsize=7)


def save_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None,
    path: str | Path,
    ncols: int | None = None,
    tile_inches: float = 2.4,
    dpi: int = 120,
    metadata: dict[str, str] | None = None,
    scales: Sequence[ScoreScale | None] | None = None,
    suptitle: str | None = None,
) -> Path:
    """Save RGB images (e.g. overlays from `overlay`) in a titled grid to ``path`` (PNG, PDF, ...).

    ``ncols`` defaults to all images in one row up to 6 per row. ``metadata`` is written into the
    file (PNG text chunks) for provenance. ``scales`` (one per image, None for none) adds a colour
    bar in score units under each panel; ``suptitle`` titles the figure (e.g. the prediction).
    Returns the path written.
    """
    if len(images) == 0:
        raise InputError("save_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise InputError(f"{len(images)} images but {len(titles)} titles")
    if scales is not None and len(scales) != len(images):
        raise InputError(f"{len(images)} images but {len(scales)} colour scales")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ncols = ncols or min(len(images), 6)
    nrows = math.ceil(len(images) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(tile_inches * ncols, tile_inches * nrows + 0.3 * nrows), squeeze=False
    )
    for index, ax in enumerate(axes.flat):
        ax.axis("off")
        if index < len(images):
            ax.imshow(to_uint8_rgb(images[index]))
            if titles is not None:
                ax.set_title(titles[index], fontsize=9)
            if scales is not None and scales[index] is not None:
                add_colorbar(fig, ax, scales[index])
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata=metadata)
    plt.close(fig)
    return path
