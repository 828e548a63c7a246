"""A decode batch's KV caches that rows can join and leave between steps.

Rows are left-padded: every row shares one cache ``offset`` (the time axis), and row r's real tokens
start at column ``left_padding[r]``; the model masks the padding keys and shifts each row's RoPE
positions by its padding. A row that joins with a shorter history is padded on the left (its padding
grows by the difference in offsets), so its positions, and therefore its tokens, do not change.

Per layer a cache is either full (mlx-lm ``KVCache``: keys ``[..., :offset, :]``) or sliding
(``SlidingKVCache``, a rotating cache of ``max_size`` = the window, read and rebuilt through its
``ordered`` / ``set_ordered``). Joining and compacting rebuild every layer in temporal
order: a full layer keeps all ``offset`` columns, a sliding layer its last ``min(offset, window)``.
That state is exactly what the caches themselves reach by plain appends, so their own update logic
carries on from it. Quantized caches are not supported here (the engine uses plain caches).
"""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.models.cache import KVCache

from ..model.cache import SlidingKVCache


def _is_sliding(c) -> bool:
    if not isinstance(c, (KVCache, SlidingKVCache)):
        raise TypeError(f"a decode batch needs plain or sliding KV caches, not {type(c).__name__}")
    return isinstance(c, SlidingKVCache)


def temporal_kv(c) -> tuple[mx.array, mx.array]:
    """A layer's keys and values in temporal order (oldest first), without unused buffer columns."""
    if _is_sliding(c):
        k, v = c.ordered()
        n = min(k.shape[2], c.offset)
        return k[..., k.shape[2] - n :, :], v[..., v.shape[2] - n :, :]
    return c.keys[..., : c.offset, :], c.values[..., : c.offset, :]


def _fit(x: mx.array, length: int) -> mx.array:
    """The last ``length`` columns of ``x`` (B, H, T, D), zero-padded on the left when T is shorter."""
    t = x.shape[2]
    if t >= length:
        return x[..., t - length :, :]
    return mx.pad(x, [(0, 0), (0, 0), (length - t, 0), (0, 0)])


def _set(c, k: mx.array, v: mx.array, offset: int) -> None:
    if _is_sliding(c):
        c.set_ordered(k, v, offset)
    else:
        c.keys, c.values, c.offset = k, v, offset


class BatchCache:
    """Per-layer caches of a left-padded decode batch plus each row's padding."""

    def __init__(self, layers: list, left_padding: list[int]):
        self.layers = layers
        self.left_padding = list(left_padding)

    @property
    def offset(self) -> int:
        """Columns on the shared time axis (the next token's column)."""
        return int(self.layers[0].offset)

    @property
    def size(self) -> int:
        """Rows in the batch."""
        return len(self.left_padding)

    def padding_array(self) -> mx.array | None:
        """``left_padding`` for the model, or None when no row is padded."""
        return mx.array(self.left_padding, dtype=mx.int32) if any(self.left_padding) else None

    def extend(self, other: BatchCache) -> None:
        """Append ``other``'s rows (aligned on the right: both batches' newest tokens share a column)."""
        offset = max(self.offset, other.offset)
        parts = []
        for group in (self, other):
            shift = offset - group.offset
            parts.append(([_rebuilt(c, offset) for c in group.layers], [p + shift for p in group.left_padding]))
        for i, c in enumerate(self.layers):
            (ka, va), (kb, vb) = parts[0][0][i], parts[1][0][i]
            _set(c, mx.concatenate([ka, kb]), mx.concatenate([va, vb]), offset)
        self.left_padding = parts[0][1] + parts[1][1]

    def keep(self, rows: list[int]) -> None:
        """Keep only ``rows`` (in that order), then drop time columns that are padding in every row."""
        idx = mx.array(rows, dtype=mx.int32)
        for c in self.layers:
            c.keys, c.values = c.keys[idx], c.values[idx]
        self.left_padding = [self.left_padding[r] for r in rows]
        drop = min(self.left_padding, default=0)
        if drop:
            offset = self.offset - drop
            for c in self.layers:
                k, v = _rebuilt(c, offset)
                _set(c, k, v, offset)
            self.left_padding = [p - drop for p in self.left_padding]


def _rebuilt(c, offset: int) -> tuple[mx.array, mx.array]:
    """A layer's temporal keys/values refitted to a time axis ending at column ``offset``."""
    k, v = temporal_kv(c)
    length = min(offset, c.max_size) if _is_sliding(c) else offset
    return _fit(k, length), _fit(v, length)


def restore(template: list, kv: list[tuple[mx.array, mx.array]], offset: int) -> list:
    """Fresh caches shaped like ``template`` holding ``kv`` (as ``row`` returns it) at ``offset``."""
    out = []
    for t, (k, v) in zip(template, kv, strict=True):
        c = type(t)(max_size=t.max_size, keep=0) if _is_sliding(t) else KVCache()
        # Copies: the caches write into their arrays in place, the snapshot must stay intact.
        length = min(offset, c.max_size) if _is_sliding(c) else offset
        _set(c, _fit(k, length) + 0, _fit(v, length) + 0, offset)
        out.append(c)
    return out
