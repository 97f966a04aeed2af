"""The files `attnmap explain` writes per image: their names, when a rerun may keep them, and which
pictures of an earlier run must go when a map is rewritten.

Why a module of its own: an output folder collects several runs (other methods, other images), so
a rerun must tell what it may reuse (`image_done`: intact, same fingerprint) from what no longer
describes the map beside it (`remove_outdated_pictures`): a method's overlay PNG drawn for another
target than the map a later ``--method all`` run wrote, or a comparison grid showing a map a later
single-method run replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnmap._version import __version__
from attnmap.errors import InputError
from attnmap.fingerprint import FINGERPRINT_KEY, INPUTS_KEY, Fingerprint, file_identity
from attnmap.io_utils import atomic_path, read_png_text
from attnmap.provenance import read_sidecar, sidecar_path

EXPLAIN_VERSION = 2  # raise when the maps or overlays change, so that reruns redo them
GRID_SUFFIX = "all_methods"


MAX_STEM_BYTES = 120
"""Longest output stem: an output adds ``_<method>.npy.json`` and its temporary name about 50 bytes
more, within the 255 bytes most file systems allow a name (a 200-character photo name failed)."""


def fit_stem(stem: str) -> str:
    """``stem``, or when longer than `MAX_STEM_BYTES` its start and ``~`` + 8 hex digits of its hash
    (two long names with one start stay apart)."""
    data = stem.encode()
    if len(data) <= MAX_STEM_BYTES:
        return stem
    start = data[: MAX_STEM_BYTES - 9].decode(errors="ignore")  # whole characters only
    return f"{start}~{hashlib.sha256(data).hexdigest()[:8]}"


def claim_stems(out_dir: Path, paths: Sequence[Path], methods: Sequence[str]) -> list[str]:
    """Output stems for ``paths`` in a folder that may hold earlier runs' outputs.

    Within a run, inputs sharing a stem get ``name``, ``name_2``, ...; across runs an output whose
    record names another image that still exists unchanged (``day1/scan.png`` explained earlier,
    ``day2/scan.png`` now) is that image's, and is not overwritten: the new image takes the next
    free name. An image keeps the name the folder already holds for it (the same file, or the same
    name and bytes), so reruns reuse their outputs.
    """
    paths = [Path(path) for path in paths]
    wanted = [fit_stem(path.stem) for path in paths]
    # Every output file name claimed so far: stems alone are not enough, as x.png's lrp_attention
    # map and x_lrp.png's attention map would both be x_lrp_attention.npy.
    files: set[str] = set()

    def clashes(stem: str) -> bool:
        return any(name in files for name in _file_names(stem, methods))

    owned: dict[int, str] = {}
    for index, path in enumerate(paths):  # names the folder holds for these very images
        for candidate in _recorded_names(out_dir, wanted[index], methods):
            if not clashes(candidate) and _owner(out_dir, candidate, methods, path) == "this":
                owned[index] = candidate
                files.update(_file_names(candidate, methods))
                break
    used = {name.casefold() for name in owned.values()}
    taken = {name.casefold() for name in wanted}
    stems = []
    for index, path in enumerate(paths):
        if index in owned:
            stems.append(owned[index])
            continue
        name, count, candidate = wanted[index], 1, wanted[index]
        while (
            candidate.casefold() in used
            or clashes(candidate)
            or (candidate != name and candidate.casefold() in taken)
            or _owner(out_dir, candidate, methods, path) == "another"
        ):
            count += 1
            candidate = f"{name}_{count}"
        used.add(candidate.casefold())
        files.update(_file_names(candidate, methods))
        stems.append(candidate)
    return stems


def _file_names(stem: str, methods: Sequence[str]) -> set[str]:
    """``stem``'s output names without suffix, case-folded (one file on case-insensitive disks)."""
    return {f"{stem}_{name}".casefold() for name in [*methods, GRID_SUFFIX]}


def _recorded_names(out_dir: Path, name: str, methods: Sequence[str]) -> list[str]:
    """``name``, ``name_2``, ... as long as the folder holds a map record under them."""
    found, count, candidate = [], 1, name
    while any(sidecar_path(out_dir / f"{candidate}_{method}.npy").is_file() for method in methods):
        found.append(candidate)
        count += 1
        candidate = f"{name}_{count}"
    return found


