"""mlx-lm's cache classes and our sliding cache built on them (imported on first use by ``cache``)."""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.models.cache import KVCache, QuantizedKVCache, RotatingKVCache

__all__ = ["KVCache", "QuantizedKVCache", "RotatingKVCache", "SlidingKVCache"]


class SlidingKVCache(RotatingKVCache):
    """A rotating cache that can also drop its newest entries right after a multi-token update.

    Speculative decoding verifies k + 1 tokens in one forward and then discards the rejected ones.
    After a multi-token update mlx-lm's rotating cache holds the last ``window − 1 + S`` keys in
    temporal order, so dropping up to S − 1 of them still leaves a full window; mlx-lm's own
    ``trim`` refuses once the cache has wrapped.
    """

    def in_order(self) -> bool:
        """Whether the stored entries are in temporal order (true right after a multi-token update)."""
        return self.keys is not None and self._idx == self.keys.shape[2]

    def can_trim(self, n: int) -> bool:
        """Whether the newest ``n`` entries can be dropped while keeping a full window."""
        if self.keys is None or n > self.offset:
            return False
        return self.in_order() and (self.offset <= self.keys.shape[2] or self.keys.shape[2] - n >= self.max_size)

    def is_trimmable(self) -> bool:
        """Trimmable while the entries are in temporal order (see ``can_trim``)."""
        return self.in_order()

    def trim(self, n: int) -> int:
        """Drop the newest ``n`` entries (only valid when ``can_trim(n)``)."""
        if n <= 0:
            return 0
        if not self.can_trim(n):
            raise RuntimeError("sliding cache cannot drop entries that were rotated in place")
        keep = self.keys.shape[2] - n
        self.keys, self.values = self.keys[..., :keep, :], self.values[..., :keep, :]
        self.offset -= n
        self._idx = keep
        return n

    def set_ordered(self, keys: mx.array, values: mx.array, offset: int) -> None:
        """Hold ``keys``/``values`` (temporal order, the newest at position ``offset − 1``) as a plain run
        of appends would: at most ``max_size`` entries once ``offset`` reaches it. A decode batch uses
        this to rebuild its caches when rows join or leave."""
        if keys.shape[2] != min(offset, self.max_size):
            raise ValueError(f"expected {min(offset, self.max_size)} entries at offset {offset}, got {keys.shape[2]}")
        self.keys, self.values, self.offset = keys, values, offset
        self._idx = keys.shape[2]

    def ordered(self) -> tuple[mx.array, mx.array]:
        """Keys and values in temporal order (oldest first)."""
        if self._idx == self.keys.shape[2] or self.offset <= self._idx:
            n = min(self._idx, self.keys.shape[2])
            return self.keys[..., :n, :], self.values[..., :n, :]
        return self._temporal_order(self.keys), self._temporal_order(self.values)
