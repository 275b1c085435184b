"""A least-recently-used cache of answers in the server process, bounded by their size in bytes.

Used for whole answers a request would otherwise rebuild: a study's or
series' WADO-RS metadata (:mod:`dicomflow.web.metadata`, bounded by
``web.metadata_cache_bytes``) and rendered thumbnails
(:mod:`dicomflow.web.rendered`, ``web.thumbnail_cache_bytes``). Each server
process (``--workers``) has its own; nothing is shared or persisted. What
makes an entry stale is the caller's business: the key (or a marker stored
in the value) must change when the answer would.

A value larger than the whole budget is not kept; a budget of 0 keeps
nothing. Safe to call from the event loop and from worker threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class ByteBoundedCache(Generic[K, V]):
    """LRU of ``V`` whose summed ``size(value)`` stays within ``budget`` bytes."""

    def __init__(self, budget: int, size: Callable[[V], int]) -> None:
        self.budget = max(0, budget)
        self._size = size
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()

    @property
    def used(self) -> int:
        """Bytes held now."""
        return self._used

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            self._entries.move_to_end(key)
            return found[0]

    def put(self, key: K, value: V) -> bool:
        """Keep ``value`` under ``key`` (replacing the old one), evicting the least recently used; False if too big."""
        size = self._size(value)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._used -= old[1]
            if size > self.budget:
                return False
            while self._entries and self._used + size > self.budget:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._used -= dropped
            self._entries[key] = (value, size)
            self._used += size
            return True

    def discard(self, key: K) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._used -= old[1]


__all__ = ["ByteBoundedCache"]
