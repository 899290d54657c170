"""A thread-safe least-recently-used cache bounded by the bytes of what it holds.

The server keeps image embeddings here (4 MiB each for LiteMedSAM), keyed by session and image
content, so a slice is encoded once however often it is prompted, and the cache never holds
more than its bound over all sessions together.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class ByteLRU(Generic[V]):
    """Maps keys to values; the least recently used entries go when the total size passes ``max_bytes``.

    Args:
        max_bytes: the bound on the summed ``size_of`` of the values held.
        size_of: a value's size in bytes.

    Keys are tuples whose first element names the owner (a session id), so that
    :meth:`drop_owner` removes everything of one session. A value larger than the bound is
    returned to the caller but not kept.
    """

    def __init__(self, max_bytes: int, size_of: Callable[[V], int]) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    @property
    def bytes(self) -> int:
        with self._lock:
            return self._bytes

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: V) -> None:
        size = int(self._size_of(value))
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                return
            self._items[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self._bytes -= dropped

    def drop_owner(self, owner: Hashable) -> int:
        """Remove every entry whose key starts with ``owner``; returns how many went."""
        with self._lock:
            keys = [k for k in self._items if isinstance(k, tuple) and k and k[0] == owner]
            for k in keys:
                self._bytes -= self._items.pop(k)[1]
            return len(keys)
