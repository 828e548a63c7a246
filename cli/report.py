"""What the model commands show around generation: loading, progress bars, the stats line, JSON.

Everything goes to stderr except the answer itself (and ``--json``'s one object), so stdout can be
piped. Numbers come from ``GenerationStats`` only.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

err = Console(stderr=True)

PROGRESS_DELAY_S = 0.5  # prefills shorter than this show no bar (it would only flicker)


class PrefillProgress:
    """A ``progress(done, total)`` callback: a transient bar of prompt tokens (media blocks included),
    shown once a prefill has run longer than ``PROGRESS_DELAY_S``."""

    def __init__(self, console: Console = err, delay_s: float = PROGRESS_DELAY_S):
        self.console, self.delay_s = console, delay_s
        self._start: float | None = None
        self._bar: Progress | None = None
        self._task = None

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if self._start is None or done == 0:
            self._start = now
        if self._bar is None and done < total and now - self._start >= self.delay_s:
            self._bar = Progress(TextColumn("prefill"), BarColumn(), MofNCompleteColumn(), TextColumn("tokens"),
                                 TimeElapsedColumn(), console=self.console, transient=True)
            self._task = self._bar.add_task("prefill", total=total)
            self._bar.start()
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)
        if done >= total:
            self.close()

    def close(self) -> None:
        """Remove the bar (the prefill ended, or the answer was interrupted)."""
        if self._bar is not None:
            self._bar.stop()
        self._bar, self._start = None, None


def resolve(model: str, bits: int) -> Any:
    """The folder of ``--model`` (hub ids downloaded/converted once), with the converter's progress bar."""
    from mlx_gemma4.hub import resolve_model

    bar: Progress | None = None  # made on the converter's first report only: most runs convert nothing
    task = None

    def progress(done: int, total: int, name: str) -> None:
        nonlocal bar, task
        if bar is None:
            bar = Progress(TextColumn(f"converting to {bits}-bit"), BarColumn(), DownloadColumn(),
                           TextColumn("{task.fields[name]}", style="dim"), console=err, transient=True)
            task = bar.add_task("convert", total=total, name=name)
            bar.start()
        bar.update(task, completed=done, total=total, name=name)

    try:
        return resolve_model(model, bits, progress)
    finally:
        if bar is not None:
            bar.stop()


def load(model: str, bits: int, image_tokens: int | None = None, split_audio: bool = True):
    """``(model, processor)`` for ``--model``/``--bits``, the processor set to the media flags."""
    from mlx_gemma4 import load as load_checkpoint
    from mlx_gemma4.errors import ModelLoadError
    from mlx_gemma4.loader import TOKENIZER_FILES

    folder = resolve(model, bits)
    # Every command that loads through here reads text: without a tokenizer it could only fail later,
    # deep inside (a converted --no-tokenizer output, say). Checked before the weights are read.
    missing = [f for f in TOKENIZER_FILES if not (Path(folder) / f).is_file()]
    if missing:
        raise ModelLoadError(f"{folder}: no {' or '.join(missing)}, so this checkpoint cannot read text; copy "
                             "the tokenizer files from the original checkpoint into it")
    with err.status(f"loading {model}…"):
        m, processor = load_checkpoint(folder)
    if processor is not None:
        processor.configure(image_budget=image_tokens, split_audio=split_audio)
    return m, processor


def load_draft(source: str | None, bits: int, target, required: bool = True) -> Any:
    """The drafter ``--draft`` names (None for none), checked against the target model. Not ``required``
    (``--draft auto``): a drafter that cannot be fetched (offline, say) is reported and skipped."""
    if source is None:
        return None
    from mlx_gemma4 import load_drafter
    from mlx_gemma4.errors import ModelLoadError

    try:
        folder = resolve(source, bits)
    except ModelLoadError as e:
        if required:
            raise
        err.print(f"no drafter (decoding without speculation): {e}", style="dim", markup=False, soft_wrap=True)
        return None
    with err.status(f"loading drafter {source}…"):
        return load_drafter(folder, target=target)


def load_generation(flags, request) -> tuple[Any, Any, Any]:
    """``(model, processor, request)`` for ``generate``/``chat``'s ``ModelFlags``, the request given
    ``--draft``'s drafter (``--draft auto`` skips one that cannot be fetched)."""
    from .options import draft_source

    m, processor = load(flags.model, flags.bits, flags.image_tokens, flags.split_audio)
    drafter = load_draft(draft_source(flags.draft, flags.model), flags.bits, m, flags.draft != "auto")
    return m, processor, request.replace(draft_model=drafter)


def stats_line(stats) -> str:
    """One labelled line; rates only where they were measured (no generation rate without tokens)."""
    parts = [f"prompt {stats.prompt_tokens} tok"]
    if stats.generation_tokens:  # without a generated token there is no first token to time
        parts += [f"TTFT {stats.time_to_first_token_s:.2f} s", f"prefill {stats.prompt_tps:.1f} tok/s"]
    else:
        parts += [f"prefill {stats.prefill_s:.2f} s", f"{stats.prompt_tps:.1f} tok/s"]
    parts.append(f"generated {stats.generation_tokens} tok")
    if stats.generation_tokens > 1:
        parts.append(f"{stats.generation_tps:.1f} tok/s")
    if getattr(stats, "draft_tokens", 0):
        parts.append(f"draft accepted {stats.acceptance_rate:.0%}")
    parts.append(f"peak (MLX) {stats.peak_memory_gb:.2f} GB")
    parts.append(f"finish: {stats.finish_reason}")
    return " · ".join(parts)


def mlx_lm_lines(stats) -> list[str]:
    """The summary mlx-lm prints, for people comparing the two."""
    return [
        f"Prompt: {stats.prompt_tokens} tokens, {stats.prompt_tps:.3f} tokens-per-sec",
        f"Generation: {stats.generation_tokens} tokens, {stats.generation_tps:.3f} tokens-per-sec",
        f"Peak memory: {stats.peak_memory_gb:.3f} GB",
    ]


def print_stats(stats, verbose: bool = False) -> None:
    """The stats line on stderr, never wrapped (a log file keeps it on one line); mlx-lm's lines too if verbose."""
    err.print(stats_line(stats), style="cyan", markup=False, highlight=False, soft_wrap=True)
    if verbose:
        for line in mlx_lm_lines(stats):
            err.print(line, markup=False, highlight=False, soft_wrap=True)


def result_json(result) -> dict:
    """The ``--json`` object of one generation."""
    s = result.stats
    return {
        "text": result.text, "thinking": result.thinking, "token_ids": list(result.token_ids),
        "prompt_tokens": s.prompt_tokens, "generation_tokens": s.generation_tokens,
        "prompt_tps": s.prompt_tps, "generation_tps": s.generation_tps, "ttft_s": s.time_to_first_token_s,
        "peak_memory_gb": s.peak_memory_gb, "finish_reason": s.finish_reason,
    }
