"""A ChatSession stays usable however a reply ends: the caller stops reading (break / close), or an
exception interrupts the decode or the prefill; and ``speculative="off"`` really turns drafting off."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_gemma4 import ChatSession, load
from mlx_gemma4.model.cache import cache_offset
from tests.reference import PromptBuilder


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return load(tiny_ckpt.path)[0]


@pytest.fixture(scope="module")
def turns(tiny_ckpt):
    # Turns longer than the sliding window (16): rolling a prefill back needs a rebuild, not a trim.
    first = PromptBuilder(tiny_ckpt.ids, seed=61).text(20).build().input_ids[0].tolist()
    second = PromptBuilder(tiny_ckpt.ids, seed=62).text(22).build().input_ids[0].tolist()[1:]
    return first, second


def assert_cache_matches_tokens(model, session):
    """The session's cache holds exactly its tokens: a next step equals a from-scratch forward.

    (It feeds a probe token into the cache: call it last.)
    """
    assert cache_offset(session.cache) == len(session.tokens)
    probe = 777
    step = np.array(model(mx.array([[probe]]), cache=session.cache)[0, -1])
    scratch = np.array(model(np.array([[*session.tokens, probe]]), logits_to_keep=1)[0, -1])
    assert np.abs(step - scratch).max() <= 1e-4


@pytest.mark.parametrize("read", [1, 5])
def test_break_mid_reply_keeps_the_session_usable(model, turns, read):
    first, second = turns
    session = ChatSession(model, None, temperature=0, max_tokens=12)
    got = []
    for chunk in session.send(first):
        got += chunk.token_ids
        if len(got) >= read:
            break  # the generator is dropped here and closed
    assert cache_offset(session.cache) == len(session.tokens)
    kept = session.tokens[len(first):]
    assert session.tokens[: len(first)] == first and kept == got[: len(kept)]
    reply = session.ask(second, max_tokens=6)
    assert reply.token_ids and reply.stats.prompt_tokens == len(second)
    assert_cache_matches_tokens(model, session)


def test_close_after_several_tokens(model, turns):
    first, second = turns
    session = ChatSession(model, None, temperature=0, max_tokens=12)
    gen = session.send(first)
    for _ in range(4):
        next(gen)
    gen.close()
    session.ask(second, max_tokens=4)
    assert_cache_matches_tokens(model, session)


class Boom(RuntimeError):
    pass


def test_exception_mid_decode_keeps_the_session_usable(model, turns):
    first, second = turns
    session = ChatSession(model, None, temperature=0, max_tokens=12)
    calls = []

    def explode_later(tokens, logits):
        calls.append(1)
        if len(calls) == 4:
            raise Boom("injected")
        return logits

    with pytest.raises(Boom):
        list(session.send(first, logits_processors=[explode_later]))
    assert cache_offset(session.cache) == len(session.tokens) > len(first)
    session.ask(second, max_tokens=4)
    assert_cache_matches_tokens(model, session)


def test_exception_mid_prefill_rolls_the_turn_back(model, turns):
    first, second = turns
    session = ChatSession(model, None, temperature=0, max_tokens=5, prefill_chunk=4)
    session.ask(first)
    before = list(session.tokens)

    def interrupt(done, total):
        if done >= 12:
            raise Boom("stop button")

    with pytest.raises(Boom):
        list(session.send(second, progress=interrupt))
    assert session.tokens == before and cache_offset(session.cache) == len(before)
    again = session.ask(second, max_tokens=4)
    fresh = ChatSession(model, None, temperature=0, max_tokens=5, prefill_chunk=4)
    fresh.ask(first)
    assert again.token_ids == fresh.ask(second, max_tokens=4).token_ids
    assert_cache_matches_tokens(model, session)


def test_messages_session_keeps_a_reply_cut_short(tiny_ckpt):
    model, processor = load(tiny_ckpt.path)
    session = ChatSession(model, processor, temperature=0, max_tokens=8)
    for _ in session.send("Hello world , what is this ?"):
        break
    assert [m["role"] for m in session.messages] == ["user", "assistant"]
    reply = session.ask("what is this ?", max_tokens=3)
    assert reply.stats.prompt_tokens > 0 and len(session.messages) == 4
    assert_cache_matches_tokens(model, session)


class CountingDrafter:
    """Proposes token 0 every time and counts how often it was asked."""

    def __init__(self):
        self.calls = 0

    def draft(self, target, token, hidden, shared_kv, position, k):
        self.calls += 1
        return mx.zeros((1, k), dtype=mx.int32)


def test_speculative_off_in_a_session_never_drafts(model, turns):
    first, second = turns
    drafter = CountingDrafter()
    session = ChatSession(model, None, temperature=0, max_tokens=6, draft_model=drafter)
    off = session.ask(first, speculative="off")
    assert drafter.calls == 0 and off.stats.draft_tokens == 0
    on = session.ask(second, speculative="on")
    assert drafter.calls > 0 and on.stats.draft_tokens > 0
    quiet = ChatSession(model, None, temperature=0, max_tokens=6, draft_model=drafter, speculative="off")
    calls = drafter.calls
    quiet.ask(first)
    assert drafter.calls == calls
