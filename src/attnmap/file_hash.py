"""The sha256 of a file's bytes, computed once per version of the file, also across processes.

Why content and not (size, mtime): a slide or a checkpoint replaced by another of the same size,
with its old mtime put back (``cp -p``, ``rsync -t``, ``os.utime``), kept every output made from
the old one. And why a stamp cache: hashing every slide of a cohort on every rerun reads all of
its gigabytes again. A version of a file is known by its stamp, (device, inode, size, mtime,
ctime): writing to a file or replacing it changes its ctime (which no user call can set back, not
even ``os.utime``) or its inode, so a stamp seen before names bytes hashed before. Hashes are
remembered in this process and in small files under ``$ATTNMAP_CACHE_DIR`` (default
``~/.cache/attnmap``), ``sha256/``; a folder that cannot be written only costs the hashing again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from pathlib import Path

CACHE_ENV = "ATTNMAP_CACHE_DIR"
MAX_ENTRIES = 50_000
"""Remembered hashes on disk; beyond it the oldest half is dropped (they are only recomputed)."""


def file_stamp(path: str | Path) -> tuple[str, int, int, int, int, int]:
    """(resolved path, device, inode, size, mtime ns, ctime ns): changes whenever the bytes may have."""
    resolved = Path(path).expanduser().resolve()
    status = resolved.stat()
    return (str(resolved), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns,
            status.st_ctime_ns)


def cache_folder() -> Path:
    """Where hashes are remembered between processes."""
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "attnmap"
    )
    return Path(base) / "sha256"


def content_sha256(path: str | Path) -> str:
    """sha256 (hex) of the file's bytes; hashed again only when its stamp changed."""
    return _sha256_of_stamp(file_stamp(path))


@functools.lru_cache(maxsize=4096)
def _sha256_of_stamp(stamp: tuple[str, int, int, int, int, int]) -> str:
    entry = cache_folder() / hashlib.blake2b(repr(stamp).encode(), digest_size=16).hexdigest()
    try:
        remembered = entry.read_text().strip()
        if len(remembered) == 64:
            return remembered
    except (OSError, UnicodeDecodeError):
        pass
    digest = hashlib.sha256()
    with open(stamp[0], "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    if file_stamp(stamp[0]) == stamp:  # else written to while it was read: not remembered on disk
        _remember(entry, value)
    return value


def _remember(entry: Path, value: str) -> None:
    from attnmap.io_utils import write_bytes_atomic

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(entry, value.encode())
        if entry.name.startswith("00"):  # about one write in 256 looks at the folder's size
            _prune(entry.parent)
    except OSError:
        pass


def _prune(folder: Path) -> None:
    from attnmap.io_utils import remove_stale_temporaries

    remove_stale_temporaries(folder, recursive=False)  # left by killed processes
    entries = [item for item in os.scandir(folder) if item.is_file() and len(item.name) == 32]
    if len(entries) <= MAX_ENTRIES:
        return
    entries.sort(key=lambda item: item.stat().st_mtime_ns)
    for item in entries[: len(entries) // 2]:
        with contextlib.suppress(OSError):
            os.unlink(item.path)
