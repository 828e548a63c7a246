"""The model thread: one thread owns the model and every MLX array, and batches jobs continuously.

Callers (any thread: the server's handlers, the caption runner) ``submit`` a ``Job``; the thread
drains the queue between decode steps. A new job is prefilled on its own (resuming from the prompt
cache when its prompt starts with a stored snapshot), samples its first token, then joins the running
decode batch (``BatchCache.extend``); every step decodes one token for all rows; finished, cancelled
or timed-out rows leave the batch at once, freeing their slot for the next waiting job. Results go
back through ``job.emit`` (called on the model thread; the caller makes it thread-safe, e.g.
``loop.call_soon_threadsafe`` or a queue).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

import mlx.core as mx
import numpy as np

from ..errors import Gemma4Error, ModelLoadError
from ..generation.device import generation_stream, wired_limit
from ..generation.prefill import prefill
from ..generation.request import DEFAULT_CHUNK
from ..model.cache import make_cache
from ..processing.prompt import token_id
from .batch_cache import BatchCache, restore, temporal_kv
from .job import Job
from .prompt_cache import PromptCache, media_digest
from .rows import Failed, Row

log = logging.getLogger("mlx_gemma4.batching")  # `gemma4 serve` routes it to uvicorn's handlers
_MIN_SNAPSHOT = 8  # tokens; shorter shared prefixes are not worth a snapshot


class Busy(Exception):
    """Too many jobs are queued."""


class Engine:
    """The model thread and its continuous decode batch."""

    def __init__(self, load_fn: Callable[[], tuple], *, max_concurrency: int = 8, max_queue: int = 64,
                 prompt_cache_bytes: int = 1 << 30, prefill_chunk: int = DEFAULT_CHUNK):
        self._load_fn = load_fn
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.prefill_chunk = prefill_chunk
        self.prompt_cache = PromptCache(prompt_cache_bytes)
        self.model = self.processor = self.tokenizer = None
        self.load_error: BaseException | None = None
        self.ready = threading.Event()  # set once loading has ended, well or not
        self._inbox: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._pending = 0  # submitted and not yet finished
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gemma4-model", daemon=True)

    @classmethod
    def for_model(cls, model, processor, **options) -> Engine:
        """An engine over an already-loaded model and processor (nothing is loaded again)."""
        return cls(lambda: (model, processor), **options)

    # -- any thread -------------------------------------------------------------------------------

    def start(self) -> Engine:
        """Start the model thread (it loads the model first)."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the model thread to end and wait for it."""
        self._stop.set()
        self._inbox.put(None)
        self._thread.join(timeout)

    @property
    def loaded(self) -> bool:
        """Whether the model is ready to serve."""
        return self.ready.is_set() and self.load_error is None

    @property
    def running(self) -> bool:
        """Whether the model thread is alive (it ends on ``stop`` or a failed load)."""
        return self._thread.is_alive()

    @property
    def pending(self) -> int:
        """Jobs submitted and not finished (running + waiting)."""
        return self._pending

    def submit(self, job: Job) -> None:
        """Queue a job; ``Busy`` when running + waiting jobs would exceed the limits."""
        with self._lock:
            if self._pending >= self.max_concurrency + self.max_queue:
                raise Busy
            self._pending += 1
        self._inbox.put(job)

    # -- the model thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self.model, self.processor = self._load_fn()
            if self.processor is None:
                raise ModelLoadError("the engine needs a checkpoint with its tokenizer files (tokenizer.json, …)")
            self.tokenizer = self.processor.tokenizer
        except BaseException as e:  # reported through load_error; the server shows it and exits
            self.load_error = e
            self.ready.set()
            return
        self.ready.set()
        with wired_limit(self.model):  # Apple silicon: keep the weights resident while serving
            self._loop()

    def _finished(self) -> None:
        with self._lock:
            self._pending -= 1

    def _loop(self) -> None:
        waiting: deque[Job] = deque()
        rows: list[Row] = []
        batch: BatchCache | None = None
        while not self._stop.is_set():
            if not self._drain(waiting, block=not rows and not waiting):
                continue
            rows, batch = self._evict(rows, batch)
            while waiting and len(rows) < self.max_concurrency:
                joined = self._admit(waiting.popleft())
                if joined is not None:
                    row, cache = joined
                    rows.append(row)
                    batch = cache if batch is None else _extended(batch, cache)
            if rows:
                try:
                    self._step(rows, batch)
                except Exception as e:  # a failed step poisons the whole batch: fail every row in it (a bad
                # input fails in its own prefill, before it joins, so this is a bug or out of memory)
                    log.exception("decode step failed")
                    for r in rows:
                        r.fail(e)
            rows, batch = self._evict(rows, batch)

    def _drain(self, waiting: deque, block: bool) -> bool:
        try:
            item = self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
        except queue.Empty:
            return not block
        while item is not None:
            waiting.append(item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
        return True

    def _evict(self, rows: list[Row], batch: BatchCache | None):
        """Drop finished, cancelled and timed-out rows from the batch (keeping the others in order)."""
        now = time.monotonic()
        for r in rows:
            r.check(now)
        keep = [i for i, r in enumerate(rows) if not r.done]
        for r in rows:
            if r.done and not r.released:
                self._release(r)
        if len(keep) == len(rows):
            return rows, batch
        if not keep:
            return [], None
        batch.keep(keep)
        return [rows[i] for i in keep], batch

    def _release(self, row: Row) -> None:
        # No snapshot after an answer: Gemma 4's template renders a model turn differently from what the
        # model saw while generating it (the empty thought block of the generation prompt), so a
        # follow-up prompt never extends it; the snapshot before the generation prompt is what it reuses.
        row.released = True
        self._finished()

    def _admit(self, job: Job):
        """Prefill a job and sample its first token → (row, its one-row BatchCache), or None if it ended."""
        if job.cancelled.is_set():
            self._finished()
            return None
        try:
            row, cache = self._prefill(job)
        except Exception as e:
            if isinstance(e, Gemma4Error):
                log.info("job failed before decoding: %s", e)
            else:  # a bug: the caller gets the error, the log gets the traceback
                log.exception("job failed before decoding")
            job.emit(Failed(e))
            self._finished()
            return None
        if row.done:
            row.released = True
            self._finished()
            return None
        return row, BatchCache(cache, [0])

    def _prefill(self, job: Job):
        model, cfg = self.model, self.model.config
        ids = job.input_ids.astype(np.int32)
        flat = ids[0].tolist()
        digest = lambda n: media_digest(ids, job.arrays, n, cfg.boi_token_id, cfg.boa_token_id)  # noqa: E731
        cacheable = self.prompt_cache.max_bytes > 0 and "pixel_values_videos" not in job.arrays
        snap = self.prompt_cache.lookup(flat, digest) if cacheable else None
        start = len(snap.tokens) if snap else 0
        cache = restore(make_cache(model), snap.kv, start) if snap else make_cache(model)
        row = Row(job, self.tokenizer, prompt_ids=flat, cached=start)
        embeds = model.embed_inputs(ids, **job.arrays)
        # Snapshots where the last two turns start: the shared history (system prompt, earlier turns) and
        # the conversation before the generation prompt (which a follow-up turn starts with).
        points = _snapshot_points(flat, self._sot_id(), start) if cacheable else []
        if job.unique_media:  # a snapshot holding this job's media would never be reused
            first_media = next((i for i, t in enumerate(flat) if t in (cfg.boi_token_id, cfg.boa_token_id)), len(flat))
            points = [p for p in points if p <= first_media]
        for cut in points:
            prefill(model, ids[:, start:cut], embeds[:, start:cut], cache, self.prefill_chunk)
            self.prompt_cache.store(flat[:cut], digest(cut), [(k + 0, v + 0) for k, v in map(temporal_kv, cache)])
            start = cut
        logits, _ = prefill(model, ids[:, start:], embeds[:, start:], cache, self.prefill_chunk)
        row.start(logits)
        return row, cache

    def _sot_id(self) -> int | None:
        return token_id(self.tokenizer, "<|turn>")

    def _step(self, rows: list[Row], batch: BatchCache) -> None:
        """One decode step for every row."""
        last = mx.array([[r.last] for r in rows], dtype=mx.int32)
        with mx.stream(generation_stream()):
            logits = self.model(last, cache=batch.layers, logits_to_keep=1, left_padding=batch.padding_array())
            picked = mx.concatenate([r.sample(logits[i : i + 1, -1]) for i, r in enumerate(rows)])
        for r, tok in zip(rows, picked.tolist(), strict=True):
            r.accept(tok)


def _extended(batch: BatchCache, new: BatchCache) -> BatchCache:
    batch.extend(new)
    return batch


def _snapshot_points(ids: list[int], sot: int | None, start: int) -> list[int]:
    """Starts of the last two turns (turn markers) after ``start``; of two close ones only the later."""
    if sot is None:
        return []
    marks = [i for i in range(start + 1, len(ids)) if ids[i] == sot][-2:]
    if len(marks) == 2 and marks[1] - marks[0] < _MIN_SNAPSHOT:
        marks = marks[1:]
    return [m for m in marks if m - start >= _MIN_SNAPSHOT]


__all__ = ["Busy", "Engine", "Job"]
