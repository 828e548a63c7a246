"""One request inside the decode batch: its sampler, text stream, stop rules and events."""

from __future__ import annotations

from dataclasses import dataclass, field

import mlx.core as mx

from ..sampling import apply_processors, filtered_logprobs, make_processors
from ..textstream import ANSWER, TextStream
from .errors import APIError


@dataclass
class Delta:
    """New text of one channel ("answer" or "thought")."""

    text: str
    channel: str = ANSWER


@dataclass
class Done:
    """The end of a generation: counts, why it ended, and the generated ids (stop token excluded)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    finish_reason: str
    token_ids: list[int] = field(default_factory=list)
    answer: str = ""
    thinking: str = ""


@dataclass
class Failed:
    """A generation that ended with an error."""

    error: BaseException


class CachedVocab:
    """A tokenizer whose ``get_vocab()`` is built once: for a 262K-token vocabulary each call builds a new
    dict (about a second on a busy CPU), and every request looks special tokens up in it."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer
        self._vocab = tokenizer.get_vocab()

    def get_vocab(self) -> dict[str, int]:
        """The vocabulary (shared; do not modify)."""
        return self._vocab

    def __getattr__(self, name: str):
        return getattr(self._tokenizer, name)


class Row:
    """Sampling and bookkeeping of one job; ``accept`` feeds each sampled token and emits events."""

    def __init__(self, job, tokenizer, *, prompt_ids: list[int], cached: int, media: str):
        self.job = job
        self.prompt_ids = prompt_ids
        self.cached = cached
        self.media = media
        self.text = TextStream(tokenizer, job.stop_strings, job.thinking)
        self.procs = None  # built on the first logits (needs the vocabulary size)
        self.key = mx.random.key(job.seed) if job.seed is not None else None
        self.generated: list[int] = []  # every sampled token
        self.fed: list[int] = []  # sampled tokens already run through the model (all but the newest)
        self.done = False
        self.released = False
        self.finish_reason: str | None = None

    @staticmethod
    def failure(error: BaseException) -> Failed:
        """The event for an error."""
        return Failed(error)

    @property
    def thought(self) -> bool:
        """Whether the model wrote a thought block (the chat template drops those from history)."""
        return bool(self.text.thinking)

    def sample(self, logits: mx.array) -> mx.array:
        """One row of logits (1, V) → its token (1,), with this row's settings and random key."""
        params = self.job.params
        if self.procs is None:
            self.procs = make_processors(params, logits.shape[-1])
        logits = apply_processors(self.procs, None, logits)
        if params.greedy:
            return mx.argmax(logits, axis=-1).astype(mx.int32)
        lp = filtered_logprobs(logits, params)
        if self.key is None:
            return mx.random.categorical(lp).astype(mx.int32)
        self.key, sub = mx.random.split(self.key)
        return mx.random.categorical(lp, key=sub).astype(mx.int32)

    def accept(self, token: int) -> None:
        """A sampled token: stop rules, text pieces out, and the end of the row when it is done."""
        self.generated.append(token)
        if token in self.job.stop_ids:
            return self._end("stop")
        for piece in self.text.add(token):
            self.job.emit(Delta(piece.text, piece.channel))
        if self.text.stopped:
            return self._end("stop")
        if len(self.generated) >= self.job.max_tokens:
            return self._end("length")
        return None

    def check(self, now: float) -> None:
        """End the row if its client went away or its time is up."""
        if self.done:
            return
        if self.job.cancelled.is_set():
            self.done, self.finish_reason = True, "cancelled"
        elif self.job.deadline is not None and now > self.job.deadline:
            self.fail(APIError(504, "the request timed out", code="timeout"))

    def fail(self, error: BaseException) -> None:
        """End the row with an error event."""
        if not self.done:
            self.done, self.finish_reason = True, "error"
            self.job.emit(Failed(error))

    def _end(self, reason: str) -> None:
        for piece in self.text.finish():
            self.job.emit(Delta(piece.text, piece.channel))
        self.done, self.finish_reason = True, reason
        ids = self.generated[:-1] if reason == "stop" and self.generated[-1] in self.job.stop_ids else self.generated
        self.job.emit(Done(len(self.prompt_ids), len(self.generated), self.cached, reason, list(ids),
                           self.text.answer, self.text.thinking))
