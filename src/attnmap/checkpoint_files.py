"""Weights that are not one weights file: sharded checkpoints and Git LFS pointers.

Why: large encoders are published split in shards (``model-00001-of-00002.safetensors`` ...) beside
an index (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``: its ``weight_map``
names the shard of each weight), as ``save_pretrained`` and the Hub write them; and a repository
cloned without ``git lfs`` leaves small text pointers where the weights should be, which torch
reads as a corrupt pickle. `attnmap.checkpoint.read_checkpoint` hands both here, so the index loads
as one state_dict and the pointer is named for what it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnmap.errors import InputError

INDEX_SUFFIX = ".index.json"
LFS_POINTER = b"version https://git-lfs"


def is_shard_index(path: Path) -> bool:
    return path.name.endswith(INDEX_SUFFIX)


def check_not_lfs_pointer(path: Path) -> None:
    """`InputError` when ``path`` is a Git LFS pointer (the weights were never fetched)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(len(LFS_POINTER))
    except OSError:
        return
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
