"""Helpers of the caption / transcribe tests: a media folder, the CLI as a real subprocess, rows read back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CLI = [sys.executable, "-m", "mlx_gemma4.cli.app"]
FAST = ["--temp", "0", "--max-tokens", "4"]


def media_folder(root: Path, copies: int = 0) -> Path:
    """A folder with images, a nested folder, unicode and space-containing names, audio and a corrupt file."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(EXAMPLES / "chart.png", root / "chart.png")
    (root / "sub dir").mkdir(exist_ok=True)
    shutil.copy(EXAMPLES / "scene.jpg", root / "sub dir" / "scène été.jpg")
    shutil.copy(EXAMPLES / "rotated_note.jpg", root / "sub dir" / "note 1.jpg")
    shutil.copy(EXAMPLES / "speech.ogg", root / "speech.ogg")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "notes.txt").write_text("not media: ignored by the walk")
    for i in range(copies):
        src = EXAMPLES / ("chart.png" if i % 2 else "scene.jpg")
        shutil.copy(src, root / f"copy{i:02d}{src.suffix}")
    return root


def run_cli(*args, timeout: float = 240, **kw) -> subprocess.CompletedProcess:
    """``gemma4 ARGS`` as a subprocess; text output captured."""
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw)


def start_cli(*args, **kw) -> subprocess.Popen:
    """``gemma4 ARGS`` started in the background (output captured)."""
    return subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def jsonl_rows(path: Path) -> list[dict]:
    """Every line of a JSONL file as a dict (fails on a torn or invalid line)."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def comparable(rows: list[dict]) -> dict[str, tuple]:
    """Rows by file name without the timing column (the only one that differs between runs)."""
    return {r["file_name"]: tuple(v for k, v in sorted(r.items()) if k != "seconds") for r in rows}


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout: float = 180) -> int:
    """Wait until ``path`` holds at least ``n`` complete lines (or the process ends); returns the count."""
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = path.read_bytes().count(b"\n") if path.exists() else 0
        if count >= n or proc.poll() is not None:
            return count
        time.sleep(0.02)
    raise TimeoutError(f"{path}: {count} lines after {timeout} s")


def env_without_launcher() -> dict[str, str]:
    """The environment minus any distributed launcher variables (a plain single-process run)."""
    return {k: v for k, v in os.environ.items() if k not in ("MLX_RANK", "MLX_HOSTFILE", "OMPI_COMM_WORLD_RANK")}

