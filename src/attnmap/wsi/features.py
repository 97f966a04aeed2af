"""Patch features for attention MIL: read patches from a slide in batches, encode, save as CLAM does.

Output formats are CLAM's, so CLAM users can feed existing files in and out: an h5 with
``features`` (float32 N×D) and ``coords`` (int32 N×2, level-0 top-left [x, y]) and a ``.pt`` holding
the features tensor. Files are written atomically with provenance in the h5 attributes, so "the
file exists and its datasets agree" is a sound test for "this slide is done" (`features_complete`).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnmap.devices import resolve_device
from attnmap.errors import InputError
from attnmap.io_utils import atomic_path, writable_file
from attnmap.provenance import write_sidecar
from attnmap.render.arrays import as_array
from attnmap.wsi.encoder_graph import cpu_inference_graph
from attnmap.wsi.encoders import Encoder
from attnmap.wsi.parameters import PRECISION_NAMES
from attnmap.wsi.patch_geometry import PatchGeometry, write_geometry
from attnmap.wsi.prefetch import prefetch

logger = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype] = {name: getattr(torch, name) for name in PRECISION_NAMES}
"""The encoder's compute precision by name: float32 runs as it is; the others under `torch.autocast`."""


def _slide_path(slide: Any) -> str:
    if isinstance(slide, (str, Path)):
        return str(slide)
    for attribute in ("path", "filename", "_path"):
        value = getattr(slide, attribute, None)
        if isinstance(value, (str, Path)):
            return str(value)
    raise InputError("extract_features needs a slide path (or a slide object with a .path)")


def read_patch_rgb(slide: Any, x: int, y: int, level: int, patch_size: int) -> np.ndarray:
    """One patch as uint8 RGB (patch_size, patch_size, 3); ``x, y`` are level-0 coordinates."""
    region = slide.read_region((int(x), int(y)), int(level), (int(patch_size), int(patch_size)))
    if hasattr(region, "convert"):  # a PIL image (OpenSlide returns RGBA)
        region = region.convert("RGB")
    array = np.asarray(region)
    if array.ndim != 3 or array.shape[2] < 3:
        raise InputError(f"slide.read_region returned shape {array.shape}, expected H×W×3 or H×W×4")
    return np.ascontiguousarray(array[..., :3]).astype(np.uint8, copy=False)


class PatchDataset(torch.utils.data.Dataset):
    """Patches of one slide at the given coordinates, transformed for the encoder.

    The slide is opened lazily, once per process: OpenSlide handles cannot cross process
    boundaries, so each loader worker opens its own on first use.
    """

    def __init__(
        self, slide_path: str | Path, coords: np.ndarray, patch_size: int, level: int, transform: Any
    ):
        self.slide_path = str(slide_path)
        self.coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        self.patch_size = int(patch_size)
        self.level = int(level)
        self.transform = transform
        self._slide: Any = None

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self._slide is None:
            from attnmap.wsi.slide import open_slide

            self._slide = open_slide(self.slide_path)
        x, y = self.coords[index]
        return self.transform(read_patch_rgb(self._slide, x, y, self.level, self.patch_size))

    def close(self) -> None:
        """Close the slide this process opened (tiffslide warns of a handle left to the collector)."""
        if self._slide is not None:
            self._slide.close()
            self._slide = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_slide"] = None  # never pickle an open slide handle
        return state


def encoder_precision(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context the encoder's forward runs in: nothing for float32, else `torch.autocast`.

    Why autocast rather than casting the model: autocast keeps precision-sensitive operations
    (reductions, normalisations) in float32, so a half-precision run stays close to float32 while
    matrix products and convolutions run at the GPU's half-precision rate.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "float32":
        return contextlib.nullcontext()
    if not torch.amp.is_autocast_available(device.type):
        raise InputError(f"precision {precision} needs torch.autocast, unavailable on {device.type}")
    return torch.autocast(device.type, dtype=PRECISIONS[precision])


def extract_features(
    slide: Any,
    coords: np.ndarray,
    encoder: Encoder,
    patch_size: int = 256,
    level: int = 0,
    batch_size: int = 64,
    num_workers: int = 0,
    device: str | torch.device | None = "cpu",
    progress: bool = True,
    precision: str = "float32",
    cpu_graph: bool = True,
) -> np.ndarray:
    """Encode the patches at ``coords`` (level-0 top-left [x, y]) → (N, feature_dim) float32.

    ``precision``: "float32", or "bfloat16" / "float16" to run the encoder under `torch.autocast`
    (`encoder_precision`); the features are returned (and stored) as float32 either way.
    ``cpu_graph``: on the CPU in float32, run a convolutional encoder as a checked oneDNN inference
    graph (`attnmap.wsi.encoder_graph`; features equal the eager model's up to round-off).

    ``slide``: a path or a slide object with a ``.path`` (reopened by each loader worker).
    ``num_workers`` loader processes read and transform patches while the encoder runs; inside a
    daemonic process (a dask worker) that cannot fork children, so it falls back to 0. With 0, one
    background thread reads and transforms the next batches while the encoder runs.
    """
    from tqdm.auto import tqdm

    from attnmap.mil.bags import checked_coords

    coords = np.asarray(coords)
    if coords.ndim != 2 or coords.shape[1] != 2:
        raise InputError(f"coords must be N×2 [x, y], got shape {coords.shape}")
    # fractional coordinates (a rescaled grid) were truncated by the patch reader: 255.9999 read
    # pixel 255; rounded to the pixel as a bag's are, and NaN refused
    coords = checked_coords("extract_features", coords, len(coords))
    if patch_size < 1 or batch_size < 1 or num_workers < 0:
        raise InputError("patch_size and batch_size must be >= 1 and num_workers >= 0")
    model, transform, feature_dim = encoder
    if len(coords) == 0:
        return np.zeros((0, feature_dim), dtype=np.float32)
    if num_workers > 0 and multiprocessing.current_process().daemon:
        logger.info("inside a daemonic worker process: reading patches without loader workers")
        num_workers = 0
    target = resolve_device(device)
    autocast = encoder_precision(precision, target)  # a bad name fails before any patch is read
    model = model.to(target).eval()
    dataset = PatchDataset(_slide_path(slide), coords, patch_size, level, transform)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=target.type == "cuda",
    )
    # without loader processes a background thread reads and transforms the next batches
    batches = loader if num_workers > 0 else prefetch(loader, depth=2)
    output = np.empty((len(coords), feature_dim), dtype=np.float32)
    filled = 0
    runner, build_graph = model, cpu_graph and target.type == "cpu" and precision == "float32"
    stream = _worker_errors_unwrapped(batches)
    try:
        with torch.inference_mode():
            bar = tqdm(stream, "features", len(loader), leave=False, disable=not progress, unit="batch")
            for batch in bar:
                batch = batch.to(target, non_blocking=True)
                if build_graph:  # on the first batch: the graph is checked on real patches
                    runner, build_graph = cpu_inference_graph(model, batch), False
                with autocast:  # the forward only: patches are read and transformed in float32
                    features = runner(batch)
                features = features.float().cpu().numpy()
                output[filled : filled + len(features)] = features
                filled += len(features)
    finally:
        stream.close()  # stops the reading thread first: it must not read from a closed slide
        dataset.close()  # the slide opened here (with loader processes, each closes its own at exit)
    return output


