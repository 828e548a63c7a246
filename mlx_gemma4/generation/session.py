"""Multi-turn chat that keeps its KV cache: each turn prefills only what is new.

The cache holds exactly ``self.tokens`` — the earlier prompts and everything the model generated
(its thoughts included). A new turn is the part of the chat template's rendering of the whole
conversation that follows the last model turn; only those tokens (and their media) are prefilled.
The cache is therefore "what the model saw", which differs from a from-scratch rendering only where
the template rewrites history (it strips earlier thoughts).

However a reply ends — finished, stopped early by the caller (``break``, ``close()``), or by an
exception — the session stays consistent: a reply cut short is kept as far as the model produced
it (the next turn closes it); a turn whose prompt did not fully enter the cache is undone (the
cache is trimmed back, or rebuilt from the recorded segments when a sliding cache cannot be).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from ..errors import InputError
from ..model.cache import cache_offset, can_trim_cache, make_cache, trim_cache
from ..processing import audio as audio_mod
from ..processing import image as image_mod
from ..processing import video as video_mod
from ..processing.modalities import BY_MESSAGE_TYPE, MODALITIES
from ..processing.prompt import token_id
from .engine import GenerationRun
from .inputs import PreparedInput, encode_messages, media_lists, prepare_input, tokenizer_of, user_message
from .prefill import prefill
from .request import GenerationRequest, make_request
from .sampling import model_defaults
from .types import GenerationChunk, GenerationResult, collect

_DESCRIBE = {"image": image_mod.describe_source, "audio": audio_mod.describe_source,
             "video": video_mod.describe_source}


def _with_source(item: Any, given: dict[str, Iterator]) -> Any:
    """A content item with its source inline: its own, or the next one given separately for its modality."""
    modality = BY_MESSAGE_TYPE.get(item.get("type")) if isinstance(item, dict) else None
    if modality is None or any(item.get(k) is not None for k in modality.source_keys):
        return item
    source = next(given[modality.name], None)
    if source is None:
        return item
    if isinstance(source, (str, os.PathLike)):
        return {**item, "path": os.fsdecode(source)}
    return {**item, "source": _DESCRIBE[modality.name](source)}


@dataclass
class _Turn:
    """A prepared user turn: what to prefill, and what to record once it is in the cache."""

    inp: PreparedInput
    message: dict | None
    media: dict[str, list]


class ChatSession:
    """A conversation with one model; ``send`` streams a reply, ``ask`` returns it whole.

    ``request``/keyword options (``GenerationRequest`` fields) are the session's defaults; ``send``
    may override any of them for one turn except ``kv_bits``/``max_kv_size`` (the cache's layout).
    """

    def __init__(self, model, processor=None, *, system: str | None = None,
                 request: GenerationRequest | None = None, **options: Any):
        self.model, self.processor = model, processor
        self.request = make_request(request, **options)
        self.cache = make_cache(model, self.request.kv_bits, self.request.max_kv_size)
        self.tokens: list[int] = []  # exactly what the cache holds
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self._media: dict[str, list] = {m.name: [] for m in MODALITIES}
        self._decoded: dict = {}  # the processor's memo: earlier turns' files are decoded once, not every turn
        self._segments: list[PreparedInput] = []  # self.tokens in pieces, with their media arrays
        self._active = False
        self.last_prefill_tokens = 0

    @property
    def thinking(self) -> bool:
        """Whether the session's turns let the model think."""
        return self.request.thinking

    # -- public -----------------------------------------------------------------------------------

    def send(self, message, *, images: Any = (), audio: Any = (), videos: Any = (),
             request: GenerationRequest | None = None, progress: Callable[[int, int], None] | None = None,
             **options: Any) -> Iterator[GenerationChunk]:
        """Add a user turn (text, a message dict, or pre-tokenised ids/arrays) and stream the reply.

        The turn is prepared (and checked) at the first ``next()``; closing the stream early keeps the
        reply as far as it went.
        """
        req = make_request(request or self.request, **options)
        if (req.kv_bits, req.max_kv_size) != (self.request.kv_bits, self.request.max_kv_size):
            raise InputError("kv_bits and max_kv_size are fixed when the session is created")
        if self._active:
            raise InputError("the previous reply is still being streamed: read it to the end or close() it first")
        turn = self._prepare(message, images, audio, videos, req.thinking)
        history = mx.array([[*self.tokens, *turn.inp.input_ids[0].tolist()]], dtype=mx.int32)
        run = GenerationRun(self.model, self.processor, self.cache, [turn.inp], req, progress, history)
        yield from self._reply(run, turn)

    def ask(self, message, **kwargs: Any) -> GenerationResult:
        """``send`` collected into one result."""
        return collect(self.send(message, **kwargs))

    def conversation(self) -> list[dict]:
        """``messages`` with every image/audio/video item naming its source inline, as a processor reads it back
        (``{"type": "image", "path": "photo.jpg"}``; in-memory data is described: ``{"type": "audio", "source":
        "<audio array (16000,)>"}``). ``messages`` alone has bare items for sources given as ``images=`` etc."""
        given = {name: iter(sources) for name, sources in self._media.items()}
        out = []
        for message in self.messages:
            content = message["content"]
            if isinstance(content, list):
                content = [_with_source(item, given) for item in content]
            out.append({**message, "content": content})
        return out

    def reset(self) -> None:
        """Forget the conversation and empty the cache."""
        self.cache = make_cache(self.model, self.request.kv_bits, self.request.max_kv_size)
        self.tokens, self._segments = [], []
        self.messages = [m for m in self.messages[:1] if m["role"] == "system"]
        self._media = {m.name: [] for m in MODALITIES}
        self._decoded = {}

    # -- a turn -----------------------------------------------------------------------------------

    def _prepare(self, message, images, audio, videos, thinking: bool) -> _Turn:
        if not isinstance(message, (str, dict)):
            return _Turn(prepare_input(self.model, None, message, images, audio, videos), None, {})
        if self.processor is None:
            raise InputError("a chat session without a processor takes pre-tokenised turns only")
        media = media_lists(self.model, images, audio, videos)
        if isinstance(message, str):
            message = user_message(message, media)
        # The processor renders the whole conversation, so it needs every image/audio clip so far.
        everything = {k: [*self._media[k], *media[k]] for k in media}
        full = encode_messages(self.model, self.processor, [*self.messages, message], everything, thinking,
                               self._decoded)
        ids = full.input_ids[0].tolist()
        new_ids = np.array([ids[self._continuation_start(ids):]], np.int32)
        arrays = self._new_arrays(full, new_ids)
        if self.tokens and self.tokens[-1] not in model_defaults(self.model).eos_token_ids:
            new_ids = np.concatenate([[[self._eot_id()]], new_ids], axis=1)  # close a reply that was cut short
        return _Turn(PreparedInput(new_ids, arrays), message, media)

    def _continuation_start(self, ids: list[int]) -> int:
        if not self.tokens:
            return 0
        # The template re-renders the last model turn (minus its thought); what follows its end-of-turn
        # marker is new. The cache already holds that turn as the model produced it.
        eot = self._eot_id()
        common = 0
        for a, b in zip(ids, self.tokens, strict=False):
            if a != b:
                break
            common += 1
        ends = [i for i in range(common, len(ids)) if ids[i] == eot]
        if not ends:
            raise InputError("cannot find the end of the previous model turn in the rendered conversation")
        return ends[0] + 1

    def _new_arrays(self, full: PreparedInput, new_ids: np.ndarray) -> dict:
        """The last rows of each modality's arrays: those of the media in the new tokens."""
        out = {}
        for m in MODALITIES:
            n = m.rows(new_ids, getattr(self.model.config, m.placeholder_id))
            for key in m.arrays:
                if n and full.arrays.get(key) is not None:
                    out[key] = np.asarray(full.arrays[key])[-n:]
        return out

    def _eot_id(self) -> int:
        tok = tokenizer_of(self.processor)
        found = token_id(tok, "<turn|>") if tok is not None else None
        return int(found) if found is not None else 106

    def _reply(self, run: GenerationRun, turn: _Turn) -> Iterator[GenerationChunk]:
        self._active = True
        chunks: list[GenerationChunk] = []
        try:
            self.last_prefill_tokens = turn.inp.length
            for _, chunk in run:
                chunks.append(chunk)
                yield chunk
        finally:
            self._active = False
            self._settle(turn, [*run.rows[0].tokens, *run.unconsumed()], chunks)

    # -- keeping the cache and the history in step ------------------------------------------------

    def _settle(self, turn: _Turn, generated: list[int], chunks: list[GenerationChunk]) -> None:
        """Record what the cache now holds, however the reply ended."""
        before = len(self.tokens)
        prompt = turn.inp.input_ids[0].tolist()
        offset = cache_offset(self.cache)
        if offset < before + len(prompt):  # the prompt never fully entered the cache: undo the turn
            self._rollback(before)
            return
        seen = [*self.tokens, *prompt, *generated]
        extra = offset - len(seen)  # a speculative round may have accepted drafts past a stop token
        if extra > 0 and not can_trim_cache(self.cache, extra):
            self._rollback(before)
            return
        trim_cache(self.cache, extra)
        self.tokens = seen[: cache_offset(self.cache)]
        self._segments.append(PreparedInput(np.array([self.tokens[before:]], np.int32), turn.inp.arrays))
        for k, sources in turn.media.items():
            self._media[k] += sources
        if turn.message is not None:
            self.messages += [turn.message, {"role": "assistant", "content": collect(chunks).text}]

    def _rollback(self, before: int) -> None:
        """Bring the cache back to ``self.tokens[:before]``: trim if every layer can, else rebuild it."""
        extra = cache_offset(self.cache) - before
        if can_trim_cache(self.cache, extra):
            trim_cache(self.cache, extra)
            return
        self.cache = make_cache(self.model, self.request.kv_bits, self.request.max_kv_size)
        if not self._segments:
            return
        embeds = mx.concatenate([self.model.embed_inputs(s.input_ids, **s.arrays) for s in self._segments], axis=1)
        ids = np.concatenate([s.input_ids for s in self._segments], axis=1)
        prefill(self.model, ids, embeds, self.cache, self.request.prefill_chunk)
        mx.eval([c.state for c in self.cache])
