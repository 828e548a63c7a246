"""The parts of caption/transcribe that need no model: the walk, the row files and their repair, blocks, ranks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from mlx_gemma4.errors import InputError
from mlx_gemma4.jobs.audio_blocks import split_blocks, srt_time, to_srt
from mlx_gemma4.jobs.distributed import Cluster, part_path, shard
from mlx_gemma4.jobs.inputs import collect_items
from mlx_gemma4.jobs.records import COLUMNS, FileSink, complete_length, read_rows, repair_tail
from tests.caption_helpers import EXAMPLES

ROW = {"file_name": "a.png", "caption": "x", "prompt_tokens": 1, "generation_tokens": 2, "seconds": 0.5,
       "finish_reason": "stop", "error": None}


def test_walk_lists_sorts_dedupes_and_names_relative_to_the_root(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    shutil.copy(EXAMPLES / "chart.png", tmp_path / "d" / "zé ta.PNG")
    shutil.copy(EXAMPLES / "scene.jpg", tmp_path / "d" / "sub" / "a.jpg")
    shutil.copy(EXAMPLES / "speech.ogg", tmp_path / "d" / "b.ogg")
    (tmp_path / "d" / ".hidden.png").write_bytes(b"x")
    (tmp_path / "d" / "readme.md").write_text("x")
    (tmp_path / "list.txt").write_text("# files\nd/b.ogg\n\nd/sub/a.jpg\n")
    items, root = collect_items([str(tmp_path / "d")], recursive=True)
    assert root == tmp_path / "d"
    assert [(i.file_name, i.kind) for i in items] == [("b.ogg", "audio"), ("sub/a.jpg", "image"),
                                                      ("zé ta.PNG", "image")]
    flat, _ = collect_items([str(tmp_path / "d")])
    assert [i.file_name for i in flat] == ["b.ogg", "zé ta.PNG"]
    listed, root = collect_items([f"@{tmp_path / 'list.txt'}", str(tmp_path / "d" / "*.ogg")])
    assert root == tmp_path / "d" and [i.file_name for i in listed] == ["b.ogg", "sub/a.jpg"]  # b.ogg once


@pytest.mark.parametrize("spec, message", [("missing", "no such file or folder"), ("empty", "no image/audio/video"),
                                           ("*.nothing", "matches no readable media")])
def test_walk_errors_name_the_input(tmp_path, spec, message):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=message):
        collect_items([str(tmp_path / spec)])


def test_jsonl_torn_tail_is_cut_and_earlier_rows_kept(tmp_path):
    path = tmp_path / "c.jsonl"
    good = (json.dumps(ROW) + "\n").encode()
    path.write_bytes(good + good.replace(b"a.png", b"b.png")[:30])
    assert complete_length(path.read_bytes(), "jsonl") == len(good)
    assert repair_tail(path, "jsonl") == 30 and path.read_bytes() == good
    sink = FileSink(path, "jsonl")
    assert sink.done == {"a.png"}
    sink.write({**ROW, "file_name": "c\u2028.png", "caption": "line\nbreak"})
    sink.close()
    assert [r["file_name"] for r in read_rows(path, "jsonl")] == ["a.png", "c\u2028.png"]


def test_a_broken_row_in_the_middle_is_an_error_not_a_caption(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(ROW) + "\n{not json\n" + json.dumps(ROW) + "\n")
    with pytest.raises(InputError, match="line 2 is not a JSON row"):
        FileSink(path, "jsonl")
    assert path.read_text().count("\n") == 3  # never truncated


NOT_OURS = {  # an --out that names someone else's file: refused, and not one byte of it cut
    "an image": ("photo.jsonl", bytes(range(256)) * 4, "jsonl", "not UTF-8"),
    "notes without a last newline": ("notes.jsonl", b"line one\nmy last line", "jsonl", "line 1 is not a JSON row"),
    "JSON rows then prose": ("rows.jsonl", (json.dumps(ROW) + "\nhand-written note").encode(), "jsonl",
                             "not a row cut short"),
    "one line of prose": ("one.jsonl", b"just a line, no newline", "jsonl", "not a row cut short"),
    "a CSV of other columns": ("data.csv", b"a,b\n1,2\n3,4", "csv", "header with a file_name column"),
    "CSV text, no header": ("data.csv", b"no header here", "csv", "not a row cut short"),
}


@pytest.mark.parametrize("case", NOT_OURS)
def test_an_output_that_is_not_ours_is_refused_untouched(tmp_path, case):
    name, data, fmt, match = NOT_OURS[case]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputError, match=match) as info:
        FileSink(path, fmt)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == data


def test_a_last_row_without_its_newline_is_kept(tmp_path):
    path = tmp_path / "metadata.jsonl"  # hand-edited: the editor dropped the final newline
    path.write_text(json.dumps(ROW) + "\n" + json.dumps({**ROW, "file_name": "b.png"}))
    before = path.read_bytes()
    sink = FileSink(path, "jsonl")
    assert sink.done == {"a.png", "b.png"} and path.read_bytes() == before + b"\n"  # kept, newline added
    sink.write({**ROW, "file_name": "c.png"})
    sink.close()
    assert [r["file_name"] for r in read_rows(path, "jsonl")] == ["a.png", "b.png", "c.png"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_file_name_that_is_not_utf8_round_trips(tmp_path, fmt):
    """Linux gives a non-UTF-8 name (b"caf\\xe9.png") as a lone surrogate; before, writing its row raised
    UnicodeEncodeError mid-run."""
    name = b"caf\xe9.png".decode("utf-8", "surrogateescape")
    path = tmp_path / f"c.{fmt}"
    sink = FileSink(path, fmt)
    sink.write({**ROW, "file_name": name, "error": f"{name}: not an image"})
    sink.write({**ROW, "file_name": "b.png"})
    sink.close()
    rows = list(read_rows(path, fmt))
    assert [r["file_name"] for r in rows] == [name, "b.png"] and rows[0]["error"] == f"{name}: not an image"
    assert FileSink(path, fmt).done == {name, "b.png"}  # a resumed run skips it
    if fmt == "jsonl":
        path.read_bytes().decode("utf-8")  # still UTF-8 (the name as a \\udce9 escape)


def test_a_torn_csv_header_is_cut(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"file_name,capt")  # killed while writing the header
    FileSink(path, "csv").close()
    assert path.read_text().splitlines() == [",".join(COLUMNS)]


def test_csv_rows_with_quoted_newlines_survive_and_a_torn_row_is_cut(tmp_path):
    path = tmp_path / "c.csv"
    sink = FileSink(path, "csv")
    sink.write({**ROW, "caption": 'two\nlines, "quoted"\r\nend'})
    sink.write({**ROW, "file_name": "b.png", "error": "bad, file", "caption": None})
    sink.close()
    whole = path.read_bytes()
    path.write_bytes(whole + b'c.png,"torn\nmid')
    assert complete_length(path.read_bytes(), "csv") == len(whole)
    sink = FileSink(path, "csv")
    sink.close()
    assert path.read_bytes() == whole
    rows = list(read_rows(path, "csv"))
    assert rows[0]["caption"] == 'two\nlines, "quoted"\r\nend' and rows[0]["prompt_tokens"] == 1
    assert rows[1]["error"] == "bad, file" and rows[1]["seconds"] == 0.5


def test_ranks_split_every_item_once_in_a_fixed_order(tmp_path):
    items = list(range(11))
    parts = [shard(items, Cluster(r, 3)) for r in range(3)]
    assert sorted(sum(parts, [])) == items and parts[1] == [1, 4, 7, 10]
    assert part_path(tmp_path / "c.jsonl", Cluster(1, 3)).name == "c.part1of3.jsonl"


def test_blocks_are_cut_in_the_pauses_and_cover_everything():
    rate = 16_000
    rng = np.random.default_rng(0)
    speech = lambda s: (0.3 * rng.standard_normal(int(s * rate))).astype(np.float32)  # noqa: E731
    pause = lambda s: np.zeros(int(s * rate), np.float32)  # noqa: E731
    wave = np.concatenate([speech(12), pause(1), speech(10), pause(0.8), speech(14), pause(1), speech(20)])
    blocks = split_blocks(wave, rate)
    assert blocks[0][0] == 0 and blocks[-1][1] == len(wave)
    assert all(a == b for (_, a), (b, _) in zip(blocks, blocks[1:], strict=False))
    assert all(0 < (e - s) <= 30 * rate for s, e in blocks)
    for _, end in blocks[:-1]:  # each cut lies in a pause: silence on both sides of it
        assert not wave[end - 1600 : end + 1600].any()
    assert len(split_blocks(wave[: 5 * rate], rate)) == 1


def test_srt_cues():
    assert srt_time(3725.5) == "01:02:05,500"
    text = to_srt([{"start": 0.0, "end": 1.25, "text": " hi "}, {"start": 1.25, "end": 2.0, "text": "there"}])
    assert text == "1\n00:00:00,000 --> 00:00:01,250\nhi\n\n2\n00:00:01,250 --> 00:00:02,000\nthere\n"


def test_jsonl_loads_as_a_hugging_face_imagefolder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # the imagefolder builder ships with datasets
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import datasets  # in the test extra: a missing one is a failure, not a skip
    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(EXAMPLES / "chart.png", folder / "chart.png")
    shutil.copy(EXAMPLES / "scene.jpg", folder / "scene.jpg")
    sink = FileSink(folder / "metadata.jsonl", "jsonl")
    sink.write({**ROW, "file_name": "chart.png", "caption": "a bar chart"})
    sink.write({**ROW, "file_name": "scene.jpg", "caption": None, "error": "x", "finish_reason": "error"})
    sink.close()
    ds = datasets.load_dataset("imagefolder", data_dir=str(folder), split="train")
    assert ds.num_rows == 2 and ds[0]["caption"] == "a bar chart"
    assert ds[0]["image"].size == Image.open(EXAMPLES / "chart.png").size
