"""``gemma4 transcribe`` as a real subprocess: long audio in blocks → srt / jsonl, resume after a torn journal."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from mlx_gemma4.processing import load_audio
from tests.caption_helpers import EXAMPLES, jsonl_rows, run_cli


@pytest.fixture(scope="module")
def long_audio(tmp_path_factory):
    """38.7 s: the example sentences five times with 2.5 s pauses (longer than one 30 s block)."""
    speech = load_audio(str(EXAMPLES / "speech.ogg"))
    pause = np.zeros(40_000, np.float32)
    path = tmp_path_factory.mktemp("audio") / "long talk.wav"
    sf.write(path, np.concatenate([speech, pause] * 4 + [speech]), 16_000)
    return path, sf.read(path, dtype="float32")[0]


def test_srt_of_long_audio_and_a_short_clip(tiny_ckpt, long_audio, tmp_path):
    long_audio, wave = long_audio
    out = tmp_path / "subs"
    short = long_audio.parent / "speech.ogg"  # names are relative to the inputs' common folder
    shutil.copy(EXAMPLES / "speech.ogg", short)
    args = ["transcribe", long_audio, short, "--model", tiny_ckpt.path, "--max-tokens", "5"]
    result = run_cli(*args, "--out", out, "--format", "srt")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["long talk.srt", "speech.srt"]  # journal removed
    cue = r"(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+)\n"
    cues = re.findall(cue, (out / "long talk.srt").read_text())
    assert [c[0] for c in cues] == ["1", "2"] and cues[0][1] == "00:00:00,000" and cues[1][2] == "00:00:38,687"
    assert cues[0][2] == cues[1][1] and all(c[3].strip() for c in cues)
    cut = int((int(cues[0][2][6:8]) + int(cues[0][2][9:]) / 1000) * 16_000)
    assert 6 * 16_000 < cut <= 30 * 16_000
    assert np.abs(wave[cut - 800 : cut + 800]).max() < 1e-3  # cut in a pause (±50 ms of silence), not a word
    jsonl = tmp_path / "t.jsonl"
    result = run_cli(*args, "--out", jsonl)
    rows = jsonl_rows(jsonl)
    assert [(r["file_name"], r["block"]) for r in rows] == [("long talk.wav", 0), ("long talk.wav", 1),
                                                            ("speech.ogg", 0)]
    assert [r["text"].strip() for r in rows[:2]] == [c[3] for c in cues]  # greedy: the same words


def test_resume_after_a_torn_journal_and_bad_audio(tiny_ckpt, long_audio, tmp_path):
    long_audio = shutil.copy(long_audio[0], tmp_path / "long talk.wav")  # names: relative to one folder
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....WAVEfmt nothing")
    out = tmp_path / "t.jsonl"
    args = ["transcribe", long_audio, bad, "--model", tiny_ckpt.path, "--max-tokens", "5", "--out", out]
    first = run_cli(*args)
    assert first.returncode == 1 and "failed 1" in first.stderr, first.stderr
    rows = jsonl_rows(out)
    assert rows[0]["file_name"] == "bad.wav" and "bad.wav" in rows[0]["error"]  # sorted: bad.wav first
    data = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(data[0] + data[1] + data[2][:20])  # killed while writing block 1 of the long file
    again = run_cli(*args)
    assert again.returncode == 1 and "failed 1" in again.stderr, again.stderr  # bad.wav: not retried
    redone = jsonl_rows(out)
    assert [(r["file_name"], r["block"]) for r in redone] == [("bad.wav", 0), ("long talk.wav", 0),
                                                              ("long talk.wav", 1)]
    assert redone[2]["text"] == rows[2]["text"]


def test_bad_arguments_are_usage_errors(tmp_path):
    result = run_cli("transcribe", tmp_path / "nope.wav", "--model", tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error:") and "nope.wav" in result.stderr
    (tmp_path / "a.wav").write_bytes(b"x")
    result = run_cli("transcribe", tmp_path / "a.wav", "--format", "docx", "--model", tmp_path)
    assert result.returncode == 2 and "unknown format" in result.stderr
