"""What a checkpoint path holds before it is read as weights: a folder, shards, a pointer, metadata.

Why: large encoders are published split in shards (``model-00001-of-00002.safetensors`` ...) beside
an index (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``: its ``weight_map``
names the shard of each weight), as ``save_pretrained`` and the Hub write them; and a repository
cloned without ``git lfs`` leaves small text pointers where the weights should be, which torch
reads as a corrupt pickle. `attnmap.checkpoint.read_checkpoint` hands both here, so the index loads
as one state_dict and the pointer is named for what it is; also here: a folder given as the file,
the plain-data types a weights-only read allows beside the tensors, and why torch could not read a
file, in words (a junk file's unpickler error is a bare byte value such as "101").
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnmap.errors import InputError

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt", ".tar")
# what torch.save's legacy (pre-1.6) format begins with: its magic number, pickled
_LEGACY_TORCH_START = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[:-1]


def torch_load_reason(error: BaseException, path: str | Path) -> str:
    """Why ``torch.load(path)`` failed, in one line: the file's kind when it is not a torch file at
    all (empty; neither torch.save's zip archive nor its legacy pickle), else torch's own reason
    without its advice to turn ``weights_only`` off."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            start = handle.read(max(len(_LEGACY_TORCH_START), 16))
    except OSError:
        size, start = -1, b""
    if size == 0:
        return "the file is empty"
    if size > 0 and not zipfile.is_zipfile(path):
        if not start.startswith(_LEGACY_TORCH_START):  # an HTML page or text saved as weights: show it
            return f"neither torch.save's zip archive nor its legacy format: it starts with {start[:16]!r}"
        if isinstance(error, EOFError):
            return "the file ends early"
    text = str(error)
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    # torch's advice to switch weights_only off (its first paragraph since torch 2.6) is left out
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    first = lines[0] if lines else type(error).__name__
    first = first.split(" Please use ", 1)[0].split(". This is an internal", 1)[0]
    return first.rstrip(".")


def existing_file(path: str | Path) -> Path:
    """``path`` as a file; a folder (naming the weights file inside it) or a missing path is one
    `InputError` line."""
    path = Path(path)
    if path.is_dir():
        hf_folder = (path / "config.json").is_file()
        index = sorted(p.name for p in path.glob(f"*{INDEX_SUFFIX}") if p.is_file())
        files = sorted(p.name for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file())
        inside = index or files  # a sharded checkpoint is given as its index
        hint = ": a Hugging Face model folder is given as the model, hf:FOLDER" if hf_folder else ""
        if not hint and len(inside) == 1:
            hint = f": give the weights file inside it, {path / inside[0]}"
        elif not hint and inside:  # e.g. a mil train fold stopped and rerun: checkpoint.pt and resume.pt
            more = f" and {len(inside) - 5} more" if len(inside) > 5 else ""
            hint = f": give one of the weights files inside it ({', '.join(inside[:5])}{more})"
        raise InputError(f"checkpoint {path} is a folder, not a weights file{hint}")
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}")
    return path


def metadata_globals() -> list[Any]:
    """Plain-data types training scripts save beside the weights (an argparse ``args``, numpy
    scalars for the best metric or epoch, a Lightning module's paths in its hyper-parameters):
    allowed so such a file is readable, since building them calls no user code. Anything else
    stays refused by ``weights_only``."""
    import argparse
    import pathlib

    import numpy as np

    core = np._core if hasattr(np, "_core") else np.core  # numpy 2 renamed it
    namespace = getattr(np, "dtypes", None)  # numpy >= 1.25: one class per dtype
    names = dir(namespace) if namespace is not None else []
    dtypes = [getattr(namespace, name) for name in names if name.endswith("DType")]
    paths = [pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.PosixPath]
    return [
        argparse.Namespace, np.dtype, core.multiarray.scalar, *paths,
        *(d for d in dtypes if isinstance(d, type)),
    ]


INDEX_SUFFIX = ".index.json"
LFS_POINTER = b"version https://git-lfs"


def is_shard_index(path: Path) -> bool:
    return path.name.endswith(INDEX_SUFFIX)


def shard_paths(path: str | Path) -> list[Path]:
    """The shards a shard index names (for hashing and caching: a shard saved again is a new
    model), none for any other file or an index that does not read; never raises."""
    path = Path(path)
    if not is_shard_index(path) or not path.is_file():
        return []
    try:
        weight_map = json.loads(path.read_text()).get("weight_map") or {}
        return [path.parent / name for name in sorted({str(name) for name in weight_map.values()})]
    except (OSError, ValueError, AttributeError):
        return []


def check_readable_kind(path: Path) -> None:
    """`InputError` for a file that is not weights attnmap reads: an empty file, a Git LFS pointer
    (the weights were never fetched), a NumPy / JAX ``.npz`` archive (timm reads those itself)."""
    if path.suffix == ".npz":
        raise InputError(
            f"cannot read checkpoint {path}: a NumPy / JAX .npz archive (big_vision, augreg); attnmap reads "
            "torch and safetensors weights: load it into the timm model (model.load_pretrained(PATH)) "
            "and save its state_dict"
        )
    try:
        with path.open("rb") as handle:
            head = handle.read(len(LFS_POINTER))
    except OSError:
        return
    if not head:  # torch said only 'EOFError', safetensors something about its header
        raise InputError(
            f"cannot read checkpoint {path}: the file is empty (0 bytes); an interrupted download or save?"
        )
    if head == LFS_POINTER:
        raise InputError(
            f"checkpoint {path} is a Git LFS pointer, not the weights: fetch them (git lfs pull) "
            "in the repository it was cloned from"
        )


def read_sharded(index: Path, read_one: Callable[[Path], Any]) -> dict[str, Any]:
    """The weights of every shard an index names, as one ``{name: tensor}`` dict; ``read_one``
    reads a shard (the weights-only reader). A missing shard, or a weight the index places in a
    shard that lacks it, is one `InputError` line naming the file."""
    try:
        content = json.loads(index.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read checkpoint index {index}: {error}") from None
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(f"checkpoint index {index} has no weight_map naming its shards")
    state: dict[str, Any] = {}
    shards = sorted({str(name) for name in weight_map.values()})
    for name in shards:
        shard = index.parent / name
        if not shard.is_file():
            raise InputError(
                f"checkpoint index {index} names shard {name}, which is not beside it "
                f"({len(shards)} shards in all)"
            )
        content = read_one(shard)
        if not isinstance(content, dict):
            raise InputError(f"checkpoint shard {shard} holds a {type(content).__name__}, not weights")
        state.update(content)
    absent = sorted(key for key in weight_map if key not in state)
    if absent:
        raise InputError(
            f"checkpoint index {index} places {len(absent)} weights in shards that lack them "
            f"(e.g. {absent[0]} in {weight_map[absent[0]]})"
        )
    return state
