"""``gemma4 generate --video`` as a real subprocess: the README's command on the tiny checkpoint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT / "examples" / "bouncing_ball.mp4"


def gemma4(*args: str) -> subprocess.CompletedProcess:
    code = "import sys; from mlx_gemma4.cli.app import main; sys.argv[0] = 'gemma4'; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_generate_with_a_video(tiny_ckpt):
    out = gemma4("generate", "--model", str(tiny_ckpt.path), "--video", str(CLIP), "What happens here?",
                 "--temp", "0", "-n", "4")
    assert out.returncode == 0, out.stderr
    # 32 frames × 63 soft tokens (160×120 → 432×336) plus stamps and the question.
    prompt_tokens = int(out.stderr.split("prompt ")[1].split(" tok")[0])
    assert prompt_tokens > 32 * 63


def test_bad_video_is_one_line_exit_2(tiny_ckpt, tmp_path):
    bad = tmp_path / "clip.mp4"
    bad.write_text("not a video")
    out = gemma4("generate", "--model", str(tiny_ckpt.path), "--video", str(bad), "hi")
    assert out.returncode == 2
    assert "clip.mp4" in out.stderr and "Traceback" not in out.stderr
