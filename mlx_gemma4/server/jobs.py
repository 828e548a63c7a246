"""Parsed requests → engine jobs: tokenize and preprocess media (numpy only), resolve settings, check limits.

This runs in a worker thread of the web server, never on the model thread, and touches no MLX array.
The settings become the library's ``GenerationRequest`` (validated there), and the sampling settings,
stop conditions and token budget are resolved by the generation package's own functions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..generation.engine import stop_conditions
from ..generation.request import GenerationRequest
from ..generation.sampling import SamplingParams, sampling_params
from ..generation.textstream import channel_token_ids
from ..processing.modalities import ARRAY_KEYS
from .errors import bad_request
from .parsing import Settings


@dataclass
class Limits:
    """Server-wide limits applied to every request."""

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
    deadline: float | None = None  # time.monotonic() after which the job fails with a timeout
    cancelled: threading.Event = field(default_factory=threading.Event)


def encode_chat(model, processor, messages: list[dict], thinking: bool) -> tuple[np.ndarray, dict]:
    """Chat messages (media as bytes) → token ids (1, T) and the model's media arrays."""
    kinds = {item.get("type") for m in messages if isinstance(m.get("content"), list) for item in m["content"]}
    for kind, part in (("image", "vision_config"), ("video", "vision_config"), ("audio", "audio_config")):
        if kind in kinds and getattr(model.config, part) is None:
            raise bad_request(f"this model has no {kind} input (no {part} in its checkpoint)", "messages")
    try:
        return _arrays(processor(messages, enable_thinking=thinking))
    except InputError as e:
        raise bad_request(str(e), "messages") from None


def encode_text(processor, prompt: str) -> tuple[np.ndarray, dict]:
    """A raw completion prompt → token ids (the chat template is not applied)."""
    try:
        return _arrays(processor(prompt))
    except InputError as e:
        raise bad_request(str(e), "prompt") from None


def _arrays(enc) -> tuple[np.ndarray, dict]:
    ids = np.asarray(enc.input_ids).astype(np.int32).reshape(1, -1)
    return ids, {k: getattr(enc, k) for k in ARRAY_KEYS if getattr(enc, k, None) is not None}


def budget(model, limits: Limits, prompt_tokens: int, max_tokens: int) -> tuple[int, bool]:
    """(tokens the answer may have, whether the context is the limit); 400 when the prompt does not fit."""
    context = limits.context_length or model.config.text_config.max_position_embeddings
    if context is None:
        return max_tokens, False
    if prompt_tokens >= context:
        raise bad_request(f"the prompt has {prompt_tokens} tokens; this model's context is {context} tokens",
                          "messages", code="context_length_exceeded")
    room = context - prompt_tokens
    return min(max_tokens, room), room < max_tokens


def make_job(model, tokenizer, ids: np.ndarray, arrays: dict, s: Settings, limits: Limits, emit) -> Job:
    """A validated engine job (400 for settings the library refuses or a prompt that does not fit)."""
    want = min(s.max_tokens if s.max_tokens is not None else limits.default_max_tokens, limits.max_tokens_cap)
    try:
        request = GenerationRequest(max_tokens=want, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                                    min_p=s.min_p, seed=s.seed, stop=s.stop, thinking=s.thinking)
        params = sampling_params(model, request, channel_token_ids(tokenizer)[0])
        stop_ids, stop_strings = stop_conditions(model, request, tokenizer)
    except InputError as e:
        raise bad_request(str(e)) from None
    limit, context_limited = budget(model, limits, int(ids.shape[1]), want)
    deadline = time.monotonic() + limits.timeout_s if limits.timeout_s else None
    return Job(ids, arrays, request, params, stop_ids, stop_strings, limit, context_limited, emit, deadline)
