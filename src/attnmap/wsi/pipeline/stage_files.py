"""The files between pipeline stages: tissue contours (JSON), patch coordinates (CLAM h5), blockmap scores.

Why files at all: each stage's output is what lets a resumed run skip it, and what a CLAM user can
bring from elsewhere (a CLAM ``patches/<slide>.h5`` is read as it is). Every writer is atomic and
stores provenance; every loader returns None (or False) for a missing or unreadable file, which the
pipeline treats as "not done yet".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from attnmap.errors import InputError
from attnmap.io_utils import atomic_path, write_json_atomic


def save_tissue(path: str | Path, tissue: Any, record: Mapping[str, str]) -> Path:
    """Tissue contours (level-0 polygons with holes), geometry and parameters as JSON."""
    payload = {
        "provenance": dict(record),
        "seg_level": int(tissue.seg_level),
        "level_dimensions": [list(map(int, dims)) for dims in tissue.level_dimensions],
        "level_scales": [list(map(float, scale)) for scale in tissue.level_scales],
        "parameters": {
            key: (value.item() if hasattr(value, "item") else value)
            for key, value in tissue.parameters.items()
        },
        "contours": [
            {
                "outer": np.asarray(polygon.outer).reshape(-1, 2).tolist(),
                "holes": [np.asarray(hole).reshape(-1, 2).tolist() for hole in polygon.holes],
            }
            for polygon in tissue.contours
        ],
    }
    return write_json_atomic(path, payload)


def load_tissue(path: str | Path, of_slide: Any = None) -> Any:
    """The `Tissue` saved by `save_tissue` (InputError if the file is not one).

    ``of_slide``: the slide it is to mask; tissue found on a slide of another level-0 size is an
    `InputError` (its mask would colour a heatmap where another slide's tissue lay, silently)."""
    tissue = _read_tissue(path)
    if of_slide is not None and tuple(tissue.level_dimensions[0]) != tuple(of_slide.dimensions):
        (w, h), (width, height) = tissue.level_dimensions[0], of_slide.dimensions
        name = Path(str(getattr(of_slide, "path", "the slide"))).name
        raise InputError(
            f"tissue file {path} was found on a {w}×{h} slide, not on {name} ({width}×{height} at "
            "level 0): give that slide's tissue file"
        )
    return tissue


def check_made_from(source: str | Path, record: Mapping[str, Any], slide_path: str | Path) -> None:
    """`InputError` when ``record`` (the provenance of ``source``, a stage output) names a slide
    whose bytes differ from those of ``slide_path`` (`check_same_slide`); a DICOM slide given as
    its folder is its level-0 instance, the file `wsi run` reads and records."""
    if record.get("slide_sha256"):
        from attnmap.file_hash import content_sha256
        from attnmap.wsi.slide_files import dicom_instance

        slide_path = Path(slide_path)
        slide_file = (dicom_instance(slide_path) or slide_path) if slide_path.is_dir() else slide_path
        if slide_file.is_file():  # a slide that does not open is named by its reader
            check_same_slide(source, record, content_sha256(slide_file), slide_path.name)


def check_same_slide(source: str | Path, record: Mapping[str, Any], sha256: Any, name: Any) -> None:
    """`InputError` when ``record`` (the provenance of ``source``) names a slide other than the one
    of content hash ``sha256`` (called ``name``).

    Why the content, not the name or the size: a slide renamed or moved is still the slide, and two
    slides of one scanner often share their level-0 size; the features, scores or tissue of one
    drawn on the other coloured where the first slide's tissue lay, without a word. A hash missing
    on either side (another tool's file, an older attnmap's) is not checked.
    """
    recorded = record.get("slide_sha256")
    if recorded and sha256 and str(recorded) != str(sha256):
        made = record.get("slide") or "another slide"
        if str(made) == str(name):  # the file was replaced (a rescan under its old name)
            raise InputError(f"{Path(source).name} was made from slide {made} as it was before: its bytes "
                             "differ now; rerun the stages that made it for this slide")
        raise InputError(
            f"{Path(source).name} was made from slide {made}, not from {name} (their bytes differ): "
            "give files of one slide"
        )


def output_record(path: str | Path) -> dict[str, Any]:
    """The provenance a stage output carries: an h5 file's attributes, a tissue JSON's
    ``provenance``, else the sidecar ``<file>.json`` (a features ``.pt``); {} when there is none.
    A record without ``slide_sha256`` whose fingerprint names the slide's content (a tissue file
    of an attnmap that did not record it) gets it from there."""
    import h5py

    from attnmap.provenance import read_sidecar

    path = Path(path)
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as handle:
                record = {key: value for key, value in handle.attrs.items() if isinstance(value, str)}
        elif path.suffix == ".json":
            record = json.loads(path.read_text()).get("provenance")
            record = dict(record) if isinstance(record, dict) else {}
        else:
            record = read_sidecar(path)
    except (OSError, ValueError, AttributeError, InputError):
        return {}
    if not record.get("slide_sha256"):
        try:
            record["slide_sha256"] = json.loads(record["attnmap_fingerprint_inputs"])["slide"]["sha256"]
        except (KeyError, TypeError, ValueError):  # no slide in its fingerprint: not known
            return record
    return record


def slide_record(path: str | Path) -> dict[str, str]:
    """The slide an output records being made from (``slide``, ``slide_sha256``), for an output
    made from it in turn to carry on (`mil attention`'s scores of a features file); {} if none."""
    record = output_record(path)
    return {key: str(record[key]) for key in ("slide", "slide_sha256") if record.get(key)}


def _read_tissue(path: str | Path) -> Any:
    from attnmap.wsi.tissue import Tissue, TissuePolygon

    try:
        payload = json.loads(Path(path).read_text())
        polygons = [
            TissuePolygon(
                np.asarray(item["outer"], dtype=np.int32).reshape(-1, 2),
                [np.asarray(hole, dtype=np.int32).reshape(-1, 2) for hole in item["holes"]],
            )
            for item in payload["contours"]
        ]
        return Tissue(
            polygons,
            tuple(tuple(int(v) for v in dims) for dims in payload["level_dimensions"]),
            tuple(tuple(float(v) for v in scale) for scale in payload["level_scales"]),
            int(payload["seg_level"]),
            dict(payload["parameters"]),
        )
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(f"{path} is not a tissue file written by attnmap: {error}") from error


def check_brought_patches(path: Path, slide: Any, patch_size: int, level: int, slide_id: str) -> None:
    """`InputError` when a patch file the run did not write (CLAM's, brought by the user) is for
    patches of another size or level than ``patch_size`` at ``level``, or records (CLAM's
    ``level_dim``) a level size other than ``slide``'s: another slide's grid, its corners perhaps
    all inside this one, or a grid cut at this run's size, would map the wrong tissue, silently."""
    import h5py

    from attnmap.wsi.patch_geometry import file_geometry
    from attnmap.wsi.setting_names import setting

    recorded = file_geometry(path)
    if recorded is not None and (recorded.size, recorded.level) != (patch_size, level):
        raise InputError(
            f"{path} records {recorded.size}-px patches at level {recorded.level}, this run asks for "
            f"{setting('patching.patch_size')} {patch_size} at {setting('patching.level')} {level}: set "
            "those to the file's, or move the file away"
        )
    with h5py.File(path, "r") as handle:
        size = handle["coords"].attrs.get("level_dim")
    try:
        width, height = (int(value) for value in np.asarray(size).reshape(-1))
    except (TypeError, ValueError):  # not recorded (or not two numbers): nothing to compare
        return
    if level < slide.level_count:  # readers may round a reduced level's size apart by a pixel
        own_width, own_height = slide.level_dimensions[level]
        if abs(width - own_width) > 1 or abs(height - own_height) > 1:
            raise InputError(
                f"{path} records patches of a {width}×{height} level {level}, slide {slide_id} is "
                f"{own_width}×{own_height} there: the file is another slide's; move it away"
            )


def save_coords(
    path: str | Path,
    coords: np.ndarray,
    slide: Any,
    patch_size: int,
    level: int,
    name: str,
    record: Mapping[str, str],
) -> Path:
    """CLAM's patch file: dataset ``coords`` (int64 N×2, level-0 top-left) with CLAM's attributes."""
    import h5py

    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    downsample = float(slide.level_downsamples[level])
    with atomic_path(path) as temporary, h5py.File(temporary, "w") as handle:
        dataset = handle.create_dataset("coords", data=coords)
        dataset.attrs["patch_size"] = int(patch_size)
        dataset.attrs["patch_level"] = int(level)
        dataset.attrs["downsample"] = np.array([downsample, downsample])
        dataset.attrs["downsampled_level_dim"] = np.array(slide.level_dimensions[level], dtype=np.int64)
        dataset.attrs["level_dim"] = np.array(slide.level_dimensions[level], dtype=np.int64)
        dataset.attrs["name"] = name
        for key, value in record.items():
            handle.attrs[key] = str(value)
    return Path(path)


def save_features_pt(path: str | Path, features: np.ndarray, record: Mapping[str, str]) -> Path:
    """``pt_files/<id>.pt`` (the bare float32 tensor CLAM reads) and its record ``<id>.pt.json``,
    each atomically: what `attnmap.wsi.features.save_features` writes beside the h5."""
    import torch

    from attnmap.io_utils import atomic_path
    from attnmap.provenance import write_sidecar

    if record:
        write_sidecar(path, record)
    with atomic_path(path) as temporary:
        torch.save(torch.from_numpy(np.asarray(features, dtype=np.float32).copy()), temporary)
    return Path(path)


def load_coords(path: str | Path) -> np.ndarray | None:
    """``coords`` of a CLAM/attnmap patch file, or None when missing or unreadable."""
    import h5py

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as handle:
            coords = np.asarray(handle["coords"], dtype=np.int64)
    except (OSError, KeyError, ValueError):
        return None
    return coords if coords.ndim == 2 and coords.shape[1] == 2 else None


def save_blockmap(path: str | Path, attention: Mapping[str, Any], record: Mapping[str, str]) -> Path:
    """CLAM's ``_blockmap.h5`` (`attnmap.wsi.scores_io` layout) plus the prediction, written atomically.

    ``attention``: coords, scores (N,), prediction, probs (C,), branch[, n_branches][, patch_size
    (level 0)][, geometry]. The scores are stored in float32 as CLAM does (the model computes them in float32:
    nothing is lost). ``geometry`` (a `PatchGeometry`): the ``patch_size`` / ``patch_level`` /
    ``downsample`` attributes of ``coords``, as the features h5 and `mil attention`'s h5 carry them,
    so that a reader of any of the three (CLAM's too) finds them in one place.
    """
    from attnmap.wsi.scores_io import save_scores_h5

    extra = {
        "prediction": int(attention["prediction"]),
        "probabilities": np.asarray(attention["probs"], dtype=np.float64),
        "attention_branch": int(attention["branch"]),
        "branch": int(attention["branch"]),  # a number as in `mil attention`'s h5 (the record has text)
        **({"attention_branches": int(attention["n_branches"])} if "n_branches" in attention else {}),
        **({"patch_size": int(attention["patch_size"])} if "patch_size" in attention else {}),
    }
    with atomic_path(path) as temporary:
        save_scores_h5(
            temporary,
            np.asarray(attention["coords"], dtype=np.int64),
            np.asarray(attention["scores"], dtype=np.float32).reshape(-1, 1),
            metadata=record,
            attrs=extra,
            geometry=attention.get("geometry"),
        )
    return Path(path)


def load_blockmap(path: str | Path) -> dict[str, Any]:
    """What `save_blockmap` stored: coords (int64), scores (float64, N), prediction, probs, branch
    (and n_branches, when the file records it)."""
    import h5py

    with h5py.File(path, "r") as handle:
        return {
            "coords": np.asarray(handle["coords"], dtype=np.int64),
            "scores": np.asarray(handle["attention_scores"], dtype=np.float64).reshape(-1),
            "prediction": int(handle.attrs.get("prediction", -1)),
            "probs": np.asarray(handle.attrs.get("probabilities", []), dtype=np.float64),
            "branch": int(handle.attrs.get("attention_branch", 0)),
            **({"n_branches": int(handle.attrs["attention_branches"])}
               if "attention_branches" in handle.attrs else {}),
        }


def blockmap_complete(path: str | Path, n_patches: int | None = None) -> bool:
    """Whether ``path`` is a readable blockmap file with the prediction (and ``n_patches`` rows)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as handle:
            rows = handle["attention_scores"].shape[0]
            ok = handle["coords"].shape == (rows, 2) and "prediction" in handle.attrs
    except (OSError, KeyError, ValueError):
        return False
    return ok and (n_patches is None or rows == n_patches)


def scores_file_patch_size(
    path: str | Path, level_downsamples: tuple[float, ...] | None = None
) -> int | None:
    """The level-0 patch size of a ``_blockmap.h5`` or a `mil attention` h5, None when it does not
    say: as `attnmap.wsi.patch_geometry.scores_patch_size` reads it, with ``level_downsamples``
    (the slide's) for a level whose downsample the file does not record. A recorded size that is
    none: an `InputError` naming the file and attribute."""
    import h5py

    from attnmap.wsi.patch_geometry import scores_patch_size

    with h5py.File(path, "r") as handle:
        coords = handle.get("coords")
        coords_attrs = dict(coords.attrs) if isinstance(coords, h5py.Dataset) else {}
        file_attrs = dict(handle.attrs)
    return scores_patch_size(file_attrs, coords_attrs, path, level_downsamples)


def features_patch_size(path: str | Path, level_downsamples: tuple[float, ...]) -> int | None:
    """The level-0 patch size a features h5 was made with, or None for a file that does not say.

    Read from attnmap's recorded ``patching`` parameters, else the attributes of ``coords``
    (`attnmap.wsi.patch_geometry.level0_patch_size`: TRIDENT's and CLAM's). Guessing from the
    coordinate spacing would be wrong for overlapping grids. A recorded size that is none: an
    `InputError` naming the file and attribute.
    """
    import json

    import h5py

    from attnmap.wsi.patch_geometry import level0_patch_size

    if not h5py.is_hdf5(path):  # a .pt bag records no patching
        return None
    with h5py.File(path, "r") as handle:
        parameters = handle.attrs.get("parameters")
        coords = handle.get("coords")
        coord_attrs = dict(coords.attrs) if isinstance(coords, h5py.Dataset) else {}
    try:
        patching = json.loads(parameters)["patching"]
        size, level = int(patching["patch_size"]), int(patching["level"])
    except (TypeError, ValueError, KeyError):
        return level0_patch_size(coord_attrs, path, level_downsamples)
    if not 0 <= level < len(level_downsamples):
        return None
    return int(round(size * level_downsamples[level]))