def _worker_errors_unwrapped(batches: Any) -> Any:
    """``batches``, with an `InputError` raised in a loader process given back its own message.

    Why: torch re-raises a worker's exception as the same type with the message "Caught InputError
    in DataLoader worker process 0." followed by the worker's traceback, so a damaged slide's one-line
    error became a traceback in the run report.
    """
    try:
        yield from batches
    except InputError as error:
        lines = str(error).splitlines()
        if not lines or not (lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]):
            raise
        prefix = f"{type(error).__module__}.{type(error).__qualname__}: "
        starts = [index for index, line in enumerate(lines) if line.startswith(prefix)]
        if not starts:
            raise
        message = "\n".join(lines[starts[-1] :])[len(prefix) :]
        raise type(error)(message) from None


def save_features(
    path_h5: str | Path,
    features: np.ndarray,
    coords: np.ndarray,
    provenance: Mapping[str, str] | None = None,
    pt_path: str | Path | None = None,
    geometry: PatchGeometry | None = None,
) -> Path:
    """Write CLAM's ``features``/``coords`` h5 (and the features as a ``.pt`` if ``pt_path``), atomically.

    ``geometry``: the patches' size and level, written as CLAM's ``patch_size`` / ``patch_level``
    (and ``downsample``) attributes of ``coords`` (`attnmap.wsi.patch_geometry`).

    The ``.pt`` (with its provenance sidecar ``<name>.pt.json``) is written first: the h5 is the
    marker of completion checked by `features_complete`.
    """
    import h5py

    from attnmap.mil.bags import checked_coords

    features = as_array(features).astype(np.float32)
    coords = as_array(coords)
    if features.ndim != 2 or coords.ndim != 2 or coords.shape[1] != 2 or len(features) != len(coords):
        raise InputError(f"features {features.shape} and coords {coords.shape} must be N×D and N×2")
    coords = checked_coords(path_h5, coords, len(coords))  # as extract_features read them: rounded
    if coords.size and (np.abs(coords).max() >= 2**31):
        raise InputError("coordinates beyond the int32 range cannot be stored in a CLAM features file")
    path_h5 = writable_file(path_h5)
    if pt_path is not None:
        pt_path = writable_file(pt_path)
        if provenance:
            write_sidecar(pt_path, provenance)  # the .pt itself holds the bare tensor CLAM expects
        with atomic_path(pt_path) as temporary:
            torch.save(torch.from_numpy(features.copy()), temporary)
    with atomic_path(path_h5) as temporary, h5py.File(temporary, "w") as handle:
        handle.create_dataset("features", data=features)
        write_geometry(handle.create_dataset("coords", data=coords.astype(np.int32)), geometry)
        for key, value in (provenance or {}).items():
            handle.attrs[key] = str(value)
        handle.attrs["feature_dim"] = features.shape[1]
    return Path(path_h5)


def load_features(path_h5: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(features float32 N×D, coords int64 N×2) from a CLAM/attnmap features h5; `InputError`
    naming the file when it is missing, a folder or not such a file."""
    import h5py

    path = Path(path_h5)
    if not path.is_file():
        raise InputError(f"features file not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with h5py.File(path, "r") as handle:
            if "features" not in handle or "coords" not in handle:
                raise InputError(f"{path} has no 'features' and 'coords' datasets")
            features = np.asarray(handle["features"], dtype=np.float32)
            return features, np.asarray(handle["coords"], dtype=np.int64)
    except OSError as error:
        raise InputError(f"{path}: not a readable h5 file ({error})") from error


def features_complete(
    path_h5: str | Path, n_patches: int | None = None, feature_dim: int | None = None
) -> bool:
    """Whether ``path_h5`` is a readable features file (with ``n_patches`` rows of ``feature_dim``)."""
    import h5py

    path = Path(path_h5)
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as handle:
            if "features" not in handle or "coords" not in handle:
                return False
            rows, dim = handle["features"].shape
            if handle["coords"].shape != (rows, 2):
                return False
    except (OSError, ValueError):
        return False
    return (n_patches is None or rows == n_patches) and (feature_dim is None or dim == feature_dim)
