"""Reading back a finished output before reusing it: intact or not, and the provenance it records.

Why verify at all when every writer is atomic: a file can still be cut short after it was written
(a full disk during a copy, a synced folder, a user's editor), and a truncated h5 or PNG that is
trusted as "done" silently poisons everything downstream. Each check is cheap next to recomputing:
h5 files open with their datasets and expected lengths, PNGs decode up to their end chunk, TIFFs
have every page's data inside the file, JSON parses, checkpoints load (large ``.pt`` files: their
archive directory and member extents are checked instead).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class DamagedOutputError(Exception):
    """A finished output that cannot be trusted (the message says why, in a few words)."""


def stored_record(
    path: str | Path,
    *,
    datasets: Sequence[str] = (),
    rows: int | None = None,
) -> dict[str, str] | None:
    """The provenance record of an intact output, None when there is no file.

    ``datasets`` (h5 only): names that must be present; with ``rows``, each must have that many
    rows. Raises `DamagedOutputError` when the file is there but unreadable or incomplete.
    """
    path = Path(path)
    if not path.is_file():
        return None
    suffix = path.suffix.lower()
    try:
        if suffix == ".h5":
            return _h5_record(path, datasets, rows)
        if suffix == ".json":
            return _json_record(path)
        if suffix == ".png":
            return _png_record(path)
        if suffix in (".tif", ".tiff"):
            return _tiff_record(path)
        if suffix == ".pt":
            return _checkpoint_record(path)
    except DamagedOutputError:
        raise
    except Exception as error:  # noqa: BLE001 - every reader failure means the same thing: damaged
        raise DamagedOutputError(f"{path.name} is unreadable ({type(error).__name__})") from error
    raise DamagedOutputError(f"{path.name}: no reader for {suffix} outputs")


def _flat(record: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(key): (value.decode() if isinstance(value, bytes) else str(value))
        for key, value in record.items()
    }


def _h5_record(path: Path, datasets: Sequence[str], rows: int | None) -> dict[str, str]:
    import h5py

    with h5py.File(path, "r") as handle:
        for name in datasets:
            if name not in handle:
                raise DamagedOutputError(f"{path.name} has no '{name}' dataset")
            dataset = handle[name]
            if rows is not None and (not dataset.shape or dataset.shape[0] != rows):
                raise DamagedOutputError(f"{path.name}: '{name}' has {dataset.shape} rows, expected {rows}")
            if dataset.size:  # the last element: a cut-off data block fails to read here
                dataset[tuple(size - 1 for size in dataset.shape)]
        return _flat(handle.attrs)


def _json_record(path: Path) -> dict[str, str]:
    payload = json.loads(path.read_text())
    if not isinstance(payload, dict):
        raise DamagedOutputError(f"{path.name} is not a JSON object")
    record = payload.get("provenance", payload)
    return _flat(record) if isinstance(record, dict) else {}


def _png_record(path: Path) -> dict[str, str]:
    from PIL import Image

    with Image.open(path) as image:
        text = dict(getattr(image, "text", {}))
    with Image.open(path) as image:
        image.verify()  # every chunk's CRC up to IEND: a truncated file fails
    return _flat(text)


def _tiff_record(path: Path) -> dict[str, str]:
    import tifffile

    size = path.stat().st_size
    with tifffile.TiffFile(path) as tif:
        if not tif.pages:
            raise DamagedOutputError(f"{path.name} has no pages")
        for page in tif.pages:
            pairs = zip(page.dataoffsets, page.databytecounts, strict=True)
            ends = [offset + count for offset, count in pairs]
            if not ends or max(ends) > size or 0 in page.databytecounts:
                raise DamagedOutputError(f"{path.name} is cut short")
        description = tif.pages[0].description or "{}"
    try:
        record = json.loads(description)
    except json.JSONDecodeError:
        return {}
    return _flat(record) if isinstance(record, dict) else {}


# Larger .pt files (a big slide's features) get the archive check only: reading them whole on every
# rerun would cost more than the check is worth, and a cut-off file already fails the archive check.
FULL_LOAD_BYTES = 64 << 20


def _checkpoint_record(path: Path) -> dict[str, str]:
    import zipfile

    import torch

    size = path.stat().st_size
    if zipfile.is_zipfile(path):  # torch's format: a truncated file has no central directory
        with zipfile.ZipFile(path) as archive:
            for member in archive.infolist():
                if member.header_offset + member.compress_size > size:
                    raise DamagedOutputError(f"{path.name} is cut short")
        if size > FULL_LOAD_BYTES:
            return {}
    state = torch.load(path, map_location="cpu", weights_only=True)
    record = state.get("provenance", {}) if isinstance(state, dict) else {}
    return _flat(record) if isinstance(record, dict) else {}
