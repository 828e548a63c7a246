"""Multi-turn chat that keeps its KV cache: each turn prefills only what is new.

The cache holds exactly ``self.tokens`` — the earlier prompts and everything the model generated
(its thoughts included). A new turn is the part of the chat template's rendering of the whole
conversation that follows the last model turn; only those tokens (and their images/audio) are
prefilled. The cache is therefore "what the model saw", which differs from a from-scratch rendering
only where the template rewrites history (it strips earlier thoughts).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import mlx.core as mx
import numpy as np

from .errors import InputError
from .generation import (
    ARRAY_KEYS,
    GenerationChunk,
    GenerationResult,
    PreparedInput,
    _tokenizer,
    check_max_tokens,
    collect,
    prepare_input,
    run_generation,
    stop_conditions,
)
from .prefill import DEFAULT_CHUNK, cache_offset, make_cache, trim_cache
from .sampling import model_defaults, resolve_params


class ChatSession:
    """A conversation with one model; ``send`` streams a reply, ``ask`` returns it whole."""

    def __init__(
        self,
        model,
        processor=None,
        *,
        system: str | None = None,
        thinking: bool = False,
        kv_bits: int | None = None,
        max_kv_size: int | None = None,
        prefill_chunk: int = DEFAULT_CHUNK,
        **sampling,
    ):
        self.model, self.processor = model, processor
        self.thinking = thinking
        self.prefill_chunk = prefill_chunk
        self.sampling = sampling  # temperature, top_p, top_k, min_p, repetition_penalty, seed, stop, max_tokens
        self._cache_args = (kv_bits, max_kv_size)
        self.cache = make_cache(model, kv_bits, max_kv_size)
        self.tokens: list[int] = []  # exactly what the cache holds
        self.messages: list[dict] = [{"role": "system", "content": system}] if system else []
        self._images: list = []
        self._audio: list = []
        self._pending_message: dict | None = None
        self.last_prefill_tokens = 0

    # -- public -----------------------------------------------------------------------------------

    def send(self, message, *, images: Sequence = (), audio: Sequence = (), **kwargs) -> Iterator[GenerationChunk]:
        """Add a user turn (text, a message dict, or pre-tokenised ids/arrays) and stream the reply."""
        if isinstance(message, (str, dict)):
            inp = self._new_turn(message, list(images or ()), list(audio or ()))
        else:
            inp = prepare_input(self.model, None, message, images, audio)
        yield from self._reply(inp, kwargs)

    def ask(self, message, **kwargs) -> GenerationResult:
        """``send`` collected into one result."""
        return collect(self.send(message, **kwargs))

    def reset(self) -> None:
        """Forget the conversation and empty the cache."""
        self.cache = make_cache(self.model, *self._cache_args)
        self.tokens = []
        self.messages = [m for m in self.messages[:1] if m["role"] == "system"]
        self._images, self._audio = [], []

    # -- internals --------------------------------------------------------------------------------

    def _new_turn(self, message, images: list, audio: list) -> PreparedInput:
        if self.processor is None:
            raise InputError("a chat session without a processor takes pre-tokenised turns only")
        if isinstance(message, str):
            content = [{"type": "image"}] * len(images) + [{"type": "audio"}] * len(audio)
            message = {"role": "user", "content": [*content, {"type": "text", "text": message}]}
        # The processor renders the whole conversation, so it needs every image/audio clip so far.
        full = prepare_input(
            self.model, self.processor, [*self.messages, message], [*self._images, *images],
            [*self._audio, *audio], self.thinking,
        )
        self._pending_message = message
        self._images += images
        self._audio += audio
        ids = full.input_ids[0].tolist()
        start = self._continuation_start(ids)
        new_ids = np.array([ids[start:]], np.int32)
        arrays = self._new_arrays(full, new_ids)
        if self.tokens and self.tokens[-1] not in model_defaults(self.model).eos_token_ids:
            new_ids = np.concatenate([[[self._eot_id()]], new_ids], axis=1)  # close a reply cut by max tokens
        return PreparedInput(new_ids, arrays)

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
        cfg = self.model.config
        out = {}
        n_img = int((new_ids == cfg.boi_token_id).sum()) if "pixel_values" in full.arrays else 0
        n_aud = int((new_ids == cfg.boa_token_id).sum()) if "input_features" in full.arrays else 0
        for k in ARRAY_KEYS:
            v = full.arrays.get(k)
            if v is None:
                continue
            n = n_img if k in ("pixel_values", "image_position_ids") else n_aud if k.startswith("input_") else 0
            if n:
                out[k] = np.asarray(v)[-n:]
        return out

    def _eot_id(self) -> int:
        tok = _tokenizer(self.processor)
        found = tok.get_vocab().get("<turn|>") if tok is not None else None
        return int(found) if found is not None else 106

    def _reply(self, inp: PreparedInput, kwargs: dict) -> Iterator[GenerationChunk]:
        opts = {**self.sampling, **kwargs}
        max_tokens = check_max_tokens(opts.pop("max_tokens", 256))
        seed, stop = opts.pop("seed", None), opts.pop("stop", ())
        draft = {k: opts.pop(k) for k in ("draft_model", "num_draft_tokens", "speculative") if k in opts}
        params = resolve_params(model_defaults(self.model), **opts)
        tokenizer = _tokenizer(self.processor)
        stop_ids, stop_strings = stop_conditions(self.model, stop, tokenizer)
        history = None
        if params.repetition_penalty != 1.0:
            ctx = [*self.tokens, *inp.input_ids[0].tolist()][-params.repetition_context:]
            history = mx.array([ctx], dtype=mx.int32)
        emitted: list[int] = []
        self.last_prefill_tokens = int(inp.input_ids.shape[1])
        chunks = []
        for chunk in run_generation(
            self.model, tokenizer, self.cache, inp, params, max_tokens=max_tokens, stop_ids=stop_ids,
            stop_strings=stop_strings, thinking=self.thinking, history=history,
            prefill_chunk=self.prefill_chunk, seed=seed, emitted=emitted, **draft,
        ):
            chunks.append(chunk)
            yield chunk
        # The decode loop queues one step ahead: the cache holds the prompt and the generated tokens up
        # to its offset (the last token is not in it when generation stopped on max tokens).
        seen = [*self.tokens, *inp.input_ids[0].tolist(), *emitted]
        # A speculative round may have accepted drafts beyond a stop token: drop them from the cache.
        trim_cache(self.cache, cache_offset(self.cache) - len(seen))
        self.tokens = seen[: cache_offset(self.cache)]
        if len(self.tokens) != cache_offset(self.cache):
            raise RuntimeError("session cache and token history disagree")
        if self._pending_message is not None:
            answer = collect(iter(chunks)).text
            self.messages += [self._pending_message, {"role": "assistant", "content": answer}]
            self._pending_message = None