def _owner(out_dir: Path, stem: str, methods: Sequence[str], path: Path) -> str | None:
    """Whose outputs ``stem`` holds: "this" image's, "another" image's that still exists unchanged,
    or None (no record, or one of an image that is gone or changed: free to replace)."""
    for method in methods:
        record = _record(out_dir / f"{stem}_{method}.npy", read_sidecar)
        inputs = map_inputs(record)
        if inputs is None or not isinstance(inputs.get("image"), dict):
            continue
        recorded = inputs["image"]
        with contextlib.suppress(OSError):
            if recorded == {**file_identity(path), "name": path.name}:
                return "this"  # the same name and bytes: this image, wherever it lies now
        other = Path(record.get("image", ""))
        try:
            if other.is_file() and not os.path.samefile(other, path):
                if {**file_identity(other), "name": other.name} == recorded:
                    return "another"
            elif other.is_file():
                return "this"  # this very file, its content changed since
        except OSError:
            continue
    return None


def output_files(methods: Sequence[str], grid: bool) -> list[tuple[str, str]]:
    """(name, suffix) of one image's outputs: each method's .npy, and its .png or one grid PNG."""
    files = [(name, "npy") for name in methods]
    return files + ([(GRID_SUFFIX, "png")] if grid else [(name, "png") for name in methods])


def image_fingerprint(
    path: Path,
    checksum: str,
    architecture: str,
    name: str,
    target: object,
    options: Mapping[str, Any],
    drawing: Mapping[str, Any],
) -> Fingerprint:
    """What made one map and its picture (the drawing options only change the picture)."""
    return Fingerprint(
        {
            "stage": "explain",
            "version": EXPLAIN_VERSION,
            "image": {**file_identity(path), "name": path.name},  # the name: the picture's title
            "model_sha256": checksum,  # the weights, and below what the model is besides them
            "architecture": architecture,
            "method": name,
            "target": target,
            "options": dict(options),
            "drawing": dict(drawing),
        }
    )


def image_done(out_dir: Path, stem: str, names: Sequence[str], grid: bool, prints: list[Fingerprint]) -> bool:
    """Whether every output of one image is intact and made with these fingerprints."""
    for name, fingerprint in zip(names, prints, strict=True):
        npy = out_dir / f"{stem}_{name}.npy"
        try:
            np.load(npy, mmap_mode="r")  # header and size checked
        except (OSError, ValueError):
            return False
        # the map's own record: another run (another method list, options) may have rewritten the
        # map after this run's picture was made
        if fingerprint.check(sidecar_path(npy)) is not None:
            return False
        if not grid and fingerprint.check(out_dir / f"{stem}_{name}.png") is not None:
            return False
    if grid:
        joint = Fingerprint({"methods": [fingerprint.value for fingerprint in prints]})
        return joint.check(out_dir / f"{stem}_{GRID_SUFFIX}.png") is None
    return True


def map_inputs(record: Mapping[str, str]) -> dict[str, Any] | None:
    """What a map depends on, from an output's record: its fingerprint inputs without the drawing
    options (None when the record has none)."""
    try:
        inputs = json.loads(record[INPUTS_KEY])
    except (KeyError, TypeError, ValueError):
        return None
    if not isinstance(inputs, dict):
        return None
    inputs.pop("drawing", None)
    return inputs


def _inputs_of(fingerprint: Fingerprint) -> dict[str, Any]:
    """``fingerprint``'s inputs as they read back from a record (JSON), without the drawing."""
    inputs = json.loads(json.dumps(fingerprint.inputs, sort_keys=True, default=str))
    inputs.pop("drawing", None)
    return inputs


def _record(path: Path, reader: Any) -> dict[str, str]:
    try:
        return reader(path)
    except (OSError, ValueError, SyntaxError, InputError):  # missing or unreadable: no record
        return {}


