"""One generation run over one or more prompts: checks, prefill, token steps, per-row chunks.

``GenerationRun`` is what ``stream_generate``, ``stream_batch`` and a chat turn all execute. Every
check happens when the run is built, before any compute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import mlx.core as mx
import numpy as np

from ..errors import InputError
from ..model.cache import cache_offset, kv_nbytes
from .decode import RowDecoder, decode_steps, run_rows
from .device import generation_stream, wired_limit
from .inputs import PreparedInput, check_stop_ids, tokenizer_of
from .prefill import prefill
from .request import GenerationRequest
from .sampling import SamplingParams, TokenSampler, model_defaults, sampling_params
from .stats import GenerationStats, Timer
from .textstream import channel_token_ids
from .types import GenerationChunk


@dataclass
class PackedPrompts:
    """Prompts left-padded to one width: ids (B, W), embeddings, per-row padding (None if none)."""

    ids: np.ndarray
    embeds: mx.array
    left_padding: mx.array | None
    lengths: list[int]


def pack(model, inputs: list[PreparedInput]) -> PackedPrompts:
    """Embed each prompt on its own (with its media), then left-pad the rows to a common width."""
    lengths = [i.length for i in inputs]
    width = max(lengths)
    pads = [width - t for t in lengths]
    ids = np.full((len(inputs), width), model.config.text_config.pad_token_id, np.int32)
    rows = []
    for r, (inp, p) in enumerate(zip(inputs, pads, strict=True)):
        ids[r, p:] = inp.input_ids[0]
        emb = model.embed_inputs(inp.input_ids, **inp.arrays)
        rows.append(mx.pad(emb, [(0, 0), (p, 0), (0, 0)]) if p else emb)
    embeds = mx.concatenate(rows, axis=0) if len(rows) > 1 else rows[0]
    return PackedPrompts(ids, embeds, mx.array(pads, dtype=mx.int32) if any(pads) else None, lengths)


def token_budget(model, offset: int, prompt_tokens: int, max_tokens: int) -> tuple[int, bool]:
    """(tokens this row may generate, whether the context length is what limits it).

    InputError when the prompt itself does not fit the context (``offset`` tokens already cached).
    """
    context = model.config.text_config.max_position_embeddings
    if context is None:
        return max_tokens, False
    if offset + prompt_tokens > context:
        held = f" after the {offset} tokens already in the conversation" if offset else ""
        raise InputError(f"the prompt is {prompt_tokens} tokens{held}, but the model's context is {context} tokens")
    room = context - offset - prompt_tokens
    return min(max_tokens, room), room < max_tokens


def stop_conditions(model, request: GenerationRequest, tokenizer) -> tuple[set[int], tuple[str, ...]]:
    """Stop ids (the checkpoint's + the request's) and stop strings; InputError on ids outside the vocabulary."""
    check_stop_ids(model, request.stop_ids)
    if request.stop_strings and tokenizer is None:
        raise InputError("stop strings need a tokenizer (a processor) to read the text")
    return {*model_defaults(model).eos_token_ids, *request.stop_ids}, request.stop_strings


def check_drafting(request: GenerationRequest, rows: int, params: SamplingParams) -> bool:
    """Whether this run drafts; InputError where a drafter was asked for but cannot be used."""
    if not request.drafting:
        return False
    if rows != 1:
        raise InputError("speculative decoding runs one sequence at a time (set speculative='off' for a batch)")
    if params.repetition_penalty != 1.0:
        raise InputError("repetition_penalty is not supported with speculative decoding")
    if request.kv_bits is not None:
        raise InputError("speculative decoding needs an unquantized KV cache (kv_bits=None)")
    if request.sampler is not None or request.logits_processors:
        raise InputError("a custom sampler or logits processors cannot be used with speculative decoding")
    return True


class GenerationRun:
    """Prompts + request + caches → an iterator of (row, chunk); ``rows`` keep each row's tokens."""

    def __init__(self, model, processor, cache: list, inputs: list[PreparedInput], request: GenerationRequest,
                 progress: Callable[[int, int], None] | None = None, history: mx.array | None = None):
        self.model, self.cache, self.inputs, self.request = model, cache, inputs, request
        self.progress = progress
        tokenizer = tokenizer_of(processor)
        self.params = sampling_params(model, request, channel_token_ids(tokenizer)[0])
        stop_ids, stop_strings = stop_conditions(model, request, tokenizer)
        self.drafting = check_drafting(request, len(inputs), self.params)
        offset = cache_offset(cache)
        batch_tokens = sum(i.length for i in inputs) if len(inputs) > 1 else 0
        self.rows = []
        for inp in inputs:
            limit, by_context = token_budget(model, offset, inp.length, request.max_tokens)
            stats = GenerationStats(prompt_tokens=inp.length, batch_size=len(inputs), batch_prompt_tokens=batch_tokens)
            self.rows.append(RowDecoder(tokenizer, stop_ids, stop_strings, request.thinking, limit, by_context, stats))
        self.history = history
        self._in_flight: list[mx.array] = []

    def unconsumed(self) -> list[int]:
        """Tokens the model was fed that no row received (a step raised right after feeding them)."""
        return [t for y in self._in_flight for t in y.tolist()]

    def __iter__(self) -> Iterator[tuple[int, GenerationChunk]]:
        if self.request.seed is not None:
            mx.random.seed(self.request.seed)
        timer = Timer()
        stream = generation_stream()
        with wired_limit(self.model):
            packed = pack(self.model, self.inputs)
            logits, hidden = prefill(self.model, packed.ids, packed.embeds, self.cache, self.request.prefill_chunk,
                                     packed.left_padding, self.drafting, self.progress, stream)
            steps_needed = max(row.limit for row in self.rows)
            if steps_needed == 0:
                mx.eval(logits)  # nothing to sample, but the prefill is real work: time it honestly
            yield from run_rows(self._steps(logits, hidden, packed, steps_needed, stream), self.rows, timer,
                                lambda: kv_nbytes(self.cache) / 1e9)

    def _steps(self, logits, hidden, packed: PackedPrompts, n: int, stream) -> Iterator[list[list[int]]]:
        if self.drafting:
            from .speculative import speculative_steps

            r = self.request
            return speculative_steps(self.model, r.draft_model, self.cache, logits, hidden, self.params, n,
                                     r.num_draft_tokens, self.rows[0].stats, r.speculative, stream)
        history = self.history if self.history is not None else mx.array(packed.ids)
        sampler = TokenSampler(self.params, self.request, logits.shape[-1], history)
        return decode_steps(self.model, self.cache, logits, sampler, n, packed.left_padding, stream, self._in_flight)
