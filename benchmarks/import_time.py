"""Import cost of the package and of CLI commands that load no model: wall time and heavy modules pulled in.

    python benchmarks/import_time.py TREE [--cli-module cli.app] [--runs 3] [--against BEFORE_TREE] [--case TEXT]

With ``--against``, each case runs alternately in BEFORE_TREE and TREE (before, after, before, after…) and
the table has both, with the children's CPU seconds beside the wall time. ``--case`` keeps the cases whose
label contains TEXT.

Runs each case in a fresh subprocess with the current interpreter, TREE first on sys.path (cwd = TREE),
and prints a markdown table: median wall seconds over --runs, and whether mlx_lm / transformers /
torch ended up in sys.modules. ``--cli-module`` is how the CLI root is imported from TREE (``cli.app``
for a source tree).
"""

from __future__ import annotations

import argparse
import resource
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


def run(tree: str, code: str) -> tuple[float, float, list[str]]:
    """Wall and CPU seconds of one subprocess and the heavy modules it imported."""
    probe = code + f"\nimport sys as _s; print('HEAVY', *[m for m in {HEAVY!r} if m in _s.modules])"
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", probe], cwd=tree, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    heavy = next(line for line in out.stdout.splitlines() if line.startswith("HEAVY")).split()[1:]
    return wall, cpu, heavy


def compare(before: str, after: str, cases_: list[tuple[str, str]], runs: int) -> None:
    """Each case alternately in ``before`` and ``after``: median wall and CPU seconds of each, heavy modules."""
    print("| case | before wall s | before CPU s | after wall s | after CPU s | heavy before | heavy after |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, code in cases_:
        got: dict[str, list] = {before: [], after: []}
        for _ in range(runs):
            for tree in (before, after):
                got[tree].append(run(tree, code))
        cols = []
        for tree in (before, after):
            cols += [f"{statistics.median(r[0] for r in got[tree]):.2f}",
                     f"{statistics.median(r[1] for r in got[tree]):.2f}"]
        heavy = [", ".join(got[tree][-1][2]) or "none" for tree in (before, after)]
        print(f"| `{label}` | {' | '.join(cols)} | {heavy[0]} | {heavy[1]} |")


def main() -> None:
    """Print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("tree")
    ap.add_argument("--cli-module", default="cli.app")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--against", help="a tree to compare with, run alternately")
    ap.add_argument("--case", default="", help="only the cases whose label contains this")
    args = ap.parse_args()
    selected = [c for c in cases(args.cli_module) if args.case in c[0]]
    if args.against:
        print(f"python: {sys.executable}; before: {args.against}; after: {args.tree}; median of {args.runs}\n")
        compare(args.against, args.tree, selected, args.runs)
        return
    print(f"python: {sys.executable}; tree: {args.tree}; median of {args.runs}\n")
    print("| case | wall s | heavy modules imported |\n| --- | --- | --- |")
    for label, code in selected:
        walls, heavy = [], []
        for _ in range(args.runs):
            wall, _cpu, heavy = run(args.tree, code)
            walls.append(wall)
        print(f"| `{label}` | {statistics.median(walls):.2f} | {', '.join(heavy) or 'none'} |")


if __name__ == "__main__":
    main()
