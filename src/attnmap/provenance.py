"""Provenance recorded in every output: attnmap version, model checksum, method and parameters.

Writers take the flat ``dict[str, str]`` from `provenance` and store it where their format allows:
h5 attributes, TIFF ImageDescription / PNG text chunks. Formats with no room for it (CSV, ``.npy``
maps, feature ``.pt`` files, which CLAM and numpy read as they are) get a sidecar ``<file>.json``
(`write_sidecar` / `read_sidecar`), written before the file itself so that a complete output
always has its record.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

import torch

from attnmap._version import __version__
from attnmap.errors import InputError
from attnmap.io_utils import write_json_atomic


def model_checksum(model: torch.nn.Module | Mapping[str, torch.Tensor] | str | Path) -> str:
    """sha256 of a checkpoint file, or of a model's state_dict (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256()
    if isinstance(model, (str, Path)):  # hashed once per version of the file (`attnmap.file_hash`)
        from attnmap.checkpoint_files import shard_paths
        from attnmap.file_hash import content_sha256

        shards = [shard for shard in shard_paths(model) if shard.is_file()]
        if not shards:
            return content_sha256(model)
        for path in (Path(model), *shards):  # a sharded checkpoint: its index and every shard
            digest.update(f"{path.name}:{content_sha256(path)}".encode())
        return digest.hexdigest()
    state = model.state_dict() if isinstance(model, torch.nn.Module) else model
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def provenance(
    method: str | None = None,
    parameters: Mapping[str, object] | None = None,
    model: torch.nn.Module | Mapping[str, torch.Tensor] | str | Path | None = None,
    model_name: str | None = None,
    **extra: object,
) -> dict[str, str]:
    """A flat string dictionary describing how an output was made."""
    record: dict[str, str] = {
        "attnmap_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
    }
    if method is not None:
        record["method"] = method
    if parameters is not None:
        record["parameters"] = json.dumps(dict(parameters), sort_keys=True, default=str)
    if model is not None:
        record["model_sha256"] = model_checksum(model)
    if model_name is not None:
        record["model"] = model_name
    record.update({key: str(value) for key, value in extra.items()})
    return record


def sidecar_path(path: str | Path) -> Path:
    """Where the provenance of ``path`` goes: ``<path>.json`` (``map.npy`` → ``map.npy.json``)."""
    return Path(str(path) + ".json")


def write_sidecar(path: str | Path, record: Mapping[str, object]) -> Path:
    """Write ``record`` (from `provenance`) as the sidecar of ``path``, atomically."""
    return write_json_atomic(sidecar_path(path), {key: str(value) for key, value in record.items()})


def read_sidecar(path: str | Path) -> dict[str, str]:
    """The provenance record of ``path`` from its sidecar; `InputError` when there is none."""
    sidecar = sidecar_path(path)
    try:
        record = json.loads(sidecar.read_text())
    except FileNotFoundError:
        raise InputError(f"no provenance record for {path}: {sidecar} is missing") from None
    except json.JSONDecodeError as error:
        raise InputError(f"provenance record {sidecar} is not valid JSON: {error}") from None
    if not isinstance(record, dict):
        raise InputError(f"provenance record {sidecar} is not a JSON object")
    return {str(key): str(value) for key, value in record.items()}
