"""``gemma4 caption`` as a real subprocess on the tiny checkpoint: formats, errors, resume, torn lines, Ctrl-C."""

from __future__ import annotations

import csv
import shutil

import pytest

from tests.caption_helpers import EXAMPLES, FAST, comparable, jsonl_rows, media_folder, run_cli

NAMES = ["broken.jpg", "chart.png", "speech.ogg", "sub dir/note 1.jpg", "sub dir/scène été.jpg"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return media_folder(tmp_path_factory.mktemp("media"))


@pytest.fixture(scope="module")
def full_run(tiny_ckpt, folder, tmp_path_factory):
    """One uninterrupted JSONL run over the folder (recursive): the reference for the other formats."""
    out = tmp_path_factory.mktemp("full") / "captions.jsonl"
    result = run_cli("caption", folder, "-r", "--out", out, "--model", tiny_ckpt.path, "-b", "2", *FAST)
    return result, out


def test_jsonl_rows_in_order_with_an_error_row(full_run):
    result, out = full_run
    assert result.returncode == 1, result.stderr  # one corrupt file: exit 1, the others captioned
    summary = [line for line in result.stderr.splitlines() if line.startswith("done ")]
    assert len(summary) == 1 and summary[0].endswith(str(out)), result.stderr  # one line, never wrapped
    rows = sorted(jsonl_rows(out), key=lambda r: r["file_name"])  # written as they finish
    assert [r["file_name"] for r in rows] == NAMES
    for r in rows:
        assert list(r) == ["file_name", "caption", "prompt_tokens", "generation_tokens", "seconds",
                           "finish_reason", "error"]
    bad = rows[0]
    assert bad["caption"] is None and bad["finish_reason"] == "error" and "broken.jpg" in bad["error"]
    for r in rows[1:]:
        assert r["error"] is None and isinstance(r["caption"], str) and r["caption"]
        assert r["prompt_tokens"] > 0 and 0 < r["generation_tokens"] <= 4 and r["seconds"] > 0
        assert r["finish_reason"] in ("stop", "length")
    assert "done 4, skipped 0, failed 1 of 5" in result.stderr
    assert "items/min" in result.stderr and "tok/s" in result.stderr
    assert "Traceback" not in result.stderr


def test_csv_and_txt_hold_the_same_captions(tiny_ckpt, folder, full_run, tmp_path):
    expected = {r["file_name"]: r for r in jsonl_rows(full_run[1])}
    out = tmp_path / "captions.csv"
    result = run_cli("caption", folder, "-r", "--out", out, "--model", tiny_ckpt.path, "-b", "3", *FAST)
    assert result.returncode == 1, result.stderr
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["file_name"] for r in rows) == NAMES
    for r in rows:
        want = expected[r["file_name"]]
        assert r["caption"] == (want["caption"] or "") and int(r["generation_tokens"] or 0) == (
            want["generation_tokens"] or 0)
    txt = tmp_path / "txt"
    result = run_cli("caption", folder, "-r", "--out", txt, "--format", "txt", "--model", tiny_ckpt.path, *FAST)
    assert result.returncode == 1, result.stderr
    written = sorted(p.relative_to(txt).as_posix() for p in txt.rglob("*.txt"))
    assert written == ["chart.txt", "speech.txt", "sub dir/note 1.txt", "sub dir/scène été.txt"]
    for name in written:
        source = next(n for n in NAMES if n.rsplit(".", 1)[0] == name[:-4])
        assert (txt / name).read_text(encoding="utf-8") == expected[source]["caption"]


def test_non_recursive_then_torn_line_then_resume(tiny_ckpt, folder, full_run, tmp_path):
    out = tmp_path / "c.jsonl"
    first = run_cli("caption", folder, "--out", out, "--model", tiny_ckpt.path, *FAST)
    assert first.returncode == 1
    assert sorted(r["file_name"] for r in jsonl_rows(out)) == ["broken.jpg", "chart.png", "speech.ogg"]
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2]) + lines[2][: len(lines[2]) // 2])  # killed in the middle of row 3
    again = run_cli("caption", folder, "-r", "--out", out, "--model", tiny_ckpt.path, *FAST)
    assert again.returncode == 0 and "skipped 2" in again.stderr and "done 3" in again.stderr, again.stderr
    rows = jsonl_rows(out)  # the torn half-row is gone, never read as a caption
    assert out.read_bytes().startswith(b"".join(lines[:2]))  # earlier rows untouched
    assert len(rows) == 5 and comparable(rows) == comparable(jsonl_rows(full_run[1]))


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda t: [t / "missing", "--out", t / "o.jsonl"], "no such file or folder"),
        (lambda t: [t / "empty", "--out", t / "o.jsonl"], "no image/audio/video files found"),
        (lambda t: [t / "empty" / "a.png", "--out", t / "nowhere" / "o.jsonl"], "does not exist"),
        (lambda t: [t / "empty" / "a.png", "--out", t / "o.jsonl", "--format", "parquet"], "unknown format"),
    ],
    ids=["missing-folder", "empty-folder", "unwritable-output", "unknown-format"],
)
def test_bad_inputs_are_one_line_usage_errors(tmp_path, make_args, message):
    (tmp_path / "empty").mkdir()
    args = make_args(tmp_path)
    if str(args[0]).endswith("a.png"):
        (tmp_path / "empty" / "a.png").write_bytes(b"x")
        (tmp_path / "empty").joinpath("a.png")
    result = run_cli("caption", *args, "--model", tmp_path / "no-model")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr


def test_a_video_is_captioned_with_its_frames(tiny_ckpt, tmp_path):
    from tests.video_clips import write_clip

    folder = tmp_path / "clips"
    folder.mkdir()
    write_clip(folder / "clip.mp4", frames=20, fps=10)  # 2 s: two frames at 1 fps
    shutil.copy(EXAMPLES / "chart.png", folder / "chart.png")
    out = tmp_path / "c.jsonl"
    result = run_cli("caption", folder, "--out", out, "--model", tiny_ckpt.path, "-b", "2", *FAST)
    assert result.returncode == 0, result.stderr
    chart, clip = jsonl_rows(out)
    assert clip["file_name"] == "clip.mp4" and clip["error"] is None and clip["caption"]
    assert clip["prompt_tokens"] != chart["prompt_tokens"]


@pytest.mark.parametrize("flag, value", [("--bits", "3"), ("--min-p", "2"), ("--repetition-penalty", "-1")])
def test_caption_takes_generates_sampling_and_bits_flags(tmp_path, flag, value):
    """caption and generate share their flags (cli/options.py): a bad value is refused before any model loads."""
    (tmp_path / "a.png").write_bytes(b"x")
    result = run_cli("caption", tmp_path / "a.png", "--out", tmp_path / "o.jsonl", "--model", tmp_path / "no-model",
                     flag, value)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert f"Invalid value for '{flag}'" in lines[0], result.stderr  # a known flag, not "No such option"
