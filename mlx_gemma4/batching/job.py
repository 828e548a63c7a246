"""Engine jobs: token ids and media arrays plus resolved settings, built off the model thread.

Building a job touches no MLX array (numpy and Python only), so it runs in whatever thread the caller
likes. The settings are the library's ``GenerationRequest`` (validated there); sampling settings, stop
conditions and the token budget are resolved by the generation package's own functions. Input the
caller can fix raises ``InputError`` (``ContextLengthError`` when the prompt does not fit).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import Gemma4Error, InputError
from ..generation.engine import stop_conditions
from ..generation.request import GenerationRequest
from ..generation.sampling import SamplingParams, sampling_params
from ..generation.textstream import channel_token_ids
from ..processing.modalities import ARRAY_KEYS


class ContextLengthError(InputError):
    """The prompt alone fills the model's context."""


class JobTimeout(Gemma4Error):
    """A job ran past its deadline."""


@dataclass
class Limits:
    """Limits applied to every job of an engine's user."""

    context_length: int = 0  # 0: the model's own (max_position_embeddings; unlimited when not stated)
    max_tokens_cap: int = 4096
    default_max_tokens: int = 512
    timeout_s: float | None = 600.0


@dataclass
class Job:
    """One generation request, tokenized and resolved (numpy and Python only: built off the model thread)."""

    input_ids: np.ndarray  # (1, T)
    arrays: dict
    request: GenerationRequest
    params: SamplingParams
    stop_ids: set[int]
    stop_strings: tuple[str, ...]
    limit: int  # most tokens to generate
    context_limited: bool  # whether the context length is what sets ``limit``
    emit: Callable[[object], None]  # called on the model thread with Delta / Done / Failed events
    deadline: float | None = None  # time.monotonic() after which the job fails with JobTimeout
    cancelled: threading.Event = field(default_factory=threading.Event)
    # True when the caller knows the media in this prompt are never seen again (one file per job):
    # the prompt cache then keeps only snapshots that end before the first image or audio clip.
    unique_media: bool = False


def encoded_arrays(enc) -> tuple[np.ndarray, dict]:
    """A processor's output → token ids (1, T) int32 and the model's media arrays."""
    ids = np.asarray(enc.input_ids).astype(np.int32).reshape(1, -1)
    return ids, {k: getattr(enc, k) for k in ARRAY_KEYS if getattr(enc, k, None) is not None}


def budget(model, limits: Limits, prompt_tokens: int, max_tokens: int) -> tuple[int, bool]:
    """(tokens the answer may have, whether the context is the limit); ContextLengthError when the
    prompt does not fit."""
    context = limits.context_length or model.config.text_config.max_position_embeddings
    if context is None:
        return max_tokens, False
    if prompt_tokens >= context:
        raise ContextLengthError(f"the prompt has {prompt_tokens} tokens; this model's context is {context} tokens")
    room = context - prompt_tokens
    return min(max_tokens, room), room < max_tokens


def make_job(model, tokenizer, ids: np.ndarray, arrays: dict, request: GenerationRequest, limits: Limits,
             emit: Callable[[object], None], *, unique_media: bool = False) -> Job:
    """A validated job; ``request.max_tokens`` is capped by ``limits.max_tokens_cap`` and the context."""
    want = min(request.max_tokens, limits.max_tokens_cap)
    params = sampling_params(model, request, channel_token_ids(tokenizer)[0])
    stop_ids, stop_strings = stop_conditions(model, request, tokenizer)
    limit, context_limited = budget(model, limits, int(ids.shape[1]), want)
    deadline = time.monotonic() + limits.timeout_s if limits.timeout_s else None
    return Job(ids, arrays, request, params, stop_ids, stop_strings, limit, context_limited, emit, deadline,
               unique_media=unique_media)
