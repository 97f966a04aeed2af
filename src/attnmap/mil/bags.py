"""Reading feature bags in CLAM's layout: ``h5_files/<slide>.h5`` or ``pt_files/<slide>.pt``.

An h5 bag holds ``features`` (N, D) float and ``coords`` (N, 2) level-0 [x, y] patch corners; a
``.pt`` bag is a tensor (N, D) (CLAM) or a dict with ``features`` and optionally ``coords``. Both
folders may also be flattened into one (``<dir>/<slide>.h5``). h5 is preferred when both exist
because it carries the coordinates a heatmap needs.

Every problem (missing file, missing dataset, wrong shape, empty bag, NaN, mismatched coords)
raises `InputError` / `FileNotFoundError` naming the file, since a bad bag found deep inside a
training run would otherwise cost the whole run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from attnmap.checkpoint_files import torch_load_reason
from attnmap.errors import InputError
from attnmap.mil.base import FeatureRows

if TYPE_CHECKING:
    from attnmap.wsi.patch_geometry import PatchGeometry

BAG_SUFFIXES = (".h5", ".pt")


@dataclass
class Bag:
    """One slide's patch features (N, D) float32, coordinates (N, 2) int64 or None, and its id;
    ``geometry``: the patches' size and level its h5 ``coords`` record (None: not recorded).

    ``features`` is a tensor, or rows still in their file for a bag from `open_bag`."""

    slide_id: str
    features: torch.Tensor | FeatureRows
    coords: np.ndarray | None
    path: Path
    geometry: PatchGeometry | None = None

    @property
    def n_patches(self) -> int:
        return int(self.features.shape[0])


def bag_candidates(features_dir: str | Path, slide_id: str) -> list[Path]:
    """The paths where a slide's bag may be, in order of preference."""
    root = Path(features_dir)
    return [
        root / "h5_files" / f"{slide_id}.h5",
        root / f"{slide_id}.h5",
        root / "pt_files" / f"{slide_id}.pt",
        root / f"{slide_id}.pt",
    ]


def find_bag(features_dir: str | Path, slide_id: str) -> Path:
    """The bag file of ``slide_id`` under ``features_dir`` (CLAM layout or flat); an id written
    with its slide file extension (``a.svs``, as many labels CSVs have it) or its bag's (``a.h5``,
    ``a.pt``: a list made from the feature folder) finds ``a.h5``."""
    root = Path(features_dir)
    if not root.is_dir():
        raise FileNotFoundError(2, "No such feature directory", str(root))
    names = [slide_id]
    stem, dot, suffix = slide_id.rpartition(".")
    # "a.svs" or "a.h5" in a labels CSV: the bags are named "a"
    if dot and stem and (_is_slide_suffix("." + suffix) or "." + suffix.lower() in BAG_SUFFIXES):
        names.append(stem)
    for name in names:
        for candidate in bag_candidates(root, name):
            if candidate.is_file():
                return candidate
    raise InputError(
        f"no feature bag for slide {slide_id!r} in {root} (looked for h5_files/{slide_id}.h5, "
        f"pt_files/{slide_id}.pt and {slide_id}.h5/.pt)"
    )


def find_bags(features_dir: str | Path, slide_ids: list[str]) -> dict[str, Path]:
    """The bag of every slide id; all missing ones are named at once, not one per rerun. Two ids
    finding one bag (``a`` and ``a.svs``) are refused: one bag would count as two slides."""
    paths: dict[str, Path] = {}
    missing: list[str] = []
    owner: dict[tuple[int, int], str] = {}  # by file identity: 'A' finds a.h5 on a case-insensitive disk
    for slide in slide_ids:
        try:
            paths[slide] = find_bag(features_dir, slide)
        except InputError:
            missing.append(slide)
            continue
        identity = paths[slide].stat()
        other = owner.setdefault((identity.st_dev, identity.st_ino), slide)
        if other != slide:
            raise InputError(f"slides {other!r} and {slide!r} both find the bag {paths[slide]}; "
                             "list each slide once")
    if missing:
        raise InputError(
            f"no feature bag in {features_dir} for {len(missing)} of {len(slide_ids)} listed slides: "
            + ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
            + " (looked for h5_files/<slide>.h5, pt_files/<slide>.pt and <slide>.h5/.pt)"
        )
    return paths


