"""One per-process cache of loaded models, keyed on the files' stamps (`attnmap.file_hash.file_stamp`).

Why: ``attnmap explain`` workers and the slide pipeline load the same model for every batch or
slide; a file replaced on disk must be reloaded and an unchanged one must not. Loading itself is
`attnmap.checkpoint`'s (every model file goes through it); this module only remembers the result.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

T = TypeVar("T")


def file_stamp(path: str | Path | None) -> tuple | None:
    """The stamp of a model file (`attnmap.file_hash.file_stamp`: path, device, inode, size, mtime,
    ctime, so that a file replaced in place, even with its old size and mtime, is loaded again);
    None for None or a name that is not a file."""
    if path is None:
        return None
    from attnmap.checkpoint import TORCHSCRIPT_PREFIX
    from attnmap.file_hash import file_stamp as stamp

    candidate = Path(str(path).removeprefix(TORCHSCRIPT_PREFIX))
    if not candidate.is_file():
        return None
    return stamp(candidate)


class ModelCache:
    """Least-recently-used cache of loaded models; a key includes the stamps of the files used."""

    def __init__(self, maxsize: int = 4):
        self.maxsize = maxsize
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, files: Iterable[str | Path | None], load: Callable[[], T]) -> T:
        full_key = (key, tuple(file_stamp(f) for f in files))
        try:
            hash(full_key)
        except TypeError:  # an unhashable argument (a list option): load, do not cache
            return load()
        with self._lock:
            if full_key in self._items:
                self._items.move_to_end(full_key)
                return self._items[full_key]
        value = load()
        with self._lock:
            self._items[full_key] = value
            while len(self._items) > self.maxsize:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


MODEL_CACHE = ModelCache()


def cached_model(
    loader: Callable[..., T], *args: Any, files: Iterable[str | Path | None] = (), **kwargs: Any
) -> T:
    """``loader(*args, **kwargs)``, loaded once per process while ``files`` stay unchanged."""
    from attnmap.checkpoint_files import shard_paths

    key = (f"{loader.__module__}.{loader.__qualname__}", args, tuple(sorted(kwargs.items())))
    files = [item for file in files for item in (file, *(shard_paths(file) if file else ()))]
    return MODEL_CACHE.get(key, files, lambda: loader(*args, **kwargs))


def cached_vit(
    spec: str, checkpoint: str | None, model_kwargs: tuple[tuple[str, Any], ...] = ()
) -> nn.Module:
    """`attnmap.load_model` through the cache (``attnmap explain`` workers)."""
    from attnmap.vit.models import load_model

    files = (checkpoint, *folder_files(spec))
    return cached_model(load_model, spec, checkpoint, files=files, **dict(model_kwargs))


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def folder_files(spec: str) -> list[Path]:
    """The files that make a model folder named ``timm:FOLDER`` / ``hf:FOLDER``: its configurations
    and every weights file (shards and their index too), so that weights saved again into the folder
    are a new model for the caches and the fingerprints; none for another spec."""
    _, _, name = spec.partition(":")
    folder = Path(name)
    if not name or not folder.is_dir():
        return []
    names = ("config.json", "preprocessor_config.json")
    files = [folder / name for name in names if (folder / name).is_file()]
    files += sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES))
    files += sorted(p for p in folder.glob("*.index.json") if p.is_file())
    return files


def _encoder_with_checksum(
    name: str,
    checkpoint: str | None,
    input_size: int | None,
    seed: int,
    device: str,
    model_args: str = "{}",  # JSON, as cached_encoder keys it
) -> tuple[Any, str]:
    import json

    from attnmap.provenance import model_checksum
    from attnmap.wsi.encoders import load_encoder

    encoder = load_encoder(
        name, checkpoint, device=device, seed=seed, input_size=input_size, model_args=json.loads(model_args)
    )
    return encoder, model_checksum(checkpoint) if checkpoint else model_checksum(encoder.model)


def cached_encoder(
    name: str,
    checkpoint: str | None,
    input_size: int | None,
    seed: int,
    device: str,
    model_args: Mapping[str, Any] | None = None,
) -> Any:
    """(patch encoder, sha256 of its weights) through the cache (the slide pipeline). ``model_args``:
    the timm architecture's arguments (in the cache key as sorted JSON, so lists and mappings too)."""
    import json

    from attnmap.vit.timm_folder import resolve_timm_folder

    name, resolved, checkpoint = resolve_timm_folder(name, model_args, checkpoint)  # timm:FOLDER
    key_args = json.dumps(resolved, sort_keys=True)
    files = [name, checkpoint, *folder_files(name)]  # an hf:FOLDER's weights are files in it
    return cached_model(
        _encoder_with_checksum, name, checkpoint, input_size, seed, device, key_args, files=files
    )


def _clam_with_checksum(checkpoint: str, device: str) -> tuple[Any, str]:
    from attnmap.mil.checkpoint import load_mil
    from attnmap.provenance import model_checksum

    return load_mil(checkpoint).to(device).eval(), model_checksum(checkpoint)


def cached_clam(checkpoint: str, device: str) -> Any:
    """(attention-MIL model in eval mode, sha256 of the checkpoint file) through the cache.

    CLAM_SB / CLAM_MB, and ABMIL as `attnmap mil train --model abmil` writes it (`load_mil`)."""
    return cached_model(_clam_with_checksum, checkpoint, device, files=(checkpoint,))
