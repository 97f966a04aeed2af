"""A thread-safe least-recently-used cache of encoded tiles, bounded by total bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable


class ByteLRU:
    """Keeps the most recently used values (bytes) while their total size stays within ``max_bytes``.

    Why bytes, not entries: a JPEG slide tile and an empty overlay tile differ a hundredfold in size,
    and what must be bounded is the server's memory.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.size = 0
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.size = 0

    def get_or_make(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        """The cached value of ``key``, or ``make()``'s result, stored (evicting the least recent)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = make()
        with self._lock:
            if key not in self._items and len(value) <= self.max_bytes:
                self._items[key] = value
                self.size += len(value)
                while self.size > self.max_bytes:
                    _, dropped = self._items.popitem(last=False)
                    self.size -= len(dropped)
        return value
