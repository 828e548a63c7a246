"""Generation: prompt → image-safe chunked prefill → decode loop → streamed text and statistics.

The decode loop keeps the device busy: step n + 1 is queued (``mx.async_eval``) before token n is
read back and detokenised, so the only host sync per token is reading the token itself.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import mlx.core as mx
import numpy as np

from .errors import InputError
from .prefill import DEFAULT_CHUNK, kv_nbytes, make_cache, prefill
from .sampling import SamplingParams, apply_processors, make_processors, make_sampler, model_defaults, resolve_params
from .stats import GenerationStats, Timer
from .textstream import ANSWER, TextStream, channel_token_ids

ARRAY_KEYS = (
    "pixel_values", "image_position_ids", "input_features", "input_features_mask",
    "pixel_values_videos", "video_position_ids",
)


@dataclass
class GenerationChunk:
    """One streamed step: new text (possibly empty while the detokenizer waits), its token ids, and on
    the last chunk only, the statistics."""

    text: str
    token_ids: list[int]
    channel: str = ANSWER
    stats: GenerationStats | None = None


@dataclass
class GenerationResult:
    """A whole generation: the answer, the thought text (thinking mode), all token ids, statistics."""

    text: str
    thinking: str
    token_ids: list[int]
    stats: GenerationStats


@dataclass
class PreparedInput:
    """Token ids (1, T) and the multimodal arrays that go with them."""

    input_ids: np.ndarray
    arrays: dict[str, Any] = field(default_factory=dict)


# -- inputs ---------------------------------------------------------------------------------------


def _tokenizer(processor):
    return getattr(processor, "tokenizer", processor) if processor is not None else None


def _user_message(text: str, n_images: int, n_audio: int) -> list[dict]:
    content = [{"type": "image"}] * n_images + [{"type": "audio"}] * n_audio + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]


def prepare_input(model, processor, prompt, images: Sequence = (), audio: Sequence = (), thinking: bool = False):
    """Normalise a prompt: text (one user turn), chat messages, or pre-tokenised ids/arrays → PreparedInput."""
    images, audio = list(images or ()), list(audio or ())
    if images and model.config.vision_config is None:
        raise InputError("this checkpoint has no vision embedder: it cannot take images")
    if audio and model.config.audio_config is None:
        raise InputError("this checkpoint has no audio embedder: it cannot take audio")
    if isinstance(prompt, PreparedInput):
        return prompt
    if isinstance(prompt, (str, list)) and not (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
        if processor is None:
            raise InputError("text or chat messages need a processor (tokenizer); pass token ids instead")
        messages = _user_message(prompt, len(images), len(audio)) if isinstance(prompt, str) else prompt
        enc = processor(messages, images=images or None, audio=audio or None, enable_thinking=thinking)
        if not isinstance(enc, dict):  # the processor returns an object with array attributes
            enc = {k: getattr(enc, k, None) for k in ("input_ids", *ARRAY_KEYS)}
        return _from_mapping(enc)
    if images or audio:
        raise InputError("pass images/audio with text or messages; pre-tokenised input carries its own arrays")
    if isinstance(prompt, dict):
        return _from_mapping(prompt)
    if hasattr(prompt, "input_ids"):
        return _from_mapping({k: getattr(prompt, k, None) for k in ("input_ids", *ARRAY_KEYS)})
    if isinstance(prompt, (list, tuple, np.ndarray, mx.array)):
        return _from_mapping({"input_ids": prompt})
    raise InputError(f"unsupported prompt type {type(prompt).__name__}")


def _from_mapping(d: dict) -> PreparedInput:
    ids = np.asarray(d.get("input_ids"))
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] == 0 or not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"input_ids must be one non-empty row of integers, got shape {ids.shape} ({ids.dtype})")
    return PreparedInput(ids.astype(np.int32), {k: d[k] for k in ARRAY_KEYS if d.get(k) is not None})


def stop_conditions(model, stop, tokenizer) -> tuple[set[int], tuple[str, ...]]:
    """Stop ids (checkpoint's + user ints) and stop strings (user strs); InputError on anything else."""
    ids = set(model_defaults(model).eos_token_ids)
    strings = []
    for s in [stop] if isinstance(stop, (str, int)) else list(stop or ()):
        if isinstance(s, bool) or not isinstance(s, (str, int)):
            raise InputError(f"stop entries must be strings or token ids, got {type(s).__name__}: {s!r}")
        if isinstance(s, int):
            ids.add(s)
        elif s:
            if tokenizer is None:
                raise InputError("stop strings need a tokenizer (a processor) to read the text")
            strings.append(s)
    return ids, tuple(strings)


def check_max_tokens(max_tokens) -> int:
    """max_tokens must be a non-negative integer."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 0:
        raise InputError(f"max_tokens must be an integer >= 0, got {max_tokens!r}")
    return max_tokens


# -- decoding -------------------------------------------------------------------------------------


def decode_steps(
    model,
    cache: list,
    logits: mx.array,
    params: SamplingParams,
    max_tokens: int,
    history: mx.array | None = None,
    left_padding: mx.array | None = None,
) -> Iterator[list[int]]:
    """Sample from ``logits`` (B, V), then step the model token by token: yields each step's ids (one per row)."""
    sampler = make_sampler(params)
    procs = make_processors(params, logits.shape[-1])
    need_history = params.repetition_penalty != 1.0
    b = logits.shape[0]
    state = {"history": history if need_history else None}
    if need_history and state["history"] is None:
        state["history"] = mx.zeros((b, 0), dtype=mx.int32)

    def sample(lg: mx.array) -> mx.array:
        lg = apply_processors(procs, state["history"], lg)
        y = sampler(lg).astype(mx.int32)
        if need_history:
            state["history"] = mx.concatenate([state["history"], y[:, None]], axis=1)
        return y

    def step(y: mx.array) -> mx.array:
        return sample(model(y[:, None], cache=cache, logits_to_keep=1, left_padding=left_padding)[:, -1])

    if max_tokens == 0:
        return
    y = sample(logits)
    mx.async_eval(y)
    n = 0
    while True:
        n += 1
        nxt = None
        if n < max_tokens:
            nxt = step(y)
            mx.async_eval(nxt)  # queued before this token is read back and detokenised
        yield y.tolist()
        if nxt is None:
            return
        y = nxt


def run_generation(
    model,
    tokenizer,
    cache: list,
    inp: PreparedInput,
    params: SamplingParams,
    *,
    max_tokens: int,
    stop_ids: set[int],
    stop_strings: tuple[str, ...],
    thinking: bool,
    history: mx.array | None = None,
    prefill_chunk: int = DEFAULT_CHUNK,
    draft_model=None,
    num_draft_tokens: int = 3,
    speculative: str = "on",
    seed: int | None = None,
    emitted: list[int] | None = None,
) -> Iterator[GenerationChunk]:
    """Prefill ``inp`` into ``cache`` (which may already hold earlier turns) and stream the continuation.

    ``emitted`` (if given) receives every generated token id, including a final stop token.
    """
    if seed is not None:
        mx.random.seed(seed)
    soc, _ = channel_token_ids(tokenizer)
    if not thinking and soc is not None:
        params = params.with_suppressed([soc])  # thinking off: the model cannot open a thought block
    timer = Timer()
    embeds = model.embed_inputs(inp.input_ids, **inp.arrays)
    logits, hidden = prefill(model, inp.input_ids, embeds, cache, prefill_chunk, want_hidden=draft_model is not None)
    if history is None and params.repetition_penalty != 1.0:
        history = mx.array(inp.input_ids[:, -params.repetition_context:])
    stats = GenerationStats(prompt_tokens=int(inp.input_ids.shape[1]))
    if draft_model is not None:
        from .speculative import speculative_steps

        steps = speculative_steps(
            model, draft_model, cache, logits, hidden, params, max_tokens, num_draft_tokens, stats, speculative
        )
    else:
        steps = decode_steps(model, cache, logits, params, max_tokens, history)
    text = TextStream(tokenizer, stop_strings, thinking)
    out = emitted if emitted is not None else []
    first_at = None
    finish = "length"
    for tokens in steps:
        if first_at is None:
            first_at = timer.elapsed()
            stats.prefill_s = stats.time_to_first_token_s = first_at
        done = False
        for tok in tokens:
            out.append(tok)
            stats.generation_tokens += 1
            if tok in stop_ids:
                finish, done = "stop", True
                break
            pieces = text.add(tok)
            if text.stopped:
                finish, done = "stop", True
            if pieces:
                for i, p in enumerate(pieces):
                    yield GenerationChunk(p.text, [tok] if i == 0 else [], p.channel)
            else:
                yield GenerationChunk("", [tok], text.channel)
            if done or stats.generation_tokens >= max_tokens:
                done = True
                break
        if done:
            break
    for p in text.finish():
        yield GenerationChunk(p.text, [], p.channel)
    if first_at is not None:
        stats.decode_s = timer.elapsed() - first_at
    stats.finish_reason = finish
    stats.peak_memory_gb = timer.peak_gb()
    stats.kv_cache_gb = kv_nbytes(cache) / 1e9
    yield GenerationChunk("", [], ANSWER, stats)


def stream_generate(
    model,
    processor,
    prompt_or_messages,
    *,
    images: Sequence = (),
    audio: Sequence = (),
    max_tokens: int = 256,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    seed: int | None = None,
    stop: Sequence[str | int] | str | int = (),
    thinking: bool = False,
    draft_model=None,
    num_draft_tokens: int = 3,
    speculative: str = "on",
    kv_bits: int | None = None,
    max_kv_size: int | None = None,
    prefill_chunk: int = DEFAULT_CHUNK,
) -> Iterator[GenerationChunk]:
    """Stream a generation: text pieces with their token ids, then a last chunk carrying the statistics.

    ``prompt_or_messages``: a text (one user turn), chat messages, or pre-tokenised input (a token
    list, or an object/dict with ``input_ids`` and optional pixel/audio arrays). Sampling settings
    left as None come from the checkpoint's generation config; ``temperature=0`` is greedy.
    """
    max_tokens = check_max_tokens(max_tokens)
    params = resolve_params(model_defaults(model), temperature, top_k, top_p, min_p, repetition_penalty)
    tokenizer = _tokenizer(processor)
    stop_ids, stop_strings = stop_conditions(model, stop, tokenizer)
    if num_draft_tokens < 1 or speculative not in ("on", "auto"):
        raise InputError("num_draft_tokens must be >= 1 and speculative 'on' or 'auto'")
    inp = prepare_input(model, processor, prompt_or_messages, images, audio, thinking)
    cache = make_cache(model, kv_bits, max_kv_size)
    yield from run_generation(
        model, tokenizer, cache, inp, params, max_tokens=max_tokens, stop_ids=stop_ids,
        stop_strings=stop_strings, thinking=thinking, prefill_chunk=prefill_chunk, draft_model=draft_model,
        num_draft_tokens=num_draft_tokens, speculative=speculative, seed=seed,
    )


def collect(chunks: Iterator[GenerationChunk]) -> GenerationResult:
    """Gather a chunk stream into one result."""
    answer, thought, ids, stats = [], [], [], None
    for c in chunks:
        (thought if c.channel != ANSWER else answer).append(c.text)
        ids.extend(c.token_ids)
        stats = c.stats or stats
    return GenerationResult("".join(answer), "".join(thought), ids, stats)


def generate(model, processor, prompt_or_messages, **kwargs) -> GenerationResult:
    """The whole generation at once (same arguments as ``stream_generate``)."""
    return collect(stream_generate(model, processor, prompt_or_messages, **kwargs))
