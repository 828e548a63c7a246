"""Prompt ids and model inputs vs. the transformers ``Gemma4UnifiedProcessor``.

Both sides load the same stand-in checkpoint folder (tokenizer, chat template, processor config written
by transformers' own ``save_pretrained``); the reference renders the template, expands placeholders
from its own image processor / feature extractor and tokenizes. Images given to the reference are PIL
images decoded as the port decodes them; audio is the port's 16 kHz waveform (the reference does not
resample arrays).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlx_gemma4.convert.standin_tokenizer import TEXT_SPECIAL_IDS, special_ids, write_standin_processor
from PIL import Image

from mlx_gemma4.processing import Processor, load_audio, load_image
from tests.reference import reference_processor

BOI, IMG, EOI, BOA, AUD, EOA = 255999, 258880, 258882, 256000, 258881, 258883


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("standin")
    write_standin_processor(path)
    return path


@pytest.fixture(scope="module")
def ref(folder):
    return reference_processor(folder)


@pytest.fixture(scope="module")
def proc(folder):
    return Processor.from_pretrained(folder)


def image(h: int, w: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def wave(samples: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.5, 0.5, samples).astype(np.float32)


def ref_inputs(ref, messages, images=(), audio=(), *, thinking=False, budget=70, text=None):
    """What the reference processor makes of the same conversation (numpy)."""
    if text is None:
        text = ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=thinking)
    return ref(
        text=text,
        images=list(images) or None,
        audio=list(audio) or None,
        add_special_tokens=False,
        return_tensors="np",
        images_kwargs={"max_soft_tokens": budget},
    )


def assert_same(got, want) -> None:
    """Token ids exactly equal; arrays equal when present (images here are at target size or PIL-decoded)."""
    np.testing.assert_array_equal(got.input_ids, want["input_ids"])
    assert got.input_ids.dtype == np.int64 and got.input_ids.shape[0] == 1
    for key in ("image_position_ids", "input_features", "input_features_mask"):
        if key in want:
            np.testing.assert_array_equal(got[key], want[key])
        else:
            assert key not in got
    if "pixel_values" in want:
        assert got.pixel_values.shape == want["pixel_values"].shape
        assert np.abs(got.pixel_values - want["pixel_values"]).max() <= 2 / 255 + 1e-6
    else:
        assert "pixel_values" not in got


SYSTEM = {"role": "system", "content": "You are a good model ."}


@pytest.mark.parametrize("thinking", [False, True])
def test_text_only(ref, proc, thinking):
    msgs = [{"role": "user", "content": "Hello world , what is this ?"}]
    got = proc(msgs, enable_thinking=thinking)
    assert_same(got, ref_inputs(ref, msgs, thinking=thinking))
    assert set(got) == {"input_ids"}
    assert got.input_ids[0, 0] == 2  # <bos> from the template


@pytest.mark.parametrize("thinking", [False, True])
def test_system_and_user(ref, proc, thinking):
    msgs = [SYSTEM, {"role": "user", "content": [{"type": "text", "text": "  Tell me about the sun .  "}]}]
    got = proc(msgs, enable_thinking=thinking)
    assert_same(got, ref_inputs(ref, msgs, thinking=thinking))
    ids = got.input_ids[0].tolist()
    assert (TEXT_SPECIAL_IDS["<|think|>"] in ids) == thinking


@pytest.mark.parametrize("thinking", [False, True])
def test_one_image(ref, proc, thinking):
    img = image(336, 432)  # at target size for budget 70: pixel values must match exactly too
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe this picture ."}]}]
    got = proc(msgs, images=[img], enable_thinking=thinking, image_budget=70)
    want = ref_inputs(ref, msgs, [img], thinking=thinking)
    assert_same(got, want)
    np.testing.assert_array_equal(got.pixel_values, want["pixel_values"])
    ids = got.input_ids[0].tolist()
    start = ids.index(BOI)
    assert ids[start + 1 : start + 64] == [IMG] * 63 and ids[start + 64] == EOI  # 7×9 = 63 soft tokens


def test_two_images_of_different_sizes(ref, proc):
    a, b = image(200, 300, 1), image(1000, 37, 2)
    msgs = [{"role": "user", "content": [
        {"type": "text", "text": "compare"}, {"type": "image"}, {"type": "text", "text": "and"}, {"type": "image"}]}]
    got = proc(msgs, images=[a, b], image_budget=140)
    assert_same(got, ref_inputs(ref, msgs, [a, b], budget=140))
    assert got.pixel_values.shape == (2, 140, 6912)
    assert got.num_soft_tokens_per_image == [int(n) for n in (got.image_position_ids[..., 0] >= 0).sum(axis=1)]


def test_image_and_audio(ref, proc):
    img, clip = image(480, 640, 3), wave(16100)
    msgs = [SYSTEM, {"role": "user", "content": [
        {"type": "image"}, {"type": "audio"}, {"type": "text", "text": "What does the voice say about the picture ?"}]}]
    got = proc(msgs, images=[img], audio=[clip], image_budget=70)
    assert_same(got, ref_inputs(ref, msgs, [img], [clip]))
    assert got.input_features.shape == (1, 26, 640) and got.input_features_mask.all()
    ids = got.input_ids[0].tolist()
    start = ids.index(BOA)
    assert ids[start + 1 : start + 27] == [AUD] * 26 and ids[start + 27] == EOA


def test_audio_from_files_at_other_rates(ref, proc, tmp_path):
    import soundfile as sf

    paths = []
    for i, (rate, seconds) in enumerate(((8000, 1), (44100, 2))):
        p = tmp_path / f"a{i}.wav"
        sf.write(p, np.random.default_rng(i).uniform(-0.5, 0.5, rate * seconds + 123), rate, subtype="PCM_16")
        paths.append(p)
    msgs = [{"role": "user", "content": [{"type": "audio", "path": str(paths[0])}, {"type": "text", "text": "and"},
                                         {"type": "audio", "path": str(paths[1])}]}]
    got = proc(msgs)
    assert_same(got, ref_inputs(ref, msgs, audio=[load_audio(p) for p in paths]))
    assert got.input_features.shape[0] == 2 and not got.input_features_mask[0].all()  # padded to the longer clip


@pytest.mark.parametrize("thinking", [False, True])
def test_multi_turn_with_earlier_answer(ref, proc, thinking):
    img = image(288, 480, 4)
    msgs = [
        SYSTEM,
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this picture ?"}]},
        {"role": "assistant", "content": "<|channel>thought\nlook at it<channel|>A red house and a tree ."},
        {"role": "user", "content": "What color is the sky ?"},
        {"role": "assistant", "content": [{"type": "text", "text": "Blue ."}]},
        {"role": "user", "content": [{"type": "text", "text": "And this one ?"}, {"type": "image"}]},
    ]
    got = proc(msgs, images=[img, image(100, 100, 5)], enable_thinking=thinking, image_budget=70)
    want = ref_inputs(ref, msgs, [img, image(100, 100, 5)], thinking=thinking)
    assert_same(got, want)
    assert TEXT_SPECIAL_IDS["<|channel>"] not in got.input_ids[0, :-10].tolist()  # old thought stripped


def test_long_audio_becomes_consecutive_blocks(ref, proc):
    long = wave(95 * 16000 + 77, 6)
    msgs = [{"role": "user", "content": [{"type": "audio"}, {"type": "text", "text": "transcribe"}]}]
    got = proc(msgs, audio=[long])
    assert got.audio_frames_per_clip == [750, 750, 750, 126]
    pieces = [long[i : i + 480_000] for i in range(0, len(long), 480_000)]
    text = ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    want = ref_inputs(ref, msgs, audio=pieces, text=text.replace("<|audio|>", "<|audio|>" * len(pieces)))
    assert_same(got, want)
    assert got.input_ids[0].tolist().count(BOA) == 4


def test_apply_chat_template_tokenize_path(ref, proc):
    """Also equal to the reference's own one-call path (media inline in the messages)."""
    img, clip = image(336, 432, 7), wave(5000, 7)
    msgs = [{"role": "user", "content": [{"type": "image", "image": img}, {"type": "audio", "audio": clip},
                                         {"type": "text", "text": "describe"}]}]
    want = ref.apply_chat_template(
        msgs, tokenize=True, return_dict=True, add_generation_prompt=True, return_tensors="np",
        processor_kwargs={"images_kwargs": {"max_soft_tokens": 70}},
    )
    got = proc(msgs, image_budget=70)
    assert_same(got, want)
    np.testing.assert_array_equal(got.pixel_values, want["pixel_values"])


