"""Several prompts generated together: left padding, per-row RoPE positions, per-row stops and stats.

Each prompt (with its own images/audio) is embedded on its own, then the rows are left-padded to a
common length; the model masks the padding keys and starts each row's positions at its first real
token, so a row's tokens are the same as when it is generated alone (greedy). Rows stream
independently: a row that stops finishes its stream at once and produces nothing more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import InputError
from ..model.cache import make_cache
from .engine import GenerationRun
from .inputs import prepare_input
from .request import GenerationRequest, make_request
from .types import GenerationChunk, GenerationResult, collect


def _per_prompt(name: str, value, n: int) -> list:
    if value is None:
        return [()] * n
    value = list(value)
    if len(value) != n:
        raise InputError(f"{name} must hold one entry (a source or a list of them) per prompt: {len(value)} for {n}")
    return value


def stream_batch(
    model,
    processor,
    prompts: Sequence,
    *,
    images: Sequence | None = None,
    audio: Sequence | None = None,
    videos: Sequence | None = None,
    request: GenerationRequest | None = None,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> Iterator[tuple[int, GenerationChunk]]:
    """Generate for every prompt at once, streaming ``(row, chunk)``; each row's last chunk carries its stats.

    ``images``/``audio``/``videos`` hold one entry per prompt (a source or a list of them). Checks run at
    the first ``next()``.
    """
    req = make_request(request, **options)
    if isinstance(prompts, str) or not prompts:
        raise InputError("a batch needs a non-empty list of prompts")
    n = len(prompts)
    media = zip(_per_prompt("images", images, n), _per_prompt("audio", audio, n), _per_prompt("videos", videos, n),
                strict=True)
    inputs = [prepare_input(model, processor, p, im, au, vi, req.thinking)
              for p, (im, au, vi) in zip(prompts, media, strict=True)]
    yield from GenerationRun(model, processor, make_cache(model, req.kv_bits, req.max_kv_size), inputs, req, progress)


def batch_generate(model, processor, prompts: Sequence, **kwargs: Any) -> list[GenerationResult]:
    """Generate for every prompt at once; one result (with the row's own stats) per prompt."""
    chunks: dict[int, list[GenerationChunk]] = {}
    for row, chunk in stream_batch(model, processor, prompts, **kwargs):
        chunks.setdefault(row, []).append(chunk)
    return [collect(chunks[r]) for r in range(len(prompts))]
