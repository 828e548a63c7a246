"""GenerationRequest and the entry points: one validation for every option, ids checked against the
vocabulary, the context length enforced, single media sources, hooks, per-row batch stats, honest stats."""

from __future__ import annotations

import math
import re

import mlx.core as mx
import numpy as np
import pytest

from mlx_gemma4 import (
    ChatSession,
    GenerationRequest,
    InputError,
    batch_generate,
    generate,
    stream_batch,
    stream_generate,
)
from mlx_gemma4.loader import load
from tests.reference import PromptBuilder

BAD_OPTIONS = [
    dict(max_tokens=-1), dict(max_tokens=2.5), dict(max_tokens=True), dict(temperature=-0.1),
    dict(temperature=float("nan")), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-2), dict(top_k=1.5),
    dict(min_p=-0.1), dict(min_p=1.5), dict(repetition_penalty=0), dict(repetition_penalty=-1.0),
    dict(seed=-1), dict(seed=2**64), dict(seed=1.5), dict(stop=[3.5]), dict(stop=[-4]), dict(speculative="maybe"),
    dict(num_draft_tokens=0), dict(kv_bits=3), dict(max_kv_size=0), dict(kv_bits=8, max_kv_size=64),
    dict(prefill_chunk=0), dict(sampler="greedy"), dict(logits_processors=[1]), dict(thinking="yes"),
]


@pytest.fixture(scope="module")
def loaded(tiny_ckpt):
    return load(tiny_ckpt.path)


@pytest.fixture(scope="module")
def model(loaded):
    return loaded[0]


@pytest.fixture(scope="module")
def prompt(tiny_ckpt):
    return PromptBuilder(tiny_ckpt.ids, seed=51).text(12).build()


def _entry_points(model, prompt):
    ids = prompt.input_ids[0].tolist()
    return {
        "stream_generate": lambda kw: list(stream_generate(model, None, ids, **kw)),
        "generate": lambda kw: generate(model, None, ids, **kw),
        "batch_generate": lambda kw: batch_generate(model, None, [ids, ids], **kw),
        "stream_batch": lambda kw: list(stream_batch(model, None, [ids], **kw)),
        "ChatSession": lambda kw: ChatSession(model, None, **kw),
        "ChatSession.send": lambda kw: list(ChatSession(model, None).send(ids, **kw)),
        "GenerationRequest": lambda kw: GenerationRequest(**kw),
    }


@pytest.mark.parametrize("bad", BAD_OPTIONS, ids=lambda d: ",".join(f"{k}={v!r}" for k, v in d.items()))
def test_every_invalid_option_fails_the_same_way_everywhere(model, prompt, bad):
    messages = {}
    for name, call in _entry_points(model, prompt).items():
        with pytest.raises(InputError) as err:
            call({"max_tokens": 2, **bad})
        messages[name] = str(err.value)
    assert len(set(messages.values())) == 1, messages
    assert next(iter(bad)) in next(iter(messages.values()))  # the message names the option


def test_request_is_frozen_and_replace_validates():
    req = GenerationRequest(max_tokens=5, stop="END")
    assert req.stop == ("END",)
    with pytest.raises(AttributeError):
        req.max_tokens = 6  # type: ignore[misc]
    assert req.replace(max_tokens=7).max_tokens == 7 and req.max_tokens == 5
    with pytest.raises(InputError, match="top_p"):
        req.replace(top_p=2)
    with pytest.raises(TypeError, match="unknown"):
        req.replace(max_token=3)


def test_request_and_keywords_combine(model, prompt):
    ids = prompt.input_ids[0].tolist()
    req = GenerationRequest(max_tokens=3, temperature=0)
    a = generate(model, None, ids, request=req)
    b = generate(model, None, ids, request=req, max_tokens=5)
    assert len(a.token_ids) == 3 and b.token_ids[:3] == a.token_ids and len(b.token_ids) == 5


