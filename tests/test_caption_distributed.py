"""``mlx.launch -n 2 gemma4 caption``: two ranks over the loopback (ring backend) give the single-process result."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.caption_helpers import (
    CLI,
    comparable,
    env_without_launcher,
    jsonl_rows,
    media_folder,
    run_cli,
    wait_for_lines,
)


def launcher() -> list[str]:
    """``mlx.launch`` of this environment: its console script, else the same entry point through python."""
    script = Path(sys.executable).parent / "mlx.launch"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from mlx._distributed_utils.launch import main; "
            "sys.argv[0] = 'mlx.launch'; sys.exit(main())"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args, **kw) -> subprocess.Popen:
    """Two ranks of ``gemma4 ARGS`` on this machine."""
    cmd = [*launcher(), "-n", "2", "-p", str(free_port()), "--", *CLI, *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env_without_launcher(), **kw)


def rank_pid(rank: int, marker: str) -> int:
    """The PID of the rank whose command line holds ``marker`` (found through /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in cmdline and f"MLX_RANK={rank}".encode() in environ and b"mlx_gemma4" in cmdline:
            return int(entry.name)
    raise LookupError(f"no rank {rank} process for {marker}")


@pytest.fixture(scope="module")
def job(tiny_ckpt, tmp_path_factory):
    """A folder of 13 items and the single-process reference captions of it."""
    tmp = tmp_path_factory.mktemp("dist")
    folder = media_folder(tmp / "media", copies=8)
    ref = tmp / "single.jsonl"
    args = ["caption", folder, "--model", tiny_ckpt.path, "--temp", "0", "--max-tokens", "6", "-b", "2"]
    result = run_cli(*args, "--out", ref, env=env_without_launcher())
    assert result.returncode == 1, result.stderr  # broken.jpg
    return args, jsonl_rows(ref)


def test_two_ranks_merge_into_the_single_process_output(job, tmp_path):
    args, expected = job
    out = tmp_path / "merged.jsonl"
    proc = launch([*args, "--out", out])
    stdout, stderr = proc.communicate(timeout=600)
    rows = jsonl_rows(out)
    # Merged in item order; a single process writes rows as they finish (the same set, maybe reordered).
    assert [r["file_name"] for r in rows] == sorted(r["file_name"] for r in expected), stderr
    assert comparable(rows) == comparable(expected)
    assert f"failed 1 of {len(expected)}" in stderr
    assert not list(tmp_path.glob("*.part*"))  # parts merged and removed


def test_sigkill_of_one_rank_then_rerun_completes_the_set(job, tmp_path):
    args, expected = job
    out = tmp_path / "merged.jsonl"
    proc = launch([*args, "-b", "1", "--out", out])
    part1 = tmp_path / "merged.part1of2.jsonl"
    seen = wait_for_lines(part1, 2, proc)
    os.kill(rank_pid(1, str(out)), signal.SIGKILL)
    _, stderr = proc.communicate(timeout=120)  # the launcher stops rank 0 too (and exits 0 anyway)
    assert "rank 1 exited with code -9" in stderr and 2 <= seen < (len(expected) + 1) // 2, stderr
    assert not out.exists()  # nothing merged from an incomplete set
    survived = sum(len(jsonl_rows(p)) for p in tmp_path.glob("merged.part*"))
    proc = launch([*args, "--out", out])
    _, stderr = proc.communicate(timeout=600)
    assert f"skipped {survived}" in stderr, stderr
    rows = jsonl_rows(out)
    assert len(rows) == len({r["file_name"] for r in rows}) == len(expected)
    assert comparable(rows) == comparable(expected)