def _is_slide_suffix(suffix: str) -> bool:
    from attnmap.wsi.slide import SLIDE_SUFFIXES

    return suffix.lower() in SLIDE_SUFFIXES


def list_bags(features_dir: str | Path) -> list[Path]:
    """All bag files under a feature directory, one per slide id (h5 preferred), sorted by id.
    Not bags: hidden files (a Mac's ``._<slide>.h5`` beside each file on exFAT or network drives,
    temporaries) and ``mil attention``'s own ``<slide>_attention.h5`` outputs written there."""
    root = Path(features_dir)
    if not root.is_dir():
        raise FileNotFoundError(2, "No such feature directory", str(root))
    found: dict[str, Path] = {}
    for folder in (root / "h5_files", root, root / "pt_files"):
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.name.startswith(".") or path.suffix not in BAG_SUFFIXES or not path.is_file():
                    continue
                if not is_attention_output(path):
                    found.setdefault(path.stem, path)
    return [found[key] for key in sorted(found)]


def collect_bags(items: Iterable[str | Path]) -> list[Path]:
    """The bags of ``items`` in order: a file as it is, a folder's `list_bags`. Each slide id (the
    file's stem) once: two bags of one id (``a/s.h5`` and ``b/s.h5``; ``s.h5`` and ``S.pt``, one
    output file on a case-insensitive disk) are refused naming both, since which one is the
    slide's is not ours to guess and a renamed output (``s_2``) would match no slide."""
    seen: dict[str, Path] = {}
    paths = []
    for item in map(Path, items):
        for path in list_bags(item) if item.is_dir() else [item]:
            earlier = seen.setdefault(path.stem.casefold(), path)
            if earlier is not path:
                if earlier.resolve() == path.resolve():
                    raise InputError(f"bag {path} is given twice")
                same = f"{earlier.stem!r}" + (f" ({path.stem!r})" if path.stem != earlier.stem else "")
                raise InputError(f"slide id {same} is given twice: bags {earlier} and {path}; give one of "
                                 "them (or rename one)")
            paths.append(path)
    return paths


ATTENTION_SUFFIX = "_attention.h5"  # what `attnmap.mil.export` names a bag's scores file


def is_attention_output(path: Path) -> bool:
    """Whether ``path`` is a ``<slide>_attention.h5`` that ``mil attention`` wrote (its provenance
    says so); a user's own file of that name is not."""
    if not path.name.endswith(ATTENTION_SUFFIX):
        return False
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return handle.attrs.get("method") == "mil-attention"
    except OSError:  # not an h5 file: not ours
        return False


def read_bag(path: str | Path, check_finite: bool = True) -> Bag:
    """Read one bag (h5 or .pt) with clear errors for anything malformed."""
    path = check_bag_path(path)
    features, coords = _read_h5(path) if path.suffix == ".h5" else _read_pt(path)
    features = torch.as_tensor(features)
    if features.ndim == 3 and features.shape[0] == 1:
        features = features[0]
    check_feature_layout(path, tuple(features.shape), features.is_floating_point(), features.dtype)
    stored, features = features, features.float()
    # row sums first: one cheap pass; the full mask only to rule out an overflow of a finite sum
    if check_finite and not (
        bool(torch.isfinite(features.sum(dim=1)).all()) or bool(torch.isfinite(features).all())
    ):
        if bool(torch.isfinite(stored).all()):  # finite float64 values that only the cast made inf
            largest = float(stored.abs().max())
            raise InputError(f"{path}: feature values up to {largest:.3g} exceed float32, which bags load as")
        raise InputError(f"{path}: features contain NaN or infinite values")
    if coords is not None:
        coords = checked_coords(path, coords, features.shape[0])
    from attnmap.wsi.patch_geometry import file_geometry  # attnmap.wsi's package imports are heavy

    geometry = file_geometry(path) if coords is not None and path.suffix == ".h5" else None
    return Bag(slide_id=path.stem, features=features, coords=coords, path=path, geometry=geometry)


