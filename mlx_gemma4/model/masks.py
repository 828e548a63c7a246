"""Attention masks with bidirectional vision blocks.

Rules, for absolute query position q and key position k:
  full layers:    allowed = k <= q                    OR same_block(q, k)
  sliding layers: allowed = (k <= q AND k > q - W)    OR same_block(q, k)
where a block is a maximal run of image (or video-frame) soft tokens. Blocks are never split
across forward calls (the caller guarantees it), so the overlay only concerns the keys of the
current chunk; earlier keys come from the cache and are ordinary causal history.
"""

from __future__ import annotations

from collections.abc import Callable

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


class AttentionContext:
    """What every decoder layer needs besides its hidden states, built once per forward call.

    ``offset`` is the absolute position of the first query (the caches' offset before the call);
    ``left_padding`` (B,) counts the padding tokens at the start of each row of a left-padded batch
    (None for unpadded input): RoPE positions of a row start at its first real token. ``mask(num_keys,
    window)`` gives the attention mask for a layer whose cache returned ``num_keys`` keys: None (one
    query sees every key), ``"causal"`` (the fused kernel's own causal mask) or a boolean array.
    """

    def __init__(self, offset: int, build: Callable, left_padding: mx.array | None = None):
        self.offset = offset
        self.left_padding = left_padding
        self._build = build
        self._memo: dict = {}

    @property
    def rope_offset(self) -> int | mx.array:
        """The RoPE position of the first query: per row (B,) for a left-padded batch."""
        return self.offset if self.left_padding is None else self.offset - self.left_padding

    def mask(self, num_keys: int, window: int | None):
        """The mask for ``num_keys`` keys in a layer with sliding ``window`` (None = full attention)."""
        key = (num_keys, window)
        if key not in self._memo:
            self._memo[key] = self._build(num_keys, window)
        return self._memo[key]
