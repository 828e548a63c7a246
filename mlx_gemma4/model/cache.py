"""The KV caches: the one cache factory, and the only module that reads mlx-lm's private cache state.

Sliding layers keep at most their window (a rotating cache); full layers keep everything
(``KVCache``), or a quantized copy (``kv_bits``, mlx-lm's ``QuantizedKVCache``), or at most
``max_kv_size`` entries (a rotating cache). mlx-lm has no quantized rotating cache, so ``kv_bits``
leaves the sliding layers in the activation dtype — they are bounded by the window anyway.

mlx-lm's ``RotatingKVCache`` exposes no public way to know where its ring buffer's newest entry is
or to read it in temporal order, so this module reads ``_idx`` and calls ``_temporal_order``.
Every such access is here and in ``kv_classes`` (``tests/test_cache_adapter.py`` fails loudly if
mlx-lm renames them).
"""

from __future__ import annotations

import mlx.core as mx

from ..errors import InputError

PRIVATE_ROTATING_ATTRIBUTES = ("_idx", "_temporal_order")  # what this adapter relies on
# The cache classes live in kv_classes, imported on first use: any mlx_lm import runs mlx_lm's
# __init__, which imports transformers (seconds), and `import mlx_gemma4` must not pay for that.
_LAZY_CLASSES = ("KVCache", "QuantizedKVCache", "RotatingKVCache", "SlidingKVCache")


def _classes():
    from . import kv_classes

    return kv_classes


def __getattr__(name: str):
    if name in _LAZY_CLASSES:
        return getattr(_classes(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def ring_index(cache) -> int | None:
    """The slot after the newest entry of a rotating cache (None for caches that are not rings)."""
    return cache._idx if isinstance(cache, _classes().RotatingKVCache) else None


def check_cache_options(kv_bits: int | None, max_kv_size: int | None) -> None:
    """InputError unless kv_bits is None/4/8, max_kv_size None or a positive int, and not both set."""
    if kv_bits is not None and (isinstance(kv_bits, bool) or kv_bits not in (4, 8)):
        raise InputError(f"kv_bits must be 4, 8 or None, got {kv_bits!r}")
    if max_kv_size is not None and (isinstance(max_kv_size, bool) or not isinstance(max_kv_size, int)
                                    or max_kv_size < 1):
        raise InputError(f"max_kv_size must be a positive integer or None, got {max_kv_size!r}")
    if kv_bits is not None and max_kv_size is not None:
        raise InputError("kv_bits and max_kv_size cannot be combined (mlx-lm has no quantized rotating cache)")


def make_cache(model, kv_bits: int | None = None, max_kv_size: int | None = None, kv_group_size: int = 64) -> list:
    """One cache per decoder layer (see the module docstring)."""
    check_cache_options(kv_bits, max_kv_size)
    k = _classes()
    KVCache, QuantizedKVCache, SlidingKVCache = k.KVCache, k.QuantizedKVCache, k.SlidingKVCache
    text = model.config.text_config
    caches = []
    for t, head_dim in zip(text.layer_types, text.layer_head_dims, strict=True):
        if t == "sliding_attention":
            window = text.sliding_window if max_kv_size is None else min(text.sliding_window, max_kv_size)
            caches.append(SlidingKVCache(max_size=window, keep=0))
        elif kv_bits is not None:
            group = kv_group_size if head_dim % kv_group_size == 0 else 32  # tiny test models: head_dim 32
            caches.append(QuantizedKVCache(group_size=group, bits=kv_bits))
        elif max_kv_size is not None:
            caches.append(SlidingKVCache(max_size=max_kv_size, keep=0))
        else:
            caches.append(KVCache())
    return caches


def can_trim_cache(cache: list, n: int) -> bool:
    """Whether every layer can drop its newest ``n`` entries."""
    sliding = _classes().SlidingKVCache
    return n <= 0 or all(c.can_trim(n) if isinstance(c, sliding) else c.is_trimmable() for c in cache)


def trim_cache(cache: list, n: int) -> None:
    """Drop the newest ``n`` entries of every layer's cache."""
    if n <= 0:
        return
    for c in cache:
        if c.trim(n) != n:
            raise RuntimeError("cache shorter than the entries to drop")


def cache_offset(cache: list) -> int:
    """Tokens seen by the caches (the absolute position of the next token)."""
    return int(cache[0].offset)


def kv_nbytes(cache: list) -> int:
    """Bytes held by the caches."""
    return sum(c.nbytes for c in cache)


def cached_key_positions(cache, num_keys: int) -> mx.array:
    """Absolute positions of the ``num_keys`` keys a cache returned from its last update.

    A rotating cache returns a ring buffer after single-token updates: the slot before its ring
    index holds the newest key and the others go backwards from there; after a multi-token update,
    and for plain caches, the keys are in temporal order, which the same formula covers.
    """
    idx = ring_index(cache)
    idx = num_keys if idx is None else idx
    slots = mx.arange(num_keys)
    return cache.offset - 1 - ((idx - 1 - slots) % num_keys)
