"""The x-message-deduplication exchange's cache of the values it has routed
(leveret.exchanges.deduplication): bounded, each value kept for `x-cache-ttl`
ms (the exchange argument, or the message's own `x-cache-ttl` header), or for
ever without one. A full cache evicts the oldest entry after the expired ones
(the plugin evicts an arbitrary one, and says FIFO is what it would prefer).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Mapping
from typing import Any

CACHE_TTL_HEADER = "x-cache-ttl"


def message_cache_ttl(headers: Mapping[str, Any] | None) -> int | None:
    """The message's own `x-cache-ttl` header, when it is an integer (the plugin
    adds it to the clock; other types crash its channel, here they are ignored)."""
    if not headers:
        return None
    value = headers.get(CACHE_TTL_HEADER)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


class DedupCache:
    """A bounded set of keys, each with an optional expiry (epoch ms).

    Theory of operation. `_entries` maps key -> expiry in insertion order, so
    the oldest entry is the first; `_expiries` is a heap of (expiry, order, key)
    for the entries that expire, so a full cache first drops what has expired.
    Heap items whose entry was replaced or evicted are skipped when popped.
    """

    __slots__ = ("size", "ttl", "_entries", "_expiries", "_order")

    def __init__(self, size: int, ttl: int | None = None) -> None:
        self.size = size
        self.ttl = ttl
        self._entries: dict[Hashable, int | None] = {}
        self._expiries: list[tuple[int, int, Hashable]] = []
        self._order = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def contains(self, key: Hashable, now_ms: int | None) -> bool:
        """Whether `key` is cached and not expired (`now_ms` None: ignore expiry)."""
        if key not in self._entries:
            return False
        expiry = self._entries[key]
        return now_ms is None or expiry is None or expiry > now_ms

    def insert(self, key: Hashable, now_ms: int, ttl: int | None = None) -> bool:
        """Cache `key` unless it is there: True if it was inserted, False for a duplicate.

        `ttl` (the message's) wins over the cache's own; an existing entry keeps
        its expiry, as in the plugin."""
        if self.contains(key, now_ms):
            return False
        self._entries.pop(key, None)  # an expired entry makes room for the new one
        if len(self._entries) >= self.size:
            self._purge_expired(now_ms)
            while len(self._entries) >= self.size:
                del self._entries[next(iter(self._entries))]
        ttl = self.ttl if ttl is None else ttl
        expiry = None if ttl is None else now_ms + ttl
        self._entries[key] = expiry
        if expiry is not None:
            self._order += 1
            heapq.heappush(self._expiries, (expiry, self._order, key))
        return True

    def _purge_expired(self, now_ms: int) -> None:
        heap = self._expiries
        while heap and heap[0][0] <= now_ms:
            expiry, _, key = heapq.heappop(heap)
            if key in self._entries and self._entries[key] == expiry:
                del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()
        self._expiries.clear()
