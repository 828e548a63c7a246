"""Parsed requests → engine jobs: tokenize and preprocess media (numpy only), resolve settings, check limits.

This runs in a worker thread of the web server, never on the model thread, and touches no MLX array.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..sampling import model_defaults, resolve_params
from ..textstream import channel_token_ids
from .engine import Job
from .errors import bad_request
from .parsing import Settings

_ARRAY_KEYS = ("pixel_values", "image_position_ids", "input_features", "input_features_mask",
               "pixel_values_videos", "video_position_ids")


@dataclass
class Limits:
    """Server-wide limits applied to every request."""

    context_length: int = 0  # 0: the model's own (max_position_embeddings)
    max_tokens_cap: int = 4096
    default_max_tokens: int = 512
    timeout_s: float | None = 600.0


def context_length(model) -> int:
    """The model's context length from its config (131072 when the config does not say)."""
    raw = getattr(model.config, "raw", {}) or {}
    text = raw.get("text_config", raw) if isinstance(raw, dict) else {}
    return int(text.get("max_position_embeddings") or raw.get("max_position_embeddings") or 131072)


def encode_chat(model, processor, messages: list[dict], thinking: bool) -> tuple[np.ndarray, dict]:
    """Chat messages (media as bytes) → token ids (1, T) and the model's media arrays."""
    has = {item.get("type") for m in messages if isinstance(m.get("content"), list) for item in m["content"]}
    if "image" in has and model.config.vision_config is None:
        raise bad_request("this model has no vision embedder: it cannot take images", "messages")
    if "audio" in has and model.config.audio_config is None:
        raise bad_request("this model has no audio embedder: it cannot take audio", "messages")
    try:
        enc = processor(messages, enable_thinking=thinking)
    except InputError as e:
        raise bad_request(str(e), "messages") from None
    return _arrays(enc)


def encode_text(processor, prompt: str) -> tuple[np.ndarray, dict]:
    """A raw completion prompt → token ids (the template is not applied)."""
    try:
        return _arrays(processor(prompt))
    except InputError as e:
        raise bad_request(str(e), "prompt") from None


def _arrays(enc) -> tuple[np.ndarray, dict]:
    ids = np.asarray(enc.input_ids).astype(np.int32).reshape(1, -1)
    arrays = {k: getattr(enc, k) for k in _ARRAY_KEYS if getattr(enc, k, None) is not None}
    return ids, arrays


def make_job(model, tokenizer, ids: np.ndarray, arrays: dict, s: Settings, limits: Limits, emit) -> Job:
    """A validated engine job (400 for settings the model cannot honour or a prompt that does not fit)."""
    n = int(ids.shape[1])
    context = limits.context_length or context_length(model)
    room = context - n
    if room <= 0:
        raise bad_request(f"the prompt has {n} tokens; this model's context is {context} tokens",
                          "messages", code="context_length_exceeded")
    want = s.max_tokens if s.max_tokens is not None else limits.default_max_tokens
    try:
        params = resolve_params(model_defaults(model), s.temperature, s.top_k, s.top_p, s.min_p)
    except InputError as e:
        raise bad_request(str(e)) from None
    soc, _ = channel_token_ids(tokenizer)
    if not s.thinking and soc is not None:
        params = params.with_suppressed([soc])  # thinking off: the model cannot open a thought block
    deadline = time.monotonic() + limits.timeout_s if limits.timeout_s else None
    return Job(
        input_ids=ids, arrays=arrays, params=params, max_tokens=max(1, min(want, limits.max_tokens_cap, room)),
        stop_ids=frozenset(model_defaults(model).eos_token_ids), stop_strings=s.stop, thinking=s.thinking,
        emit=emit, seed=s.seed, deadline=deadline,
    )
