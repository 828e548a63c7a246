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
