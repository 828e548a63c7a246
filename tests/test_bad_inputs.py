"""The bad-input suite: every bad image, audio file, model folder, CLI argument or chat command gives one
clear line naming the file or argument (``InputError``/``ModelLoadError`` in the API, exit status 2 and one
stderr line from the ``gemma4`` command), quickly and without reading a huge file into memory."""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from mlx_gemma4.cli.app import app
from mlx_gemma4.convert.standin_tokenizer import write_standin_processor
from PIL import Image
from typer.testing import CliRunner

from mlx_gemma4.errors import Gemma4Error, InputError, ModelLoadError
from mlx_gemma4.processing import Processor, load_audio, load_image, process_audio, process_image
from tests.test_processing_errors import png_header_only

GEMMA4 = str(Path(sys.executable).with_name("gemma4"))


def one_line_error(fn, *args, error=InputError, match: str, name: str | None, **kwargs) -> str:
    """``fn`` raises ``error`` whose message is one line containing ``match`` and ``name``."""
    with pytest.raises(error, match=match) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    if name is not None:
        assert name in message
    return message


def noise_bytes(fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 300, 3), dtype=np.uint8)).save(buf, fmt, **save)
    return buf.getvalue()


def tone(seconds: float, rate: int = 16000) -> np.ndarray:
    return (0.3 * np.sin(np.arange(int(seconds * rate)) / 7)).astype(np.float32)


def audio_bytes(fmt: str, seconds: float = 2.0, **kw) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(seconds), 16000, format=fmt, **kw)
    return buf.getvalue()


# ---------------------------------------------------------------- images: (file name, bytes or None, match)

IMAGE_FILES = {
    "missing": ("nope.jpg", None, "no such file"),
    "empty": ("empty.jpg", b"", "empty file"),
    "text named jpg": ("notes.jpg", b"these are not pixels\n", "not an image"),
    "truncated jpeg": ("cut.jpg", noise_bytes("JPEG")[:3000], "truncated or corrupt"),
    "truncated png": ("cut.png", noise_bytes("PNG")[:2000], "truncated or corrupt"),
    "png header only": ("header.png", noise_bytes("PNG")[:33], "not an image|truncated"),
    "bomb header": ("bomb.png", png_header_only(100_000, 100_000), "over the limit"),
    "audio named png": ("song.png", audio_bytes("WAV"), "not an image"),
    "random bytes": ("noise.webp", np.random.default_rng(1).bytes(4096), "not an image"),
    "gif header only": ("cut.gif", b"GIF89a\x10\x00\x10\x00", "not an image|truncated"),
}


@pytest.mark.parametrize("case", IMAGE_FILES)
def test_bad_image_file(case, tmp_path):
    name, data, match = IMAGE_FILES[case]
    path = tmp_path / name
    if data is not None:
        path.write_bytes(data)
    one_line_error(process_image, path, match=match, name=str(path))


IMAGE_SOURCES = {
    "http url": ("http://example.com/cat.jpg", "URLs are not fetched"),
    "https url in capitals": ("HTTPS://example.com/cat.jpg", "URLs are not fetched"),
    "empty bytes": (b"", "empty image data"),
    "not a source": (12345, "file path, bytes or a PIL image"),
    "16-bit above range": (Image.fromarray(np.array([[0, 70_000]], np.int32)), "outside 0..65535"),
    "float above 255": (Image.fromarray(np.array([[0.0, 300.0]], np.float32)), "outside 0..255"),
    "float NaN": (Image.fromarray(np.array([[0.0, np.nan]], np.float32)), "NaN"),
    "negative ints": (Image.fromarray(np.array([[-1, 5]], np.int32)), "outside 0..255"),
}


@pytest.mark.parametrize("case", IMAGE_SOURCES)
def test_bad_image_source(case):
    source, match = IMAGE_SOURCES[case]
    name = source if isinstance(source, str) else None
    one_line_error(load_image, source, match=match, name=name)


