"""Generation engine: greedy parity with the reference, chunking, sampling, stops, thinking, batching, errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from mlx_lm.models.cache import QuantizedKVCache
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mlx_gemma4 import batch_generate, generate, stream_generate
from mlx_gemma4.errors import InputError
from mlx_gemma4.generation.prefill import chunk_bounds, prefill
from mlx_gemma4.generation.textstream import TextStream
from mlx_gemma4.loader import load
from mlx_gemma4.model.cache import make_cache
from tests.reference import PromptBuilder, reference_greedy

N = 16


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    return load(tiny_ckpt.path)[0]


@pytest.fixture(scope="module")
def prompts(tiny_ckpt):
    p = lambda seed: PromptBuilder(tiny_ckpt.ids, seed=seed)  # noqa: E731
    return {
        "text": p(31).text(20).build(),
        "image": p(32).text(3).image(6, 4).text(4).build(),
        "audio": p(33).text(3).audio(9000).text(3).build(),
        "mixed": p(34).text(3).image(5, 5).text(2).audio(7000).text(4).image(3, 7).text(2).build(),
    }


@pytest.mark.parametrize("case", ["text", "image", "audio", "mixed"])
def test_greedy_matches_reference(model, tiny_ckpt, prompts, case):
    out = generate(model, None, prompts[case], max_tokens=N, temperature=0, prefill_chunk=8)
    assert out.token_ids == reference_greedy(tiny_ckpt, prompts[case], N)
    assert out.stats.generation_tokens == N and out.stats.finish_reason == "length"
    assert out.stats.prompt_tokens == prompts[case].input_ids.shape[1]


def test_chunk_bounds_never_split_a_vision_block(tiny_ckpt, prompts):
    ids = prompts["mixed"].input_ids
    image = tiny_ckpt.ids["image"]
    bounds = chunk_bounds(ids, (image, tiny_ckpt.ids["video"]), 4)
    row = ids[0]
    assert bounds[0] == 0 and bounds[-1] == row.size
    assert all(not (row[b - 1] == image and row[b] == image) for b in bounds[1:-1])
    assert max(np.diff(bounds)) == 25  # the 5×5 image is one chunk even though chunks are 4


def test_chunked_prefill_equals_single_prefill(model, prompts):
    p = prompts["mixed"]
    emb = model.embed_inputs(**p.mlx_kwargs())
    results = []
    for chunk in (3, 10_000):
        cache = make_cache(model)
        logits, _ = prefill(model, p.input_ids, emb, cache, chunk)
        results.append(np.array(logits))
    assert np.abs(results[0] - results[1]).max() <= 1e-4
    a = generate(model, None, p, max_tokens=N, temperature=0, prefill_chunk=3)
    b = generate(model, None, p, max_tokens=N, temperature=0, prefill_chunk=10_000)
    assert a.token_ids == b.token_ids


def test_seed_reproducibility(model, prompts):
    kw = dict(max_tokens=12, temperature=1.0, top_k=50, top_p=0.9, min_p=0.01, repetition_penalty=1.1)
    a = generate(model, None, prompts["text"], seed=7, **kw)
    b = generate(model, None, prompts["text"], seed=7, **kw)
    c = generate(model, None, prompts["text"], seed=8, **kw)
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


def test_suppressed_tokens_never_sampled(model, prompts, tiny_ckpt):
    # The defaults come from generation_config.json: suppress_tokens are the eoi/eoa rows.
    assert set(model.generation_defaults.suppress_tokens) == {tiny_ckpt.ids["eoi"], tiny_ckpt.ids["eoa"]}
    out = generate(model, None, prompts["text"], max_tokens=40, temperature=50.0, top_k=0, top_p=1.0, seed=0)
    assert not {tiny_ckpt.ids["eoi"], tiny_ckpt.ids["eoa"]} & set(out.token_ids)


def test_stop_token_and_max_tokens(model, prompts):
    full = generate(model, None, prompts["text"], max_tokens=N, temperature=0)
    stop_at = full.token_ids[5]
    out = generate(model, None, prompts["text"], max_tokens=N, temperature=0, stop=[stop_at])
    assert out.token_ids == full.token_ids[: full.token_ids.index(stop_at)]
    assert out.stats.finish_reason == "stop"
    assert generate(model, None, prompts["text"], max_tokens=0).token_ids == []
    chunks = list(stream_generate(model, None, prompts["text"], max_tokens=3, temperature=0))
    assert chunks[-1].stats is not None and chunks[-1].stats.generation_tokens == 3
    assert [t for c in chunks for t in c.token_ids] == full.token_ids[:3]


def test_checkpoint_stop_ids_end_generation(model, prompts, tiny_ckpt, tmp_path):
    full = generate(model, None, prompts["text"], max_tokens=N, temperature=0)
    # Make the checkpoint's own stop list contain the 4th greedy token.
    stop_id = full.token_ids[3]
    model2 = load(_with_eos(tiny_ckpt.path, tmp_path, stop_id))[0]
    out = generate(model2, None, prompts["text"], max_tokens=N, temperature=0)
    assert out.token_ids == full.token_ids[:3] and out.stats.finish_reason == "stop"


def _with_eos(src, dst, stop_id):
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)
    cfg = json.loads((dst / "generation_config.json").read_text())
    cfg["eos_token_id"] = [1, 106, 50, stop_id]
    (dst / "generation_config.json").write_text(json.dumps(cfg))
    return dst


def test_kv_bits_quantizes_full_layers(model, prompts):
    cache = make_cache(model, kv_bits=8)
    kinds = model.config.text_config.layer_types
    assert all(isinstance(c, QuantizedKVCache) == (t == "full_attention") for c, t in zip(cache, kinds, strict=True))
    out = generate(model, None, prompts["image"], max_tokens=4, temperature=0, kv_bits=8)
    assert len(out.token_ids) == 4


def test_batch_equals_sequential(model, prompts):
    ps = [prompts["mixed"], prompts["text"], prompts["image"]]
    seq = [generate(model, None, p, max_tokens=N, temperature=0).token_ids for p in ps]
    bat = batch_generate(model, None, ps, max_tokens=N, temperature=0, prefill_chunk=8)
    assert [r.token_ids for r in bat] == seq


# -- thinking / text --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def word_tokenizer():
    """A word-level tokenizer whose channel markers have ids unlike the real ones (must be looked up)."""
    words = ["<pad>", "<eos>", "thought", "\n", "hello", "world", "think", "hard", "STOP", "answer",
             "<|channel>", "<channel|>"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<|channel>", "<channel|>", "<pad>", "<eos>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


def _run(tok, words, **kw):
    ids = [tok.get_vocab()[w] for w in words]
    s = TextStream(tok, **kw)
    pieces = [p for i in ids for p in s.add(i)] + s.finish()
    return s, pieces


def test_thinking_on_separates_thought(word_tokenizer):
    s, pieces = _run(word_tokenizer, ["<|channel>", "thought", "\n", "think", "hard", "<channel|>", "hello",
                                      "world"], thinking=True)
    assert s.thinking.split() == ["think", "hard"]
    assert s.answer.split() == ["hello", "world"]
    assert all("channel" not in p.text and not p.text.startswith("thought") for p in pieces)
    assert {p.channel for p in pieces} == {"thought", "answer"}


def test_thinking_off_never_leaks_and_never_empty(word_tokenizer):
    s, _ = _run(word_tokenizer, ["<|channel>", "thought", "\n", "think", "<channel|>", "answer"], thinking=False)
    assert s.answer.split() == ["answer"] and "think" not in s.answer
    s, _ = _run(word_tokenizer, ["<|channel>", "thought", "\n", "think", "hard", "<channel|>"], thinking=False)
    assert s.answer.split() == ["think", "hard"]  # the model only "thought": that is its answer


def test_stop_string_cuts_text(word_tokenizer):
    s, pieces = _run(word_tokenizer, ["hello", "STOP", "world"], stop_strings=["STOP"])
    assert s.stopped and "STOP" not in s.answer and "world" not in s.answer
    assert "".join(p.text for p in pieces) == s.answer


def test_text_stream_never_builds_the_whole_vocabulary(word_tokenizer, monkeypatch):
    """get_vocab() builds a dict of every token (about a second at 262K): one stream must not pay for it."""
    ids = [word_tokenizer.convert_tokens_to_ids(w) for w in ["<|channel>", "thought", "\n", "think", "<channel|>",
                                                              "answer"]]

    def refuse():
        raise AssertionError("get_vocab() called")

    monkeypatch.setattr(word_tokenizer, "get_vocab", refuse)
    s = TextStream(word_tokenizer, thinking=True)
    [s.add(i) for i in ids]
    s.finish()
    assert s.thinking.split() == ["think"] and s.answer.split() == ["answer"]


# -- bad arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [dict(max_tokens=-1), dict(top_p=0.0), dict(top_p=1.5), dict(stop=[3.5]), dict(temperature=-1),
     dict(top_k=-2), dict(kv_bits=3), dict(stop=["text"])],
)
def test_bad_arguments_raise_input_error(model, prompts, kwargs):
    with pytest.raises(InputError):
        list(stream_generate(model, None, prompts["text"], **{"max_tokens": 2, **kwargs}))


def test_images_to_a_checkpoint_without_vision(tiny_ckpt):
    no_vision = load(tiny_ckpt.path)[0]
    no_vision.config.vision_config = None  # as a text-only checkpoint's config reads
    with pytest.raises(InputError, match="vision"):
        generate(no_vision, None, "describe", images=[np.zeros((48, 48, 3), np.uint8)], max_tokens=2)
    with pytest.raises(InputError):
        generate(no_vision, None, "text without a processor", max_tokens=2)
