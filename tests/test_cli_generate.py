"""``gemma4 generate`` and ``gemma4 chat`` through the real Typer app."""

from __future__ import annotations

from pathlib import Path

from mlx_gemma4.cli.app import app
from typer.testing import CliRunner

from mlx_gemma4 import generate, load

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
runner = CliRunner()


def test_generate_streams_the_greedy_answer_and_stats(tiny_ckpt):
    prompt = "Hello world , what is this ?"
    result = runner.invoke(
        app, ["generate", prompt, "--model", str(tiny_ckpt.path), "--image", str(EXAMPLES / "chart.png"),
              "--audio", str(EXAMPLES / "speech.ogg"), "--temp", "0", "-n", "6"],
    )
    assert result.exit_code == 0, result.output
    model, processor = load(tiny_ckpt.path)
    expected = generate(model, processor, prompt, images=[str(EXAMPLES / "chart.png")],
                        audio=[str(EXAMPLES / "speech.ogg")], temperature=0, max_tokens=6)
    assert result.stdout.startswith(expected.text)
    assert "TTFT" in result.stderr and "tok/s" in result.stderr


def test_generate_bad_image_is_one_line_error(tiny_ckpt, tmp_path):
    bad = tmp_path / "not_an_image.jpg"
    bad.write_text("hello")
    result = runner.invoke(app, ["generate", "hi", "--model", str(tiny_ckpt.path), "--image", str(bad)])
    assert result.exit_code == 2  # bad input
    assert "error:" in result.stderr and "not_an_image.jpg" in result.stderr
    assert "Traceback" not in result.output


def test_chat_answers_each_turn_and_survives_a_bad_file(tiny_ckpt, tmp_path):
    bad = tmp_path / "not_an_image.png"
    bad.write_text("hello")  # exists (passes the check before loading), fails to decode with its turn
    result = runner.invoke(
        app,
        ["chat", "--model", str(tiny_ckpt.path), "--temp", "0", "-n", "4", "--image", str(bad)],
        input="first question\nsecond question\n/reset\nthird\n/quit\n",
    )
    assert result.exit_code == 0, result.output
    assert result.stderr.count("error:") == 1 and "not_an_image.png" in result.stderr  # first turn only
    assert result.stderr.count("TTFT") == 2  # second and third turns answered
