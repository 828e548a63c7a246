"""The image-aware chunked prefill: a prompt into the KV caches, then the logits of its last token.

Chunk boundaries are placed only between tokens that are not both inside one vision block
(image or video frame), because a block attends to itself bidirectionally within one forward.
The prompt's last token gets a forward of its own whenever that splits no block (as mlx-lm does):
the earlier chunks are evaluated for their KV caches only, so the work no cache needs (the last
layer's MLP, the final norm) never runs on them.
"""

from __future__ import annotations

from collections.abc import Callable

import mlx.core as mx
import numpy as np

from ..errors import InputError
from ..model.cache import cache_offset
from .device import generation_stream

# MLX's CPU attention materialises the scores (batch × heads × chunk × keys, float32). Past the
# first 2K tokens of context (at 16 heads) the prefill chunk shrinks so they stay under this budget,
# which bounds the prefill's peak memory whatever the prompt length (GPU kernels fuse attention).
SCORES_BUDGET_BYTES = 256 << 20


def chunk_bounds(ids: np.ndarray, vision_ids: tuple[int, ...], chunk_size: int, split_last: bool = False,
                 size_at: Callable[[int], int] | None = None) -> list[int]:
    """Chunk boundaries 0 = b0 < b1 < … = T, each chunk ≤ ``chunk_size`` unless one vision block is longer.

    ``ids`` is (B, T); a boundary t is allowed when no row has vision tokens at both t − 1 and t.
    ``split_last``: the last token gets a chunk of its own when that boundary is allowed.
    ``size_at(start)``: a tighter limit for the chunk starting at ``start`` (see ``scores_limit``).
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
        size = chunk_size if size_at is None else max(1, min(chunk_size, size_at(start)))
        target = min(start + size, t)
        back = allowed[(allowed > start) & (allowed <= target)]
        bounds.append(int(back[-1]) if back.size else int(allowed[allowed > target][0]))
    if split_last and t > 1 and not inside[t - 1] and bounds[-2] != t - 1:
        bounds.insert(-1, t - 1)
    return bounds


def scores_limit(offset: int, heads: int, batch: int, budget: int = SCORES_BUDGET_BYTES) -> Callable[[int], int]:
    """The largest chunk c starting at prompt position ``start`` (after ``offset`` cached tokens) whose
    float32 scores, batch × heads × c × (offset + start + c) × 4 bytes, fit in ``budget``."""
    room = budget / (4 * heads * batch)

    def size_at(start: int) -> int:
        seen = offset + start
        return int((-seen + (seen * seen + 4 * room) ** 0.5) / 2)  # c² + seen·c = room

    return size_at


def prefill(
    model,
    ids: np.ndarray,
    embeds: mx.array,
    cache: list,
    chunk_size: int,
    left_padding: mx.array | None = None,
    want_hidden: bool = False,
    progress: Callable[[int, int], None] | None = None,
    stream=None,
) -> tuple[mx.array, mx.array | None]:
    """Run a prompt (B, T) through the caches in image-safe chunks → (last logits (B, V), last hidden).

    Caches are evaluated after every chunk, so one chunk's activations are freed before the next
    starts; ``progress(done, total)`` is called after each. ``stream``: the MLX stream to run on.
    """
    cfg = model.config
    stream = stream or generation_stream()
    ids = np.asarray(ids)
    size_at = None
    if mx.default_device().type == mx.cpu:
        size_at = scores_limit(cache_offset(cache), cfg.text_config.num_attention_heads, ids.shape[0],
                               SCORES_BUDGET_BYTES)
    bounds = chunk_bounds(ids, (cfg.image_token_id, cfg.video_token_id), chunk_size, split_last=True, size_at=size_at)
    total = bounds[-1]
    for a, b in zip(bounds[:-2], bounds[1:-1], strict=True):
        with mx.stream(stream):
            model(ids[:, a:b], inputs_embeds=embeds[:, a:b], cache=cache, logits_to_keep=1, left_padding=left_padding)
            mx.eval([c.state for c in cache])
        if progress is not None:
            progress(b, total)
    a = bounds[-2]
    with mx.stream(stream or mx.default_stream(mx.default_device())):
        out = model(ids[:, a:], inputs_embeds=embeds[:, a:], cache=cache, logits_to_keep=1,
                    return_hidden=want_hidden, left_padding=left_padding)
    logits, hidden = (out[0], out[1][:, -1]) if want_hidden else (out, None)
    if progress is not None:
        progress(total, total)
    return logits[:, -1], hidden
