"""Helpers for the server tests: a small-vocabulary tiny checkpoint, a real server process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def small_vocab_checkpoint(folder: Path) -> Path:
    """The tiny reference checkpoint with a small vocabulary (media ids moved into it) and its stand-in
    tokenizer, which spells every id, so the random model's output is non-empty text.

    The small vocabulary keeps the output head (262K rows in the regular tiny checkpoint) from
    dominating a CPU decode step, so a step costs about the same for one row as for eight, as it does
    for a real model; the concurrency test measures batching, not the head's matmul.
    """
    from mlx_gemma4.presets import SMALL_VOCAB
    from tests.reference import SMALL_VOCAB_IDS, TINY_TEXT, build_checkpoint  # torch: tests only

    build_checkpoint(folder, text={**TINY_TEXT, "vocab_size": SMALL_VOCAB}, top=SMALL_VOCAB_IDS, with_processor=True)
    return folder


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``gemma4 serve`` as a subprocess on a free loopback port; ``stop()`` ends it."""

    def __init__(self, model: Path, *args: str, api_key: str | None = None, log: Path | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.api_key = api_key
        cmd = [sys.executable, "-m", "mlx_gemma4.cli.app", "serve", "--model", str(model), "--port", str(self.port),
               "--log-level", "warning", *args]
        if api_key:
            cmd += ["--api-key", api_key]
        self.log = log
        out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed in stop()
        self._out = out
        self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"})

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Poll ``/health`` until it answers 200 (503 while the model loads)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"server not ready after {timeout} s: {self.output()}")

    def output(self) -> str:
        """What the server printed (when logging to a file)."""
        return self.log.read_text() if self.log and self.log.exists() else ""

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self._out is not subprocess.DEVNULL:
            self._out.close()