def test_inline_sources_and_images_argument_agree(proc, tmp_path):
    path = tmp_path / "x.png"
    image(200, 200, 8).save(path)
    inline = [{"role": "user", "content": [{"type": "image", "path": str(path)}, {"type": "text", "text": "hi"}]}]
    separate = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    a, b = proc(inline, image_budget=70), proc(separate, images=str(path), image_budget=70)
    np.testing.assert_array_equal(a.input_ids, b.input_ids)
    np.testing.assert_array_equal(a.pixel_values, b.pixel_values)


def test_default_budget_from_processor_config(tmp_path, proc):
    folder = tmp_path / "ckpt"
    write_standin_processor(folder)
    cfg = json.loads((folder / "processor_config.json").read_text())
    cfg["image_processor"]["max_soft_tokens"] = 140
    (folder / "processor_config.json").write_text(json.dumps(cfg))
    custom = Processor.from_pretrained(folder)
    assert custom.config.image_budget == 140 and proc.config.image_budget == 280
    ref = reference_processor(folder)
    img = image(300, 500, 9)
    msgs = [{"role": "user", "content": [{"type": "image"}]}]
    got = custom(msgs, images=[img])
    text = ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert_same(got, ref(text=text, images=[img], add_special_tokens=False, return_tensors="np"))
    assert got.pixel_values.shape == (1, 140, 6912)


