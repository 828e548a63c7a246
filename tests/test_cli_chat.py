"""``gemma4 chat``: Ctrl-C stops only the current answer, at the prompt it clears the line; Ctrl-D exits."""

from __future__ import annotations

import sys
from pathlib import Path

import pexpect
from mlx_gemma4.cli import chat as chat_cli
from mlx_gemma4.cli.app import app
from typer.testing import CliRunner

GEMMA4 = str(Path(sys.executable).with_name("gemma4"))


def test_ctrl_c_in_a_real_terminal(tiny_ckpt):
    # 100 000 tokens never finish on their own: every Ctrl-C below lands in the middle of an answer.
    child = pexpect.spawn(GEMMA4, ["chat", "-m", str(tiny_ckpt.path), "--temp", "0", "-n", "100000"],
                          timeout=120, encoding="utf-8", env={"NO_COLOR": "1", "TERM": "dumb"})
    try:
        child.expect(">>> ")
        child.sendline("tell me a story")
        # Wait for the answer's first word: a Ctrl-C that reaches a loaded machine before input() has
        # returned is readline's (the line is redrawn), not the answer's.
        child.expect(r"tell me a story\r?\n")
        child.expect(r"\w+ ")
        child.sendintr()
        child.expect(r"\(answer stopped\)")
        child.expect(">>> ")
        assert "error" not in child.before
        child.send("half a line")
        # Wait for the echo, as a person would: readline blocks SIGINT while it redraws the line, so a
        # Ctrl-C typed within those microseconds goes to another thread and only counts at the next Enter
        # (any readline program with worker threads does). A loaded machine stretched that window to a CI failure.
        child.expect("half a line")
        child.sendintr()  # on the prompt line: the line is dropped, the chat goes on
        child.expect(">>> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_next_turn_is_answered_after_an_interrupted_one(tiny_ckpt, monkeypatch):
    """The conversation survives a reply cut after two chunks: the next turn runs to its stats line."""
    real = chat_cli.print_stream
    calls = []

    def interrupted_once(chunks, verbose=False):
        calls.append(1)
        if len(calls) == 1:
            for _, _chunk in zip(range(2), chunks, strict=False):
                pass
            raise KeyboardInterrupt
        return real(chunks, verbose)

    monkeypatch.setattr(chat_cli, "print_stream", interrupted_once)
    result = CliRunner().invoke(app, ["chat", "-m", str(tiny_ckpt.path), "--temp", "0", "-n", "4"],
                                input="first\nsecond\n/quit\n")
    assert result.exit_code == 0, result.output
    assert "(answer stopped)" in result.stderr and "error" not in result.stderr
    assert result.stderr.count("TTFT") == 1  # the second turn, complete