def test_image_folder_and_fifo(tmp_path):
    one_line_error(load_image, tmp_path, match="folder, not a file", name=str(tmp_path))
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    one_line_error(load_image, fifo, match="not a regular file", name=str(fifo))  # never blocks on a FIFO


def test_image_budget_and_pixel_limit():
    one_line_error(process_image, Image.new("RGB", (64, 64)), 300, match="budget 300", name=None)
    one_line_error(process_image, Image.new("RGB", (100, 100)), max_pixels=5000, match="over the limit", name=None)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("suffix,loader,match", [(".png", load_image, "not an image"),
                                                 (".wav", load_audio, "not audio that can be decoded")])
def test_huge_sparse_file_is_refused_from_its_header(suffix, loader, match, tmp_path):
    """A 30 GB file is refused after reading its header: quickly, without its size in memory."""
    path = tmp_path / f"huge{suffix}"
    with open(path, "wb") as f:
        f.truncate(30 * 2**30)  # sparse: no disk space used
    before, start = _peak_rss_mb(), time.monotonic()
    one_line_error(loader, path, match=match, name=str(path))
    assert time.monotonic() - start < 10  # generous; reading 30 GB would take minutes or fail
    assert _peak_rss_mb() - before < 200


# ---------------------------------------------------------------- audio


def _corrupt_mp3() -> bytes:
    """An MP3's first frame header followed by junk, as a half-overwritten download looks."""
    return audio_bytes("MP3")[:200] + np.random.default_rng(0).bytes(5000)


def _truncated_wav() -> bytes:
    full = audio_bytes("WAV", 2.0, subtype="PCM_16")  # header declares 2 s
    return full[: 44 + 2 * 10_720]  # 0.67 s present


AUDIO_FILES = {
    "missing": ("nope.wav", None, "no such file"),
    "empty": ("empty.wav", b"", "empty file"),
    "text named wav": ("notes.wav", b"this is a text file, not a RIFF header\n" * 4, "not audio"),
    "mp4 container": ("clip.m4a", b"\x00\x00\x00\x20ftypM4A \x00\x00\x00\x00M4A mp42isom" + b"\x00" * 64, "not audio"),
    "webm container": ("movie.webm", b"\x1a\x45\xdf\xa3" + b"\x00" * 60, "not audio"),
    "corrupt mp3": ("broken.mp3", _corrupt_mp3(), "not audio that can be decoded"),
    "random bytes mp3": ("noise.mp3", np.random.default_rng(2).bytes(5000), "not audio"),
    "truncated wav": ("cut.wav", _truncated_wav(), r"truncated WAV: its header declares 2\.00 s .* holds 0\.67 s"),
    "truncated mp3": ("cut.mp3", audio_bytes("MP3", 3.0)[:2400], "truncated audio"),
    "truncated flac": ("cut.flac", audio_bytes("FLAC")[:3000], "corrupt data"),
    "image named wav": ("photo.wav", noise_bytes("PNG"), "not audio"),
}


@pytest.mark.parametrize("case", AUDIO_FILES)
def test_bad_audio_file(case, tmp_path, capfd):
    name, data, match = AUDIO_FILES[case]
    path = tmp_path / name
    if data is not None:
        path.write_bytes(data)
    message = one_line_error(load_audio, path, match=match, name=str(path))
    assert "does not exist" not in message
    assert capfd.readouterr().err == ""  # no decoder notes (mpg123 writes them straight to fd 2)


def test_bad_audio_content(tmp_path):
    nan = tmp_path / "nan.wav"
    sf.write(nan, np.full(100, np.nan, np.float32), 16000, subtype="FLOAT")
    one_line_error(load_audio, nan, match="NaN or infinite", name=str(nan))
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(0, np.float32), 16000)
    one_line_error(load_audio, silent, match="no audio samples", name=str(silent))
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(31 * 16000, np.float32), 16000, subtype="FLOAT")
    one_line_error(process_audio, long, split=False, match="longer than the 30 s", name=str(long))
    one_line_error(load_audio, tmp_path, match="folder, not a file", name=str(tmp_path))