def check_bag_path(path: str | Path) -> Path:
    """A bag path that is an existing .h5 or .pt file."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(21, "A feature bag is a file, this is a folder", str(path))
    if not path.is_file():
        raise FileNotFoundError(2, "No such feature bag", str(path))
    if path.suffix not in BAG_SUFFIXES:
        raise InputError(f"{path}: unknown bag format {path.suffix!r}; expected .h5 or .pt")
    return path


def check_feature_layout(path: Path, shape: tuple[int, ...], floating: bool, dtype: object) -> None:
    """A bag's features are a non-empty 2-D float array (a batch axis of one already dropped)."""
    if len(shape) != 2:
        raise InputError(f"{path}: features must be a 2-D (N, D) array, got shape {tuple(shape)}")
    if shape[0] == 0:
        raise InputError(f"{path}: the bag is empty (0 patches)")
    if not floating:
        raise InputError(f"{path}: features must be floating point, got {dtype}")


def checked_coords(path: str | Path, coords: Any, n_patches: int) -> np.ndarray:
    """A bag's coordinates as (N, 2) int64, one row per patch; float ones rounded to the pixel."""
    coords = np.asarray(coords)
    if coords.ndim == 3 and coords.shape[0] == 1:  # (1, N, 2), written beside (1, N, D) features
        coords = coords[0]
    if coords.ndim != 2 or coords.shape[1] != 2 or coords.shape[0] != n_patches:
        raise InputError(
            f"{path}: coords have shape {coords.shape}, expected ({n_patches}, 2) to match the features"
        )
    if not np.issubdtype(coords.dtype, np.number) or np.issubdtype(coords.dtype, np.complexfloating):
        raise InputError(f"{path}: coords must be numbers, got {coords.dtype}")
    if np.issubdtype(coords.dtype, np.floating):  # e.g. TRIDENT-style float coords
        if not np.isfinite(coords).all():
            raise InputError(f"{path}: coords contain NaN or infinite values")
        coords = np.rint(coords)  # 255.9999 from a rescaling is pixel 256, not 255
    return coords.astype(np.int64, copy=False)


def common_feature_size(paths: list[Path]) -> int:
    """The feature size D shared by every bag, read from the files' headers only (h5 dataset
    shapes, memory-mapped .pt tensors): an empty, malformed or odd-sized bag is named before any
    training starts rather than in the middle of a fold."""
    sizes: dict[int, Path] = {}
    for path in paths:
        sizes.setdefault(stored_feature_size(path), Path(path))
        if len(sizes) > 1:
            (first, where), (other, _) = sizes.items()
            raise InputError(f"{path}: {other} features per patch; other bags have {first} (e.g. {where})")
    return next(iter(sizes))


def stored_feature_size(path: str | Path) -> int:
    """A bag's features per patch, read from the file's header (`common_feature_size`); `InputError`
    for an empty or malformed bag."""
    shape = _stored_shape(Path(path))
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) != 2:
        raise InputError(f"{path}: features must be a 2-D (N, D) array, got shape {tuple(shape)}")
    if shape[0] == 0:
        raise InputError(f"{path}: the bag is empty (0 patches)")
    return int(shape[1])


def _stored_shape(path: Path) -> tuple[int, ...]:
    if path.suffix == ".h5":
        import h5py

        try:
            with h5py.File(path, "r") as handle:
                return tuple(features_dataset(handle, path).shape)
        except OSError as error:
            raise InputError(f"{path}: not a readable h5 file ({error})") from error
    try:  # .pt: memory-mapped, so only the archive's directory and the tensor's header are read
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        content = content["features"] if isinstance(content, dict) else content
        return tuple(content.shape)
    except Exception:  # noqa: BLE001 - old formats, odd payloads: the full reader names the problem
        return tuple(read_bag(path, check_finite=False).features.shape)


