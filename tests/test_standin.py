"""The stand-in tokenizer of random checkpoints: visible text for every id, real special ids, Gemma 4 prompts."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlx_gemma4.convert.standin_tokenizer import (
    MEDIA_TOKEN_FIELDS,
    TEXT_SPECIAL_IDS,
    build_tokenizer,
    special_ids,
    standin_vocab,
    write_standin_processor,
)
from PIL import Image
from tokenizers import Tokenizer

from mlx_gemma4.presets import SMALL_VOCAB, SMALL_VOCAB_MEDIA_IDS
from mlx_gemma4.processing import Processor
from tests.reference import reference_processor

REAL_MEDIA_IDS = {"<|image>": 255999, "<|audio>": 256000, "<|image|>": 258880, "<|audio|>": 258881,
                  "<image|>": 258882, "<audio|>": 258883, "<|video|>": 258884}
WHITESPACE = {"▁", "\n", "\n\n", "\t", "\r"}  # the only pieces that decode to blank text


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("standin12b")
    write_standin_processor(path)  # no config: the real 12B vocabulary and ids
    return path


@pytest.fixture(scope="module")
def auto_tokenizer(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def test_random_ids_of_the_12b_vocabulary_decode_to_visible_text(auto_tokenizer):
    ids = random.Random(0).sample(range(262144), 1000)
    specials = set(special_ids().values())
    for i in ids:
        text = auto_tokenizer.decode([i])
        assert text and text != "<unk>", i
        assert text.strip() or auto_tokenizer.convert_ids_to_tokens(i) in WHITESPACE, i
    words = auto_tokenizer.decode([i for i in ids if i not in specials]).split()
    assert len(words) > 500 and all(w.isprintable() for w in words)  # space-separated gibberish


def test_every_id_is_a_distinct_printable_piece(folder):
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    assert tok.get_vocab_size() == 262144
    texts = tok.decode_batch([[i] for i in range(262144)], skip_special_tokens=False)
    blank = [i for i, t in enumerate(texts) if not t.strip()]
    assert {tok.id_to_token(i) for i in blank} <= WHITESPACE and len(blank) == len(WHITESPACE)
    assert all(t.replace("\n", "").replace("\t", "").replace("\r", "").isprintable() for t in texts)
    assert len(set(tok.get_vocab())) == 262144


def test_special_tokens_at_their_real_ids(auto_tokenizer, folder):
    vocab = auto_tokenizer.get_vocab()
    for token, i in {**TEXT_SPECIAL_IDS, **REAL_MEDIA_IDS, "\n": 107}.items():
        assert vocab[token] == i, token
    assert (auto_tokenizer.bos_token_id, auto_tokenizer.eos_token_id, auto_tokenizer.pad_token_id) == (2, 1, 0)
    assert auto_tokenizer.image_token_id == 258880 and auto_tokenizer.boi_token == "<|image>"
    sp = Processor.from_pretrained(folder).special
    assert (sp.think, sp.soc, sp.eoc, sp.sot, sp.eot, sp.tool_response) == (98, 100, 101, 105, 106, 50)


def test_media_ids_follow_the_config_in_a_small_vocabulary():
    config = {"text_config": {"vocab_size": SMALL_VOCAB}, **SMALL_VOCAB_MEDIA_IDS}
    tok = build_tokenizer(config)
    assert tok.get_vocab_size() == SMALL_VOCAB
    for token, (field, _) in MEDIA_TOKEN_FIELDS.items():
        assert tok.token_to_id(token) == config[field], token
    assert all(tok.decode([i], skip_special_tokens=False) for i in range(SMALL_VOCAB))


def test_impossible_vocabularies_are_refused():
    with pytest.raises(ValueError, match="outside the vocabulary"):
        standin_vocab(1024, special_ids())  # the real media ids do not fit
    with pytest.raises(ValueError, match="too small"):
        standin_vocab(200, TEXT_SPECIAL_IDS)


@pytest.mark.parametrize("text", ["Hello world, what's this?", "  two  spaces\nand a tab\there",
                                  "déjà vu — 日本語 😀", "<|turn>user\nhi<turn|>"])
def test_text_round_trips(auto_tokenizer, text):
    ids = auto_tokenizer.encode(text, add_special_tokens=False)
    assert auto_tokenizer.unk_token_id not in ids
    assert auto_tokenizer.decode(ids) == text


def test_chat_template_renders_a_user_turn_with_an_image(folder):
    ref = reference_processor(folder)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": " Describe this. "}]}]
    text = ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == "<bos><|turn>user\n<|image|>Describe this.<turn|>\n<|turn>model\n<|channel>thought\n<channel|>"
    thinking = ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert thinking == ("<bos><|turn>system\n<|think|><turn|>\n"
                        "<|turn>user\n<|image|>Describe this.<turn|>\n<|turn>model\n")
    img = Image.fromarray(np.zeros((336, 432, 3), np.uint8))  # 7 × 9 soft tokens at a budget of 70
    ids = ref(text=text, images=[img], add_special_tokens=False, images_kwargs={"max_soft_tokens": 70})["input_ids"][0]
    start = ids.index(255999)
    assert ids[start + 1 : start + 64] == [258880] * 63 and ids[start + 64] == 258882
    user, model, thought = ref.tokenizer.convert_tokens_to_ids(["user", "model", "thought"])
    assert ids[:5] == [2, 105, user, 107, 255999]  # <bos><|turn>user\n<|image>
    assert ids[-9:] == [106, 107, 105, model, 107, 100, thought, 107, 101]  # <turn|>\n<|turn>model\n<|channel>…


def test_chat_template_renders_tools_and_their_results(folder):
    ref = reference_processor(folder)
    params = {"type": "object", "properties": {"city": {"type": "string"}}}
    tools = [{"type": "function", "function": {"name": "weather", "description": "Sky", "parameters": params}}]
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Rome?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "weather", "arguments": {"city": "Rome", "days": 2, "hourly": True}}}]},
            {"role": "tool", "name": "weather", "content": "sunny"}]
    text = ref.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<bos><|turn>system\nBe brief."
        '<|tool>declaration:weather{description:<|"|>Sky<|"|>,parameters:{properties:{city:{type:'
        '<|"|>string<|"|>}},type:<|"|>object<|"|>}}<tool|><turn|>\n<|turn>user\nRome?<turn|>\n<|turn>model\n'
        '<|tool_call>call:weather{city:<|"|>Rome<|"|>,days:2,hourly:true}<tool_call|>'
        '<|tool_response>response:weather{value:<|"|>sunny<|"|>}<tool_response|>'
    )  # the model continues its own turn after a tool response


def test_synth_then_generate_prints_visible_text(tmp_path):
    """The README's first command: a tiny random checkpoint answers with visible gibberish (real subprocesses)."""
    gemma4 = [sys.executable, "-m", "mlx_gemma4.cli.app"]
    out = tmp_path / "tiny"
    subprocess.run([*gemma4, "synth", str(out), "--geometry", "tiny"], check=True, capture_output=True)
    run = subprocess.run([*gemma4, "generate", "--model", str(out), "--temp", "0", "-n", "8", "Describe this."],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    answer = run.stdout.strip()
    assert answer and answer.isprintable() and "<unk>" not in answer, run.stdout
    assert sum(c.isalpha() for c in answer) >= 8


def test_mlx_lm_wrapper_streams_the_same_text(folder):
    from mlx_lm.tokenizer_utils import SPMStreamingDetokenizer, load

    wrapper = load(folder)
    ids = random.Random(1).sample(range(262144), 40) + [107] + random.Random(2).sample(range(300, 262144), 10)
    detok = wrapper.detokenizer
    assert isinstance(detok, SPMStreamingDetokenizer)  # recognised as SentencePiece-style, like Gemma's own
    detok.reset()
    for i in ids:
        detok.add_token(i)
    detok.finalize()
    assert detok.text == wrapper.decode(ids)
    thought = wrapper.convert_tokens_to_ids("thought")
    assert (wrapper.think_start_tokens, wrapper.think_end_tokens) == ((100, thought), (101,))


def test_processor_reads_moved_media_ids(tmp_path):
    """Media ids come from the tokenizer, never guessed: a small test vocabulary moves them all."""
    write_standin_processor(tmp_path, {"text_config": {"vocab_size": SMALL_VOCAB}, **SMALL_VOCAB_MEDIA_IDS})
    sp = Processor.from_pretrained(tmp_path).special
    got = {f: getattr(sp, f) for f in ("boi", "eoi", "image", "video", "boa", "eoa", "audio")}
    assert got == {"boi": 1000, "eoi": 1001, "image": 1002, "video": 1003, "boa": 1004, "eoa": 1005, "audio": 1006}
