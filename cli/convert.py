"""``gemma4 convert`` and ``gemma4 synth``: argument parsing and the rich report only."""

from __future__ import annotations

import contextlib
import re
import signal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from mlx_gemma4.errors import ConversionInputError, InputError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1e3, "M": 1e6, "G": 1e9, "KI": 2**10, "MI": 2**20, "GI": 2**30}


def parse_size(text: str) -> int:
    """'4GB', '500MB', '2GiB', '1048576' → bytes."""
    m = _SIZE.match(text)
    if not m:
        raise InputError(f"--max-shard-size: not a size: {text!r} (examples: 4GB, 500MB, 2GiB)")
    unit = (m.group(2) or "").upper().removesuffix("B")
    return int(float(m.group(1)) * _UNITS[unit])


def _interrupt_on_sigterm() -> None:
    """SIGTERM behaves like Ctrl-C, so the staging folder is cleaned up either way."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not the main thread (some test runners): keep the default
        signal.signal(signal.SIGTERM, handler)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        TextColumn("{task.fields[tensor]}", style="dim"), console=console, transient=True,
    )


def convert_cmd(
    src: Annotated[str, typer.Argument(help="Hugging Face checkpoint: a local folder or a hub id (org/name).")],
    out: Annotated[Path, typer.Argument(help="Output folder (created; refused if it exists unless --force).")],
    bits: Annotated[int, typer.Option("--bits", "-b", help="4 or 8 (affine), or 16 (float, no quantization).")] = 4,
    group_size: Annotated[int, typer.Option("--group-size", "-g", help="Quantization group size: 32, 64 or 128.")] = 64,
    recipe: Annotated[str, typer.Option(help="uniform, or mixed (sensitive tensors one step higher).")] = "uniform",
    dtype: Annotated[str, typer.Option(help="Float dtype of kept tensors and scales (or float32).")] = "bfloat16",
    max_shard_size: Annotated[str, typer.Option(help="Largest output shard (e.g. 4GB, 500MB).")] = "4GB",
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it is an earlier conversion output.")] = False,
    no_tokenizer: Annotated[bool, typer.Option("--no-tokenizer", help="Convert a source without tokenizer files "
                                                                        "(the output has none either).")] = False,
    upload_repo: Annotated[str | None, typer.Option(help="Upload the result to this hub repo (org/name).")] = None,
) -> None:
    """Convert a Hugging Face checkpoint (model or MTP drafter) to an MLX folder, streaming one tensor at a time."""
    from mlx_gemma4.convert.convert import ConvertOptions, convert, upload

    opts = ConvertOptions(bits, group_size, recipe, dtype, parse_size(max_shard_size), force, no_tokenizer)
    opts.check()
    if upload_repo is not None and upload_repo.count("/") != 1:
        raise ConversionInputError(f"--upload-repo must look like org/name, not {upload_repo!r}")
    _interrupt_on_sigterm()
    console = Console()  # per command: picks up the terminal width of this run
    with _progress(console) as bar:
        task = bar.add_task("converting", total=None, tensor="")
        result = convert(src, out, opts, lambda done, total, name: bar.update(task, completed=done, total=total,
                                                                                tensor=name))
    print_report(result, console)
    if upload_repo:
        url = upload(result.out, upload_repo)
        console.print(f"uploaded to {url}")


def print_report(result, console: Console) -> None:
    """The conversion report: size, bits per weight, precision per component, warnings."""
    table = Table(title=f"{result.out}", show_footer=True)
    table.add_column("component", footer="total")
    table.add_column("parameters", justify="right", footer=f"{result.params:,}")
    table.add_column("precision")
    table.add_column("size", justify="right", footer=f"{result.total_bytes / 1e9:.3f} GB")
    table.add_column("bits/weight", justify="right", footer=f"{result.bits_per_weight:.2f}")
    for name, c in sorted(result.components.items(), key=lambda kv: -kv[1].nbytes):
        table.add_row(name, f"{c.params:,}", ", ".join(sorted(c.precisions)), f"{c.nbytes / 1e9:.3f} GB",
                      f"{c.bits_per_weight:.2f}")
    console.print(table)
    console.print(
        f"{result.shards} shard(s); source {result.source_bytes / 1e9:.3f} GB → {result.total_bytes / 1e9:.3f} GB"
    )
    if result.missing_side_files:
        console.print(f"not in the source (so not in the output): {', '.join(result.missing_side_files)}")
    for note in result.notes:
        console.print(f"note: {note}")
    for w in result.warnings:
        style = "bold red" if w.startswith("NO TOKENIZER") else "bold yellow"
        console.print(f"[{style}]warning:[/{style}] {w}")


def synth_cmd(
    out: Annotated[Path, typer.Argument(help="Output folder for the random checkpoint (HF layout).")],
    geometry: Annotated[str, typer.Option(help="12b, 12b-assistant (MTP drafter), tiny or tiny-assistant.")] = "12b",
    layers: Annotated[int | None, typer.Option(help="Number of decoder layers (default: the geometry's own).")] = None,
    dtype: Annotated[str, typer.Option(help="bfloat16, float16 or float32.")] = "bfloat16",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace OUT if it is an earlier synth/convert output.")]
    = False,
) -> None:
    """Write a random checkpoint of the real geometry (streamed, bounded memory) for benchmarks and sizing."""
    from mlx_gemma4.convert.options import FLOAT_DTYPE_NAMES
    from mlx_gemma4.convert.synth import GEOMETRIES, synthesize

    # bad arguments are bad input (exit 2), checked before anything is written
    if geometry not in GEOMETRIES:
        raise ConversionInputError(f"--geometry must be one of {', '.join(GEOMETRIES)}, not {geometry!r}")
    if dtype not in FLOAT_DTYPE_NAMES:
        raise ConversionInputError(f"--dtype must be one of {FLOAT_DTYPE_NAMES}, not {dtype!r}")
    if layers is not None and layers < 1:
        raise ConversionInputError("--layers must be at least 1")
    _interrupt_on_sigterm()
    console = Console()  # per command: picks up the terminal width of this run
    with _progress(console) as bar:
        task = bar.add_task("writing", total=None, tensor="")
        info = synthesize(out, geometry, layers=layers, dtype=dtype, seed=seed, force=force,
                          progress=lambda done, total, name: bar.update(task, completed=done, total=total,
                                                                        tensor=name))
    console.print(f"wrote {info.out}: {info.params:,} parameters, {info.nbytes / 1e9:.2f} GB ({dtype})")


def register(app: typer.Typer) -> None:
    """Add ``convert`` and ``synth`` to the root app."""
    app.command("convert")(convert_cmd)
    app.command("synth")(synth_cmd)
