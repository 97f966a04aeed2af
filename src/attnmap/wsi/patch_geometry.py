"""The size and level of the patches an h5 file's ``coords`` locate, as attributes of ``coords``.

Why on ``coords``: CLAM's patch files carry ``patch_size`` and ``patch_level`` (and the level's
``downsample``) there, so every file holding patch corners (patches, features, attention scores)
carries them the same way, and a reader of any of them, attnmap's or CLAM's, finds them in one
place. A file without them (older attnmap files, CLAM's features) is read as before: the size is
then taken from elsewhere (a recorded parameter, an option given).

Why every reader comes here: the features reader, the `--scores` reader and the viewer each
interpreted these attributes (and TRIDENT's ``patch_size_level0``) by a rule of their own, and the
same file drew patches of different sizes in each; the rule is spelled once, below.
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


_WANTED = {
    "a positive whole number": lambda number: number >= 1 and number.is_integer(),
    "a whole number of at least 0": lambda number: number >= 0 and number.is_integer(),
    "a positive number": lambda number: number > 0,
}


def _number(
    attrs: Mapping[str, Any],
    name: str,
    source: str | Path | None,
    wanted: str,
    where: str = "coords attribute ",
) -> float | None:
    """``attrs[name]`` as one number (its first element: CLAM's ``downsample`` is an (x, y) pair),
    None when absent; None too when it is not ``wanted`` and there is no ``source``, else an
    `InputError` naming ``source`` and the attribute. Numbers written as text or bytes count."""
    if name not in attrs:
        return None
    try:
        number = float(np.asarray(attrs[name]).reshape(-1)[0])
    except (TypeError, ValueError, IndexError, OverflowError):
        number = float("nan")
    if np.isfinite(number) and _WANTED[wanted](number):
        return number
    if source is None:
        return None
    raise InputError(f"{source}: {where}{name} {np.asarray(attrs[name]).tolist()!r} is not {wanted}")


def read_geometry(attrs: Mapping[str, Any], source: str | Path | None = None) -> PatchGeometry | None:
    """The geometry ``coords`` attributes record, or None when ``patch_size`` or ``patch_level`` is
    missing (a size without its level says too little: TRIDENT's is at its target magnification).

    A value that is none (a fractional or non-positive size, a fractional or negative level, a
    downsample that is not a positive number): with ``source``, an `InputError` naming it and the
    attribute, for readers that draw with the size (a size guessed from it draws wrong patches
    without a word); without, read as not recorded, for readers that only carry it along (bags).
    """
    if "patch_size" not in attrs or "patch_level" not in attrs:
        return None
    size = _number(attrs, "patch_size", source, "a positive whole number")
    level = _number(attrs, "patch_level", source, "a whole number of at least 0")
    downsample = _number(attrs, "downsample", source, "a positive number")
    if size is None or level is None:
        return None
    return PatchGeometry(int(size), int(level), downsample)


def level0_patch_size(
    attrs: Mapping[str, Any], source: str | Path, level_downsamples: tuple[float, ...] | None = None
) -> int | None:
    """The patch size in level-0 pixels that ``coords`` attributes record, None when they do not
    say it (nor ``level_downsamples``, the slide's, for a level whose downsample is not recorded).

    Read from, in order: TRIDENT's ``patch_size_level0`` (its ``patch_size`` is at the target
    magnification, so it is not used alone); ``patch_size`` at ``patch_level`` (CLAM's), scaled by
    the level's recorded ``downsample``, else by the slide's. The recorded one first: it is what
    the patches were cut at, and the viewer, with no slide, reads the same size from it.
    ``patch_size_level0`` is a length on level 0, not a count of pixels cut: a fractional one is
    rounded, as a size times a downsample is. Malformed values: an `InputError` naming ``source``
    and the attribute (`read_geometry`), as is a level the slide lacks with no downsample recorded.
    """
    level0 = _number(attrs, "patch_size_level0", source, "a positive number")
    if level0 is not None:
        if round(level0) < 1:
            raise InputError(f"{source}: coords attribute patch_size_level0 {level0!r} is under one pixel")
        return int(round(level0))
    geometry = read_geometry(attrs, source)
    if geometry is None:
        return None
    size = geometry.level0_size(level_downsamples)
    if size is None and level_downsamples is not None:
        raise InputError(
            f"{source}: coords attribute patch_level {geometry.level} is not a level of the slide "
            f"(it has {len(level_downsamples)}) and no downsample is recorded"
        )
    return size


def scores_patch_size(
    file_attrs: Mapping[str, Any],
    coords_attrs: Mapping[str, Any],
    source: str | Path,
    level_downsamples: tuple[float, ...] | None = None,
) -> int | None:
    """The level-0 patch size of a scores file (a ``_blockmap.h5``, a `mil attention` h5): the
    file's own ``patch_size`` attribute (level 0: attnmap's blockmap), else `level0_patch_size`.

    The file's must be a positive whole number: a size of 0 or below draws nothing (or
    everything), and a truncated fraction draws patches that miss their neighbours, without a word.
    """
    if "patch_size" not in file_attrs:
        return level0_patch_size(coords_attrs, source, level_downsamples)
    size = _number(file_attrs, "patch_size", source, "a positive whole number", where="")
    return None if size is None else int(size)  # with a source, never None: a malformed size raised


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
