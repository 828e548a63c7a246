"""``GenerationRequest``: every option of one generation, validated once, shared by every entry point.

``stream_generate``, ``generate``, ``stream_batch``, ``batch_generate`` and ``ChatSession`` take a
request (``request=``) and/or the same fields as keyword arguments (sugar, applied over the request).
A bad value raises ``InputError`` at construction, with the same message whichever entry point it
came through. Sampling fields left as None mean "the checkpoint's generation_config.json value".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from dataclasses import replace as _replace
from typing import Any

from ..errors import InputError
from ..model.cache import check_cache_options

DEFAULT_CHUNK = 2048
SPECULATIVE_MODES = ("on", "auto", "off")
SEED_LIMIT = 2**64


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _optional(name: str, value, ok: bool, want: str) -> None:
    if value is not None and not ok:
        raise InputError(f"{name} must be {want}, got {value!r}")


@dataclass(frozen=True)
class GenerationRequest:
    """The options of one generation (frozen; ``replace`` makes a validated copy)."""

    max_tokens: int = 256
    temperature: float | None = None  # 0 = greedy
    top_p: float | None = None
    top_k: int | None = None  # 0 = off
    min_p: float | None = None
    repetition_penalty: float | None = None  # 1 = off
    seed: int | None = None
    stop: tuple[str | int, ...] = ()  # stop strings and/or token ids (a single one is accepted too)
    thinking: bool = False
    draft_model: Any = None
    num_draft_tokens: int = 3
    speculative: str = "on"  # with a draft_model: "on" always drafts; "auto" while it pays; "off" never
    kv_bits: int | None = None
    max_kv_size: int | None = None
    prefill_chunk: int = DEFAULT_CHUNK
    sampler: Callable | None = None  # logits (B, V) -> token ids (B,), replaces the built-in sampler
    logits_processors: tuple[Callable, ...] = ()  # (tokens (B, n), logits (B, V)) -> logits, after ours

    def __post_init__(self):
        stop = self.stop
        stop = (stop,) if isinstance(stop, (str, int)) else tuple(stop if stop is not None else ())
        procs = self.logits_processors
        procs = (procs,) if callable(procs) else tuple(procs if procs is not None else ())
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "logits_processors", procs)
        self._check_limits()
        self._check_sampling()
        self._check_hooks()

    def _check_limits(self) -> None:
        if not _is_int(self.max_tokens) or self.max_tokens < 0:
            raise InputError(f"max_tokens must be an integer >= 0, got {self.max_tokens!r}")
        if not _is_int(self.prefill_chunk) or self.prefill_chunk < 1:
            raise InputError(f"prefill_chunk must be an integer >= 1, got {self.prefill_chunk!r}")
        if not _is_int(self.num_draft_tokens) or self.num_draft_tokens < 1:
            raise InputError(f"num_draft_tokens must be an integer >= 1, got {self.num_draft_tokens!r}")
        if self.speculative not in SPECULATIVE_MODES:
            raise InputError(f"speculative must be one of {', '.join(SPECULATIVE_MODES)}, got {self.speculative!r}")
        if not isinstance(self.thinking, bool):
            raise InputError(f"thinking must be True or False, got {self.thinking!r}")
        check_cache_options(self.kv_bits, self.max_kv_size)

    def _check_sampling(self) -> None:
        t, p, k, m, r = self.temperature, self.top_p, self.top_k, self.min_p, self.repetition_penalty
        _optional("temperature", t, _is_number(t) and t >= 0, "a finite number >= 0 (0 = greedy)")
        _optional("top_p", p, _is_number(p) and 0 < p <= 1, "a number in (0, 1]")
        _optional("top_k", k, _is_int(k) and k >= 0, "an integer >= 0 (0 = off)")
        _optional("min_p", m, _is_number(m) and 0 <= m <= 1, "a number in [0, 1]")
        _optional("repetition_penalty", r, _is_number(r) and r > 0, "a number > 0 (1 = off)")
        _optional("seed", self.seed, _is_int(self.seed) and 0 <= self.seed < SEED_LIMIT, "an integer in [0, 2**64)")
        for s in self.stop:
            if isinstance(s, bool) or not isinstance(s, (str, int)) or (_is_int(s) and s < 0):
                raise InputError(f"stop entries must be strings or token ids >= 0, got {s!r}")

    def _check_hooks(self) -> None:
        if self.sampler is not None and not callable(self.sampler):
            raise InputError(f"sampler must be a callable or None, got {self.sampler!r}")
        for p in self.logits_processors:
            if not callable(p):
                raise InputError(f"logits_processors must be callables, got {p!r}")

    def replace(self, **changes: Any) -> GenerationRequest:
        """A validated copy with ``changes`` applied (TypeError on an unknown field)."""
        unknown = set(changes) - FIELDS
        if unknown:
            raise TypeError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        return _replace(self, **changes) if changes else self

    @property
    def stop_strings(self) -> tuple[str, ...]:
        """The non-empty stop strings."""
        return tuple(s for s in self.stop if isinstance(s, str) and s)

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """The stop token ids given by the caller (the checkpoint's own are added at generation time)."""
        return tuple(s for s in self.stop if not isinstance(s, str))

    @property
    def drafting(self) -> bool:
        """Whether a drafter is given and speculation is not turned off."""
        return self.draft_model is not None and self.speculative != "off"


FIELDS = frozenset(f.name for f in fields(GenerationRequest))


def make_request(request: GenerationRequest | None = None, **options: Any) -> GenerationRequest:
    """The request an entry point runs: ``request`` (or the defaults) with keyword ``options`` applied."""
    if request is not None and not isinstance(request, GenerationRequest):
        raise InputError(f"request must be a GenerationRequest, got {type(request).__name__}")
    return (request or GenerationRequest()).replace(**options)

