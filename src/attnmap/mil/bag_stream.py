"""Bags read in row chunks: `open_bag` for bags larger than memory.

An h5 bag's ``features`` dataset stays in its file while `open_bag`'s context is open; the bag's
``features`` is then an `H5FeatureRows`, which reads the rows a pass asks for (``rows[a:b]``) and
nothing else, so scoring a 10^6-patch bag holds one chunk of features at a time instead of all
of them. The rows come back exactly as `read_bag` would give them (float32, a batch axis of one
dropped) and are checked as they are read: NaN or infinity in a chunk is named with its rows.
Coordinates are read whole (two numbers a patch), with the patch geometry they record. A ``.pt``
bag is read whole, as `read_bag` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from attnmap.errors import InputError
from attnmap.mil.bags import (
    Bag,
    check_bag_path,
    check_feature_layout,
    checked_coords,
    features_dataset,
    read_bag,
    stored_coords,
)
from attnmap.mil.base import FeatureRows


class H5FeatureRows(FeatureRows):
    """The rows of an open h5 ``features`` dataset, read on demand as float32 tensors."""

    def __init__(self, dataset: Any, path: Path):
        shape = tuple(dataset.shape)
        self._batched = len(shape) == 3 and shape[0] == 1  # (1, N, D), as some extractors write
        shape = shape[1:] if self._batched else shape
        check_feature_layout(path, shape, dataset.dtype.kind == "f", dataset.dtype)
        self.shape = (int(shape[0]), int(shape[1]))
        self.dataset, self.path = dataset, path

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> torch.Tensor:
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("H5FeatureRows reads consecutive rows only: index it with rows[a:b]")
        start, stop, _ = rows.indices(self.shape[0])
        stop = max(start, stop)
        try:
            block = self.dataset[0, start:stop] if self._batched else self.dataset[start:stop]
        except OSError as error:  # a damaged chunk deep in the file
            raise InputError(f"{self.path}: rows {start} to {stop - 1} are unreadable ({error})") from error
        features = torch.from_numpy(block).float()
        # row sums first: one cheap pass; the full mask only to rule out an overflow of a finite sum
        if not (bool(torch.isfinite(features.sum(dim=1)).all()) or bool(torch.isfinite(features).all())):
            raise InputError(
                f"{self.path}: features contain NaN or infinite values (in rows {start} to {stop - 1})"
            )
        return features


@contextmanager
def open_bag(path: str | Path) -> Iterator[Bag]:
    """One bag whose h5 features are read chunk by chunk while the context is open.

    The layout (shape, dtype, coordinates) is checked on opening, with `read_bag`'s messages;
    values are checked per chunk as passes read them. A ``.pt`` bag is read whole.
    """
    path = check_bag_path(path)
    if path.suffix != ".h5":
        yield read_bag(path)
        return
    import h5py

    from attnmap.wsi.patch_geometry import read_geometry  # attnmap.wsi's package imports are heavy

    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise InputError(f"{path}: not a readable h5 file ({error})") from error
    with handle:
        try:
            rows = H5FeatureRows(features_dataset(handle, path), path)
            coords = stored_coords(handle, path)
        except OSError as error:
            raise InputError(f"{path}: not a readable h5 file ({error})") from error
        geometry = None
        if coords is not None:
            coords = checked_coords(path, coords, rows.shape[0])
            geometry = read_geometry(dict(handle["coords"].attrs))  # as read_bag's file_geometry
        yield Bag(slide_id=path.stem, features=rows, coords=coords, path=path, geometry=geometry)
