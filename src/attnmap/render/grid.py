"""A figure comparing several maps or methods side by side."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from attnmap.errors import InputError
from attnmap.io_utils import check_no_file_above
from attnmap.render.arrays import is_pil_image
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


TILE_INCHES, DPI = 2.4, 120  # save_grid's panel size and resolution


def panel_pixels(tile_inches: float = TILE_INCHES, dpi: int = DPI) -> int:
    """The width in pixels of one `save_grid` panel: a picture much larger than this is shrunk by the
    figure anyway, so drawing it at full size only costs time."""
    return round(tile_inches * dpi)


FIGURE_FORMATS = ("png", "jpg", "jpeg", "tif", "tiff", "webp", "pdf", "svg", "eps", "ps", "gif")


def check_figure_path(path: str | Path, metadata: dict | None = None) -> Path:
    """``path`` as a Path whose suffix names a format we can write, in a folder that can exist.

    Why: matplotlib appends ".png" to a path without a suffix (the file lands elsewhere than asked)
    and fails deep inside for an unknown suffix or a parent that is a file.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name such as {path / 'grid.png'}")
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FIGURE_FORMATS:
        raise InputError(
            f"cannot tell the picture format of {path.name!r}; end it in one of "
            + ", ".join(f".{name}" for name in FIGURE_FORMATS)
        )
    if metadata and suffix != "png":
        raise InputError(f"metadata is written as PNG text chunks; save {path.name!r} as .png or drop it")
    check_no_file_above(path, path.parents)
    return path


def save_grid(
    images: Sequence[np.ndarray],
    titles: Sequence[str] | None,
    path: str | Path,
    ncols: int | None = None,
    tile_inches: float = TILE_INCHES,
    dpi: int = DPI,
    metadata: dict[str, str] | None = None,
    scales: Sequence[ScoreScale | None] | None = None,
    suptitle: str | None = None,
) -> Path:
    """Save RGB images (e.g. overlays from `overlay`) in a titled grid to ``path`` (PNG, PDF, ...).

    ``ncols`` defaults to all images in one row up to 6 per row. ``metadata`` is written into the
    file (PNG text chunks) for provenance. ``scales`` (one per image, None for none) adds a colour
    bar in score units under each panel; ``suptitle`` titles the figure (e.g. the prediction).
    Returns the path written. The format comes from the suffix; metadata needs PNG (text chunks).
    """
    if isinstance(images, (np.ndarray, torch.Tensor)) or is_pil_image(images):  # its rows were "images"
        kind = type(images).__name__
        raise InputError(f"images must be a list of images, got one {kind}: put it in a list")
    images = list(images)
    path = check_figure_path(path, metadata)
    for name, value in (("ncols", ncols), ("dpi", dpi), ("tile_inches", tile_inches)):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if value is not None and (not number or value <= 0):
            raise InputError(f"save_grid {name} must be a positive number, got {value!r}")
    if ncols is not None and int(ncols) != ncols:
        raise InputError(f"save_grid ncols must be a whole number, got {ncols!r}")
    if isinstance(titles, str):  # its characters were the titles
        raise InputError(f"titles must be a list of strings, one per image, got the string {titles!r}")
    if len(images) == 0:
        raise InputError("save_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise InputError(f"{len(images)} images but {len(titles)} titles")
    if scales is not None and len(scales) != len(images):
        raise InputError(f"{len(images)} images but {len(scales)} colour scales")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ncols = int(ncols) if ncols is not None else min(len(images), 6)
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
    path.parent.mkdir(parents=True, exist_ok=True)
    text = None if metadata is None else {str(key): str(value) for key, value in metadata.items()}
    fig.savefig(path, dpi=dpi, metadata=text)
    plt.close(fig)
    return path
