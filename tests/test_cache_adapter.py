"""mlx_gemma4.model.cache reads private state of mlx-lm's RotatingKVCache: fail loudly if mlx-lm changes it."""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.models.cache import RotatingKVCache

from mlx_gemma4.model.cache import PRIVATE_ROTATING_ATTRIBUTES, SlidingKVCache, cached_key_positions, ring_index


def _kv(n: int, start: int) -> mx.array:
    return (mx.arange(start, start + n, dtype=mx.float32)[None, None, :, None] * mx.ones((1, 1, 1, 2)))


def test_mlx_lm_rotating_cache_still_has_the_private_state_we_read():
    cache = RotatingKVCache(max_size=4, keep=0)
    cache.update_and_fetch(_kv(3, 0), _kv(3, 0))
    for name in PRIVATE_ROTATING_ATTRIBUTES:
        assert hasattr(cache, name), f"mlx-lm's RotatingKVCache no longer has {name}: update model/cache.py"
    assert isinstance(ring_index(cache), int)


def test_ring_positions_and_temporal_order_follow_the_ring():
    cache = SlidingKVCache(max_size=4, keep=0)
    cache.update_and_fetch(_kv(3, 0), _kv(3, 0))  # positions 0..2, in order
    for p in range(3, 9):  # single-token updates wrap the ring
        keys, _ = cache.update_and_fetch(_kv(1, p), _kv(1, p))
    stored = keys[0, 0, :, 0].tolist()
    assert cached_key_positions(cache, keys.shape[2]).tolist() == stored  # slot → absolute position
    ordered, _ = cache.ordered()
    assert ordered[0, 0, :, 0].tolist() == sorted(stored)
    assert not cache.in_order() and not cache.can_trim(1)
