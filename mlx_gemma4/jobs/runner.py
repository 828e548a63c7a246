"""The loop of ``caption``: preprocess ahead in threads, decode with continuous batching, write each row when done.

Each item is preprocessed on its own (a thread pool; processing is numpy/Pillow/soundfile only), so a
corrupt file becomes an error row before it reaches the model, and the next items are preprocessed
while the model decodes. Decoding is the library's continuous-batching engine
(``mlx_gemma4.batching``) with ``batch_size`` rows: a row that finishes leaves the batch and the next
preprocessed item takes its slot, so a batch never waits for its longest caption. Each item is
prefilled on its own before it joins, so a bad item fails alone (an error row) and never costs the
others their captions.

Prompt sharing: the prompt cache keeps the KV of a prefix common to every item only where the layout
allows one. The media come before the instruction in the user turn (the model card's order), so
without ``--system`` only the few tokens before the user turn are shared (too few to be worth a
snapshot); with ``--system`` the whole system turn is prefilled once and reused by every item.
"""

from __future__ import annotations

import os
import queue
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..batching.engine import Engine
from ..batching.job import Limits, encoded_arrays, make_job
from ..batching.rows import Done, Failed
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
    cached_tokens: int = 0  # prompt tokens taken from the prompt cache (the shared --system turn)
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
    """Decode preprocessed inputs as one fixed batch (transcribe's blocks); yields ``(index, answer text,
    stats, seconds)`` as each row finishes (``seconds`` runs from the batch's start to that row's last token)."""
    from ..generation import stream_batch

    start = time.perf_counter()
    texts: list[list[str]] = [[] for _ in inputs]
    for r, chunk in stream_batch(model, processor, list(inputs), request=request):
        if chunk.channel == "answer":
            texts[r].append(chunk.text)
        if chunk.stats is not None:
            yield r, "".join(texts[r]), chunk.stats, round(time.perf_counter() - start, 3)


class _Job:
    """State of one run: the sink, the counts, the callbacks."""

    def __init__(self, sink, on_row: Callable[[dict], None] | None):
        self.sink = sink
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


def _prepared(item: Item, fut: Future, job: _Job) -> Any | None:
    """The preprocessed input of ``item``, or None after writing its error row."""
    start = time.perf_counter()
    try:
        return fut.result()
    except Exception as e:  # noqa: BLE001 - becomes the item's error row
        job.emit(error_row(item, e, time.perf_counter() - start))
        return None


def caption_row(item: Item, done: Done, seconds: float) -> dict[str, Any]:
    """The row of a captioned item."""
    st = done.stats
    return {"file_name": item.file_name, "caption": done.answer.strip(), "prompt_tokens": done.prompt_tokens,
            "generation_tokens": st.generation_tokens, "seconds": round(seconds, 3),
            "finish_reason": st.finish_reason, "error": None}


PROMPT_CACHE_BYTES = 256 << 20  # holds the --system prefix (the only snapshot caption jobs keep)


class _Decoding:
    """Items handed to the engine and not finished yet; their end events arrive through one queue."""

    def __init__(self, model, processor, request: GenerationRequest, batch_size: int):
        self.model, self.tokenizer, self.request = model, processor.tokenizer, request
        self.engine = Engine.for_model(model, processor, max_concurrency=batch_size, max_queue=batch_size,
                                       prompt_cache_bytes=PROMPT_CACHE_BYTES)
        # One item more than the batch holds waits in the engine, so a freed slot is refilled at once.
        self.capacity = batch_size + 1
        self.events: queue.Queue = queue.Queue()
        self.flying: dict[int, tuple[Item, float]] = {}  # id → (item, submitted at)
        self._next_id = 0

    def __len__(self) -> int:
        return len(self.flying)

    @property
    def full(self) -> bool:
        return len(self.flying) >= self.capacity

    def start(self) -> None:
        self.engine.start()
        self.engine.ready.wait()
        if self.engine.load_error is not None:
            raise self.engine.load_error

    def submit(self, item: Item, enc, job: _Job) -> None:
        """Hand one preprocessed item to the engine (an error row if its settings or length are refused)."""
        jid, self._next_id = self._next_id, self._next_id + 1

        def emit(event) -> None:  # on the model thread: only the end of the item matters here
            if isinstance(event, (Done, Failed)):
                self.events.put((jid, event))

        start = time.perf_counter()
        try:
            ids, arrays = encoded_arrays(enc)
            engine_job = make_job(self.model, self.tokenizer, ids, arrays, self.request, _LIMITS, emit,
                                  unique_media=True)
        except Gemma4Error as e:
            job.emit(error_row(item, e, time.perf_counter() - start))
            return
        self.flying[jid] = (item, start)
        self.engine.submit(engine_job)

    def finish_one(self, job: _Job, timeout: float) -> None:
        """Write the row of the next item that ends within ``timeout`` seconds (if any)."""
        try:
            jid, event = self.events.get(timeout=timeout)
        except queue.Empty:
            if not self.engine.running:
                raise RuntimeError("the model thread ended with items still in flight") from None
            return
        item, start = self.flying.pop(jid)
        seconds = time.perf_counter() - start
        if isinstance(event, Done):
            job.summary.cached_tokens += event.cached_tokens
        job.emit(caption_row(item, event, seconds) if isinstance(event, Done) else
                 error_row(item, event.error, seconds))


# Caption jobs run to their own max_tokens: no server-style cap, no timeout.
_LIMITS = Limits(max_tokens_cap=1 << 30, timeout_s=None)


def run_job(model, processor, items: Sequence[Item], sink, opts: JobOptions, *,
            on_row: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None) -> JobSummary:
    """Caption every item not already in ``sink``; returns the run's summary. ``should_stop`` is polled while
    rows decode (every 50 ms or row): once it is True no item starts, and the items in flight are finished."""
    job = _Job(sink, on_row)
    todo = [it for it in items if it.file_name not in sink.done]
    s = job.summary
    s.total, s.skipped = len(items), len(items) - len(todo)
    s.batch_size = opts.batch_size or (default_batch_size(model, opts) if todo else 1)
    start = time.perf_counter()
    if not todo:
        s.seconds = time.perf_counter() - start
        return s
    pending: deque[tuple[Item, Future]] = deque()
    source = iter(todo)
    decoding = _Decoding(model, processor, opts.request, s.batch_size)
    try:
        decoding.start()
        with ThreadPoolExecutor(max_workers=max(1, opts.workers), thread_name_prefix="preprocess") as pool:

            def top_up() -> None:  # keep two batches' worth of items preprocessing ahead of the model
                while len(pending) < 2 * s.batch_size and (item := next(source, None)) is not None:
                    pending.append((item, pool.submit(preprocess, processor, item, opts)))

            top_up()
            stopping = False
            while (pending and not stopping) or decoding:
                stopping = stopping or bool(should_stop and should_stop())
                # Start the next items in order while there is room; wait on a preprocessing thread
                # only when nothing is decoding (else rows that end meanwhile would wait to be written).
                while not stopping and pending and not decoding.full and (pending[0][1].done() or not decoding):
                    item, fut = pending.popleft()
                    top_up()
                    if (enc := _prepared(item, fut, job)) is not None:
                        decoding.submit(item, enc, job)
                if decoding:
                    decoding.finish_one(job, timeout=0.05)
            s.interrupted = bool(pending)
            for _, fut in pending:
                fut.cancel()
    finally:
        decoding.engine.stop()
    s.seconds = time.perf_counter() - start
    return s


def worker_count() -> int:
    """Preprocessing threads: two, or one on a single-core machine."""
    return 2 if (os.cpu_count() or 1) > 1 else 1