# -- token ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", [999_999_999, -5, 262_144])
def test_out_of_range_ids_are_input_errors_everywhere(model, bad_id):
    ids = [2, bad_id]
    with pytest.raises(InputError, match=str(bad_id)):
        generate(model, None, ids, max_tokens=2)
    with pytest.raises(InputError, match=str(bad_id)):
        list(stream_generate(model, None, np.array(ids), max_tokens=2))
    with pytest.raises(InputError, match=str(bad_id)):
        batch_generate(model, None, [[2, 3], ids], max_tokens=2)
    with pytest.raises(InputError, match=str(bad_id)):
        list(ChatSession(model, None).send(ids, max_tokens=2))
    with pytest.raises(InputError, match=str(bad_id)):
        model(ids)  # the forward itself, given host ids
    with pytest.raises(InputError, match=str(bad_id)):
        model(np.array([ids]))
    if bad_id >= 0:
        with pytest.raises(InputError, match="stop token id"):
            generate(model, None, [2, 3], max_tokens=2, stop=[bad_id])


# -- context length -----------------------------------------------------------------------------------


def force(token: int):
    """A logits processor that makes ``token`` the only choice (no stop token can end a run early)."""
    return lambda tokens, logits: mx.where(mx.arange(logits.shape[-1]) == token, 0.0, -mx.inf)[None]


@pytest.fixture
def short_context(tiny_ckpt):
    model = load(tiny_ckpt.path)[0]
    model.config.text_config.max_position_embeddings = 20
    return model


def test_context_length_refuses_and_clamps(short_context, tiny_ckpt):
    m = short_context
    with pytest.raises(InputError, match="21 tokens.*context is 20"):
        generate(m, None, [2] * 21, max_tokens=1)
    out = generate(m, None, [2] * 15, max_tokens=50, logits_processors=[force(777)])
    assert len(out.token_ids) == 5 and out.stats.finish_reason == "context"
    rows = batch_generate(m, None, [[2] * 15, [2] * 18], max_tokens=50, logits_processors=[force(777)])
    assert [len(r.token_ids) for r in rows] == [5, 2]
    assert [r.stats.finish_reason for r in rows] == ["context", "context"]
    under = generate(m, None, [2] * 15, max_tokens=3, temperature=0)
    assert under.stats.finish_reason == "length"


def test_context_length_counts_the_chat_history(short_context, tiny_ckpt):
    session = ChatSession(short_context, None, max_tokens=4, logits_processors=[force(777)])
    session.ask([2] * 10)  # 10 + 3 tokens in the cache (the last generated one is never fed)
    with pytest.raises(InputError, match="already in the conversation"):
        session.ask([2] * 10)
    reply = session.ask([3] * 2, max_tokens=50)
    assert reply.stats.finish_reason == "context" and len(reply.token_ids) == 20 - 13 - 2
    assert len(session.tokens) <= 20


# -- media arguments ----------------------------------------------------------------------------------


def test_a_single_image_path_is_one_image(loaded):
    from pathlib import Path

    chart = str(Path(__file__).resolve().parents[1] / "examples" / "chart.png")
    model, processor = loaded
    one = generate(model, processor, "What is this ?", images=chart, max_tokens=3, temperature=0)
    listed = generate(model, processor, "What is this ?", images=[chart], max_tokens=3, temperature=0)
    assert one.token_ids == listed.token_ids and one.stats.prompt_tokens == listed.stats.prompt_tokens
    assert generate(model, processor, "What is this ?", images=Path(chart), max_tokens=1).stats.prompt_tokens == (
        one.stats.prompt_tokens)


# -- hooks --------------------------------------------------------------------------------------------


