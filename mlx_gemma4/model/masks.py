"""Attention masks with bidirectional vision blocks (spec §4).

Rules, for absolute query position q and key position k:
  full layers:    allowed = k <= q                    OR same_block(q, k)
  sliding layers: allowed = (k <= q AND k > q - W)    OR same_block(q, k)
where a block is a maximal run of image (or video-frame) soft tokens. Blocks are never split
across forward calls (the caller guarantees it), so the overlay only concerns the keys of the
current chunk; earlier keys come from the cache and are ordinary causal history.
"""

from __future__ import annotations

import mlx.core as mx


def vision_block_ids(input_ids: mx.array, vision_token_ids: tuple[int, ...]) -> mx.array:
    """Block index (0, 1, …) of every vision soft token in a row, −1 for all other tokens."""
    is_vision = mx.zeros(input_ids.shape, dtype=mx.bool_)
    for tid in vision_token_ids:
        is_vision = is_vision | (input_ids == tid)
    prev = mx.concatenate([mx.zeros_like(is_vision[:, :1]), is_vision[:, :-1]], axis=1)
    starts = is_vision & ~prev
    ids = mx.cumsum(starts.astype(mx.int32), axis=1) - 1
    return mx.where(is_vision, ids, -1)


def attention_mask(
    block_ids: mx.array | None,
    offset: int,
    num_keys: int,
    window: int | None = None,
) -> mx.array:
    """Boolean mask (B or 1, 1, S, K): True where a query may attend to a key.

    ``offset`` is the absolute position of the first query; the K keys are the last K positions
    up to and including the last query (what the KV caches return for a multi-token update).
    """
    s = block_ids.shape[1] if block_ids is not None else None
    if s is None:
        raise ValueError("block_ids are required to size the mask")
    q_pos = offset + mx.arange(s)[:, None]
    k_pos = (offset + s - num_keys) + mx.arange(num_keys)[None, :]
    allowed = k_pos <= q_pos
    if window is not None:
        allowed = allowed & (k_pos > q_pos - window)
    allowed = allowed[None]  # (1, S, K)
    same = (block_ids[:, :, None] == block_ids[:, None, :]) & (block_ids[:, :, None] >= 0)  # (B, S, S)
    if num_keys > s:
        pad = mx.zeros((same.shape[0], s, num_keys - s), dtype=mx.bool_)
        same = mx.concatenate([pad, same], axis=2)
    return (allowed | same)[:, None]


def cached_key_positions(cache, num_keys: int) -> mx.array:
    """Absolute positions of the ``num_keys`` keys a cache returned from its last update.

    A rotating cache returns a ring buffer after single-token updates: slot ``_idx − 1`` holds the
    newest key and the others go backwards from there; after a multi-token update, and for plain
    caches, the keys are in temporal order (``_idx == num_keys``), which the same formula covers.
    """
    idx = getattr(cache, "_idx", num_keys)
    slots = mx.arange(num_keys)
    return cache.offset - 1 - ((idx - 1 - slots) % num_keys)


def padding_mask(key_pos: mx.array, left_padding: mx.array, query_pos: mx.array | None = None) -> mx.array:
    """(B, 1, S or 1, K): keys that are real tokens of their row (left padding excluded).

    With ``query_pos`` a padding query may still see itself, so no row of the mask is empty (an
    all-masked softmax row gives NaN, and NaN times a zero weight would leak into real rows).
    """
    valid = key_pos[None, :] >= left_padding[:, None]  # (B, K)
    valid = valid[:, None, None, :]
    if query_pos is None:
        return valid
    return valid | (key_pos[None, :] == query_pos[:, None])[None, None]


class MaskContext:
    """What the decoder layers need besides the hidden states: masks by (num_keys, window), and the
    per-row left padding that shifts RoPE positions (None for unpadded input)."""

    def __init__(self, build, left_padding: mx.array | None = None):
        self._build = build
        self._memo: dict = {}
        self.left_padding = left_padding

    def __call__(self, num_keys: int, window: int | None):
        key = (num_keys, window)
        if key not in self._memo:
            self._memo[key] = self._build(num_keys, window)
        return self._memo[key]
