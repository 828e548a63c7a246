"""Import cost of the package and of CLI commands that load no model: wall time and heavy modules pulled in.

    python benchmarks/import_time.py TREE [--cli-module cli.app] [--runs 3]

Runs each case in a fresh subprocess with the current interpreter, TREE first on sys.path (cwd = TREE),
and prints a markdown table: median wall seconds over --runs, and whether mlx_lm / transformers /
torch ended up in sys.modules. ``--cli-module`` is how the CLI root is imported from TREE (``cli.app``
for a source tree).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

HEAVY = ("mlx_lm", "transformers", "torch")


def cases(cli: str) -> list[tuple[str, str]]:
    """(label, python code) pairs; the CLI cases run the command as the console script would."""

    def command(*argv: str) -> str:
        return (f"import sys; sys.argv = ['gemma4', {', '.join(map(repr, argv))}]\n"
                f"from {cli} import app\ntry:\n    app(standalone_mode=True)\nexcept SystemExit:\n    pass")

    return [
        ("import mlx_gemma4", "import mlx_gemma4"),
        ("from mlx_gemma4 import load", "from mlx_gemma4 import load"),
        ("gemma4 --help", command("--help")),
        ("gemma4 --version", command("--version")),
        ("gemma4 convert --help", command("convert", "--help")),
        ("gemma4 synth --help", command("synth", "--help")),
        ("gemma4 synth OUT --geometry tiny", "import tempfile, os; _d = tempfile.mkdtemp()\n"
         + command("synth", "OUT", "--geometry", "tiny").replace("'OUT'", "os.path.join(_d, 'ckpt')")),
    ]


def run(tree: str, code: str) -> tuple[float, list[str]]:
    """Wall seconds of one subprocess and the heavy modules it imported."""
    probe = code + f"\nimport sys as _s; print('HEAVY', *[m for m in {HEAVY!r} if m in _s.modules])"
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", probe], cwd=tree, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    heavy = next(line for line in out.stdout.splitlines() if line.startswith("HEAVY")).split()[1:]
    return wall, heavy


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("tree")
    ap.add_argument("--cli-module", default="cli.app")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(f"python: {sys.executable}; tree: {args.tree}; median of {args.runs}\n")
    print("| case | wall s | heavy modules imported |\n| --- | --- | --- |")
    for label, code in cases(args.cli_module):
        walls, heavy = [], []
        for _ in range(args.runs):
            wall, heavy = run(args.tree, code)
            walls.append(wall)
        print(f"| `{label}` | {statistics.median(walls):.2f} | {', '.join(heavy) or 'none'} |")


if __name__ == "__main__":
    main()
