"""What generation hands back: streamed chunks and whole results."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .stats import GenerationStats
from .textstream import ANSWER


@dataclass
class GenerationChunk:
    """One streamed step: new text (possibly empty while the detokenizer waits), its token ids, and on
    the last chunk only, the statistics."""

    text: str
    token_ids: list[int]
    channel: str = ANSWER
    stats: GenerationStats | None = None


@dataclass
class GenerationResult:
    """A whole generation: the answer, the thought text (thinking mode), all token ids, statistics."""

    text: str
    thinking: str
    token_ids: list[int]
    stats: GenerationStats


def collect(chunks: Iterable[GenerationChunk]) -> GenerationResult:
    """Gather a chunk stream into one result."""
    answer, thought, ids, stats = [], [], [], None
    for c in chunks:
        (thought if c.channel != ANSWER else answer).append(c.text)
        ids.extend(c.token_ids)
        stats = c.stats or stats
    return GenerationResult("".join(answer), "".join(thought), ids, stats)
