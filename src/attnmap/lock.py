"""One run at a time per output folder: a lock file naming the holder (pid, host, start time).

Why a lock: two runs into one folder both redo all work, overwrite each other's files and (before
this) deleted each other's temporaries. The lock is a file created exclusively (``O_EXCL``), so
exactly one run gets it; the second stops at once with a one-line message naming the holder. A
lock left by a process that no longer exists on this host (killed, crashed; or whose pid now names
another process, told by its start time) is taken over; one
held from another host cannot be checked, so the message says which file to delete.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from attnmap.errors import InputError

LOCK_NAME = ".attnmap.lock"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a zombie counts as existing)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from ``/proc``), None where unknown.

    Why: after a killed run, its pid can be given to an unrelated process; a lock recording its
    holder's start is then known to be stale, where a bare pid would keep the folder locked."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2 :].split()  # after the command name, which may hold spaces
    return fields[19] if len(fields) > 19 else None


def _holder(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _stale(holder: dict | None) -> bool:
    """A lock nobody holds: unreadable (its writer died mid-write), or from a dead process here."""
    if holder is None:
        return True
    try:
        pid = int(holder.get("pid", -1))
    except (TypeError, ValueError):
        return True
    if holder.get("host") != socket.gethostname():
        return False
    if not process_alive(pid):
        return True
    started = holder.get("start")  # absent in locks written before it was recorded
    return started is not None and process_start(pid) not in (None, started)


@contextlib.contextmanager
def folder_lock(folder: str | Path, command: str = "attnmap") -> Iterator[Path]:
    """Hold ``folder``'s lock for the duration of the block (the folder is created if needed).

    Raises `InputError` when another live run holds it.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"output folder {folder} is an existing file")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": command,
          "start": process_start(os.getpid())}
    for _ in range(3):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is not None and holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                raise InputError(f"{folder} is already locked by this process") from None
            if not _stale(holder):
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(holder.get("since", 0))))
                raise InputError(
                    f"{folder} is in use by another run ({holder.get('command', 'attnmap')}, pid "
                    f"{holder.get('pid')} on {holder.get('host')}, since {since}); wait for it, or delete "
                    f"{path} if that run is gone"
                ) from None
            path.unlink(missing_ok=True)  # stale: take it over (O_EXCL settles a race between two)
            continue
        with os.fdopen(descriptor, "w") as handle:
            json.dump(me, handle)
        break
    else:
        raise InputError(f"could not take the lock {path}; another run keeps taking it")
    try:
        yield path
    finally:
        holder = _holder(path)
        if holder is not None and holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
            path.unlink(missing_ok=True)
