"""ChatSession: a second turn prefills only its new tokens and matches a from-scratch run."""

from __future__ import annotations

import mlx.core as mx
import numpy as np
import pytest

from mlx_gemma4 import ChatSession
from mlx_gemma4.loader import load
from mlx_gemma4.model.cache import cache_offset
from tests.reference import PromptBuilder


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return load(tiny_ckpt.path)[0]


def test_second_turn_prefills_only_new_tokens_and_matches_scratch(model, tiny_ckpt):
    first = PromptBuilder(tiny_ckpt.ids, seed=41).text(5).image(6, 4).text(4).build()
    # The second turn carries its own image: its arrays are only those of the new tokens.
    second = PromptBuilder(tiny_ckpt.ids, seed=42).text(3).image(3, 3).text(2).build()
    second.input_ids = second.input_ids[:, 1:]  # no second <bos>
    session = ChatSession(model, None, temperature=0, max_tokens=12, prefill_chunk=8)
    reply1 = session.ask(first)
    assert session.last_prefill_tokens == first.input_ids.shape[1]
    history = list(session.tokens)
    assert history[: first.input_ids.shape[1]] == first.input_ids[0].tolist()
    assert cache_offset(session.cache) == len(history)

    prefill_logits = []
    original = type(model).__call__

    def spy(self, *args, **kwargs):  # records the logits of every prefill chunk of the second turn
        out = original(self, *args, **kwargs)
        if kwargs.get("inputs_embeds") is not None:
            prefill_logits.append(out[0] if isinstance(out, tuple) else out)
        return out

    type(model).__call__ = spy
    try:
        reply2 = session.ask(second, max_tokens=12)
    finally:
        type(model).__call__ = original
    assert session.last_prefill_tokens == second.input_ids.shape[1]
    assert reply2.stats.prompt_tokens == second.input_ids.shape[1]

    # From scratch: the whole conversation as the session saw it, in one forward.
    all_ids = np.array([history + second.input_ids[0].tolist()])
    kw = {k: np.concatenate([getattr(first, k), getattr(second, k)]) for k in ("pixel_values", "image_position_ids")}
    scratch = model(all_ids, **kw, logits_to_keep=1)[0, -1]
    assert np.abs(np.array(prefill_logits[-1][0, -1]) - np.array(scratch)).max() <= 1e-4
    # And its greedy continuation equals the session's reply.
    cont = []
    ids = all_ids
    for _ in range(4):
        nxt = int(mx.argmax(model(ids, **kw, logits_to_keep=1)[0, -1]).item())
        cont.append(nxt)
        ids = np.concatenate([ids, [[nxt]]], axis=1)
    assert reply2.token_ids[:4] == cont
    assert reply1.token_ids and len(session.tokens) == cache_offset(session.cache)


def test_earlier_media_are_decoded_once_and_replies_do_not_change(tiny_ckpt, monkeypatch):
    """A chat re-renders its whole history each turn; the session's memo keeps each file decoded once."""
    from pathlib import Path

    import mlx_gemma4.processing.processor as processor_module
    from mlx_gemma4.processing.modalities import Modality

    examples = Path(__file__).resolve().parents[1] / "examples"
    model, processor = load(tiny_ckpt.path)
    decoded = []
    original = Modality.decode

    def counting(self, source, settings, tokens):
        decoded.append((self.name, str(source)))
        return original(self, source, settings, tokens)

    monkeypatch.setattr(Modality, "decode", counting)

    def conversation():
        session = ChatSession(model, processor, temperature=0, max_tokens=4)
        first = session.ask("Describe.", images=[examples / "chart.png"], audio=[examples / "speech.ogg"])
        second = session.ask("And this one?", images=[examples / "scene.jpg"])
        third = session.ask("Shorter.")
        return [r.token_ids for r in (first, second, third)]

    with_memo = conversation()
    assert sorted(decoded) == sorted([("image", str(examples / "chart.png")), ("audio", str(examples / "speech.ogg")),
                                      ("image", str(examples / "scene.jpg"))])
    decoded.clear()
    monkeypatch.setattr(processor_module, "content_key", lambda source: None)  # no memo: decoded every turn
    assert conversation() == with_memo
    assert len(decoded) == 2 + 3 + 3


def test_conversation_names_every_file_it_was_given(tiny_ckpt, tmp_path):
    """``conversation()`` puts each separately given source inline, so a saved chat says which file went where."""
    from pathlib import Path

    import soundfile

    from mlx_gemma4.processing import Processor

    loaded, processor = load(tiny_ckpt.path)
    chart = str(Path(__file__).resolve().parents[1] / "examples" / "chart.png")
    wave = np.zeros(1600, np.float32)
    soundfile.write(tmp_path / "beep.wav", wave, 16_000)
    session = ChatSession(loaded, processor, system="be brief", temperature=0, max_tokens=1)
    session.ask("what is this?", images=[chart])
    session.ask("and this?", audio=[wave, tmp_path / "beep.wav"])
    inline = {"role": "user", "content": [{"type": "image", "image": chart}, {"type": "text", "text": "own"}]}
    session.ask(inline)
    users = [m["content"] for m in session.conversation() if m["role"] == "user"]
    assert users[0][0] == {"type": "image", "path": chart}
    assert users[1][:2] == [{"type": "audio", "source": "<audio array (1600,)>"},
                            {"type": "audio", "path": str(tmp_path / "beep.wav")}]
    assert users[2] == inline["content"]
    assert session.messages[1]["content"][0] == {"type": "image"}  # the session's own record is unchanged
    # The first turn read back with its inline path renders the same prompt as the original call did.
    first = [session.conversation()[0], {"role": "user", "content": users[0]}]
    again = Processor.from_pretrained(tiny_ckpt.path)(first)
    original = processor([session.messages[0], session.messages[1]], images=[chart])
    assert again.input_ids.tolist() == original.input_ids.tolist()