def test_callers_sampler_and_logits_processors_are_used(model, prompt):
    ids = prompt.input_ids[0].tolist()
    forced = 777
    seen = []

    def only(tokens, logits):
        seen.append(tokens.shape)
        return mx.where(mx.arange(logits.shape[-1]) == forced, 0.0, -mx.inf)[None]

    out = generate(model, None, ids, max_tokens=4, logits_processors=[only])
    assert out.token_ids == [forced] * 4
    assert seen[0] == (len(ids),) and seen[1] == (len(ids) + 1,)  # mlx-lm style: the row's history, 1-D
    picked = generate(model, None, ids, max_tokens=3, sampler=lambda lg: mx.full((lg.shape[0],), 5, mx.int32))
    assert picked.token_ids == [5, 5, 5]


# -- batch streaming and per-row stats ----------------------------------------------------------------


def test_stream_batch_rows_finish_on_their_own_with_their_own_stats(model, tiny_ckpt):
    short = PromptBuilder(tiny_ckpt.ids, seed=52).text(4).build().input_ids[0].tolist()
    long = PromptBuilder(tiny_ckpt.ids, seed=53).text(30).build().input_ids[0].tolist()
    alone = generate(model, None, short, max_tokens=8, temperature=0)
    stop_at = alone.token_ids[2]
    events = list(stream_batch(model, None, [short, long], max_tokens=8, temperature=0, stop=[stop_at]))
    rows = {r: [c for rr, c in events if rr == r] for r in (0, 1)}
    assert rows[0][-1].stats.finish_reason == "stop"
    last_of_row0 = max(i for i, (r, _) in enumerate(events) if r == 0)
    assert all(c.stats is None for r, c in events[:last_of_row0] if r == 0)
    ids0 = [t for c in rows[0] for t in c.token_ids]
    cut = alone.token_ids.index(stop_at)
    assert ids0 == alone.token_ids[:cut]
    s0, s1 = rows[0][-1].stats, rows[1][-1].stats
    assert (s0.prompt_tokens, s1.prompt_tokens) == (len(short), len(long))
    ids1 = [t for c in rows[1] for t in c.token_ids]
    assert s0.generation_tokens == cut + 1 and s1.generation_tokens == len(ids1) + (s1.finish_reason == "stop")
    assert s0.batch_size == s1.batch_size == 2 and s0.batch_prompt_tokens == len(short) + len(long)
    results = batch_generate(model, None, [short, long], max_tokens=8, temperature=0)
    assert [r.stats.prompt_tokens for r in results] == [len(short), len(long)]


# -- stats --------------------------------------------------------------------------------------------


def test_zero_tokens_give_honest_stats(model, prompt):
    out = generate(model, None, prompt.input_ids[0].tolist(), max_tokens=0)
    s = out.stats
    assert out.token_ids == [] and s.generation_tokens == 0 and s.finish_reason == "length"
    assert s.prefill_s > 0 and s.time_to_first_token_s == s.prefill_s
    assert math.isfinite(s.prompt_tps) and s.prompt_tps == pytest.approx(s.prompt_tokens / s.prefill_s)
    assert s.generation_tps == 0.0 and s.decode_s == 0.0


def test_cli_stats_line_reads_generation_stats():
    from mlx_gemma4.cli.report import stats_line as _stats_line

    from mlx_gemma4.generation.stats import GenerationStats

    s = GenerationStats(prompt_tokens=7, prefill_s=0.5, time_to_first_token_s=0.5, generation_tokens=11,
                        decode_s=2.0, finish_reason="length")
    line = _stats_line(s)
    figures = [float(x) for x in re.findall(r"([\d.]+) tok/s", line)]
    assert figures == [round(s.prompt_tps, 1), round(s.generation_tps, 1)] == [14.0, 5.0]
    zero = _stats_line(GenerationStats(prompt_tokens=7, prefill_s=0.5, time_to_first_token_s=0.5,
                                       finish_reason="length"))
    # Nothing generated: the prefill's rate only, no time to a first token that never came.
    assert [float(x) for x in re.findall(r"([\d.]+) tok/s", zero)] == [14.0] and "TTFT" not in zero
