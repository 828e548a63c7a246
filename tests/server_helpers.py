"""Helpers for the server tests: a tiny checkpoint whose tokenizer names every id, a real server process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

# Multimodal token ids moved below a 2048-token vocabulary (the stand-in tokenizer has the real ones).
SMALL_VOCAB = 2048
_MOVED = {255999: 2040, 258882: 2041, 258880: 2042, 258884: 2043, 256000: 2044, 258883: 2045, 258881: 2046}
SMALL_TOP = dict(boi_token_id=2040, eoi_token_id=2041, image_token_id=2042, video_token_id=2043,
                 boa_token_id=2044, eoa_token_index=2045, audio_token_id=2046)


def small_vocab_checkpoint(folder: Path) -> Path:
    """A tiny reference checkpoint with a 2048-token vocabulary whose tokenizer names every id.

    Every id decodes to a word ("t123" where the stand-in has none), so the random model's output is
    non-empty text that tests can compare and cut with stop strings; the small vocabulary keeps the
    output head (262K rows in the regular tiny checkpoint) from dominating a CPU decode step, so a
    step costs about the same for one row as for eight, as on a real model.
    """
    from tests.reference import TINY_TEXT, build_checkpoint

    build_checkpoint(folder, text={**TINY_TEXT, "vocab_size": SMALL_VOCAB}, top=SMALL_TOP, with_processor=True)
    t = json.loads((folder / "tokenizer.json").read_text())
    vocab = {k: _MOVED.get(v, v) for k, v in t["model"]["vocab"].items()}
    for a in t["added_tokens"]:
        a["id"] = _MOVED.get(a["id"], a["id"])
    used = set(vocab.values()) | {a["id"] for a in t["added_tokens"]}
    vocab.update({f"t{i}": i for i in range(SMALL_VOCAB) if i not in used})
    t["model"]["vocab"] = vocab
    (folder / "tokenizer.json").write_text(json.dumps(t))
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    if isinstance(cfg.get("added_tokens_decoder"), dict):
        decoder = cfg["added_tokens_decoder"].items()
        cfg["added_tokens_decoder"] = {str(_MOVED.get(int(k), int(k))): v for k, v in decoder}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
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
