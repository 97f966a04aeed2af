"""Turning score maps into pictures: normalisation, upsampling, colour overlays, comparison grids."""

from attnmap.render.colormap import apply_colormap
from attnmap.render.grid import save_grid
from attnmap.render.normalize import normalize
from attnmap.render.overlay import overlay
from attnmap.render.upsample import upsample

__all__ = ["apply_colormap", "normalize", "overlay", "save_grid", "upsample"]
