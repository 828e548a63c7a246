"""One prompt: ``stream_generate`` (chunks as they come) and ``generate`` (the whole result)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from ..model.cache import make_cache
from .engine import GenerationRun
from .inputs import prepare_input
from .request import GenerationRequest, make_request
from .types import GenerationChunk, GenerationResult, collect


def stream_generate(
    model,
    processor,
    prompt_or_messages,
    *,
    images: Any = (),
    audio: Any = (),
    videos: Any = (),
    request: GenerationRequest | None = None,
    progress: Callable[[int, int], None] | None = None,
    **options: Any,
) -> Iterator[GenerationChunk]:
    """Stream a generation: text pieces with their token ids, then a last chunk carrying the statistics.

    ``prompt_or_messages``: a text (one user turn), chat messages, or pre-tokenised input (a token
    list, or an object/dict with ``input_ids`` and optional pixel/audio arrays). ``images``/``audio``/
    ``videos``: one source or a list. ``options`` are ``GenerationRequest`` fields, applied over
    ``request``; ``progress(done, total)`` is called as the prompt is prefilled. Like any generator,
    it starts (and checks its arguments) at the first ``next()``.
    """
    req = make_request(request, **options)
    inp = prepare_input(model, processor, prompt_or_messages, images, audio, videos, req.thinking)
    run = GenerationRun(model, processor, make_cache(model, req.kv_bits, req.max_kv_size), [inp], req, progress)
    for _, chunk in run:
        yield chunk


def generate(model, processor, prompt_or_messages, **kwargs: Any) -> GenerationResult:
    """The whole generation at once (same arguments as ``stream_generate``)."""
    return collect(stream_generate(model, processor, prompt_or_messages, **kwargs))
