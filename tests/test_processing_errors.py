"""Bad input → ``InputError`` with a one-line message that names the file (never a bare PIL/soundfile error)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
import soundfile as sf
from mlx_gemma4.convert.standin_tokenizer import write_standin_processor
from PIL import Image

from mlx_gemma4.errors import InputError
from mlx_gemma4.processing import Processor, load_audio, load_image, process_audio, process_image


def assert_input_error(fn, *args, match: str, name: str | None = None, **kwargs) -> InputError:
    """``fn`` raises InputError whose single-line message contains ``match`` (and ``name``)."""
    with pytest.raises(InputError, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    if name is not None:
        assert name in message
    return info.value


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width``×``height`` pixels but holds one tiny IDAT: a decompression-bomb header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


# ---------------------------------------------------------------- images


def test_missing_image(tmp_path):
    path = tmp_path / "nope.jpg"
    assert_input_error(process_image, path, match="no such file", name=str(path))


def test_urls_are_not_fetched():
    assert_input_error(process_image, "https://example.com/cat.jpg", match="URLs are not fetched", name="example.com")
    assert_input_error(load_audio, "http://example.com/a.wav", match="URLs are not fetched", name="example.com")


def test_zero_byte_image(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert_input_error(process_image, path, match="empty file", name=str(path))
    assert_input_error(process_image, b"", match="empty")


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("these are not pixels\n")
    assert_input_error(load_image, path, match="not an image", name=str(path))


def test_directory_is_not_an_image(tmp_path):
    assert_input_error(load_image, tmp_path, match="not a file", name=str(tmp_path))


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(buf, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert_input_error(process_image, path, match="truncated or corrupt", name=str(path))


def test_truncated_png(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(buf, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[:2000])
    assert_input_error(process_image, path, match="truncated or corrupt", name=str(path))


def test_decompression_bomb_rejected_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(100_000, 100_000))  # 10 gigapixels declared in a 70-byte file
    err = assert_input_error(process_image, path, match="over the limit", name=str(path))
    assert "max_pixels" in str(err)


def test_pixel_limit_can_be_raised(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (1000, 800), (10, 20, 30)).save(path)
    assert_input_error(process_image, path, 70, max_pixels=500_000, match="over the limit", name=str(path))
    assert process_image(path, 70, max_pixels=800_000).num_soft_tokens > 0
    # Beyond Pillow's own hard limit (~179 MP) our limit still decides: the header passes, the data is bad.
    bomb = tmp_path / "huge.png"
    bomb.write_bytes(png_header_only(20_000, 10_000))
    assert_input_error(process_image, bomb, max_pixels=300_000_000, match="truncated or corrupt", name=str(bomb))
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's global setting restored


def test_pil_image_over_limit():
    assert_input_error(process_image, Image.new("RGB", (100, 100)), max_pixels=5000, match="over the limit")


@pytest.mark.parametrize("budget", [0, 100, 281, 2240, -70, "280", 280.0, True])
def test_unknown_image_budget(budget):
    assert_input_error(process_image, Image.new("RGB", (64, 64)), budget, match="budget")


def test_wrong_image_type():
    assert_input_error(load_image, 12345, match="file path, bytes or a PIL image")


# ---------------------------------------------------------------- audio


def test_missing_audio(tmp_path):
    path = tmp_path / "nope.wav"
    assert_input_error(load_audio, path, match="no such file", name=str(path))


def test_zero_byte_audio(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    assert_input_error(load_audio, path, match="empty file", name=str(path))


def test_audio_file_with_no_samples(tmp_path):
    path = tmp_path / "silent.wav"
    sf.write(path, np.zeros((0,), np.float32), 16000)
    assert_input_error(load_audio, path, match="no audio samples", name=str(path))
    assert_input_error(load_audio, np.zeros((0,), np.float32), match="no audio samples")


# Unsupported containers, corrupt and truncated files: tests/test_bad_inputs.py.


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_audio(bad, tmp_path):
    x = np.zeros(1000, np.float32)
    x[500] = bad
    path = tmp_path / "bad.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    assert_input_error(load_audio, path, match="NaN or infinite", name=str(path))
    assert_input_error(load_audio, x, match="NaN or infinite")


def test_long_audio_without_splitting(tmp_path):
    path = tmp_path / "long.wav"
    sf.write(path, np.zeros(31 * 16000, np.float32), 16000, subtype="FLOAT")
    err = assert_input_error(process_audio, path, split=False, match="longer than the 30 s", name=str(path))
    assert "31.0 s" in str(err) and "split_audio=True" in str(err)


def test_bad_audio_arrays():
    assert_input_error(load_audio, np.zeros((2, 3, 4), np.float32), match="1-D or")
    assert_input_error(load_audio, (np.zeros(10, np.float32), 0), match="sampling rate")
    assert_input_error(load_audio, np.array(["a", "b"]), match="numeric")
    assert_input_error(load_audio, 3.5, match="file path, bytes")


# ---------------------------------------------------------------- through the Processor


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    folder = tmp_path_factory.mktemp("standin")
    write_standin_processor(folder)
    return Processor.from_pretrained(folder)


def _image_message(**item):
    return [{"role": "user", "content": [{"type": "image", **item}, {"type": "text", "text": "describe this"}]}]


def test_processor_reports_the_bad_file(processor, tmp_path):
    path = tmp_path / "broken.png"
    path.write_text("not a png")
    assert_input_error(processor, _image_message(path=str(path)), match="not an image", name=str(path))
    wav = tmp_path / "nan.wav"
    sf.write(wav, np.full(100, np.nan, np.float32), 16000, subtype="FLOAT")
    msgs = [{"role": "user", "content": [{"type": "audio", "audio": str(wav)}]}]
    assert_input_error(processor, msgs, match="NaN", name=str(wav))


def test_processor_unknown_budget(processor):
    assert_input_error(processor, _image_message(image=Image.new("RGB", (64, 64))), image_budget=300, match="budget")
    # Also without any image: a typo in the setting never passes silently.
    assert_input_error(processor, [{"role": "user", "content": "hi"}], image_budget=300, match="budget")


def test_processor_long_audio_limit(processor):
    msgs = [{"role": "user", "content": [{"type": "audio"}]}]
    long = np.zeros(40 * 16000, np.float32)
    assert processor(msgs, audio=[long]).audio_frames_per_clip == [750, 250]
    assert_input_error(processor, msgs, audio=[long], split_audio=False, match="longer than the 30 s")


def test_processor_media_count_mismatch(processor):
    assert_input_error(processor, _image_message(), match="fewer image sources")
    msgs = [{"role": "user", "content": "hello"}]
    assert_input_error(processor, msgs, images=[Image.new("RGB", (8, 8))], match="not referenced")
    # A placeholder typed into the text is a placeholder without an image.
    assert_input_error(processor, [{"role": "user", "content": "look <|image|>"}], match="image placeholder")


def test_processor_bad_messages(processor):
    assert_input_error(processor, [], match="empty")
    assert_input_error(processor, [{"content": "no role"}], match="role")
    assert_input_error(processor, {"role": "user", "content": "hi"}, match="list of")
    assert_input_error(processor, [{"role": "user", "content": [{"type": "gif"}]}], match="unsupported content")
    assert_input_error(processor, [{"role": "user", "content": [{"type": "video"}]}], match="fewer video sources")
    assert_input_error(processor, [{"role": "user", "content": [{"type": "text"}]}], match="string 'text'")
    assert_input_error(processor, _image_message(image="a.png", path="b.png"), match="not several")
