"""The shared CLI options, as real ``gemma4`` subprocesses on the tiny checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mlx_gemma4.processing import Processor

GEMMA4 = str(Path(sys.executable).with_name("gemma4"))
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
KEYS = {"text", "thinking", "token_ids", "prompt_tokens", "generation_tokens", "prompt_tps", "generation_tps",
        "ttft_s", "peak_memory_gb", "finish_reason"}


def gemma4(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    # COLUMNS=40: a line longer than that must still come out whole (no hard wrap off a terminal).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "40"}
    return subprocess.run([GEMMA4, *args], capture_output=True, text=True, input=stdin, env=env, timeout=300)


def as_json(ckpt, *args: str, stdin: str | None = None) -> dict:
    """The one object ``generate --json`` prints (stdout holds nothing else)."""
    out = gemma4("generate", "-m", str(ckpt.path), "--temp", "0", "--json", *args, stdin=stdin)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 1, out.stdout
    obj = json.loads(lines[0])
    assert set(obj) == KEYS and len(obj["token_ids"]) == obj["generation_tokens"]
    return obj


def test_version_loads_no_model_stack():
    code = "import sys; sys.argv = ['gemma4', '--version']\nfrom mlx_gemma4.cli.app import main; main()"
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("gemma4 (mlx-gemma4) "), out.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert not {"mlx_lm", "transformers", "torch"} & imported


def test_json_is_one_object_and_the_prompt_sources_agree(tiny_ckpt, tmp_path):
    literal = as_json(tiny_ckpt, "-n", "4", "what is this ?")
    assert literal["finish_reason"] == "length" and literal["generation_tokens"] == 4
    (tmp_path / "prompt.txt").write_text("what is this ?")
    assert as_json(tiny_ckpt, "-n", "4", f"@{tmp_path / 'prompt.txt'}")["token_ids"] == literal["token_ids"]
    assert as_json(tiny_ckpt, "-n", "4", "-", stdin="what is this ?")["token_ids"] == literal["token_ids"]


def test_flags_reach_the_request(tiny_ckpt):
    base = as_json(tiny_ckpt, "-n", "6", "hello there")
    system = as_json(tiny_ckpt, "-n", "6", "--system", "be brief", "hello there")
    assert system["prompt_tokens"] > base["prompt_tokens"]
    cut = base["text"].split()[2]  # a word of the greedy answer: generation must stop before it
    stopped = as_json(tiny_ckpt, "-n", "6", "--stop", "zzz", "--stop", cut, "hello there")
    assert stopped["finish_reason"] == "stop" and cut not in stopped["text"]
    assert base["text"].startswith(stopped["text"])
    image = str(EXAMPLES / "chart.png")
    small = as_json(tiny_ckpt, "-n", "1", "--image", image, "--image-tokens", "70", "hi")
    large = as_json(tiny_ckpt, "-n", "1", "--image", image, "--image-tokens", "280", "hi")
    processor = Processor.from_pretrained(tiny_ckpt.path)
    message = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    for obj, budget in ((small, 70), (large, 280)):
        assert obj["prompt_tokens"] == processor(message, images=[image], image_budget=budget).input_ids.shape[1]
    assert small["prompt_tokens"] < large["prompt_tokens"]
    zero = as_json(tiny_ckpt, "-n", "0", "--kv-bits", "8", "hello there")
    assert zero["generation_tokens"] == 0 and zero["token_ids"] == [] and zero["generation_tps"] == 0
    assert zero["prompt_tokens"] == base["prompt_tokens"] and zero["prompt_tps"] > 0


def test_stats_line_is_one_labelled_line_and_verbose_adds_mlx_lm_lines(tiny_ckpt):
    out = gemma4("generate", "-m", str(tiny_ckpt.path), "--temp", "0", "-n", "3", "-v", "hello there")
    assert out.returncode == 0, out.stderr
    lines = out.stderr.splitlines()
    stats = [line for line in lines if line.startswith("prompt ")]
    assert len(stats) == 1 and "TTFT" in stats[0] and "peak (MLX)" in stats[0] and stats[0].endswith("finish: length")
    assert any(line.startswith("Prompt: ") and "tokens-per-sec" in line for line in lines)
    assert any(line.startswith("Generation: 3 tokens, ") for line in lines)
    assert any(line.startswith("Peak memory: ") for line in lines)


def test_draft_path_that_does_not_exist_is_a_usage_error(tiny_ckpt, tmp_path):
    out = gemma4("generate", "-m", str(tiny_ckpt.path), "-n", "1", "--draft", str(tmp_path / "nope"), "hi")
    assert out.returncode == 2 and "nope" in out.stderr and out.stdout == ""


def test_prefill_progress_appears_only_for_slow_prefills():
    import io

    from mlx_gemma4.cli.report import PrefillProgress
    from rich.console import Console

    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=100)
    fast = PrefillProgress(console, delay_s=60.0)
    for done in (0, 512, 1024):
        fast(done, 1024)
    assert buf.getvalue() == ""
    slow = PrefillProgress(console, delay_s=0.0)
    slow(0, 1024)
    slow(512, 1024)
    slow(1024, 1024)  # the last call removes the bar
    assert "prefill" in buf.getvalue() and "/1024" in buf.getvalue() and slow._bar is None


def test_no_split_audio_reaches_the_processor(tiny_ckpt, tmp_path):
    import numpy as np
    import soundfile

    long_wav = tmp_path / "long.wav"
    soundfile.write(long_wav, np.zeros(16_000 * 31, dtype=np.float32), 16_000)  # 31 s: over the 30 s clip limit
    out = gemma4("generate", "-m", str(tiny_ckpt.path), "-n", "1", "--audio", str(long_wav), "--no-split-audio", "hi")
    assert out.returncode == 2 and "longer than the 30 s" in out.stderr, out.stderr


def test_flag_groups_give_every_command_the_same_flags_with_its_own_defaults():
    """generate, chat and caption read their sampling flags from one declaration (cli/options.py); a
    command's default instance sets its defaults (captions are short); the group reaches the command whole."""
    import typer.main
    from mlx_gemma4.cli.app import app

    def flags(name: str) -> dict[str, object]:
        command = typer.main.get_command(app).commands[name]
        return {opt: p.default for p in command.params for opt in p.opts if opt.startswith("--")}

    generate, chat, caption = flags("generate"), flags("chat"), flags("caption")
    sampling = {"--max-tokens", "--temp", "--top-p", "--top-k", "--min-p", "--repetition-penalty", "--seed",
                "--stop", "--thinking"}
    assert sampling <= set(generate) and sampling <= set(caption)
    assert set(generate) - {"--json"} == set(chat) - {"--json"}  # chat's only other difference: no prompt
    assert generate["--max-tokens"] == chat["--max-tokens"] == 512 and caption["--max-tokens"] == 128
    assert {"--model", "--bits", "--image-tokens", "--system"} <= set(caption)