def _read_h5(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            features = features_dataset(handle, path)[()]
            coords = stored_coords(handle, path)
    except OSError as error:
        raise InputError(f"{path}: not a readable h5 file ({error})") from error
    return features, coords


def stored_coords(handle: Any, path: Path) -> np.ndarray | None:
    """The ``coords`` array of an open h5 bag, or None when it has none."""
    import h5py

    coords = handle.get("coords")
    if coords is not None and not isinstance(coords, h5py.Dataset):
        raise InputError(f"{path}: 'coords' is an h5 group, not an (N, 2) dataset")
    return coords[()] if coords is not None else None


def features_dataset(handle: Any, path: Path) -> Any:
    """The ``features`` dataset of an open h5 file; a missing one or a group is named."""
    import h5py

    if "features" not in handle:
        raise InputError(f"{path}: no 'features' dataset (found {sorted(handle.keys())})")
    dataset = handle["features"]
    if not isinstance(dataset, h5py.Dataset):
        raise InputError(f"{path}: 'features' is an h5 group, not an (N, D) dataset")
    return dataset


def _read_pt(path: Path) -> tuple[torch.Tensor, np.ndarray | None]:
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means "not a bag"
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if refused:  # weights-only loading met a pickled Python object, e.g. a numpy array
            raise InputError(
                f"{path}: holds pickled Python objects ({refused.group(1)}), not only tensors, and "
                "these are not read for safety; save the features as a torch tensor or a "
                "{'features': tensor} dict"
            ) from error
        raise InputError(f"{path}: not a readable torch file ({torch_load_reason(error, path)})") from error
    coords = None
    if isinstance(content, dict):
        if "features" not in content:
            keys = sorted(map(str, content))
            shown = ", ".join(keys[:5]) + (f", ... ({len(keys)} keys)" if len(keys) > 5 else "")
            weights = len(keys) > 1 and all(isinstance(value, torch.Tensor) for value in content.values())
            what = "; it holds a model's weights (a state_dict), not a feature bag" if weights else ""
            raise InputError(f"{path}: dict without a 'features' entry (keys {shown}){what}")
        coords = content.get("coords")
        if isinstance(coords, torch.Tensor):
            coords = coords.numpy()
        content = content["features"]
    if isinstance(content, np.ndarray):
        content = torch.from_numpy(content)
    if not isinstance(content, torch.Tensor):
        raise InputError(f"{path}: expected a tensor of features, got {type(content).__name__}")
    return content, coords


def write_h5_bag(
    path: str | Path, features: np.ndarray | torch.Tensor, coords: np.ndarray | None = None
) -> Path:
    """Write a bag in CLAM's h5 layout (``features`` float32, ``coords`` int64); used by tests and tools."""
    import h5py

    path = Path(path)
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu()
        features = (features if features.dtype == torch.float64 else features.float()).numpy()
    features = np.asarray(features)
    with np.errstate(over="ignore"):
        stored = features.astype(np.float32, copy=False)
    # the format stores float32: a finite value beyond its range became inf (one numpy warning) and
    # the reader then refused the bag, far from the code that wrote it
    if stored.size and not np.isfinite(stored).all():
        beyond = np.isfinite(features) & ~np.isfinite(stored)
        if beyond.any():
            largest = float(np.abs(features[beyond]).max())
            raise InputError(
                f"{path}: feature values up to {largest:.3g} are beyond the bag format's float32 "
                "(scale them before writing)"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as handle:
        handle.create_dataset("features", data=stored)
        if coords is not None:
            handle.create_dataset("coords", data=np.asarray(coords, dtype=np.int64))
    return path
