"""KV caches for generation and the image-aware chunked prefill (spec §4.4).

Caches (mlx-lm's): sliding layers keep at most their window (a rotating cache); full layers keep
everything (``KVCache``), or a quantized copy (``kv_bits``, mlx-lm's ``QuantizedKVCache``), or at
most ``max_kv_size`` entries (a rotating cache). mlx-lm has no quantized rotating cache, so
``kv_bits`` leaves the sliding layers in the activation dtype — they are bounded by the window anyway.

Chunk boundaries are placed only between tokens that are not both inside one vision block
(image or video frame), because a block attends to itself bidirectionally within one forward.
"""

from __future__ import annotations

import mlx.core as mx
import numpy as np
from mlx_lm.models.cache import KVCache, QuantizedKVCache, RotatingKVCache

from .errors import InputError

DEFAULT_CHUNK = 2048


class SlidingKVCache(RotatingKVCache):
    """A rotating cache that can also drop its newest entries right after a multi-token update.

    Speculative decoding verifies k + 1 tokens in one forward and then discards the rejected ones.
    After a multi-token update mlx-lm's rotating cache holds the last ``window − 1 + S`` keys in
    temporal order, so dropping up to S − 1 of them still leaves a full window; mlx-lm's own
    ``trim`` refuses once the cache has wrapped.
    """

    def can_trim(self, n: int) -> bool:
        """Whether the newest ``n`` entries can be dropped while keeping a full window."""
        if self.keys is None or n > self.offset:
            return False
        in_order = self._idx == self.keys.shape[2]
        return in_order and (self.offset <= self.keys.shape[2] or self.keys.shape[2] - n >= self.max_size)

    def is_trimmable(self) -> bool:
        """Trimmable while the entries are in temporal order (see ``can_trim``)."""
        return self.keys is not None and self._idx == self.keys.shape[2]

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

    def ordered(self) -> tuple[mx.array, mx.array]:
        """Keys and values in temporal order (oldest first)."""
        if self._idx == self.keys.shape[2] or self.offset <= self._idx:
            n = min(self._idx, self.keys.shape[2])
            return self.keys[..., :n, :], self.values[..., :n, :]
        return self._temporal_order(self.keys), self._temporal_order(self.values)


def make_cache(model, kv_bits: int | None = None, max_kv_size: int | None = None, kv_group_size: int = 64) -> list:
    """One cache per decoder layer (see module docstring)."""
    if kv_bits not in (None, 4, 8):
        raise InputError(f"kv_bits must be 4, 8 or None, got {kv_bits!r}")
    if max_kv_size is not None and (not isinstance(max_kv_size, int) or max_kv_size < 1):
        raise InputError(f"max_kv_size must be a positive integer, got {max_kv_size!r}")
    if kv_bits is not None and max_kv_size is not None:
        raise InputError("kv_bits and max_kv_size cannot be combined (mlx-lm has no quantized rotating cache)")
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


def chunk_bounds(ids: np.ndarray, vision_ids: tuple[int, ...], chunk_size: int) -> list[int]:
    """Chunk boundaries 0 = b0 < b1 < … = T, each chunk ≤ ``chunk_size`` unless one vision block is longer.

    ``ids`` is (B, T); a boundary t is allowed when no row has vision tokens at both t − 1 and t.
    """
    if chunk_size < 1:
        raise InputError(f"prefill chunk size must be >= 1, got {chunk_size}")
    ids = np.asarray(ids).reshape(-1, np.asarray(ids).shape[-1])
    t = ids.shape[1]
    vision = np.isin(ids, vision_ids)
    inside = np.zeros(t + 1, bool)
    inside[1:t] = (vision[:, :-1] & vision[:, 1:]).any(axis=0)
    allowed = np.flatnonzero(~inside)  # sorted; always holds 0 and t
    bounds = [0]
    while bounds[-1] < t:
        start = bounds[-1]
        target = min(start + chunk_size, t)
        back = allowed[(allowed > start) & (allowed <= target)]
        bounds.append(int(back[-1]) if back.size else int(allowed[allowed > target][0]))
    return bounds


def prefill(
    model,
    ids: np.ndarray,
    embeds: mx.array,
    cache: list,
    chunk_size: int = DEFAULT_CHUNK,
    left_padding: mx.array | None = None,
    want_hidden: bool = False,
) -> tuple[mx.array, mx.array | None]:
    """Run a prompt (B, T) through the caches in image-safe chunks → (last logits (B, V), last hidden).

    Logits are computed for the last position only; caches are evaluated after every chunk so the
    activations of one chunk are freed before the next starts.
    """
    cfg = model.config
    bounds = chunk_bounds(ids, (cfg.image_token_id, cfg.video_token_id), chunk_size)
    ids_mx = mx.array(np.asarray(ids))
    logits = hidden = None
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        out = model(
            ids_mx[:, a:b], inputs_embeds=embeds[:, a:b], cache=cache, logits_to_keep=1,
            return_hidden=want_hidden, left_padding=left_padding,
        )
        if want_hidden:
            logits, h = out
            hidden = h[:, -1]
        else:
            logits = out
        if b < bounds[-1]:
            mx.eval([c.state for c in cache])
    return logits[:, -1], hidden
