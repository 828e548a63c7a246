"""``gemma4 caption`` (a folder → one caption per file) and ``gemma4 transcribe`` (long audio → text / srt)."""

from __future__ import annotations

import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from mlx_gemma4.hub import DEFAULT_MODEL

from . import options as o
from .report import load

err = Console(stderr=True, soft_wrap=True)  # one-line summaries, never wrapped at 80 columns in logs

Inputs = Annotated[list[str], typer.Argument(help="Files, folders, globs or @list.txt (one path per line).",
                                             show_default=False)]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Output file (jsonl/csv) or folder (txt).")]
Format = Annotated[str | None, typer.Option("--format", "-f", help="jsonl | csv | txt (default: from --out).")]
Resume = Annotated[bool, typer.Option("--resume/--no-resume", help="Skip items already in the output.")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", "-b", min=1,
                                               help="Items decoded together (default: from free memory, 1-8).")]
CAPTION_SAMPLING = o.SamplingFlags(max_tokens=128)  # captions are short


class RateColumn(ProgressColumn):
    """Items per minute since the bar started."""

    def render(self, task) -> Text:
        rate = 60 * task.completed / task.elapsed if task.elapsed else 0.0
        return Text(f"{rate:.1f} items/min", style="cyan")


def progress_bar() -> Progress:
    """The bar of batch jobs: count, items/min, ETA (on stderr)."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                    TimeRemainingColumn(), console=err, transient=False)


@contextmanager
def stop_on_sigint():
    """First Ctrl-C: finish the items in flight, then stop (the callable turns True); second: abort now."""
    state = {"stop": False}

    def handler(signum, frame):
        if state["stop"]:
            raise KeyboardInterrupt
        state["stop"] = True
        err.print("[yellow]stopping after the items in flight… (Ctrl-C again to abort now)[/yellow]")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: state["stop"]
    finally:
        signal.signal(signal.SIGINT, previous)


def summary_line(s, where: str) -> str:
    """done, skipped, failed, items/min, tokens/s."""
    return (f"done {s.done}, skipped {s.skipped}, failed {s.failed} of {s.total} in {s.seconds:.1f} s: "
            f"{s.items_per_min:.1f} items/min, {s.tokens_per_s:.1f} tok/s (batch {s.batch_size}) → {where}")


@o.with_flag_groups
def caption_cmd(
    inputs: Inputs,
    model: o.Model = DEFAULT_MODEL,
    bits: o.Bits = 4,
    out: Out = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="Instruction (default: a short caption.)")] = None,
    system: o.System = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Look into sub-folders.")] = False,
    fmt: Format = None,
    resume: Resume = True,
    batch_size: BatchSize = None,
    image_tokens: o.ImageTokens = None,
    sampling: o.SamplingFlags = CAPTION_SAMPLING,
) -> None:
    """Caption every image / audio / video file: one row per file (jsonl, csv) or NAME.txt files; resumable."""
    from mlx_gemma4.jobs.caption import CaptionJob
    from mlx_gemma4.jobs.runner import JobOptions, worker_count

    # Checked before the model loads: a bad flag, input or output is a usage error (exit 2) at once.
    request = sampling.request()
    job = CaptionJob(inputs, out, fmt=fmt, recursive=recursive, resume=resume)
    opts = JobOptions(prompt=prompt, system=system, image_tokens=image_tokens, batch_size=batch_size,
                      workers=worker_count(), request=request)
    where = str(out) if out is not None else "NAME.txt beside each file"
    rank = f"rank {job.cluster.rank}/{job.cluster.size}: " if job.cluster.size > 1 else ""
    m, processor = load(model, bits) if job.todo else (None, None)  # all done already: no model needed
    with stop_on_sigint() as should_stop, progress_bar() as bar:
        task = bar.add_task(f"{rank}captioning ({len(job.mine) - len(job.todo)} already done)", total=len(job.todo))
        summary = job.run(m, processor, opts, on_row=lambda row: bar.advance(task), should_stop=should_stop)
    total = job.finish(summary)
    if job.cluster.rank == 0:
        err.print(summary_line(total, where), markup=False, highlight=False)
    if total.interrupted:
        err.print(f"interrupted: {total.done + total.skipped} item(s) are in the output; run the same command "
                  "again to resume", style="yellow", markup=False)
        raise typer.Exit(130)
    if total.failed:
        err.print(f"[red]{total.failed} item(s) failed[/red]: their rows carry the error", soft_wrap=True)
        raise typer.Exit(1)


def transcribe_cmd(
    audio: Annotated[list[str], typer.Argument(help="Audio files (any length), globs or @list.txt.",
                                               show_default=False)],
    model: o.Model = DEFAULT_MODEL,
    bits: o.Bits = 4,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output file (a folder for several inputs); "
                                             "default: print the transcript.")] = None,
    fmt: Annotated[str | None, typer.Option("--format", "-f", help="txt | srt | jsonl (default: from --out).")] = None,
    translate_to: Annotated[str | None, typer.Option("--translate-to", help="Translate into this language.")] = None,
    resume: Resume = True,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Blocks decoded together.")] = 4,
    max_tokens: o.MaxTokens = 512,
    temp: o.Temp = 0.0,
    seed: o.Seed = None,
) -> None:
    """Transcribe (or translate) speech: ≤ 30 s blocks cut on silence, stitched in order; resumable."""
    from mlx_gemma4.jobs.transcribe import TranscribeJob

    request = o.build_request(max_tokens=max_tokens, temp=temp, top_p=None, top_k=None, min_p=None,
                              repetition_penalty=None, seed=seed, stop=None, thinking=False, kv_bits=None,
                              max_kv_size=None)
    job = TranscribeJob(audio, out, fmt, resume=resume, translate_to=translate_to)
    m, processor = load(model, bits)
    with stop_on_sigint() as should_stop, progress_bar() as bar:
        task = bar.add_task("transcribing blocks", total=0)
        summary = job.run(m, processor, request, batch_size,
                          on_blocks=lambda n: bar.update(task, total=bar.tasks[0].total + n),
                          on_row=lambda row: bar.advance(task), should_stop=should_stop)
    for item, text in job.finish(summary):
        if len(job.items) > 1:
            typer.echo(f"== {item.file_name}")
        typer.echo(text, nl=False)
    err.print(f"files done {summary.done}, skipped {summary.skipped}, failed {summary.failed} of {summary.total} "
              f"in {summary.seconds:.1f} s, {summary.tokens_per_s:.1f} tok/s → {out or 'stdout'}",
              markup=False, highlight=False)
    if summary.interrupted:
        err.print("interrupted: finished blocks are saved; run the same command again to resume", style="yellow")
        raise typer.Exit(130)
    if summary.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``caption`` and ``transcribe`` to the root app."""
    app.command("caption")(caption_cmd)
    app.command("transcribe")(transcribe_cmd)