def remove_outdated_pictures(
    out_dir: Path, stem: str, name: str, fingerprint: Fingerprint, grid: bool
) -> None:
    """Before ``{stem}_{name}.npy`` is rewritten for ``fingerprint``: delete the pictures of that map
    this run does not redraw and that would show another map than the new one.

    A ``--method all`` run (``grid``) draws no per-method overlay: an earlier run's
    ``{stem}_{name}.png`` stays only when its record is of the same map (drawing aside). A
    single-method run draws no grid: an earlier grid stays only when the map it showed is the one
    written now (the old map's record equals the new one, drawing aside). A picture without
    attnmap's fingerprint (not one of its outputs) is never deleted.
    """
    new = _inputs_of(fingerprint)
    picture = out_dir / f"{stem}_{name if grid else GRID_SUFFIX}.png"
    if not picture.is_file() or FINGERPRINT_KEY not in _record(picture, read_png_text):
        return
    if grid:
        shown = map_inputs(_record(picture, read_png_text))
    else:  # a grid records its maps by digest only: the map it showed is the one the old record names
        shown = map_inputs(_record(out_dir / f"{stem}_{name}.npy", read_sidecar))
    if shown != new:
        picture.unlink(missing_ok=True)


def save_npy(path: Path, array: np.ndarray) -> Path:
    """Write a raw map atomically."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        np.save(handle, array)
    return path


def remove_other_settings_outputs(
    out_dir: Path, stem: str, methods: Sequence[str], fingerprints: Sequence[Fingerprint], grid: bool = True
) -> None:
    """Remove the maps and pictures of ``methods`` under ``stem`` that were not made with
    ``fingerprints``: those of an earlier content of an image that can no longer be read (a failed
    rerun would otherwise leave them passing for the file as it is now), or of a method that
    ``--method all`` leaves out this time (made by an earlier run with other settings). Only
    attnmap's outputs go (a map with its record, pictures with a fingerprint). ``grid`` False: the
    comparison grid is left to the run (a grid without a left-out method is no picture of its map)."""
    for name, fingerprint in zip(methods, fingerprints, strict=True):
        # the overlay and the grid, while the map's record still names its map
        for drawn_in_grid in (False, True) if grid else (True,):
            remove_outdated_pictures(out_dir, stem, name, fingerprint, drawn_in_grid)
        npy = out_dir / f"{stem}_{name}.npy"
        if map_inputs(_record(npy, read_sidecar)) not in (None, _inputs_of(fingerprint)):
            npy.unlink(missing_ok=True)
            sidecar_path(npy).unlink(missing_ok=True)


SKIPPED_KEY = "skipped_methods"
"""The comparison grid's record of the methods ``--method all`` left out: each one's refusal and
the fingerprint it was refused under, so that a rerun can name them without asking the model."""


def skipped_record(refused: Mapping[str, str], prints: Mapping[str, Fingerprint]) -> str:
    """The `SKIPPED_KEY` entry of a grid: the refusals of ``refused`` with the fingerprints in ``prints``."""
    return json.dumps(
        {name: {"reason": reason, "fingerprint": prints[name].value} for name, reason in refused.items()},
        sort_keys=True,
    )


def recorded_refusals(
    out_dir: Path, stems: Sequence[str], names: Sequence[str], prints: Sequence[Sequence[Fingerprint]]
) -> dict[str, str] | None:
    """The methods of ``names`` that the grids of ``stems`` all record as refused, with their
    reasons, when every grid records the same ones under this run's fingerprints (``prints``: per
    image, one per name); else None and the model must be asked again (a grid of an older version
    records none, another version, model, target or option may run a method refused before)."""
    found: dict[str, str] | None = None
    for stem, row in zip(stems, prints, strict=True):
        record = _record(out_dir / f"{stem}_{GRID_SUFFIX}.png", read_png_text)
        if record.get("attnmap_version") != __version__:  # another version may run what this one refused
            return None
        try:
            skipped = json.loads(record[SKIPPED_KEY])
        except (KeyError, TypeError, ValueError):
            return None
        current = dict(zip(names, row, strict=True))
        if not isinstance(skipped, dict) or not set(skipped) <= set(current):
            return None
        if any(not isinstance(entry, dict) or entry.get("fingerprint") != current[name].value
               for name, entry in skipped.items()):
            return None
        reasons = {name: str(skipped[name].get("reason", "")) for name in names if name in skipped}
        if found is not None and reasons != found:
            return None
        found = reasons
    if found is not None and len(found) == len(names):
        return None  # a record that leaves nothing to run is no record of a run
    return found