def test_default_budget_is_280(ref, proc):
    img = image(480, 640, 10)
    msgs = [{"role": "user", "content": [{"type": "image"}]}]
    got = proc(msgs, images=[img])
    text = ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert_same(got, ref(text=text, images=[img], add_special_tokens=False, return_tensors="np"))
    assert got.pixel_values.shape == (1, 280, 6912) and got.num_soft_tokens_per_image == [266]


def test_exif_jpeg_through_processor(ref, proc, tmp_path):
    path = tmp_path / "rot.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6
    image(432, 336, 11).save(path, quality=92, exif=exif)  # stored sideways; upright is 336×432
    msgs = [{"role": "user", "content": [{"type": "image", "path": str(path)}]}]
    got = proc(msgs, image_budget=70)
    want = ref_inputs(ref, msgs, [load_image(path)])
    assert_same(got, want)
    np.testing.assert_array_equal(got.pixel_values, want["pixel_values"])


def test_generation_prompt_switch(ref, proc):
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    got = proc(msgs, add_generation_prompt=False)
    text = ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
    want = ref(text=text, add_special_tokens=False, return_tensors="np")
    np.testing.assert_array_equal(got.input_ids, want["input_ids"])
    assert proc.render(msgs, add_generation_prompt=False) == text


def test_raw_prompt_string(ref, proc):
    img = image(336, 432, 12)
    got = proc("<|turn>user\n<|image|>describe<turn|>\n<|turn>model\n", images=[img], image_budget=70)
    want = ref(text="<bos><|turn>user\n<|image|>describe<turn|>\n<|turn>model\n", images=[img],
               add_special_tokens=False, return_tensors="np", images_kwargs={"max_soft_tokens": 70})
    assert_same(got, want)


def test_special_tokens_read_from_tokenizer(proc):
    sp = proc.special
    for name, token in [("bos", "<bos>"), ("eos", "<eos>"), ("pad", "<pad>"), ("sot", "<|turn>"), ("eot", "<turn|>"),
                        ("image", "<|image|>"), ("boi", "<|image>"), ("eoi", "<image|>"), ("audio", "<|audio|>"),
                        ("boa", "<|audio>"), ("eoa", "<audio|>"), ("video", "<|video|>"),
                        ("tool_response", "<|tool_response>")]:
        assert getattr(sp, name) == special_ids()[token], name
    assert (sp.think, sp.soc, sp.eoc) == tuple(TEXT_SPECIAL_IDS[t] for t in ("<|think|>", "<|channel>", "<channel|>"))
    assert proc.stop_token_ids == [1, 106, 50]


def test_inputs_work_as_keyword_arguments(proc):
    got = proc([{"role": "user", "content": [{"type": "image", "image": image(50, 50)}]}], image_budget=70)
    def model(input_ids, pixel_values=None, image_position_ids=None, input_features=None, input_features_mask=None):
        return input_ids.shape, pixel_values.shape, image_position_ids.shape, input_features
    assert model(**got) == ((1, got.input_ids.shape[1]), (1, 70, 6912), (1, 70, 2), None)
    assert list(got) == ["input_ids", "pixel_values", "image_position_ids"]


def test_processing_never_imports_mlx(folder):
    code = (
        "import sys, numpy as np\n"
        "from mlx_gemma4.processing import Processor\n"
        f"p = Processor.from_pretrained({str(folder)!r})\n"
        "p([{'role': 'user', 'content': [{'type': 'audio', 'audio': np.zeros(700, np.float32)}]}])\n"
        "bad = sorted(m for m in sys.modules if m == 'mlx' or m.startswith(('mlx.', 'mlx_lm')))\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_repository_examples(ref, proc):
    """The example files decode and give the reference's ids (EXIF note upright, speech resampled)."""
    root = Path(__file__).resolve().parents[1] / "examples"
    names = ["chart.png", "scene.jpg", "rotated_note.jpg"]
    msgs = [{"role": "user", "content": [*({"type": "image", "path": str(root / n)} for n in names),
                                         {"type": "audio", "path": str(root / "speech.ogg")},
                                         {"type": "text", "text": "Describe the chart ."}]}]
    got = proc(msgs, image_budget=140)
    images = [load_image(root / n) for n in names]
    assert images[2].size == (360, 480)  # upright
    assert_same(got, ref_inputs(ref, msgs, images, [load_audio(root / "speech.ogg")], budget=140))
    assert 4.0 < got.input_features_mask.sum() * 640 / 16000 < 8.0
