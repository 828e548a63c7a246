"""``gemma4 chat`` in a real pseudo-terminal (pexpect), and piped (no prompt, JSON lines).

Set ``GEMMA4_TRANSCRIPT=FILE`` to keep the terminal session's transcript.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pexpect

GEMMA4 = str(Path(sys.executable).with_name("gemma4"))
CHART = str(Path(__file__).resolve().parents[1] / "examples" / "chart.png")
ENV = {**os.environ, "NO_COLOR": "1", "TERM": "xterm", "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}


def test_repl_session_in_a_terminal(tiny_ckpt, tmp_path):
    # -n 40: long enough at the tiny model's speed for a Ctrl-C to land inside an answer.
    log = io.StringIO()
    child = pexpect.spawn(GEMMA4, ["chat", "-m", str(tiny_ckpt.path), "--temp", "0", "-n", "40"],
                          timeout=180, encoding="utf-8", env=ENV, dimensions=(40, 200))
    child.logfile_read = log
    saved = tmp_path / "conversation.json"
    try:
        child.expect(">>> ")
        child.sendline("/help")
        child.expect("multi-line input")
        child.expect(">>> ")
        child.sendline(f"/image {CHART}")
        child.expect("goes with the next message")
        child.expect(">>> ")
        child.sendline("what does this chart show?")
        child.expect("finish: ")
        child.expect(">>> ")
        child.sendline("tell me a story")
        child.expect(r"tell me a story\r?\n")
        child.expect(r"\w+ ")  # the answer has started (an earlier Ctrl-C could still reach readline)
        child.sendintr()
        child.expect(r"\(answer stopped\)")
        child.expect(">>> ")
        child.sendline("and now a shorter one \\")  # a trailing backslash continues the message
        child.expect(r"\.\.\. ")
        child.sendline("please")
        child.expect("finish: ")
        child.expect(">>> ")
        child.sendline("/stats")
        child.expect(r"conversation: (\d+) tokens")
        assert int(child.match.group(1)) > 0
        child.expect(">>> ")
        child.sendline(f"/save {saved}")
        child.expect("conversation saved")
        child.expect(">>> ")
        child.sendline("/reset")
        child.expect("conversation reset")
        child.expect(">>> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close()
        if os.environ.get("GEMMA4_TRANSCRIPT"):
            Path(os.environ["GEMMA4_TRANSCRIPT"]).write_text(log.getvalue().replace("\r\n", "\n"))
    assert child.exitstatus == 0, log.getvalue()[-2000:]
    messages = json.loads(saved.read_text())["messages"]
    users = [m for m in messages if m["role"] == "user"]
    assert [m["role"] for m in messages] == ["user", "assistant"] * len(users) and len(users) >= 2
    assert users[-1]["content"][-1]["text"] == "and now a shorter one \nplease"


def test_piped_chat_prints_no_prompt_and_json_lines(tiny_ckpt):
    out = subprocess.run([GEMMA4, "chat", "-m", str(tiny_ckpt.path), "--temp", "0", "-n", "3", "--json"],
                         input="first\n/think on\nsecond\n", capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr
    assert ">>>" not in out.stdout + out.stderr
    turns = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(turns) == 2 and all(t["generation_tokens"] == 3 for t in turns)
    assert "thinking on" in out.stderr


def test_bad_chat_file_exits_before_loading(tmp_path):
    # The model folder does not exist either: the file is checked first, so it is what gets reported.
    out = subprocess.run([GEMMA4, "chat", "-m", str(tmp_path / "no-model"), "--image", str(tmp_path / "x.png")],
                         capture_output=True, text=True, env=ENV, timeout=120)
    assert out.returncode == 2 and "--image" in out.stderr and "x.png" in out.stderr


def test_piped_chat_commands_take_effect(tiny_ckpt, tmp_path):
    """/system, /think, /audio, /video and a \"\"\" block, each seen in the next answer's prompt or the saved JSON."""
    examples = Path(CHART).parent
    saved = tmp_path / "conversation.json"
    lines = ["hi", "/system be brief", "hi", "hi", "/think on", "hi", f"/audio {examples / 'speech.ogg'}", "hi",
             f"/video {examples / 'bouncing_ball.mp4'}", "hi", '"""', "line one", "line two", '"""', f"/save {saved}"]
    out = subprocess.run([GEMMA4, "chat", "-m", str(tiny_ckpt.path), "--temp", "0", "-n", "1", "--json"],
                         input="\n".join(lines) + "\n", capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr
    prompt = [json.loads(line)["prompt_tokens"] for line in out.stdout.splitlines()]
    assert len(prompt) == 7, out.stdout
    alone, with_system, follow_up, thinking, with_audio, with_video, _block = prompt
    assert with_system > alone  # /system: a new conversation whose first turn carries the system prompt
    assert thinking > follow_up  # /think on changes the rendered conversation, so more of it is prefilled
    assert with_audio > follow_up + 10 and with_video > with_audio  # the attached clip's soft tokens
    assert "system prompt set" in out.stderr and "thinking on" in out.stderr
    messages = json.loads(saved.read_text())["messages"]
    assert messages[0] == {"role": "system", "content": "be brief"}
    users = [m["content"] for m in messages if m["role"] == "user"]
    assert [item["type"] for item in users[3]] == ["audio", "text"]
    assert [item["type"] for item in users[4]] == ["video", "text"]
    # /save names the attached files, so a saved chat says what the model was shown
    assert users[3][0]["path"].endswith("speech.ogg") and users[4][0]["path"].endswith("bouncing_ball.mp4")
    assert users[5] == [{"type": "text", "text": "line one\nline two"}]
    assert len(users) == 6  # the conversation before /system is gone