AUDIO_SOURCES = {
    "url": ("https://example.com/a.wav", "URLs are not fetched"),
    "empty bytes": (b"", "empty audio data"),
    "3-D array": (np.zeros((2, 3, 4), np.float32), "1-D or"),
    "zero rate": ((np.zeros(10, np.float32), 0), "sampling rate"),
    "strings": (np.array(["a", "b"]), "numeric"),
    "a float": (3.5, "file path, bytes"),
}


@pytest.mark.parametrize("case", AUDIO_SOURCES)
def test_bad_audio_source(case):
    source, match = AUDIO_SOURCES[case]
    one_line_error(load_audio, source, match=match, name=source if isinstance(source, str) else None)


def test_complete_wav_of_unknown_length_is_accepted(tmp_path):
    """Streaming writers leave the data size 0 or 0xFFFFFFFF: not a truncation."""
    data = bytearray(audio_bytes("WAV", 1.0, subtype="PCM_16"))
    data[40:44] = (0xFFFFFFFF).to_bytes(4, "little")
    path = tmp_path / "stream.wav"
    path.write_bytes(bytes(data))
    assert load_audio(path).shape == (16000,)


# ---------------------------------------------------------------- prompts: non-UTF-8 bytes


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    folder = tmp_path_factory.mktemp("standin")
    write_standin_processor(folder)
    return Processor.from_pretrained(folder)


def test_non_utf8_prompt_bytes_become_replacement_characters(processor):
    escaped = b"caf\xe9 \xff".decode("utf-8", "surrogateescape")  # what Linux argv gives Python
    expected = processor("caf\ufffd \ufffd").input_ids
    assert np.array_equal(processor(escaped).input_ids, expected)
    messages = [{"role": "user", "content": escaped}]
    assert np.array_equal(processor(messages).input_ids, processor([{"role": "user", "content": "caf\ufffd \ufffd"}])
                          .input_ids)
    assert processor("half a pair \ud800").input_ids.shape[1] > 0


# ---------------------------------------------------------------- model folders


def _edit(folder: Path, case: str) -> Path:
    """Spoil a copy of the tiny checkpoint in the way ``case`` names; returns the path to load."""
    config = folder / "config.json"
    if case == "missing folder":
        return folder / "absent"
    if case == "a file":
        return config
    if case == "no config.json":
        config.unlink()
    elif case == "config not JSON":
        config.write_text("{not json")
    elif case == "config a list":
        config.write_text("[1, 2]")
    elif case in ("wrong model_type", "no text_config size"):
        cfg = json.loads(config.read_text())
        cfg.update(model_type="llama") if case == "wrong model_type" else cfg["text_config"].pop("hidden_size")
        config.write_text(json.dumps(cfg))
    elif case == "no weights":
        for shard in folder.glob("*.safetensors"):
            shard.unlink()
    elif case == "truncated weights":
        shard = next(folder.glob("*.safetensors"))
        shard.write_bytes(shard.read_bytes()[:1000])
    elif case == "chat template does not compile":
        (folder / "chat_template.jinja").write_text("{% for m in messages %}{{ m.content }}")  # no endfor
    return folder


MODEL_FOLDERS = {
    "missing folder": "absent",
    "a file": "not a checkpoint folder",
    "no config.json": "no config.json",
    "config not JSON": "config.json",
    "config a list": "config.json",
    "wrong model_type": "llama",
    "no text_config size": "hidden_size",
    "no weights": "safetensors",
    "truncated weights": "safetensors",
    "chat template does not compile": r"chat_template.jinja: the chat template does not compile \(line 1",
}


@pytest.mark.parametrize("case", MODEL_FOLDERS)
def test_bad_model_folder(case, tiny_ckpt, tmp_path):
    from mlx_gemma4 import load

    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_ckpt.path, folder)
    path = _edit(folder, case)
    one_line_error(load, path, error=ModelLoadError, match=MODEL_FOLDERS[case], name=str(folder))


# ---------------------------------------------------------------- the gemma4 command: usage errors


