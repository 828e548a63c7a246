"""``gemma4 caption`` killed and resumed: SIGKILL by PID, Ctrl-C (real subprocesses, tiny checkpoint)."""

from __future__ import annotations

import signal

from tests.caption_helpers import comparable, jsonl_rows, media_folder, run_cli, start_cli, wait_for_lines


def test_resume_after_sigkill_loses_nothing_and_duplicates_nothing(tiny_ckpt, tmp_path):
    folder = media_folder(tmp_path / "many", copies=14)
    ref, out = tmp_path / "ref.jsonl", tmp_path / "killed.jsonl"
    args = ["caption", folder, "--model", tiny_ckpt.path, "-b", "1", "--temp", "0", "--max-tokens", "12"]
    run_cli(*args, "--out", ref)
    total = len(jsonl_rows(ref))
    proc = start_cli(*args, "--out", out)
    seen = wait_for_lines(out, 3, proc)
    proc.kill()  # SIGKILL by PID: no handler runs
    proc.wait()
    assert 3 <= seen < total, "the run ended before it could be killed; make it longer"
    killed_rows = out.read_bytes().count(b"\n")
    result = run_cli(*args, "--out", out)
    assert f"skipped {killed_rows}" in result.stderr, result.stderr
    rows = jsonl_rows(out)
    assert len(rows) == total == len({r["file_name"] for r in rows})
    assert comparable(rows) == comparable(jsonl_rows(ref))


def test_ctrl_c_stops_after_the_items_in_flight_and_says_how_to_resume(tiny_ckpt, tmp_path):
    folder = media_folder(tmp_path / "many", copies=14)
    out = tmp_path / "c.jsonl"
    args = ["caption", folder, "--out", out, "--model", tiny_ckpt.path, "-b", "2", "--temp", "0", "--max-tokens", "12"]
    proc = start_cli(*args)
    wait_for_lines(out, 2, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "run the same command again to resume" in stderr and "Traceback" not in stderr
    rows = jsonl_rows(out)  # every line complete
    assert 3 <= len(rows) < 17  # the broken.jpg row and the items in flight, not the whole folder
