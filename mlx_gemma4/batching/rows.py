"""One job inside the decode batch: its sampler and random key, the library's ``RowDecoder`` (text
stream, stop rules, token limit), and the events it sends back."""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx

from ..generation.decode import RowDecoder
from ..generation.sampling import TokenSampler
from ..generation.stats import GenerationStats, Timer
from ..generation.textstream import ANSWER
from .job import JobTimeout


@dataclass
class Delta:
    """New text of one channel ("answer" or "thought")."""

    text: str
    channel: str = ANSWER


@dataclass
class Done:
    """The end of a generation: counts, why it ended, the generated ids (stop token excluded), the texts,
    and the library's statistics (``stats.finish_reason`` tells "length" from "context")."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    finish_reason: str  # OpenAI's: "stop" or "length" (the context limit is a length limit too)
    token_ids: list[int] = field(default_factory=list)
    answer: str = ""
    thinking: str = ""
    stats: GenerationStats | None = None


@dataclass
class Failed:
    """A generation that ended with an error."""

    error: BaseException


class Row:
    """Sampling and bookkeeping of one job; ``accept`` takes each sampled token and emits events."""

    def __init__(self, job, tokenizer, *, prompt_ids: list[int], cached: int):
        self.job = job
        self.prompt_ids = prompt_ids
        self.cached = cached
        self.timer = Timer()
        stats = GenerationStats(prompt_tokens=len(prompt_ids) - cached)
        self.decoder = RowDecoder(tokenizer, job.stop_ids, job.stop_strings, job.request.thinking, job.limit,
                                  job.context_limited, stats)
        self.sampler: TokenSampler | None = None  # built on the first logits (needs the vocabulary size)
        self.done = False
        self.released = False
        self.finish_reason: str | None = None

    @property
    def last(self) -> int:
        """The newest sampled token (the next one to feed)."""
        return self.decoder.tokens[-1]

    def sample(self, logits: mx.array) -> mx.array:
        """One row of logits (1, V) → its token (1,), with this row's settings and its own random stream
        (the generation's TokenSampler: processors, the caller's hooks, history kept on the device)."""
        if self.sampler is None:
            seed = self.job.request.seed
            self.sampler = TokenSampler(self.job.params, self.job.request, logits.shape[-1],
                                        mx.array([self.prompt_ids], dtype=mx.int32),
                                        mx.random.key(seed) if seed is not None else None)
        return self.sampler(logits)

    def start(self, logits: mx.array) -> None:
        """The prefill's logits (1, V): the first token, unless the job asked for none (then the row ends
        here with no token, as ``generate(max_tokens=0)`` does)."""
        self.timer.mark_first_token()
        if self.job.limit <= 0:
            self._end()
            return
        self.accept(self.sample(logits).item())

    def accept(self, token: int) -> None:
        """A sampled token: text pieces out, and the end of the row once it is done."""
        self.timer.mark_first_token()
        for chunk in self.decoder.feed(token):
            if chunk.text:
                self.job.emit(Delta(chunk.text, chunk.channel))
        if self.decoder.done:
            self._end()

    def check(self, now: float) -> None:
        """End the row if its client went away or its time is up."""
        if self.done:
            return
        if self.job.cancelled.is_set():
            self.done, self.finish_reason = True, "cancelled"
        elif self.job.deadline is not None and now > self.job.deadline:
            self.fail(JobTimeout("the request timed out"))

    def fail(self, error: BaseException) -> None:
        """End the row with an error event."""
        if not self.done:
            self.done, self.finish_reason = True, "error"
            self.job.emit(Failed(error))

    def _end(self) -> None:
        for chunk in self.decoder.finish(self.timer, 0.0):
            if chunk.text:
                self.job.emit(Delta(chunk.text, chunk.channel))
        d = self.decoder
        self.done, self.finish_reason = True, d.stats.finish_reason
        ids = d.tokens[:-1] if d.tokens and d.tokens[-1] in self.job.stop_ids else list(d.tokens)
        reason = "stop" if self.finish_reason == "stop" else "length"
        self.job.emit(Done(len(self.prompt_ids), len(d.tokens), self.cached, reason, ids, d.text.answer,
                           d.text.thinking, d.stats))
