"""Fine maps on disk: one h5 file per slide, written batch by batch, read back per patch.

Why a file: with ``top_k: all`` a slide has as many fine maps as patches (16 KB each at a 64-px
encoder input), more than the memory bound of the streaming TIFF writer allows. The fine stage
appends each batch of maps as it computes them; the TIFF writer and the viewer read only the maps of
the patches a window touches (`FineMapFile.read`), so their memory does not grow with the slide.

Layout (``<id>_fine_maps.h5``)::

    coords      (N, 2) int64    level-0 top-left of every patch of the bag (the coarse map)
    scores      (N,)   float64  the MIL method's patch scores s_i (the coarse map)
    fine_index  (k,)   int64    bag index of each fine map, highest score first
    maps        (k, H, W) float32, one chunk per map
    bias_share  (k,)   float64  the encoder bias share b_i of each map
    attrs: patch_size (level 0), fine_method, mil_method, target, top_k, map_scale, provenance

``map_scale`` is the 99th percentile of |R| over all maps (the colour scale every drawing shares),
computed exactly from the file by a two-pass radix selection, so no drawing needs every map at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from attnmap.errors import InputError
from attnmap.io_utils import atomic_path

READ_ROWS = 256
"""Maps read at once when scanning the whole file (4 MB of 64 × 64 float32 maps)."""
SCALE_PERCENTILE = 99.0


def abs_percentile(
    chunks: Callable[[], Iterable[np.ndarray]], count: int, q: float = SCALE_PERCENTILE
) -> float:
    """``np.percentile(np.abs(values), q)`` of the arrays ``chunks()`` yields: exact, O(chunk) memory.

    ``chunks`` is called once per pass and yields float arrays (float32 or float64) holding
    ``count`` values in all. |x| of a float orders as its bit pattern does, so the two order
    statistics NumPy interpolates between are found 16 bits at a time (two passes for float32),
    then interpolated by NumPy itself.
    """
    if count == 0:
        raise InputError("no values to take a percentile of")
    virtual = (count - 1) * np.asarray(q / 100.0, dtype=np.float64)
    low_rank = int(np.floor(virtual))
    ranks = sorted({low_rank, min(low_rank + 1, count - 1)})
    state = {rank: (0, rank) for rank in ranks}  # rank -> (bit prefix found so far, rank within it)
    first = next(iter(chunks()), None)
    if first is None:
        raise InputError("no values to take a percentile of")
    float_type = np.asarray(first).dtype
    unsigned = {4: np.uint32, 8: np.uint64}.get(float_type.itemsize)
    if float_type.kind != "f" or unsigned is None:
        raise InputError(f"percentile of {float_type} values is not supported (float32 or float64)")
    bits = 8 * float_type.itemsize
    for shift in range(bits - 16, -1, -16):
        prefixes = {prefix for prefix, _ in state.values()}
        histograms = {prefix: np.zeros(1 << 16, dtype=np.int64) for prefix in prefixes}
        for chunk in chunks():
            values = np.abs(np.asarray(chunk, dtype=float_type)).ravel()
            if not np.isfinite(values).all():
                raise InputError("fine maps contain NaN or infinite values")
            pattern = values.view(unsigned)
            digits = ((pattern >> unsigned(shift)) & unsigned(0xFFFF)).astype(np.intp)
            high = pattern >> unsigned(shift + 16) if shift + 16 < bits else np.zeros_like(pattern)
            for prefix, histogram in histograms.items():
                histogram += np.bincount(digits[high == unsigned(prefix)], minlength=1 << 16)
        for rank, (prefix, within) in state.items():
            cumulative = np.cumsum(histograms[prefix])
            digit = int(np.searchsorted(cumulative, within, side="right"))
            below = int(cumulative[digit - 1]) if digit else 0
            state[rank] = ((prefix << 16) | digit, within - below)
    order = {
        rank: float(np.array(prefix, dtype=unsigned).view(float_type)) for rank, (prefix, _) in state.items()
    }
    low, high = order[ranks[0]], order[ranks[-1]]
    return float(np.quantile(np.array([low, high], dtype=np.float64), float(virtual - low_rank)))


class FineMapWriter:
    """Writes a fine-map file batch by batch (atomically: the file appears only once complete).

    Use as a context manager; `append` each batch of maps in ``fine_index`` order. On a clean exit
    the map scale is computed from the file and the temporary file is moved into place.
    """

    def __init__(
        self,
        path: str | Path,
        coords: np.ndarray,
        scores: np.ndarray,
        fine_index: np.ndarray,
        map_shape: tuple[int, int],
        *,
        patch_size: int,
        method: str,
        mil_method: str,
        target: int,
        top_k: int | None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        fine_index = np.asarray(fine_index, dtype=np.int64).reshape(-1)
        if len(scores) != len(coords):
            raise InputError(f"{len(coords)} patch coordinates for {len(scores)} scores")
        if len(fine_index) and (fine_index.min() < 0 or fine_index.max() >= len(coords)):
            raise InputError("fine-map patch indices lie outside the bag")
        self.count = len(fine_index)
        self.written = 0
        self.attrs: dict[str, Any] = {  # after the provenance, whose "method" names the step
            **{str(key): str(value) for key, value in (metadata or {}).items()},
            "patch_size": int(patch_size),
            "fine_method": str(method),
            "mil_method": str(mil_method),
            "target": int(target),
            "top_k": "all" if top_k is None else int(top_k),
        }
        self.arrays = {"coords": coords, "scores": scores, "fine_index": fine_index}
        self.map_shape = (int(map_shape[0]), int(map_shape[1]))
        self.handle: Any = None
        self._atomic: Any = None

    def __enter__(self) -> FineMapWriter:
        import h5py

        self._atomic = atomic_path(self.path)  # the project's one temporary-then-replace rule
        self.handle = h5py.File(self._atomic.__enter__(), "w")
        for name, values in self.arrays.items():
            self.handle.create_dataset(name, data=values)
        self.handle.create_dataset(
            "maps", shape=(self.count, *self.map_shape), dtype=np.float32, chunks=(1, *self.map_shape)
        )
        self.handle.create_dataset("bias_share", shape=(self.count,), dtype=np.float64)
        return self

    def append(self, maps: np.ndarray, bias_share: np.ndarray) -> None:
        """Store the next ``len(maps)`` maps (k_batch, H, W) and their bias shares."""
        maps = np.asarray(maps)
        if maps.shape[1:] != self.map_shape:
            raise InputError(f"fine maps of shape {maps.shape[1:]} in a file of {self.map_shape} maps")
        end = self.written + len(maps)
        if end > self.count:
            raise InputError(f"more fine maps than the {self.count} announced")
        self.handle["maps"][self.written : end] = maps.astype(np.float32, copy=False)
        self.handle["bias_share"][self.written : end] = np.asarray(bias_share, dtype=np.float64)
        self.written = end

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            try:
                if kind is None:
                    self._finish()
            finally:
                self.handle.close()
        except BaseException as failure:  # an incomplete file: the temporary is deleted, not moved
            self._atomic.__exit__(type(failure), failure, failure.__traceback__)
            raise
        self._atomic.__exit__(kind, error, trace)

    def _finish(self) -> None:
        if self.written != self.count:
            raise InputError(f"{self.written} of {self.count} fine maps written")
        maps = self.handle["maps"]
        scale = abs_percentile(lambda: _row_chunks(maps), maps.size) if maps.size else 1.0
        self.handle.attrs["map_scale"] = scale if scale > 0 else 1.0
        for key, value in self.attrs.items():
            self.handle.attrs[key] = value


def _row_chunks(dataset: Any, rows: int = READ_ROWS) -> Iterator[np.ndarray]:
    for start in range(0, dataset.shape[0], rows):
        yield dataset[start : start + rows]


class FineMapFile:
    """A fine-map file open for reading: the coarse map in memory, the fine maps read on demand.

    ``read(rows)`` returns the maps ``rows`` (positions in ``fine_index``) and nothing else; safe
    to call from several threads (h5py serialises the reads).
    """

    DATASETS = ("coords", "scores", "fine_index", "maps", "bias_share")

    def __init__(self, path: str | Path) -> None:
        import h5py

        self.path = Path(path)
        try:
            self.handle = h5py.File(self.path, "r")
        except OSError as error:
            raise InputError(f"cannot read fine-map file {self.path}: {error}") from None
        try:
            missing = [name for name in self.DATASETS if name not in self.handle]
            if missing:
                raise InputError(f"{self.path} is not a fine-map file (no {', '.join(missing)})")
            self.coords = np.asarray(self.handle["coords"], dtype=np.int64).reshape(-1, 2)
            self.scores = np.asarray(self.handle["scores"], dtype=np.float64).reshape(-1)
            self.fine_index = np.asarray(self.handle["fine_index"], dtype=np.int64).reshape(-1)
            self.maps = self.handle["maps"]
            attrs = self.handle.attrs
            self.patch_size = int(attrs["patch_size"])
            self.scale = float(attrs["map_scale"])
            self.method, self.mil_method = str(attrs["fine_method"]), str(attrs["mil_method"])
            self.target = int(attrs["target"])
        except (KeyError, ValueError) as error:
            self.handle.close()
            raise InputError(f"{self.path} is not a complete fine-map file ({error})") from None
        except InputError:
            self.handle.close()
            raise
        if (
            len(self.scores) != len(self.coords)
            or self.maps.shape[0] != len(self.fine_index)
            or (len(self.fine_index) and self.fine_index.max() >= len(self.coords))
        ):
            self.handle.close()
            raise InputError(f"{self.path}: coords, scores, fine_index and maps disagree in length")
        self.fine_coords = self.coords[self.fine_index]

    def __len__(self) -> int:
        return len(self.fine_index)

    @property
    def map_shape(self) -> tuple[int, int]:
        return tuple(self.maps.shape[1:])  # type: ignore[return-value]

    def read(self, rows: np.ndarray) -> np.ndarray:
        """Maps at positions ``rows`` (any order, repeats allowed), float32 (len(rows), H, W)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not len(rows):
            return np.zeros((0, *self.map_shape), dtype=np.float32)
        unique, inverse = np.unique(rows, return_inverse=True)
        return np.asarray(self.maps[unique], dtype=np.float32)[inverse]

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> FineMapFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def is_fine_map_file(path: str | Path) -> bool:
    """Whether ``path`` is an h5 file with the fine-map datasets (cheap: opens, lists, closes)."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return all(name in handle for name in FineMapFile.DATASETS)
    except OSError:
        return False