def run_gemma4(*args: str | bytes, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([GEMMA4, *args], capture_output=True, timeout=timeout, env=env)


def assert_usage_error(result: subprocess.CompletedProcess, *names: str) -> str:
    """Exit 2, nothing on stdout, one line on stderr that names each of ``names``."""
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err.count("\n") == 1 and err.startswith("error:"), err
    for name in names:
        assert name in err, err
    return err


CLI_ARGS = {
    "negative seed": (["generate", "-m", "x", "--seed", "-1", "hi"], "--seed"),
    "seed over 2**64": (["generate", "-m", "x", "--seed", str(2**64), "hi"], "--seed"),
    "negative max tokens": (["generate", "-m", "x", "--max-tokens", "-3", "hi"], "--max-tokens"),
    "temp not a number": (["generate", "-m", "x", "--temp", "warm", "hi"], "--temp"),
    "negative temp": (["generate", "-m", "x", "--temp", "-1", "hi"], "--temp"),
    "NaN temp": (["generate", "-m", "x", "--temp", "nan", "hi"], "--temp"),
    "top-p over 1": (["generate", "-m", "x", "--top-p", "1.5", "hi"], "--top-p"),
    "unknown flag": (["generate", "-m", "x", "--colour", "hi"], "--colour"),
    "bad --bits": (["generate", "-m", "x", "--bits", "3", "hi"], "--bits"),
    "bad --image-tokens": (["generate", "-m", "x", "--image-tokens", "100", "hi"], "--image-tokens"),
    "bad --kv-bits": (["chat", "-m", "x", "--kv-bits", "2"], "--kv-bits"),
    "zero --top-p": (["generate", "-m", "x", "--top-p", "0", "hi"], "--top-p"),
    "zero --repetition-penalty": (["chat", "-m", "x", "--repetition-penalty", "0"], "--repetition-penalty"),
    "--min-p over 1": (["generate", "-m", "x", "--min-p", "2", "hi"], "--min-p"),
    "zero --max-kv-size": (["generate", "-m", "x", "--max-kv-size", "0", "hi"], "--max-kv-size"),
    "missing @file": (["generate", "-m", "x", "@/no/such/prompt.txt"], "/no/such/prompt.txt"),
    "missing --image": (["generate", "-m", "x", "--image", "/no/such.png", "hi"], "--image /no/such.png"),
    "missing chat --audio": (["chat", "-m", "x", "--audio", "/no/such.wav"], "--audio /no/such.wav"),
    "missing prompt": (["generate", "-m", "x"], "prompt"),
    "unknown command": (["generat"], "generat"),
    "bad convert bits": (["convert", "a", "b", "--bits", "five"], "--bits"),
}


@pytest.mark.parametrize("case", CLI_ARGS)
def test_bad_cli_argument(case):
    args, name = CLI_ARGS[case]
    assert_usage_error(run_gemma4(*args), name)


def test_missing_model_folder_is_exit_2(tmp_path):
    missing = str(tmp_path / "no-such-model")
    assert_usage_error(run_gemma4("generate", "-m", missing, "hi"), missing)


def test_verbose_after_the_command_name_shows_the_traceback(tmp_path):
    missing = str(tmp_path / "no-such-model")
    for args in (["-v", "generate", "-m", missing, "hi"], ["generate", "-m", missing, "--verbose", "hi"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2 and "Traceback" in result.stderr and missing in result.stderr


def test_cli_image_url_reaches_the_library_message(tiny_ckpt):
    """--image stays a string: a Path would fold "http://" into "http:/" and report a missing file."""
    url = "http://example.com/y.png"
    result = CliRunner().invoke(app, ["generate", "-m", str(tiny_ckpt.path), "--image", url, "hi"])
    assert result.exit_code == 2
    assert f"{url}: URLs are not fetched" in result.stderr


def test_cli_non_utf8_prompt_is_answered(tiny_ckpt):
    result = run_gemma4("generate", "-m", str(tiny_ckpt.path), "--temp", "0", "-n", "2", b"caf\xe9 \xff")
    assert result.returncode == 0, result.stderr.decode()
    assert b"TTFT" in result.stderr


def test_caption_out_naming_an_image_leaves_it_whole(tmp_path):
    """--out photo.png (a slip of the shell) is refused before the model loads, without a byte cut off."""
    (tmp_path / "imgs").mkdir()
    photo = tmp_path / "imgs" / "photo.png"
    photo.write_bytes(noise_bytes("PNG"))
    before = photo.read_bytes()
    assert_usage_error(run_gemma4("caption", "-m", "x", str(tmp_path / "imgs"), "--out", str(photo)), str(photo))
    assert photo.read_bytes() == before


@pytest.fixture(scope="module")
def no_tokenizer_ckpt(tiny_ckpt, tmp_path_factory) -> Path:
    """The tiny checkpoint without its tokenizer files, as ``convert --no-tokenizer`` writes one."""
    folder = tmp_path_factory.mktemp("notok") / "ckpt"
    shutil.copytree(tiny_ckpt.path, folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    return folder


@pytest.mark.parametrize("command", [["generate", "hi"], ["chat"], ["caption", "IMAGES"]])
def test_a_checkpoint_without_tokenizer_is_named_before_loading(command, no_tokenizer_ckpt, tmp_path):
    """Before: caption died with an AttributeError traceback, generate said "pass token ids instead"."""
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(noise_bytes("PNG"))
    args = [str(tmp_path / "imgs") if a == "IMAGES" else a for a in command]
    out = ["--out", str(tmp_path / "c.jsonl")] if command[0] == "caption" else []
    err = assert_usage_error(run_gemma4(args[0], "-m", str(no_tokenizer_ckpt), *args[1:], *out),
                             str(no_tokenizer_ckpt))
    assert "no tokenizer.json or tokenizer_config.json" in err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["missing folder", "no tokenizer"])
def test_serve_a_checkpoint_that_cannot_load_is_exit_2(case, tiny_ckpt, tmp_path):
    """As for generate/chat/caption (before: exit 1, a runtime failure, for a bad --model)."""
    folder = tmp_path / "ckpt"
    if case == "no tokenizer":
        shutil.copytree(tiny_ckpt.path, folder)
        (folder / "tokenizer.json").unlink()
    result = run_gemma4("serve", "-m", str(folder), "--port", str(_free_port()))
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert "the model failed to load" in err and ("no such checkpoint folder" in err or "tokenizer" in err), err


# ---------------------------------------------------------------- chat commands


@pytest.mark.parametrize("command", ["/foo", "/"])
def test_chat_unknown_command_is_never_sent(command, tiny_ckpt):
    result = CliRunner().invoke(app, ["chat", "-m", str(tiny_ckpt.path), "--temp", "0", "-n", "2"],
                                input=f"{command}\n/quit\n")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "unknown command" in line]
    assert len(lines) == 1 and command.split()[0] in lines[0] and "/reset" in lines[0] and "/quit" in lines[0]
    assert "TTFT" not in result.stderr  # the model was never asked


def test_chat_double_slash_sends_a_leading_slash(tiny_ckpt):
    result = CliRunner().invoke(app, ["chat", "-m", str(tiny_ckpt.path), "--temp", "0", "-n", "2"],
                                input="//etc is a folder\n/quit\n")
    assert result.exit_code == 0 and "unknown command" not in result.stderr
    assert result.stderr.count("TTFT") == 1


# ---------------------------------------------------------------- exit statuses by kind of failure


@pytest.mark.parametrize(
    "raised,code,line",
    [
        (InputError("photo.png: no such file"), 2, "error: photo.png: no such file"),
        (ModelLoadError("ckpt: no config.json"), 2, "error: ckpt: no config.json"),
        (Gemma4Error("the device ran out of memory"), 1, "error: the device ran out of memory"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_exit_status_by_kind_of_failure(raised, code, line, monkeypatch):
    from mlx_gemma4.cli import generate as generate_cli

    def fail(*_args):
        raise raised

    monkeypatch.setattr(generate_cli, "load_generation", fail)
    result = CliRunner().invoke(app, ["generate", "-m", "x", "hi"])
    assert result.exit_code == code
    assert result.stderr.splitlines() == [line]
