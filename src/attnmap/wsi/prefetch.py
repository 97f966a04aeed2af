"""Iterate in a background thread, a few items ahead: patch reading overlapped with the encoder.

Why a thread and not loader processes: inside a dask worker (a daemonic process) a DataLoader
cannot start worker processes, and starting them costs more than a small slide's reading. Reading
a patch (OpenSlide/tifffile decode, PIL resize, torch normalise) spends its time in C code that
releases the GIL, so one thread reading the next batch runs while the encoder computes this one;
the encoder keeps all its torch threads.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` in order while a background thread produces up to ``depth`` items ahead.

    An exception raised while producing is raised here, at the item where it happened. Leaving the
    loop early (break, exception, garbage collection) stops the thread before the next item.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            put(_Failure(error))
            return
        put(_DONE)

    thread = threading.Thread(target=produce, name="attnmap-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            value = buffer.get()
            if value is _DONE:
                return
            if isinstance(value, _Failure):
                raise value.error
            yield value
    finally:
        stop.set()
        thread.join()
