"""``gemma4 bench``: flags → ``mlx_gemma4.bench.run`` → a rich table (or JSON lines with ``--json``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

err = Console(stderr=True)

_GB = 1e9


def _fmt(value, spec: str = ".2f", scale: float = 1.0) -> str:
    return "—" if value is None else format(value / scale, spec)


def _spread(rec: dict, name: str, spec: str = ".1f") -> str:
    """median (min–max)."""
    med, lo, hi = rec[f"{name}_median"], rec[f"{name}_min"], rec[f"{name}_max"]
    if med is None:
        return "—"
    return f"{med:{spec}}" if lo == hi else f"{med:{spec}} ({lo:{spec}}–{hi:{spec}})"


def _share(r: dict) -> str:
    return "—" if r["bandwidth_share"] is None else f"{100 * r['bandwidth_share']:.0f} %"


_ROWS = (
    ("prompt tokens", lambda r: str(r["prompt_tokens"])),
    ("generated tokens", lambda r: str(r["generated_tokens"])),
    ("preprocessing s", lambda r: _spread(r, "preprocess_s", ".3f")),
    ("time to first token s", lambda r: _spread(r, "ttft_s", ".3f")),
    ("prefill tok/s", lambda r: _spread(r, "prefill_tps")),
    ("decode tok/s", lambda r: _spread(r, "decode_tps", ".2f")),
    ("peak memory GB", lambda r: _fmt(r["peak_memory_bytes"], ".3f", _GB)),
    ("  weights GB", lambda r: _fmt(r["weights_bytes"], ".3f", _GB)),
    ("  KV cache GB", lambda r: _fmt(r["kv_cache_bytes"], ".3f", _GB)),
    ("  activations GB", lambda r: _fmt(r["activations_bytes"], ".3f", _GB)),
    ("MB read per token", lambda r: _fmt(r["bytes_per_token"], ".1f", 1e6)),
    ("share of bandwidth", _share),
)


def render_table(records: list[dict], console: Console) -> None:
    """The header line and one row per prompt kind."""
    h = records[0]
    console.print(
        f"[bold]{h['model']}[/bold] · {h['device']} · MLX {h['mlx']} · mlx-lm {h['mlx_lm']} · dtype {h['dtype']} · "
        f"quantization {h['quantization']} · {h['layers']} layers · batch {h['batch']}"
        + (f" · draft {h['draft']}" if h["draft"] else ""),
        highlight=False,
    )
    console.print(
        f"load {h['load_s']:.2f} s · bandwidth {h['bandwidth_gbps']:.1f} GB/s ({h['bandwidth_source']}) · "
        f"KV {h['kv_bytes_per_1k_tokens'] / 2**20:.1f} MiB per 1K tokens",
        highlight=False,
    )
    table = Table(caption="median (min–max) over trials; decode timed after the first token, every token read back")
    table.add_column("")
    for r in records:
        table.add_column(r["kind"], justify="right")
    for label, cell in _ROWS:
        table.add_row(label, *[cell(r) if r["available"] else "—" for r in records])
    console.print(table)
    for r in records:
        if r["note"]:
            console.print(f"{r['kind']}: {r['note']}", style="yellow", highlight=False)


def bench_cmd(
    model: Annotated[str | None, typer.Option("--model", "-m", help="Checkpoint folder or hub id.")] = None,
    synthetic: Annotated[str | None, typer.Option(help="Random weights: 12b or tiny (cached).")] = None,
    layers: Annotated[int | None, typer.Option(help="--synthetic: decoder layers (default: all).")] = None,
    bits: Annotated[int, typer.Option(help="--synthetic: 4, 8 (quantized) or 16 (bfloat16).")] = 4,
    prompt_tokens: Annotated[int, typer.Option(help="Text tokens in each prompt.")] = 128,
    gen_tokens: Annotated[int, typer.Option(help="Tokens generated per trial.")] = 32,
    image: Annotated[bool, typer.Option("--image", help="Also measure a prompt with one image.")] = False,
    image_tokens: Annotated[int, typer.Option(help="Image budget: 70, 140, 280, 560 or 1120 soft tokens.")] = 280,
    audio: Annotated[float | None, typer.Option(help="Also measure a prompt with this many seconds of audio.")] = None,
    video: Annotated[float | None, typer.Option(help="Also measure a video prompt (seconds).")] = None,
    batch: Annotated[int, typer.Option(help="Rows generated together.")] = 1,
    draft: Annotated[str | None, typer.Option(help="MTP drafter checkpoint for speculative decoding, or off.")] = None,
    trials: Annotated[int, typer.Option(help="Timed runs per prompt kind.")] = 3,
    warmup: Annotated[int, typer.Option(help="Untimed runs first.")] = 1,
    dtype: Annotated[str | None, typer.Option(help="float32, bfloat16 or float16 (default: per device).")] = None,
    bandwidth_gbps: Annotated[float | None, typer.Option(help="Memory bandwidth (default: measured by a copy).")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines: one object per prompt kind.")] = False,
) -> None:
    """Load time, preprocessing, time to first token, prefill/decode tok/s and memory, per prompt kind."""
    from mlx_gemma4.bench import BenchConfig, run
    from mlx_gemma4.loader import parse_dtype

    cfg = BenchConfig(model, synthetic, layers, bits, prompt_tokens, gen_tokens, image, image_tokens, audio, video,
                      batch, None if draft in (None, "off") else draft, trials, warmup, dtype, bandwidth_gbps)
    cfg.check()  # a bad flag is an InputError: one line, exit status 2
    parse_dtype(dtype)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("starting", total=None)
        records = run(cfg, lambda what, done, total: bar.update(task, description=what, completed=done,
                                                                  total=total or None))
    if as_json:
        for r in records:
            typer.echo(json.dumps(r))
    else:
        console = Console()
        render_table(records, console if console.is_terminal else Console(width=160))


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the root app."""
    app.command("bench")(bench_cmd)
