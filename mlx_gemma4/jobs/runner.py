"""The batch loop of ``caption``: preprocess ahead in threads, decode in batches, write each row when done.

Each item is preprocessed on its own (a thread pool; processing is numpy/Pillow/soundfile only), so a
corrupt file becomes an error row before it can reach a batch; the next items are preprocessed while
the model decodes the current batch. A batch that still fails is retried item by item, so one bad item
never costs the others their captions.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import Gemma4Error
from ..generation.request import GenerationRequest
from .inputs import Item
from .memory import default_batch_size

DEFAULT_PROMPTS = {
    "image": "Write a short, factual caption for this image.",
    "audio": "Write a short, factual caption for this sound.",
    "video": "Write a short, factual caption for this video.",
}


@dataclass(frozen=True)
class JobOptions:
    """What to ask for each item and how to decode it."""

    prompt: str | None = None  # None: DEFAULT_PROMPTS for the item's kind
    system: str | None = None
    image_tokens: int | None = None  # image soft-token budget (None: the checkpoint's)
    batch_size: int | None = None  # None: default_batch_size()
    workers: int = 2  # preprocessing threads
    request: GenerationRequest = field(default_factory=GenerationRequest)  # max_tokens, sampling, thinking


@dataclass
class JobSummary:
    """Counts and totals of one run (this process only)."""

    total: int = 0
    skipped: int = 0  # already in the output (resume)
    done: int = 0
    failed: int = 0
    generation_tokens: int = 0
    seconds: float = 0.0
    batch_size: int = 0
    interrupted: bool = False

    @property
    def items_per_min(self) -> float:
        """Items finished (ok or failed) per minute of this run."""
        return 60.0 * (self.done + self.failed) / max(self.seconds, 1e-9)

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens per second of this run."""
        return self.generation_tokens / max(self.seconds, 1e-9)


def build_messages(item: Item, opts: JobOptions) -> list[dict]:
    """The chat of one item: optional system turn, then the media followed by the instruction."""
    text = opts.prompt if opts.prompt is not None else DEFAULT_PROMPTS[item.kind]
    messages = [{"role": "system", "content": opts.system}] if opts.system else []
    messages.append({"role": "user", "content": [{"type": item.kind}, {"type": "text", "text": text}]})
    return messages


_ARGUMENT = {"image": "images", "audio": "audio", "video": "videos"}


def preprocess(processor, item: Item, opts: JobOptions):
    """One item → model-ready arrays (numpy); raises InputError for a bad file. Runs in a worker thread."""
    return processor(build_messages(item, opts), **{_ARGUMENT[item.kind]: [str(item.path)]},
                     enable_thinking=opts.request.thinking, image_budget=opts.image_tokens)


def error_row(item: Item, err: BaseException, seconds: float) -> dict[str, Any]:
    """The row of an item that could not be captioned."""
    msg = str(err) if isinstance(err, Gemma4Error) else f"{type(err).__name__}: {err}"
    return {"file_name": item.file_name, "caption": None, "prompt_tokens": None, "generation_tokens": None,
            "seconds": round(seconds, 3), "finish_reason": "error", "error": msg}


def stream_texts(model, processor, inputs: Sequence[Any], request: GenerationRequest) -> Iterator[tuple]:
    """Decode preprocessed inputs together; yields ``(index, answer text, stats, seconds)`` as each row
    finishes (``seconds`` runs from the batch's start to that row's last token)."""
    from ..generation import stream_batch

    start = time.perf_counter()
    texts: list[list[str]] = [[] for _ in inputs]
    for r, chunk in stream_batch(model, processor, list(inputs), request=request):
        if chunk.channel == "answer":
            texts[r].append(chunk.text)
        if chunk.stats is not None:
            yield r, "".join(texts[r]), chunk.stats, round(time.perf_counter() - start, 3)


