"""A thread-safe LRU of rendered tiles, bounded in bytes.

Tiles are pure functions of their key (DESIGN.md §2), so the cache may forget any of them
at any time: it holds no state that cannot be rendered again. Keys are any hashable value
(the scheduler uses `TileKey(tile, digest)`); values are numpy uint8 arrays, counted by
`arr.nbytes`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

import numpy as np

DEFAULT_MAX_BYTES = 512 * 2**20  # 512 MiB: about 10,000 RGB tiles of 128 x 128


class TileCache:
    """Least-recently-used tiles, at most `max_bytes` bytes of array data in all.

    Every method may be called from any thread. `put` stores a read-only copy, so a tile
    handed to one consumer cannot be changed under another, and a tile cut from a larger
    render does not keep that whole render alive behind the byte count.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, np.ndarray] = OrderedDict()  # oldest first
        self._bytes = 0
        self._max_bytes = 0
        self.hits = 0
        self.misses = 0
        self.max_bytes = max_bytes

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        """Change the bound; shrinking evicts least-recently-used tiles at once."""
        if value < 0:
            raise ValueError(f"max_bytes must be >= 0, got {value}")
        with self._lock:
            self._max_bytes = int(value)
            self._evict()

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> np.ndarray | None:
        """The tile stored under `key` (now the most recently used), or None."""
        with self._lock:
            arr = self._items.get(key)
            if arr is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return arr

    def put(self, key: Hashable, arr: np.ndarray) -> np.ndarray:
        """Store a copy of `arr` (uint8) as the most recently used tile and return that copy
        (read-only). A tile larger than the whole bound is evicted at once."""
        if arr.dtype != np.uint8:
            raise TypeError(f"tiles are uint8 arrays, got {arr.dtype}")
        arr = np.array(arr, order="C", copy=True)
        arr.flags.writeable = False
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._items[key] = arr
            self._bytes += arr.nbytes
            self._evict()
        return arr

    def clear(self) -> None:
        """Forget every tile (the hit and miss counters stay)."""
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def __contains__(self, key: object) -> bool:
        """Whether `key` is stored; does not count as a use."""
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def _evict(self) -> None:
        # Caller holds the lock.
        while self._bytes > self._max_bytes and self._items:
            _, arr = self._items.popitem(last=False)
            self._bytes -= arr.nbytes
