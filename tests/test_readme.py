"""Every Python snippet in the README runs, on the tiny checkpoint (placeholders swapped for real files)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNIPPETS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


def _placeholders(tiny_path: Path) -> dict[str, str]:
    """Quoted placeholders → quoted real paths (only whole string literals are touched)."""
    return {
        '"path/to/checkpoint"': repr(str(tiny_path)),
        '"photo.jpg"': repr(str(ROOT / "examples" / "scene.jpg")),
        '"examples/': '"' + str(ROOT / "examples") + "/",
    }


def test_the_readme_has_python_snippets():
    assert len(SNIPPETS) >= 2


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs(index, tiny_ckpt, capsys):
    code = SNIPPETS[index]
    for placeholder, real in _placeholders(tiny_ckpt.path).items():
        code = code.replace(placeholder, real)
    exec(compile(code, f"README.md snippet {index + 1}", "exec"), {"__name__": "readme_snippet"})


def test_the_first_command_prints_visible_text_and_one_stats_line(tmp_path):
    """The README's first command as written (after the install step), as real subprocesses; -n 16 only to keep it
    short: a random checkpoint answers with visible words, then one unwrapped stats line on stderr."""
    import os
    import shlex
    import subprocess
    import sys

    bash = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL).group(1)
    first = next(line for line in bash.splitlines() if line.strip() and not line.startswith("#"))
    steps = [shlex.split(step) for step in first.split("&&")]
    assert steps[0][:2] == ["pip", "install"] and [s[:2] for s in steps[1:]] == [["gemma4", "synth"],
                                                                                 ["gemma4", "generate"]]
    gemma4 = str(Path(sys.executable).with_name("gemma4"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "COLUMNS": "40"}
    outputs = []
    for step in steps[1:]:
        args = [str(tmp_path / "ckpt") if a == "/tmp/gemma4-tiny" else a for a in step[1:]]
        extra = ["-n", "16"] if step[1] == "generate" else []
        outputs.append(subprocess.run([gemma4, *args, *extra], capture_output=True, text=True, env=env, cwd=ROOT,
                                      timeout=600))
        assert outputs[-1].returncode == 0, outputs[-1].stderr
    answer, stderr = outputs[-1].stdout.strip(), outputs[-1].stderr.strip()
    assert answer.isprintable() and sum(c.isalpha() for c in answer) >= 16, outputs[-1].stdout
    assert len(stderr.splitlines()) == 1 and stderr.startswith("prompt ") and "finish: length" in stderr, stderr
