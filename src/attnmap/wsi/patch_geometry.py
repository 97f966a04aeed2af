"""The size and level of the patches an h5 file's ``coords`` locate, as attributes of ``coords``.

Why on ``coords``: CLAM's patch files carry ``patch_size`` and ``patch_level`` (and the level's
``downsample``) there, so every file holding patch corners (patches, features, attention scores)
carries them the same way, and a reader of any of them, attnmap's or CLAM's, finds them in one
place. A file without them (older attnmap files, CLAM's features) is read as before: the size is
then taken from elsewhere (a recorded parameter, an option given).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnmap.errors import InputError


@dataclass(frozen=True)
class PatchGeometry:
    """Patches of ``size`` pixels of slide level ``level``, whose downsample is ``downsample``
    (None: not recorded)."""

    size: int
    level: int
    downsample: float | None = None

    def attrs(self) -> dict[str, Any]:
        """The attributes written on ``coords`` (CLAM's names and types)."""
        attrs: dict[str, Any] = {"patch_size": int(self.size), "patch_level": int(self.level)}
        if self.downsample is not None:
            attrs["downsample"] = np.array([self.downsample, self.downsample], dtype=np.float64)
        return attrs

    def level0_size(self, level_downsamples: tuple[float, ...] | None = None) -> int | None:
        """The patch size in level-0 pixels: from the recorded downsample, else the slide's
        ``level_downsamples``; None when neither says (a level-0 patch needs neither)."""
        if self.level == 0:
            return self.size
        if self.downsample is not None:
            return int(round(self.size * self.downsample))
        if level_downsamples is not None and self.level < len(level_downsamples):
            return int(round(self.size * float(level_downsamples[self.level])))
        return None


def _integer(value: object) -> int | None:
    try:
        number = np.asarray(value).reshape(-1)[0]
        return int(number) if float(number) == int(number) else None
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def read_geometry(attrs: Mapping[str, Any]) -> PatchGeometry | None:
    """The geometry ``coords`` attributes record, or None when ``patch_size`` or ``patch_level`` is
    missing or not a whole number (size at least 1, level at least 0)."""
    size, level = _integer(attrs.get("patch_size")), _integer(attrs.get("patch_level"))
    if size is None or level is None or size < 1 or level < 0:
        return None
    downsample = None
    if "downsample" in attrs:
        try:
            value = float(np.asarray(attrs["downsample"], dtype=np.float64).reshape(-1)[0])
            downsample = value if np.isfinite(value) and value > 0 else None
        except (TypeError, ValueError, IndexError):
            downsample = None
    return PatchGeometry(size, level, downsample)


def write_geometry(dataset: Any, geometry: PatchGeometry | None) -> None:
    """Set ``geometry``'s attributes on an h5 ``coords`` dataset (nothing for None)."""
    if geometry is not None:
        dataset.attrs.update(geometry.attrs())


def file_geometry(path: str | Path) -> PatchGeometry | None:
    """The geometry recorded on the ``coords`` of the h5 file at ``path``; None for a file without
    it, without coords, or not an h5 file."""
    import h5py

    try:
        if not h5py.is_hdf5(path):
            return None
        with h5py.File(path, "r") as handle:
            coords = handle.get("coords")
            return read_geometry(dict(coords.attrs)) if isinstance(coords, h5py.Dataset) else None
    except OSError:
        return None


def check_geometry(
    source: str | Path, geometry: PatchGeometry | None, size: int | None = None, level: int | None = None
) -> None:
    """`InputError` in one line when a ``size`` or ``level`` given for the patches of ``source``
    contradicts the ``geometry`` it records (nothing when it records none or none is given)."""
    if geometry is None:
        return
    wrong = [f"{name} {given}" for name, given, stored in (("patch size", size, geometry.size),
                                                              ("patch level", level, geometry.level))
             if given is not None and int(given) != stored]
    if wrong:
        raise InputError(
            f"{' and '.join(wrong)} contradict(s) {Path(source).name}, whose coords record "
            f"{geometry.size}-px patches at level {geometry.level}: leave them out or give those"
        )
