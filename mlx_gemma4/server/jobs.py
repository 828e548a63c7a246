"""Parsed requests → engine jobs: tokenize and preprocess media (numpy only), resolve settings.

This runs in a worker thread of the web server, never on the model thread, and touches no MLX array.
The job itself is built by the library (``mlx_gemma4.batching.job``); this module only turns the
request's ``Settings`` into a ``GenerationRequest`` and the library's ``InputError`` into a 400 that
names the field.
"""

from __future__ import annotations

import numpy as np

from ..batching.job import ContextLengthError, Job, Limits, encoded_arrays
from ..batching.job import make_job as make_engine_job
from ..errors import InputError
from ..generation.request import GenerationRequest
from .errors import bad_request
from .parsing import Settings

__all__ = ["Job", "Limits", "encode_chat", "encode_text", "make_job"]


def encode_chat(model, processor, messages: list[dict], thinking: bool) -> tuple[np.ndarray, dict]:
    """Chat messages (media as bytes) → token ids (1, T) and the model's media arrays."""
    kinds = {item.get("type") for m in messages if isinstance(m.get("content"), list) for item in m["content"]}
    for kind, part in (("image", "vision_config"), ("video", "vision_config"), ("audio", "audio_config")):
        if kind in kinds and getattr(model.config, part) is None:
            raise bad_request(f"this model has no {kind} input (no {part} in its checkpoint)", "messages")
    try:
        return encoded_arrays(processor(messages, enable_thinking=thinking))
    except InputError as e:
        raise bad_request(str(e), "messages") from None


def encode_text(processor, prompt: str) -> tuple[np.ndarray, dict]:
    """A raw completion prompt → token ids (the chat template is not applied)."""
    try:
        return encoded_arrays(processor(prompt))
    except InputError as e:
        raise bad_request(str(e), "prompt") from None


def make_job(model, tokenizer, ids: np.ndarray, arrays: dict, s: Settings, limits: Limits, emit) -> Job:
    """A validated engine job (400 for settings the library refuses or a prompt that does not fit)."""
    want = min(s.max_tokens if s.max_tokens is not None else limits.default_max_tokens, limits.max_tokens_cap)
    try:
        request = GenerationRequest(max_tokens=want, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k,
                                    min_p=s.min_p, seed=s.seed, stop=s.stop, thinking=s.thinking)
        return make_engine_job(model, tokenizer, ids, arrays, request, limits, emit)
    except ContextLengthError as e:
        raise bad_request(str(e), "messages", code="context_length_exceeded") from None
    except InputError as e:
        raise bad_request(str(e)) from None
