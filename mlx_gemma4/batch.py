"""Several prompts generated together: left padding, per-row RoPE positions, per-row stops.

Each prompt (with its own images/audio) is embedded on its own, then the rows are left-padded to a
common length; the model masks the padding keys and starts each row's positions at its first real
token, so a row's tokens are the same as when it is generated alone (greedy).
"""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx
import numpy as np

from .errors import InputError
from .generation import (
    GenerationResult,
    _tokenizer,
    check_max_tokens,
    decode_steps,
    prepare_input,
    stop_conditions,
)
from .prefill import DEFAULT_CHUNK, kv_nbytes, make_cache, prefill
from .sampling import model_defaults, resolve_params
from .stats import GenerationStats, Timer
from .textstream import TextStream, channel_token_ids


def batch_generate(
    model,
    processor,
    prompts: Sequence,
    *,
    images: Sequence[Sequence] | None = None,
    audio: Sequence[Sequence] | None = None,
    max_tokens: int = 256,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    min_p: float | None = None,
    repetition_penalty: float | None = None,
    seed: int | None = None,
    stop: Sequence[str | int] = (),
    thinking: bool = False,
    kv_bits: int | None = None,
    max_kv_size: int | None = None,
    prefill_chunk: int = DEFAULT_CHUNK,
) -> list[GenerationResult]:
    """Generate for every prompt at once; one result per prompt (statistics shared by the batch)."""
    if not prompts:
        raise InputError("batch_generate needs at least one prompt")
    max_tokens = check_max_tokens(max_tokens)
    n = len(prompts)
    images = list(images) if images is not None else [()] * n
    audio = list(audio) if audio is not None else [()] * n
    if len(images) != n or len(audio) != n:
        raise InputError("images/audio must hold one list per prompt")
    params = resolve_params(model_defaults(model), temperature, top_k, top_p, min_p, repetition_penalty)
    tokenizer = _tokenizer(processor)
    stop_ids, stop_strings = stop_conditions(model, stop, tokenizer)
    soc, _ = channel_token_ids(tokenizer)
    if not thinking and soc is not None:
        params = params.with_suppressed([soc])
    if seed is not None:
        mx.random.seed(seed)

    timer = Timer()
    inputs = [prepare_input(model, processor, p, im, au, thinking) for p, im, au in zip(prompts, images, audio,
                                                                                          strict=True)]
    lengths = [i.input_ids.shape[1] for i in inputs]
    width = max(lengths)
    pads = [width - t for t in lengths]
    pad_id = model.config.text_config.pad_token_id
    ids = np.full((n, width), pad_id, np.int32)
    rows = []
    for r, (inp, p) in enumerate(zip(inputs, pads, strict=True)):
        ids[r, p:] = inp.input_ids[0]
        emb = model.embed_inputs(inp.input_ids, **inp.arrays)
        rows.append(mx.pad(emb, [(0, 0), (p, 0), (0, 0)]) if p else emb)
    embeds = mx.concatenate(rows, axis=0)
    left_padding = mx.array(pads, dtype=mx.int32) if any(pads) else None

    cache = make_cache(model, kv_bits, max_kv_size)
    logits, _ = prefill(model, ids, embeds, cache, prefill_chunk, left_padding=left_padding)
    history = None
    if params.repetition_penalty != 1.0:
        history = mx.array(ids[:, -params.repetition_context:])  # padding ids in short rows: harmless, rare

    streams = [TextStream(tokenizer, stop_strings, thinking) for _ in range(n)]
    tokens: list[list[int]] = [[] for _ in range(n)]
    finish = ["length"] * n
    done = [False] * n
    stats = GenerationStats(prompt_tokens=sum(lengths))
    first_at = None
    for step in decode_steps(model, cache, logits, params, max_tokens, history, left_padding):
        if first_at is None:
            first_at = stats.prefill_s = stats.time_to_first_token_s = timer.elapsed()
        for r, tok in enumerate(step):
            if done[r]:
                continue
            stats.generation_tokens += 1
            if tok in stop_ids:
                finish[r], done[r] = "stop", True
                continue
            tokens[r].append(tok)
            streams[r].add(tok)
            if streams[r].stopped:
                finish[r], done[r] = "stop", True
        if all(done):
            break
    if first_at is not None:
        stats.decode_s = timer.elapsed() - first_at
    stats.peak_memory_gb = timer.peak_gb()
    stats.kv_cache_gb = kv_nbytes(cache) / 1e9
    stats.finish_reason = "stop" if all(f == "stop" for f in finish) else "length"
    results = []
    for r in range(n):
        streams[r].finish()
        row_stats = GenerationStats(**{**stats.__dict__, "finish_reason": finish[r]})
        results.append(GenerationResult(streams[r].answer, streams[r].thinking, tokens[r], row_stats))
    return results
