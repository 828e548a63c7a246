"""The decode loop: token steps (plain or speculative) and the per-row loop every entry point shares.

The plain loop keeps the device busy: step n + 1 is queued (``mx.async_eval``) before token n is
read back and detokenised, so the only host sync per token is reading the token itself.

A step is a list with one entry per row, each the row's new token ids (one, or up to k + 1 for a
speculative round). ``run_rows`` turns steps into per-row chunks: text stream, stop ids and
strings, the row's token limit, finish reason and statistics — the same code for one prompt, a
batch and a chat turn.
"""

from __future__ import annotations

from collections.abc import Iterator

import mlx.core as mx

from .sampling import TokenSampler
from .stats import GenerationStats, Timer
from .textstream import ANSWER, TextStream
from .types import GenerationChunk


def decode_steps(
    model, cache: list, logits: mx.array, sampler: TokenSampler, max_tokens: int, left_padding=None, stream=None,
    in_flight: list | None = None,
) -> Iterator[list[list[int]]]:
    """Sample from ``logits`` (B, V), then step the model token by token: yields each step's ids per row.

    ``in_flight`` (if given) holds the token the model was just fed but that was not handed out yet:
    if the step raises, the caches already hold it, and a chat session must know it.
    """
    in_flight = [] if in_flight is None else in_flight

    def step(y: mx.array) -> mx.array:
        with mx.stream(stream):
            return sampler(model(y[:, None], cache=cache, logits_to_keep=1, left_padding=left_padding)[:, -1])

    if max_tokens == 0:
        return
    with mx.stream(stream):
        y = sampler(logits)
    mx.async_eval(y)
    n = 0
    while True:
        n += 1
        nxt = None
        if n < max_tokens:
            in_flight.append(y)
            nxt = step(y)
            in_flight.clear()
            mx.async_eval(nxt)  # queued before this token is read back and detokenised
        yield [[t] for t in y.tolist()]
        if nxt is None:
            return
        y = nxt


class RowDecoder:
    """One row of a generation: its text stream, stop conditions, token limit, tokens and statistics.

    ``tokens`` holds every token the row consumed, a final stop token included (what the model was
    fed or will be fed: a chat session keeps it); chunks never carry the stop token.
    """

    def __init__(self, tokenizer, stop_ids: set[int], stop_strings: tuple[str, ...], thinking: bool,
                 limit: int, context_limited: bool, stats: GenerationStats):
        self.text = TextStream(tokenizer, stop_strings, thinking)
        self.stop_ids = stop_ids
        self.limit = limit
        self.context_limited = context_limited
        self.stats = stats
        self.tokens: list[int] = []
        self.finish_reason = ""
        self.finished = False

    @property
    def done(self) -> bool:
        """Whether the row stopped (stop token/string) or reached its limit."""
        return bool(self.finish_reason) or len(self.tokens) >= self.limit

    def feed(self, tok: int) -> list[GenerationChunk]:
        """Consume one generated token → the chunks it releases."""
        self.tokens.append(tok)
        self.stats.generation_tokens += 1
        if tok in self.stop_ids:
            self.finish_reason = "stop"
            return []
        pieces = self.text.add(tok)
        if self.text.stopped:
            self.finish_reason = "stop"
        if not pieces:
            return [GenerationChunk("", [tok], self.text.channel)]
        return [GenerationChunk(p.text, [tok] if i == 0 else [], p.channel) for i, p in enumerate(pieces)]

    def finish(self, timer: Timer, kv_gb: float) -> list[GenerationChunk]:
        """Flush the text and close the row's statistics → the last chunks (the very last carries the stats)."""
        self.finished = True
        out = [GenerationChunk(p.text, [], p.channel) for p in self.text.finish()]
        s = self.stats
        s.finish_reason = self.finish_reason or ("context" if self.context_limited else "length")
        s.prefill_s = s.time_to_first_token_s = timer.first_token_at or 0.0
        s.decode_s = timer.since_first_token() if s.generation_tokens else 0.0
        s.peak_memory_gb = timer.peak_gb()
        s.kv_cache_gb = kv_gb
        return [*out, GenerationChunk("", [], ANSWER, s)]


def run_rows(steps: Iterator[list[list[int]]], rows: list[RowDecoder], timer: Timer,
             kv_gb) -> Iterator[tuple[int, GenerationChunk]]:
    """Feed each step's tokens to their rows → (row, chunk); a row that is done gets no more tokens.

    ``kv_gb()`` gives the caches' size when a row finishes.
    """
    for step in steps:
        timer.mark_first_token()
        for r, toks in enumerate(step):
            row = rows[r]
            for tok in toks:
                if row.done:
                    break
                for chunk in row.feed(tok):
                    yield r, chunk
            if row.done and not row.finished:
                for chunk in row.finish(timer, kv_gb()):
                    yield r, chunk
        if all(row.finished for row in rows):
            return
    timer.mark_first_token()
    for r, row in enumerate(rows):
        if not row.finished:
            for chunk in row.finish(timer, kv_gb()):
                yield r, chunk