def test_flag_group_reaches_the_command_as_one_object(monkeypatch):
    from mlx_gemma4.cli import generate as generate_cli
    from mlx_gemma4.cli.app import app
    from typer.testing import CliRunner

    seen = {}

    def capture(flags, request):
        seen.update(flags=flags, request=request)
        raise KeyboardInterrupt  # stop before any model loads

    monkeypatch.setattr(generate_cli, "load_generation", capture)
    result = CliRunner().invoke(app, ["generate", "-m", "somewhere", "--bits", "8", "--kv-bits", "4",
                                      "--top-k", "7", "--stop", "a", "--stop", "b", "hi"])
    assert result.exit_code == 130
    assert (seen["flags"].model, seen["flags"].bits, seen["flags"].kv_bits, seen["flags"].draft) == ("somewhere", 8, 4,
                                                                                                     "auto")
    assert (seen["request"].top_k, seen["request"].stop, seen["request"].max_tokens) == (7, ("a", "b"), 512)


def test_generate_and_chat_build_the_same_request_from_every_flag(monkeypatch):
    """Every shared flag reaches the GenerationRequest, under the same name in both commands (no model is loaded:
    the library entry points are replaced by recorders)."""
    from mlx_gemma4.cli import report
    from mlx_gemma4.cli.app import app
    from typer.testing import CliRunner

    import mlx_gemma4
    from mlx_gemma4.generation.stats import GenerationStats
    from mlx_gemma4.generation.types import GenerationResult

    seen = {}

    def fake_load(model, bits, image_tokens, split_audio):
        seen["load"] = (model, bits, image_tokens, split_audio)
        return object(), None

    def fake_generate(model, processor, messages, request=None, **_kw):
        seen["generate"] = request
        return GenerationResult(text="", thinking="", token_ids=[], stats=GenerationStats(prompt_tokens=1))

    class FakeSession:
        def __init__(self, model, processor, system=None, request=None):
            seen["chat"] = request

    monkeypatch.setattr(report, "load", fake_load)  # what load_generation calls for both commands
    monkeypatch.setattr(mlx_gemma4, "generate", fake_generate)
    monkeypatch.setattr(mlx_gemma4, "ChatSession", FakeSession)
    flags = ["-m", "some/model", "--bits", "8", "-n", "7", "--temp", "0.5", "--top-p", "0.8", "--top-k", "20",
             "--min-p", "0.05", "--repetition-penalty", "1.1", "--seed", "3", "--stop", "END", "--stop", "###",
             "--image-tokens", "140", "--max-kv-size", "4096", "--draft", "off", "--no-split-audio", "--thinking"]
    runner = CliRunner()
    assert runner.invoke(app, ["generate", *flags, "--json", "hi"]).exit_code == 0
    assert runner.invoke(app, ["chat", *flags], input="").exit_code == 0
    for name in ("generate", "chat"):
        r = seen[name]
        assert (r.max_tokens, r.temperature, r.top_p, r.top_k, r.min_p, r.repetition_penalty, r.seed, r.stop,
                r.thinking, r.max_kv_size, r.kv_bits, r.draft_model) == (
            7, 0.5, 0.8, 20, 0.05, 1.1, 3, ("END", "###"), True, 4096, None, None), name
    assert seen["load"] == ("some/model", 8, 140, False)
    # Unset flags: the same defaults in both commands (sampling from the checkpoint's generation config).
    assert runner.invoke(app, ["generate", "--draft", "off", "--json", "hi"]).exit_code == 0
    assert runner.invoke(app, ["chat", "--draft", "off"], input="").exit_code == 0
    assert seen["generate"] == seen["chat"]
    assert seen["chat"].max_tokens == 512 and seen["chat"].temperature is None
    assert seen["load"][0] == "google/gemma-4-12B-it"


def test_the_default_model_offline_with_nothing_cached_is_one_line(tmp_path):
    """No --model, HF_HUB_OFFLINE=1 and empty caches: exit 2 with one line saying what to run (real subprocess)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "40", "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"), "MLX_GEMMA4_CACHE": str(tmp_path / "converted")}
    for args in (["generate", "hi"], ["chat"]):
        out = subprocess.run([GEMMA4, *args], capture_output=True, text=True, env=env, input="", timeout=120)
        assert out.returncode == 2 and out.stdout == "", out.stderr
        lines = out.stderr.splitlines()
        assert len(lines) == 1 and "google/gemma-4-12B-it" in lines[0], out.stderr
        assert "run the same command once online" in lines[0] and "gemma4 convert" in lines[0]


def test_ctrl_c_during_generate_exits_130_with_one_line(tiny_ckpt):
    import signal

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    proc = subprocess.Popen([GEMMA4, "generate", "-m", str(tiny_ckpt.path), "-n", "100000", "tell me a story"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.read(1)  # the answer has started
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130 and stderr.splitlines() == ["interrupted"], stderr
