"""What a generation starts from: a prompt (text, chat messages or token ids) → ``PreparedInput``.

Token ids are checked against the vocabulary here, where they enter from the caller: an id past
the embedding table would crash the process instead of raising an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np

from ..errors import InputError
from ..model.gemma4 import check_token_ids
from ..processing.modalities import ARRAY_KEYS, MODALITIES
from ..processing.processor import as_source_list  # the Processor's own rule: one source or a list

# The config section a modality's embedder needs (a text-only checkpoint has neither).
_EMBEDDER_CONFIG = {"image": "vision_config", "video": "vision_config", "audio": "audio_config"}


@dataclass
class PreparedInput:
    """Token ids (1, T) and the multimodal arrays that go with them."""

    input_ids: np.ndarray
    arrays: dict[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        """Number of tokens."""
        return int(self.input_ids.shape[1])


def tokenizer_of(processor):
    """The tokenizer inside a processor (a bare tokenizer is accepted too; None stays None)."""
    return getattr(processor, "tokenizer", processor) if processor is not None else None


def user_message(text: str, media: dict[str, list]) -> dict:
    """One user turn: a placeholder per image/audio/video given separately, then the text."""
    content = [{"type": m.message_type} for m in MODALITIES for _ in media.get(m.name, ())]
    return {"role": "user", "content": [*content, {"type": "text", "text": text}]}


def media_lists(model, images, audio, videos) -> dict[str, list]:
    """The media arguments by modality name as lists (a single source accepted), refused if the
    checkpoint cannot take them."""
    given = {"images": images, "audio": audio, "videos": videos}
    media = {m.name: as_source_list(given[m.argument], m) for m in MODALITIES}
    for name, sources in media.items():
        section = _EMBEDDER_CONFIG[name]
        if sources and getattr(model.config, section) is None:
            embedder = section.removesuffix("_config")
            raise InputError(f"this checkpoint has no {embedder} embedder: it cannot take {name} input")
    return media


def prepare_input(model, processor, prompt, images=(), audio=(), videos=(), thinking: bool = False) -> PreparedInput:
    """Normalise a prompt: text (one user turn), chat messages, or pre-tokenised ids/arrays → PreparedInput."""
    media = media_lists(model, images, audio, videos)
    if isinstance(prompt, PreparedInput):
        return _checked(model, prompt)
    if isinstance(prompt, (str, list)) and not (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
        if processor is None:
            raise InputError("text or chat messages need a processor (tokenizer); pass token ids instead")
        messages = [user_message(prompt, media)] if isinstance(prompt, str) else prompt
        return encode_messages(model, processor, messages, media, thinking)
    if any(media.values()):
        raise InputError("pass images/audio/videos with text or messages; pre-tokenised input carries its own arrays")
    if isinstance(prompt, dict):
        return _from_mapping(model, prompt)
    if hasattr(prompt, "input_ids"):
        return _from_mapping(model, {k: getattr(prompt, k, None) for k in ("input_ids", *ARRAY_KEYS)})
    if isinstance(prompt, (list, tuple, np.ndarray, mx.array)):
        return _from_mapping(model, {"input_ids": prompt})
    raise InputError(f"unsupported prompt type {type(prompt).__name__}")


def encode_messages(model, processor, messages: list, media: dict[str, list], thinking: bool,
                    decoded: dict | None = None) -> PreparedInput:
    """Render and tokenise chat messages with their media through the processor (``decoded``: the
    processor's memo of decoded files, kept by a caller that renders the same media again)."""
    sources = {m.argument: media.get(m.name) or None for m in MODALITIES}
    memo = {} if decoded is None else {"decoded": decoded}
    enc = processor(messages, **sources, enable_thinking=thinking, **memo)
    if not isinstance(enc, dict):  # the processor returns an object with array attributes
        enc = {k: getattr(enc, k, None) for k in ("input_ids", *ARRAY_KEYS)}
    return _from_mapping(model, enc)


def _from_mapping(model, d: dict) -> PreparedInput:
    ids = np.asarray(d.get("input_ids"))
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"input_ids must be one non-empty row of integers, got shape {ids.shape} ({ids.dtype})")
    return _checked(model, PreparedInput(ids, {k: d[k] for k in ARRAY_KEYS if d.get(k) is not None}))


def _checked(model, inp: PreparedInput) -> PreparedInput:
    return PreparedInput(check_token_ids(inp.input_ids, model.config), inp.arrays)


def check_stop_ids(model, ids) -> None:
    """Stop token ids must be in the vocabulary too (an id the model can never produce is a typo)."""
    vocab = model.config.text_config.vocab_size
    for i in ids:
        if not 0 <= i < vocab:
            raise InputError(f"stop token id {i} is outside the vocabulary (0 to {vocab - 1})")