def stream_rows(model, processor, batch: Sequence[tuple[Item, Any]], request: GenerationRequest) -> Iterator[tuple]:
    """Caption rows of a batch of preprocessed items, as ``(index, row)`` in the order they finish."""
    for r, text, st, seconds in stream_texts(model, processor, [inp for _, inp in batch], request):
        yield r, {"file_name": batch[r][0].file_name, "caption": text.strip(), "prompt_tokens": st.prompt_tokens,
                  "generation_tokens": st.generation_tokens, "seconds": seconds,
                  "finish_reason": st.finish_reason, "error": None}


class _Job:
    """State of one run: the sink, the counts, the callbacks."""

    def __init__(self, model, processor, sink, opts: JobOptions, on_row: Callable[[dict], None] | None):
        self.model, self.processor, self.sink, self.opts = model, processor, sink, opts
        self.on_row = on_row or (lambda row: None)
        self.summary = JobSummary()

    def emit(self, row: dict[str, Any]) -> None:
        self.sink.write(row)
        if row["error"] is None:
            self.summary.done += 1
            self.summary.generation_tokens += row["generation_tokens"]
        else:
            self.summary.failed += 1
        self.on_row(row)

    def decode(self, batch: list[tuple[Item, Any]]) -> None:
        """Decode ``batch``; if it fails as a whole, each item alone (so only the culprit gets an error row)."""
        start = time.perf_counter()
        written: set[int] = set()
        try:
            for r, row in stream_rows(self.model, self.processor, batch, self.opts.request):
                self.emit(row)  # at once: a row never waits for the batch's longest caption to be saved
                written.add(r)
        except Exception as e:  # noqa: BLE001 - recorded in the rows below, never dropped
            rest = [one for r, one in enumerate(batch) if r not in written]
            if len(batch) == 1:
                self.emit(error_row(batch[0][0], e, time.perf_counter() - start))
                return
            for one in rest:
                self.decode([one])


def _prepared(item: Item, fut: Future, job: _Job) -> Any | None:
    """The preprocessed input of ``item``, or None after writing its error row."""
    start = time.perf_counter()
    try:
        return fut.result()
    except Exception as e:  # noqa: BLE001 - becomes the item's error row
        job.emit(error_row(item, e, time.perf_counter() - start))
        return None


def run_job(model, processor, items: Sequence[Item], sink, opts: JobOptions, *,
            on_row: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None) -> JobSummary:
    """Caption every item not already in ``sink``; returns the run's summary. ``should_stop`` is checked
    between batches (Ctrl-C finishes the items in flight)."""
    job = _Job(model, processor, sink, opts, on_row)
    todo = [it for it in items if it.file_name not in sink.done]
    s = job.summary
    s.total, s.skipped = len(items), len(items) - len(todo)
    s.batch_size = opts.batch_size or (default_batch_size(model, opts) if todo else 1)
    start = time.perf_counter()
    pending: deque[tuple[Item, Future]] = deque()
    queue = iter(todo)
    with ThreadPoolExecutor(max_workers=max(1, opts.workers), thread_name_prefix="preprocess") as pool:

        def top_up() -> None:  # keep two batches' worth of items preprocessing ahead of the model
            while len(pending) < 2 * s.batch_size and (item := next(queue, None)) is not None:
                pending.append((item, pool.submit(preprocess, processor, item, opts)))

        top_up()
        while pending and not (should_stop and should_stop()):
            batch = []
            while pending and len(batch) < s.batch_size:
                item, fut = pending.popleft()
                top_up()
                if (inp := _prepared(item, fut, job)) is not None:
                    batch.append((item, inp))
            if batch:
                job.decode(batch)
        s.interrupted = bool(pending)
        for _, fut in pending:
            fut.cancel()
    s.seconds = time.perf_counter() - start
    return s


def worker_count() -> int:
    """Preprocessing threads: two, or one on a single-core machine."""
    return 2 if (os.cpu_count() or 1) > 1 else 1
