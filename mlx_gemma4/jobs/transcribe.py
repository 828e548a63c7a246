"""``transcribe``: audio of any length → blocks of ≤ 30 s cut on silence → one request each → text / srt / jsonl.

Every finished block is appended to a JSONL journal at once (the output itself for ``--format jsonl``,
else ``OUT.blocks.jsonl`` next to it), so a killed run resumes at the first missing block; txt / srt
files are written whole (temp + rename) from the journal once all their blocks are there, and the
journal is removed after the last one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import InputError
from ..generation.request import GenerationRequest
from ..processing import SAMPLE_RATE, load_audio
from .audio_blocks import split_blocks, to_srt
from .inputs import Item, collect_items
from .records import FileSink, read_rows
from .runner import JobSummary, error_row, stream_texts

COLUMNS = ("file_name", "block", "start", "end", "text", "prompt_tokens", "generation_tokens", "seconds",
           "finish_reason", "error")
FORMATS = ("txt", "srt", "jsonl")


def instruction(translate_to: str | None) -> str:
    """What the model is asked for each block."""
    if translate_to:
        return f"Translate this speech into {translate_to}. Write only the translation."
    return "Transcribe this speech exactly as it is spoken. Write only the transcript."


def _key(row: dict) -> str:
    return f"{row['file_name']}#{row['block']}"


class TranscribeJob:
    """Checks inputs and output up front; ``run`` transcribes block by block; ``finish`` writes txt/srt."""

    def __init__(self, inputs: Sequence[str], out: Path | None, fmt: str | None = None, resume: bool = True,
                 translate_to: str | None = None):
        self.translate_to = translate_to
        self.items, _ = collect_items(inputs, recursive=False, kinds=("audio",))
        self.out = Path(out) if out is not None else None
        default = {".srt": "srt", ".jsonl": "jsonl"}.get(self.out.suffix.lower(), "txt") if self.out else "txt"
        self.fmt = fmt or default
        if self.fmt not in FORMATS:
            raise InputError(f"--format {self.fmt!r}: unknown format (choose {', '.join(FORMATS)})")
        self.folder = self.out is not None and self.fmt != "jsonl" and (len(self.items) > 1 or self.out.is_dir())
        if self.folder and not self.out.is_dir():
            if not self.out.parent.is_dir():
                raise InputError(f"{self.out}: the output folder {self.out.parent} does not exist")
            self.out.mkdir()
        journal = None
        if self.out is not None:
            side = self.out.with_name(self.out.name + ".blocks.jsonl")
            journal = self.out if self.fmt == "jsonl" else (self.out / ".blocks.jsonl" if self.folder else side)
        self.sink = FileSink(journal, "jsonl", COLUMNS, _key) if journal else None
        self.memory: list[dict] = []  # rows of a run without --out
        # Files with an error row are not retried (that would write a second row for the same block).
        self.failed = {r["file_name"] for r in read_rows(journal, "jsonl") if r["error"] is not None} if (
            self.sink is not None and self.sink.done) else set()
        if not resume and self.sink is not None and self.sink.done:
            self.sink.close()
            raise InputError(f"{journal}: holds {len(self.sink.done)} finished block(s); --no-resume never "
                             "overwrites: name another --out or move it away")

    def target(self, item: Item) -> Path | None:
        """The txt / srt file of ``item`` (None for jsonl, or without --out)."""
        if self.out is None or self.fmt == "jsonl":
            return None
        return (self.out / Path(item.file_name).with_suffix("." + self.fmt).name) if self.folder else self.out

    def _write(self, row: dict) -> None:
        if self.sink is not None:
            self.sink.write(row)
        else:
            self.memory.append(row)

    def run(self, model, processor, request: GenerationRequest, batch_size: int = 4, *,
            on_blocks: Callable[[int], None] | None = None, on_row: Callable[[dict], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> JobSummary:
        """Transcribe every block not yet in the journal. ``on_blocks(n)`` announces a file's blocks."""
        s = JobSummary(total=len(self.items), batch_size=batch_size)
        begin = time.perf_counter()
        for item in self.items:
            if should_stop and should_stop():
                s.interrupted = True
                break
            target = self.target(item)
            if item.file_name in self.failed:
                s.failed += 1
                continue
            if target is not None and target.exists() and not self._pending(item):
                s.skipped += 1
                continue
            self._file(model, processor, request, item, batch_size, s, on_blocks, on_row, should_stop)
        s.seconds = time.perf_counter() - begin
        return s

    def _pending(self, item: Item) -> bool:
        return self.sink is not None and any(k.startswith(item.file_name + "#") for k in self.sink.done)

    def _file(self, model, processor, request, item, batch_size, s, on_blocks, on_row, should_stop) -> None:
        start = time.perf_counter()
        try:
            wave = load_audio(str(item.path))
        except Exception as e:  # noqa: BLE001 - an error row for the file; the run goes on
            row = error_row(item, e, time.perf_counter() - start)
            self._write({**row, "block": 0, "start": 0.0, "end": 0.0, "text": None})
            s.failed += 1
            return
        ranges = split_blocks(wave, SAMPLE_RATE)
        done = self.sink.done if self.sink is not None else set()
        todo = [(i, r) for i, r in enumerate(ranges) if f"{item.file_name}#{i}" not in done]
        if on_blocks:
            on_blocks(len(todo))
        ask = {"type": "text", "text": instruction(self.translate_to)}
        messages = [{"role": "user", "content": [{"type": "audio"}, ask]}]
        for n in range(0, len(todo), batch_size):
            if should_stop and should_stop():
                s.interrupted = True
                return
            if not self._batch(model, processor, request, item, wave, todo[n : n + batch_size], messages, s, on_row):
                s.failed += 1
                return
        s.done += 1

    def _batch(self, model, processor, request, item, wave, batch, messages, s, on_row) -> bool:
        """Decode some blocks of one file together and journal each as it finishes; False after a failure
        (its error row written; the file's remaining blocks wait for the next run)."""
        start = time.perf_counter()
        try:
            inputs = [processor(messages, audio=[(wave[a:b], SAMPLE_RATE)], enable_thinking=request.thinking)
                      for _, (a, b) in batch]
            for r, text, st, seconds in stream_texts(model, processor, inputs, request):
                i, (a, b) = batch[r]
                row = {"file_name": item.file_name, "block": i, "start": round(a / SAMPLE_RATE, 3),
                       "end": round(b / SAMPLE_RATE, 3), "text": text, "prompt_tokens": st.prompt_tokens,
                       "generation_tokens": st.generation_tokens, "seconds": seconds,
                       "finish_reason": st.finish_reason, "error": None}
                self._write(row)
                s.generation_tokens += st.generation_tokens
                if on_row:
                    on_row(row)
        except Exception as e:  # noqa: BLE001 - recorded as the file's error row, never dropped
            i, (a, b) = batch[0]
            self._write({**error_row(item, e, time.perf_counter() - start), "block": i,
                         "start": round(a / SAMPLE_RATE, 3), "end": round(b / SAMPLE_RATE, 3), "text": None})
            return False
        return True

    def rows_of(self, item: Item) -> list[dict]:
        """The finished blocks of ``item`` in order."""
        rows = self.memory if self.sink is None else list(read_rows(self.sink.path, "jsonl"))
        return sorted((r for r in rows if r["file_name"] == item.file_name), key=lambda r: r["block"])

    def render(self, item: Item) -> str:
        """The transcript of ``item`` as txt or srt text."""
        rows = [r for r in self.rows_of(item) if r["error"] is None]
        if self.fmt == "srt":
            return to_srt(rows)
        return " ".join((r["text"] or "").strip() for r in rows).strip() + "\n"

    def finish(self, summary: JobSummary) -> list[tuple[Item, str]]:
        """Close the journal; write each complete txt/srt file whole. Returns transcripts of a run without --out."""
        if self.sink is not None:
            self.sink.close()
        if summary.interrupted:
            return []
        if self.out is None:
            return [(item, self.render(item) if self.fmt != "jsonl" else "") for item in self.items]
        if self.fmt != "jsonl":
            failed = False
            for item in self.items:
                target = self.target(item)
                rows = self.rows_of(item)
                if any(r["error"] is not None for r in rows):
                    failed = True  # no transcript with holes; the journal keeps the error for the next run
                elif rows:
                    tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
                    tmp.write_text(self.render(item), encoding="utf-8")
                    os.replace(tmp, target)
            if not failed:
                self.sink.path.unlink()
        return []
